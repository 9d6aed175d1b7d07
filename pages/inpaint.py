"""Inpaint: paint (or upload) a mask over the source, say what goes there, and repaint only that area."""

import streamlit as st

from studio.web import app, auth, form, jobs, library, masks, presets, recipes, references, styles, submit, widgets

PREFIX = "inpaint"
JOB_KEY = "inpaint.last_job_id"

user = auth.require_user()
config = app.settings()
catalogue = styles.catalogue_or_stop(config)

st.title("Inpaint")
widgets.model_notice(config)

source_col, result_col = st.columns(2, gap="large")

with source_col:
    source = library.pick_source(PREFIX, user, preview=False)  # the mask canvas shows it
    if source is not None and source.recipe is not None:
        recipes.recipe_offer(PREFIX, source, catalogue, config, user, job_key=JOB_KEY)
    mask = masks.mask_editor(PREFIX, source) if source is not None else None

    style = styles.style_picker(PREFIX, catalogue, config)
    params, quality, _ = form.run_settings(PREFIX, style)
    inpaint = masks.mask_options(PREFIX)
    control = form.control_settings(PREFIX, source, seed=params.seed)
    loras = form.lora_settings(PREFIX, catalogue, config, style)
    reference_image, reference = references.reference_settings(PREFIX, catalogue, config, style, user)

    request = None
    if source is not None and mask is not None:
        request = submit.make_request(
            config,
            catalogue,
            style,
            params,
            quality,
            control=control,
            inpaint=inpaint,
            loras=loras,
            reference=reference,
        )
    presets.preset_bar(PREFIX, user, catalogue, request)
    if request is not None:
        submit.price_caption(config, user, request, source.upload)
    inpaint_clicked = st.button(
        f"Inpaint · {form.step_count(config, style, params)} denoising steps",
        type="primary",
        disabled=request is None,
        key="inpaint_button",
    )

with result_col:
    if inpaint_clicked:
        submit.submit(config, user, source, request, mask=mask, reference_image=reference_image, job_key=JOB_KEY)
    if job_id := st.session_state.get(JOB_KEY):
        jobs.job_panel(job_id=job_id, user_id=user.id)
    else:
        st.caption("Your result appears here, beside the source.")

"""Transform: a source, a style (or your own prompt) and settings on the left; the job and its result on the right."""

import streamlit as st

from studio.web import app, auth, form, jobs, library, presets, recipes, references, styles, submit, widgets

PREFIX = "transform"
JOB_KEY = "transform.last_job_id"

user = auth.require_user()
config = app.settings()
catalogue = styles.catalogue_or_stop(config)

st.title("Transform")
widgets.model_notice(config)

source_col, result_col = st.columns(2, gap="large")

with source_col:
    source = library.pick_source(PREFIX, user)
    if source is not None and source.recipe is not None:
        recipes.recipe_offer(PREFIX, source, catalogue, config, user, job_key=JOB_KEY)

    style = styles.style_picker(PREFIX, catalogue, config)
    params, quality, noise_level = form.run_settings(PREFIX, style)
    upscaling = style is not None and style.task.upscale_factor is not None
    control = None if upscaling else form.control_settings(PREFIX, source, seed=params.seed)
    loras = () if upscaling else form.lora_settings(PREFIX, catalogue, config, style)
    reference_image, reference = None, None
    if not upscaling:
        reference_image, reference = references.reference_settings(PREFIX, catalogue, config, style, user)

    request = None
    if source is not None:
        request = submit.make_request(
            config,
            catalogue,
            style,
            params,
            quality,
            noise_level=noise_level,
            control=control,
            loras=loras,
            reference=reference,
        )
    presets.preset_bar(PREFIX, user, catalogue, request)
    if request is not None:
        submit.price_caption(config, user, request, source.upload)
    steps = form.step_count(config, style, params)
    transform_clicked = st.button(
        f"{style.task.label if upscaling else 'Transform'} · {steps} denoising steps",
        type="primary",
        disabled=request is None,
        key="transform_button",
    )

with result_col:
    if transform_clicked:
        submit.submit(config, user, source, request, reference_image=reference_image, job_key=JOB_KEY)
    if job_id := st.session_state.get(JOB_KEY):
        jobs.job_panel(job_id=job_id, user_id=user.id)
    else:
        st.caption("Your result appears here, beside the source.")

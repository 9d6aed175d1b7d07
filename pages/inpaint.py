"""Inpaint: paint (or upload) a mask over the source, say what goes there, and repaint only that area."""

import streamlit as st

from studio import ui, ui_forms

PREFIX = "inpaint"
JOB_KEY = "inpaint.last_job_id"

user = ui.require_user()
config = ui.settings()
catalogue = ui_forms.catalogue_or_stop(config)

st.title("Inpaint")
ui.model_notice(config)

source_col, result_col = st.columns(2, gap="large")

with source_col:
    source = ui_forms.source_uploader(PREFIX)
    if source is not None and source.recipe is not None:
        ui_forms.recipe_offer(PREFIX, source, catalogue, config, user, job_key=JOB_KEY)
    mask = ui_forms.mask_editor(PREFIX, source) if source is not None else None

    style = ui_forms.style_picker(PREFIX, catalogue, config)
    params, quality, _ = ui_forms.run_settings(PREFIX, style)
    inpaint = ui_forms.mask_options(PREFIX)
    control = ui_forms.control_settings(PREFIX, source, seed=params.seed)

    request = None
    if source is not None and mask is not None:
        request = ui_forms.make_request(config, catalogue, style, params, quality, control=control, inpaint=inpaint)
    ui_forms.preset_bar(PREFIX, user, catalogue, request)
    if request is not None:
        ui_forms.price_caption(config, user, request, source.upload)
    inpaint_clicked = st.button(
        f"Inpaint · {params.denoising_steps} denoising steps",
        type="primary",
        disabled=request is None,
        key="inpaint_button",
    )

with result_col:
    if inpaint_clicked:
        ui_forms.submit(config, user, source, request, mask=mask, job_key=JOB_KEY)
    if job_id := st.session_state.get(JOB_KEY):
        ui.job_panel(job_id=job_id, user_id=user.id)
    else:
        st.caption("Your result appears here, beside the source.")

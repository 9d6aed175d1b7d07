"""Transform: a source, a style (or your own prompt) and settings on the left; the job and its result on the right."""

import streamlit as st

from studio import ui, ui_forms

PREFIX = "transform"
JOB_KEY = "transform.last_job_id"

user = ui.require_user()
config = ui.settings()
catalogue = ui_forms.catalogue_or_stop(config)

st.title("Transform")
ui.model_notice(config)

source_col, result_col = st.columns(2, gap="large")

with source_col:
    source = ui_forms.source_uploader(PREFIX)
    if source is not None:
        st.image(source.upload.image, caption=f"{source.name} · {source.upload.width}×{source.upload.height}")
        if source.recipe is not None:
            ui_forms.recipe_offer(PREFIX, source, catalogue, config, user, job_key=JOB_KEY)

    style = ui_forms.style_picker(PREFIX, catalogue, config)
    params, quality, noise_level = ui_forms.run_settings(PREFIX, style)
    upscaling = style is not None and style.task.upscale_factor is not None
    control = None if upscaling else ui_forms.control_settings(PREFIX, source, seed=params.seed)

    request = None
    if source is not None:
        request = ui_forms.make_request(
            config, catalogue, style, params, quality, noise_level=noise_level, control=control
        )
    ui_forms.preset_bar(PREFIX, user, catalogue, request)
    if request is not None:
        ui_forms.price_caption(config, user, request, source.upload)
    steps = params.steps if upscaling else params.denoising_steps
    transform_clicked = st.button(
        f"{style.task.label if upscaling else 'Transform'} · {steps} denoising steps",
        type="primary",
        disabled=request is None,
        key="transform_button",
    )

with result_col:
    if transform_clicked:
        ui_forms.submit(config, user, source, request, job_key=JOB_KEY)
    if job_id := st.session_state.get(JOB_KEY):
        ui.job_panel(job_id=job_id, user_id=user.id)
    else:
        st.caption("Your result appears here, beside the source.")

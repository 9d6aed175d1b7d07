"""Edit: a source and an instruction ("put the bottle on white marble, keep the label") for an instruction editor
(FLUX.1 Kontext, Qwen-Image-Edit); the job and its result on the right."""

import streamlit as st

from studio.web import app, auth, edit, form, jobs, recipes, sources, styles, submit, widgets
from studio.web.text import plain

PREFIX = "edit"
JOB_KEY = "edit.last_job_id"

user = auth.require_user()
config = app.settings()
catalogue = styles.catalogue_or_stop(config)

st.title("Edit")
st.caption("Say what to change and what to keep; an instruction editor does it, no strength to tune.")
widgets.model_notice(config)

source_col, result_col = st.columns(2, gap="large")

with source_col:
    source = sources.source_uploader(PREFIX)
    if source is not None:
        st.image(source.upload.image, caption=f"{plain(source.name)} · {source.upload.width}×{source.upload.height}")
        if source.recipe is not None:
            recipes.recipe_offer(PREFIX, source, catalogue, config, user, job_key=JOB_KEY)

    style = styles.style_picker(PREFIX, catalogue, config, own_settings=False)
    params, quality, _ = form.run_settings(PREFIX, style)
    references = edit.reference_uploader(PREFIX, style)
    mask = edit.edit_mask(PREFIX, source, style)

    request = None
    if source is not None and style is not None:
        request = submit.make_request(config, catalogue, style, params, quality, references=references)
    if request is not None:
        submit.price_caption(config, user, request, source.upload)
    edit_clicked = st.button(
        f"Edit · {form.step_count(config, style, params)} denoising steps",
        type="primary",
        disabled=request is None,
        key="edit_button",
    )

with result_col:
    if edit_clicked:
        submit.submit(config, user, source, request, mask=mask, references=references, job_key=JOB_KEY)
    if job_id := st.session_state.get(JOB_KEY):
        jobs.job_panel(job_id=job_id, user_id=user.id)
    else:
        st.caption("Your result appears here, beside the source.")

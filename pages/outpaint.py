"""Expand: extend a photo to a channel's format (square post, 4:5 feed, 9:16 story, 16:9 banner, a marketplace
listing on white, or a custom size); the source stays as it is and the model paints the new area around it."""

import streamlit as st

from studio.web import app, auth, form, jobs, library, outpaint, recipes, styles, submit, widgets

PREFIX = "outpaint"
JOB_KEY = "outpaint.last_job_id"
# The new area starts from the blurred edges (or white): a high strength lets the model paint over that start.
DEFAULT_STRENGTH = 0.9

user = auth.require_user()
config = app.settings()
catalogue = styles.catalogue_or_stop(config)

st.title("Expand")
widgets.model_notice(config)

source_col, result_col = st.columns(2, gap="large")

with source_col:
    source = library.pick_source(PREFIX, user, preview=False)  # the canvas preview shows it
    if source is not None and source.recipe is not None:
        recipes.recipe_offer(PREFIX, source, catalogue, config, user, job_key=JOB_KEY)
    expand, inpaint = outpaint.format_settings(PREFIX)
    plan = outpaint.canvas_preview(source.upload.image, expand) if source is not None else None

    style = styles.style_picker(PREFIX, catalogue, config)
    st.session_state.setdefault(f"{PREFIX}.strength", DEFAULT_STRENGTH)
    params, quality, _ = form.run_settings(PREFIX, style)

    request = None
    if plan is not None:
        request = submit.make_request(config, catalogue, style, params, quality, inpaint=inpaint, outpaint=expand)
    if request is not None:
        submit.price_caption(config, user, request, source.upload)
    expand_clicked = st.button(
        f"Expand · {params.denoising_steps} denoising steps",
        type="primary",
        disabled=request is None,
        key="outpaint_button",
    )

with result_col:
    if expand_clicked:
        submit.submit(config, user, source, request, job_key=JOB_KEY)
    if job_id := st.session_state.get(JOB_KEY):
        jobs.job_panel(job_id=job_id, user_id=user.id)
    else:
        st.caption("Your result appears here: the source on its new canvas.")

"""Transform: a source image, a prompt and settings on the left; the result on the right."""

import random

import streamlit as st

from pipelines.params import MAX_SEED, Img2ImgParams
from studio import ui
from studio.jobs import JobInputError, get_user_job, transform_now
from studio.validation import UploadRejected

user = ui.require_user()
config = ui.settings()

st.title("Transform")
ui.model_notice(config)

source_col, result_col = st.columns(2, gap="large")

with source_col:
    uploaded = st.file_uploader(
        "Source image — JPG, PNG or WebP · 256–4096 px per side · up to 10 MB",
        type=["jpg", "jpeg", "png", "webp"],
        key="source_upload",
    )
    upload = None
    if uploaded is not None:
        try:
            upload = ui.validated_upload(uploaded.getvalue())
        except UploadRejected as exc:
            st.error(str(exc))
    if upload is not None:
        st.image(upload.image, caption=f"{uploaded.name} · {upload.width}×{upload.height}")
        for note in upload.notes:
            st.caption(f":material/info: {note}")

    prompt = st.text_area("Prompt", placeholder="a watercolor illustration of a red sneaker, soft light")
    negative_prompt = st.text_input("Negative prompt", placeholder="blurry, low quality, watermark")
    strength = st.slider("Strength", 0.0, 1.0, 0.6, 0.05, help=ui.STRENGTH_HELP)
    st.caption(ui.strength_hint(strength))
    steps_col, guidance_col, seed_col = st.columns(3)
    steps = steps_col.slider("Steps", 1, 100, 20, help="Schedule length; the run uses int(steps × strength).")
    guidance = guidance_col.slider(
        "Guidance", 0.0, 20.0, 7.5, 0.5, help="How strictly to follow the prompt (≤ 1 turns it off)."
    )
    seed = seed_col.number_input(
        "Seed",
        min_value=0,
        max_value=MAX_SEED,
        value=st.session_state.setdefault("default_seed", random.randint(0, MAX_SEED)),
        help="Same source, settings and seed give the same pixels.",
    )
    params = Img2ImgParams(
        prompt=prompt,
        negative_prompt=negative_prompt,
        strength=strength,
        steps=steps,
        guidance=guidance,
        seed=int(seed),
    )
    transform_clicked = st.button(
        f"Transform · {params.denoising_steps} denoising steps",
        type="primary",
        disabled=upload is None,
        key="transform_button",
    )

with result_col:
    if transform_clicked:
        progress = st.progress(0.0, text="Loading the model…")
        try:
            with ui.db_session() as session:
                job = transform_now(
                    session=session,
                    store=ui.asset_store(),
                    settings=config,
                    user=user,
                    upload=upload,
                    original_name=uploaded.name,
                    params=params,
                    on_progress=lambda step, total: progress.progress(
                        step / total, text=f"Step {step}/{total}"
                    ),
                )
            st.session_state["last_job_id"] = job.id
        except JobInputError as exc:
            st.error(str(exc))
        progress.empty()

    job_id = st.session_state.get("last_job_id")
    with ui.db_session() as session:
        job = get_user_job(session=session, user_id=user.id, job_id=job_id) if job_id else None
        if job is None:
            st.caption("Your result appears here, beside the source.")
        else:
            ui.show_job_result(session=session, job=job)

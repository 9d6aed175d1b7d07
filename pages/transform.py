"""Transform: a source image, a prompt and settings on the left; the queued job and its result on the right."""

import random
from dataclasses import asdict

import streamlit as st

from pipelines.params import MAX_SEED, Img2ImgParams
from studio import ui
from studio.credits import spendable
from studio.models import utcnow
from studio.pricing import QUALITY_TIERS, Quality
from studio.queue import SubmitRefused, quote, submit_job
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
    quality = Quality(
        st.segmented_control(
            "Quality",
            [q.value for q in Quality],
            default=Quality.standard.value,
            format_func=lambda q: f"{QUALITY_TIERS[Quality(q)].label} · {QUALITY_TIERS[Quality(q)].steps} steps",
            key="quality",
        )
        or Quality.standard.value
    )
    tier = QUALITY_TIERS[quality]
    with st.expander("Advanced"):
        steps = st.slider(
            "Steps", 1, tier.max_steps, tier.steps, help="Schedule length; the run uses int(steps × strength)."
        )
        guidance = st.slider(
            "Guidance", 0.0, 20.0, 7.5, 0.5, help="How strictly to follow the prompt (≤ 1 turns it off)."
        )
        seed = st.number_input(
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

    with ui.db_session() as session:
        credits = spendable(session=session, user=user, now=utcnow())
    if upload is not None:
        cost = quote(settings=config, quality=quality, width=upload.width, height=upload.height)
        st.caption(
            f"Costs **{cost.credits}** credit{'s' if cost.credits != 1 else ''} ({cost.explain()}) · "
            f"you have {credits.personal}" + (f" + {credits.team} in the team pool" if credits.team is not None else "")
        )
    transform_clicked = st.button(
        f"Transform · {params.denoising_steps} denoising steps",
        type="primary",
        disabled=upload is None,
        key="transform_button",
    )

with result_col:
    if transform_clicked:
        try:
            with ui.db_write_session() as session:
                job = submit_job(
                    session=session,
                    store=ui.asset_store(),
                    settings=config,
                    user=user,
                    upload=upload,
                    original_name=uploaded.name,
                    params=params,
                    quality=quality,
                    idempotency_key=ui.submit_key(
                        user_id=user.id,
                        source_png=upload.png_bytes,
                        recipe={**asdict(params), "quality": quality.value, "model": config.model},
                    ),
                )
            st.session_state["last_job_id"] = job.id
        except SubmitRefused as exc:
            st.error(str(exc))

    if job_id := st.session_state.get("last_job_id"):
        ui.job_panel(job_id=job_id, user_id=user.id)
    else:
        st.caption("Your result appears here, beside the source.")

"""Batch: one style, brand kit or preset (LoRAs too) over many images (a product catalogue in one consistent look),
optionally expanded to a format, or inpainted under a mask per image (name.mask.png beside name.png). Pro plans."""

import random

import streamlit as st

from studio.batches.plan import batch_cost, batch_requests
from studio.billing.plans import PLANS
from studio.catalogue.presets import SeedPolicy
from studio.web import app, auth, batches, form, masks, outpaint, presets, refusals, styles, submit, widgets
from studio.web.text import plain

PREFIX = "batch"
BATCH_KEY = "batch.last_batch_id"

user = auth.require_user()
config = app.settings()
catalogue = styles.catalogue_or_stop(config)

st.title("Batch")
if not PLANS[user.plan].batch:
    st.info(
        "Batches are part of the Pro plans: one recipe over a whole folder of product photos, each image its own "
        "job, with a ZIP of every result. On Free, transform images one at a time on the Transform page.",
        icon=":material/lock:",
    )
    st.stop()
widgets.model_notice(config)

settings_col, progress_col = st.columns([1, 1], gap="large")

with settings_col:
    files = st.file_uploader(
        "Images (JPG, PNG, WebP) or ZIPs of them",
        type=["jpg", "jpeg", "png", "webp", "zip"],
        accept_multiple_files=True,
        key="batch.files",
    )
    uploads = batches.batch_uploads(files or [])
    if uploads.images:
        st.caption(f"{len(uploads.images)} image(s) ready")
        st.image(uploads.thumbnails, width=80)
    if uploads.rejected:
        with st.expander(f"{len(uploads.rejected)} file(s) will be skipped", expanded=True):
            for name, why in uploads.rejected:
                st.caption(f"**{plain(name)}**: {plain(why)}")

    style = styles.style_picker(PREFIX, catalogue, config)
    params, quality, noise_level = form.run_settings(PREFIX, style)
    upscaling = style is not None and style.task.upscale_factor is not None
    inpaint = expand = None
    if uploads.masks:  # name.mask.png beside name.png: each image inpaints under its own mask
        st.caption(f"Each image has its mask: this batch inpaints ({len(uploads.masks)} masks).")
        inpaint = masks.mask_options(PREFIX)
    elif not upscaling and st.toggle("Expand to a format", key="batch.expand"):
        expand, inpaint = outpaint.format_settings(PREFIX)
    control = None if upscaling else form.control_settings(PREFIX, None, seed=params.seed)
    loras = () if upscaling else form.lora_settings(PREFIX, catalogue, config, style)
    request = submit.make_request(
        config,
        catalogue,
        style,
        params,
        quality,
        noise_level=noise_level,
        control=control,
        inpaint=inpaint,
        outpaint=expand,
        loras=loras,
    )
    presets.preset_bar(PREFIX, user, catalogue, request)
    seed_policy = SeedPolicy(
        st.radio(
            "Seed",
            [p.value for p in SeedPolicy],
            horizontal=True,
            key="batch.seed_policy",
            format_func=lambda p: {"fixed": "The same for every image", "random": "A new one per image"}[p],
        )
    )
    requests = []
    if request is not None and uploads.images:
        # Seeds drawn from a per-session salt: the same on every rerun, so a second click is the same batch.
        rng = random.Random(st.session_state.setdefault("batch.seed_salt", random.getrandbits(64)))
        requests = batch_requests(request, len(uploads.images), seed_policy=seed_policy, rng=rng)
        cost = refusals.attempt(lambda: batch_cost(settings=config, images=uploads.images, requests=requests))
        if cost is None:  # an image the format cannot take (its name and why are shown)
            requests = []
        else:
            st.caption(f"{len(requests)} images · costs **{cost}** credits in all (each image charged on its own)")
    run_clicked = st.button(
        f"Run batch · {len(requests)} images", type="primary", disabled=not requests, key="batch_button"
    )

with progress_col:
    if run_clicked:
        batches.submit(config, user, uploads.images, requests, masks=uploads.masks, key=BATCH_KEY)
    if batch_id := st.session_state.get(BATCH_KEY):
        batches.batch_panel(batch_id=batch_id, user_id=user.id, label=style.name if style else "own settings")
    else:
        st.caption("Progress and the download of every result appear here.")

"""The inpainting mask: painted on a canvas over the image (streamlit-drawable-canvas) or uploaded, and the
A1111 mask options. With "Soft (per-pixel strength)" the mask keeps its grey levels (InpaintParams.soft): the
brush's opacity, or an uploaded grey PNG's values, say how much each pixel may change.
"""

from __future__ import annotations

import hashlib

import streamlit as st
from PIL import Image

from pipelines.errors import PipelineInputError
from pipelines.masks import ERASE_COLOUR, PAINT_COLOUR, check_mask, mask_from_canvas, mask_from_upload
from pipelines.params import (
    InpaintParams,
)
from studio.media.validation import UploadRejected, decode_mask_upload
from studio.web.form import limits
from studio.web.sources import Source

CANVAS_SIDE = 512  # the mask canvas's long side on screen; the mask is scaled to the source
MASK_OVERLAY = (255, 0, 255)  # the colour that shows the mask over the image
MIN_BRUSH, MAX_BRUSH, DEFAULT_BRUSH = 2, 100, 30
# Soft masks: the brush's opacity in percent is the strength it paints (pipelines.masks.mask_from_canvas).
MIN_OPACITY, MAX_OPACITY, DEFAULT_OPACITY, OPACITY_STEP = 10, 100, 50, 10


def soft_toggle(prefix: str) -> bool:
    """Whether the mask is soft: grey levels are per-pixel strengths (0 keep … 255 repaint at the run's strength)."""
    return st.toggle(
        "Soft (per-pixel strength)",
        key=f"{prefix}.soft",
        help="Grey parts of the mask change partly: a 30 % brush (or grey 77 in an uploaded mask) lets those pixels "
        "take 30 % of the denoising steps; black keeps them exactly, white repaints them fully.",
    )


def mask_editor(prefix: str, source: Source, *, soft_masks: bool = True) -> Image.Image | None:
    """The inpainting mask ("L", the source's size, 255 = repaint): painted on a canvas over the image, or
    uploaded. None (with a hint or the reason) until there is a usable one. Without `soft_masks` (an edit's mask)
    there is no soft toggle: the mask is black and white."""
    image = source.upload.image
    mask = None
    soft = soft_toggle(prefix) if soft_masks else False
    paint_tab, upload_tab = st.tabs(["Paint the mask", "Upload a mask"])
    with paint_tab:
        mask = _painted_mask(prefix, source, soft=soft)
    with upload_tab:
        mask_file = st.file_uploader(
            "Mask — grey levels = how much each pixel may change (white repaints, black keeps); fitted to the image"
            if soft
            else "Mask — white (or opaque white) = repaint, black or transparent = keep; fitted to the image",
            type=["png", "jpg", "jpeg", "webp"],
            key=f"{prefix}.mask_upload",
        )
        if mask_file is not None:
            try:
                mask = mask_from_upload(decode_mask_upload(mask_file.getvalue()), image.size, soft=soft)
                check_mask(mask)
            except (UploadRejected, PipelineInputError) as exc:
                st.error(str(exc))
                mask = None
    if mask is None:
        st.info("Paint over the area to repaint, or upload a mask.")
        return None
    overlay = Image.composite(Image.new("RGB", image.size, MASK_OVERLAY), image, mask.point(lambda v: v // 2))
    st.image(overlay, caption="What will be repainted" + (" (fainter: changes less)" if soft else ""))
    return mask


def _painted_mask(prefix: str, source: Source, *, soft: bool) -> Image.Image | None:
    from streamlit_drawable_canvas import st_canvas  # registers its component on first use

    brush_col, mode_col, clear_col = st.columns([2, 2, 1], vertical_alignment="bottom")
    brush = brush_col.slider(
        "Brush size", min_value=MIN_BRUSH, max_value=MAX_BRUSH, value=DEFAULT_BRUSH, key=f"{prefix}.brush"
    )
    mode = mode_col.segmented_control("Brush", ["Paint", "Erase"], default="Paint", key=f"{prefix}.brush_mode")
    paint = PAINT_COLOUR
    if soft:
        opacity = st.slider(
            "Brush strength (%)",
            min_value=MIN_OPACITY,
            max_value=MAX_OPACITY,
            value=DEFAULT_OPACITY,
            step=OPACITY_STEP,
            key=f"{prefix}.brush_opacity",
            help="How much the pixels under this brush may change; strokes over each other add up.",
        )
        paint = brush_colour(opacity)
    round_key = f"{prefix}.canvas_round"
    if clear_col.button("Clear", key=f"{prefix}.clear"):
        st.session_state[round_key] = st.session_state.get(round_key, 0) + 1  # a new canvas is an empty one
    image = source.upload.image
    scale = CANVAS_SIDE / max(image.size)
    width, height = round(image.width * scale), round(image.height * scale)
    source_id = hashlib.sha256(source.upload.png_bytes).hexdigest()[:16]
    painted = st_canvas(
        stroke_width=brush,
        stroke_color=ERASE_COLOUR if mode == "Erase" else paint,
        background_image=image.resize((width, height)),
        width=width,
        height=height,
        drawing_mode="freedraw",
        return_image_data=True,
        # A new source or a Clear starts a new, empty canvas.
        key=f"{prefix}.canvas.{st.session_state.get(round_key, 0)}.{source_id}",
    )
    st.caption("White marks what to repaint; the eraser's dark strokes take it back. Undo is in the canvas toolbar.")
    if painted.image_data is None:
        return None
    mask = mask_from_canvas(painted.image_data, image.size, soft=soft)
    return mask if mask.getbbox() is not None else None


def brush_colour(opacity: int) -> str:
    """The canvas stroke colour (CSS) of a soft brush: white at `opacity` percent, which the mask reads back as
    that strength (mask_from_canvas: alpha × lightness)."""
    return f"rgba(255, 255, 255, {opacity / 100:g})"


def mask_options(prefix: str) -> InpaintParams:
    """The mask options; `soft` is mask_editor's toggle (it decides how the mask is read)."""
    # Defaults through the state, not value=: loading a recipe sets these keys too.
    defaults = InpaintParams()
    for name in ("mask_blur", "only_masked", "padding", "keep_unmasked"):
        st.session_state.setdefault(f"{prefix}.{name}", getattr(defaults, name))
    with st.expander("Mask options"):
        return InpaintParams(
            mask_blur=st.slider(
                "Mask blur (px)",
                **limits("mask_blur"),
                key=f"{prefix}.mask_blur",
                help="Feathers the edge.",
            ),
            only_masked=st.toggle(
                "Only masked area",
                key=f"{prefix}.only_masked",
                help="Renders just the mask's box (plus padding) at full resolution and pastes it back: "
                "more detail for small areas.",
            ),
            padding=st.slider("Masked area padding (px)", **limits("padding"), key=f"{prefix}.padding"),
            keep_unmasked=st.toggle(
                "Keep unmasked pixels exactly",
                key=f"{prefix}.keep_unmasked",
                help="Outside the (feathered) mask the result is the source, byte for byte.",
            ),
            soft=bool(st.session_state.get(f"{prefix}.soft", False)),
        )

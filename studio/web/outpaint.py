"""Expanding to a format (outpainting): the format, placement and seam settings, and a preview of the canvas with
the area the model paints. The geometry is pipelines.outpaint's (torch-free): an impossible format is refused here,
before anything is stored or charged.
"""

from __future__ import annotations

import streamlit as st
from PIL import Image

from pipelines.errors import PipelineInputError
from pipelines.outpaint import CHANNEL_PRESETS, OutpaintPlan, outpaint_canvas, outpaint_mask, plan_outpaint
from pipelines.params import (
    ASPECTS,
    CUSTOM,
    MAX_CANVAS_SIDE,
    SIZE_MULTIPLE,
    Fill,
    InpaintParams,
    OutpaintParams,
    Placement,
)
from studio.web.form import limits
from studio.web.text import plain

PREVIEW_SIDE = 384  # the canvas preview's long side on screen
NEW_AREA_TINT = (255, 0, 255)  # the inpaint page's mask colour: what the model paints
DEFAULT_CUSTOM = 1080  # px, a custom size's first value (Instagram's side)


def _format_label(choice: str) -> str:
    if choice in CHANNEL_PRESETS:
        return CHANNEL_PRESETS[choice].label
    return "Custom size (width × height)" if choice == CUSTOM else f"Aspect {choice}"


def load_format(prefix: str, expand: OutpaintParams) -> None:
    """Put a recipe's format into the form: its aspect (or custom size), placement, fill and seam."""
    state = st.session_state
    state[f"{prefix}.format"] = expand.aspect
    if expand.aspect == CUSTOM:
        state[f"{prefix}.canvas_width"], state[f"{prefix}.canvas_height"] = expand.width, expand.height
    state[f"{prefix}.placement"] = expand.placement.value
    state[f"{prefix}.fill"] = expand.fill.value
    state[f"{prefix}.seam"] = expand.seam


def format_settings(prefix: str) -> tuple[OutpaintParams, InpaintParams]:
    """The format (a channel preset, an aspect or a custom size), where the source goes, what the new area starts
    as, the seam, and whether the source's pixels are kept exactly."""
    # Defaults through the state, not value=: loading a recipe sets these keys too.
    defaults = {"canvas_width": DEFAULT_CUSTOM, "canvas_height": DEFAULT_CUSTOM, "seam": OutpaintParams.seam}
    for name, value in (defaults | {"keep_unmasked": True}).items():
        st.session_state.setdefault(f"{prefix}.{name}", value)
    choice = st.selectbox(
        "Format",
        [*CHANNEL_PRESETS, *ASPECTS, CUSTOM],
        format_func=_format_label,
        key=f"{prefix}.format",
        help="The source keeps its size; the canvas grows around it to the format, and the model paints the rest.",
    )
    width = height = 0
    if choice == CUSTOM:
        width, height = (
            column.number_input(
                f"{side.title()} (px)",
                min_value=SIZE_MULTIPLE,
                max_value=MAX_CANVAS_SIDE,
                key=f"{prefix}.canvas_{side}",
            )
            for column, side in zip(st.columns(2), ("width", "height"), strict=True)
        )
    placement = Placement(
        st.segmented_control(
            "Source placed",
            [p.value for p in Placement],
            format_func=str.title,
            default=Placement.centre.value,
            key=f"{prefix}.placement",
        )
        or Placement.centre.value
    )
    if choice in CHANNEL_PRESETS:
        fill = CHANNEL_PRESETS[choice].fill
    else:
        fill = Fill(
            st.radio(
                "New area starts as",
                [f.value for f in Fill],
                format_func=lambda f: Fill(f).label,
                horizontal=True,
                key=f"{prefix}.fill",
            )
        )
    with st.expander("Seam"):
        seam = st.slider(
            "Seam (px)",
            **limits("seam"),
            key=f"{prefix}.seam",
            help="How far the painted area reaches into the source's edge, fading out, so no hard line shows.",
        )
        keep = st.toggle(
            "Keep the source's pixels exactly",
            key=f"{prefix}.keep_unmasked",
            help="Inside the seam the result is the source, byte for byte.",
        )
    aspect = CHANNEL_PRESETS[choice].aspect if choice in CHANNEL_PRESETS else choice
    expand = OutpaintParams(
        aspect=aspect, width=int(width), height=int(height), placement=placement, fill=fill, seam=int(seam)
    )
    return expand, InpaintParams(mask_blur=0, keep_unmasked=keep)


def canvas_preview(image: Image.Image, expand: OutpaintParams) -> OutpaintPlan | None:
    """Show the canvas the source expands to, the painted area tinted; None (with the reason) if it cannot."""
    try:
        plan = plan_outpaint(image.width, image.height, expand)
    except PipelineInputError as exc:
        st.error(plain(str(exc)))
        return None
    small = _scaled(plan, min(1.0, PREVIEW_SIDE / max(plan.canvas)))
    left, top, right, bottom = small.box
    canvas = outpaint_canvas(image.resize((right - left, bottom - top)), small, expand.fill)
    tint = outpaint_mask(small).point(lambda value: value // 3)
    shown = Image.composite(Image.new("RGB", small.canvas, NEW_AREA_TINT), canvas, tint)
    width, height = plan.canvas
    st.image(shown, caption=f"{width}×{height} · the tinted area is painted by the model")
    return plan


def _scaled(plan: OutpaintPlan, scale: float) -> OutpaintPlan:
    """`plan` at `scale`, for the preview (the source's box rounded, the canvas holding it)."""
    left, top, right, bottom = (round(side * scale) for side in plan.box)
    right, bottom = max(right, left + 1), max(bottom, top + 1)
    canvas = max(round(plan.canvas[0] * scale), right), max(round(plan.canvas[1] * scale), bottom)
    return OutpaintPlan(canvas, (left, top, right, bottom), max(1, round(plan.seam * scale)) if plan.seam else 0)

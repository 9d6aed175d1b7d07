"""Outpainting ("expand") geometry: the canvas a format gives a source, where the source sits on it, the mask of
the area to paint (with a soft seam into the source) and what that area starts as. The named channel presets.

PIL and numpy only, no torch, so the web app shows the canvas and refuses an impossible format before storing
anything; pipelines.inpaint.run_outpaint paints the new area with the inpaint pipeline of the model's family.

The mask is 255 on the new area and fades from 255 at the source's edge to 0 `seam` px inside it (only on the
sides that border new area). Everything of the source further inside (`OutpaintPlan.kept_box`) is 0 in the mask:
with *keep unmasked pixels* it stays byte for byte.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from pipelines.errors import PipelineInputError
from pipelines.params import CUSTOM, MAX_CANVAS_SIDE, Fill, OutpaintParams, Placement

# The blur of the extended edges, as a fraction of the canvas's long side: enough to leave colour and light,
# no streaks of repeated edge pixels for the model to continue.
FILL_BLUR_FRACTION = 1 / 24
WHITE = (255, 255, 255)


@dataclass(frozen=True)
class ChannelPreset:
    """A channel's format: a name the user picks, the canvas aspect and what the new area starts as."""

    label: str
    aspect: str
    fill: Fill = Fill.blur


# The named formats, in the order the pages offer them.
CHANNEL_PRESETS: dict[str, ChannelPreset] = {
    "instagram-post": ChannelPreset("Instagram post (1:1)", "1:1"),
    "instagram-feed": ChannelPreset("Instagram feed (4:5)", "4:5"),
    "story": ChannelPreset("Instagram / TikTok story (9:16)", "9:16"),
    "web-banner": ChannelPreset("Web banner (16:9)", "16:9"),
    "marketplace": ChannelPreset("Marketplace listing (1:1 on white)", "1:1", Fill.white),
}


def preset_params(preset: str, *, placement: Placement = Placement.centre, seam: int = 8) -> OutpaintParams:
    """The outpaint settings of a channel preset (a PipelineInputError for an unknown one)."""
    if preset not in CHANNEL_PRESETS:
        raise PipelineInputError(f"Unknown channel preset {preset!r}: choose one of {', '.join(CHANNEL_PRESETS)}.")
    chosen = CHANNEL_PRESETS[preset]
    return OutpaintParams(aspect=chosen.aspect, placement=placement, fill=chosen.fill, seam=seam)


@dataclass(frozen=True)
class OutpaintPlan:
    """Where a source goes on its canvas."""

    canvas: tuple[int, int]  # (width, height) of the result
    box: tuple[int, int, int, int]  # the source on the canvas: left, top, right, bottom
    seam: int

    @property
    def borders(self) -> tuple[bool, bool, bool, bool]:
        """Whether new area lies beyond the source's left, top, right and bottom edge."""
        left, top, right, bottom = self.box
        width, height = self.canvas
        return left > 0, top > 0, right < width, bottom < height

    @property
    def kept_box(self) -> tuple[int, int, int, int]:
        """The part of the source (canvas coordinates) the mask leaves at 0: the box less the seam on each side that
        borders new area."""
        left, top, right, bottom = self.box
        on_left, on_top, on_right, on_bottom = self.borders
        seam = self.seam
        return left + seam * on_left, top + seam * on_top, right - seam * on_right, bottom - seam * on_bottom


def canvas_size(width: int, height: int, params: OutpaintParams) -> tuple[int, int]:
    """The canvas a width×height source expands to: the smallest of the aspect that holds it, or the custom size.
    Refuses a canvas smaller than the source on an axis, one the same as the source (nothing to paint) and one
    beyond MAX_CANVAS_SIDE."""
    params.check()
    if params.aspect == CUSTOM:
        canvas = params.width, params.height
        if params.width < width or params.height < height:
            short = " and ".join(
                f"{axis} {target} px is less than the source's {size}"
                for axis, target, size in (("width", params.width, width), ("height", params.height, height))
                if target < size
            )
            raise PipelineInputError(
                f"The target {params.width}×{params.height} is smaller than the {width}×{height} source: its {short}. "
                "Expanding only adds area: choose a larger size, or resize the source first."
            )
    else:
        ratio_w, ratio_h = (int(term) for term in params.aspect.split(":"))
        # The source's own side on the axis that already fits, the other rounded up: within a pixel of the aspect,
        # and no sliver of new area (which the seam would repaint into the source) on the tight axis.
        canvas = max(width, math.ceil(height * ratio_w / ratio_h)), max(height, math.ceil(width * ratio_h / ratio_w))
    if canvas == (width, height):
        raise PipelineInputError(
            f"The {width}×{height} source already has this format ({format_label(params)}): there is nothing to add."
        )
    if max(canvas) > MAX_CANVAS_SIDE:
        raise PipelineInputError(
            f"Expanding the {width}×{height} source to {format_label(params)} makes a {canvas[0]}×{canvas[1]} canvas; "
            f"the studio makes images up to {MAX_CANVAS_SIDE} px per side. Resize the source first."
        )
    return canvas


def format_label(params: OutpaintParams) -> str:
    return f"{params.width}×{params.height}" if params.aspect == CUSTOM else params.aspect


def plan_outpaint(width: int, height: int, params: OutpaintParams) -> OutpaintPlan:
    """The canvas of `params` for a width×height source, and the source's place on it."""
    canvas_width, canvas_height = canvas_size(width, height, params)
    free_x, free_y = canvas_width - width, canvas_height - height
    left = {Placement.left: 0, Placement.right: free_x}.get(params.placement, free_x // 2)
    top = {Placement.top: 0, Placement.bottom: free_y}.get(params.placement, free_y // 2)
    return OutpaintPlan((canvas_width, canvas_height), (left, top, left + width, top + height), params.seam)


def outpaint_mask(plan: OutpaintPlan) -> Image.Image:
    """An "L" image the canvas's size: 255 on the new area; inside the source it falls from 255 at a bordering edge to 0
    at `seam` px from it (linearly, in whole grey levels), so the repainted area overlaps the edge softly."""
    width, height = plan.canvas
    left, top, right, bottom = plan.box
    on_left, on_top, on_right, on_bottom = plan.borders
    xs, ys = np.arange(width)[None, :], np.arange(height)[:, None]
    # Each source pixel's distance (px) to the nearest edge that borders new area; far away where none does.
    far = np.full((height, width), plan.seam, dtype=np.int64)
    distance = far
    for borders, edge_distance in (
        (on_left, xs - left),
        (on_right, right - 1 - xs),
        (on_top, ys - top),
        (on_bottom, bottom - 1 - ys),
    ):
        if borders:
            distance = np.minimum(distance, np.broadcast_to(edge_distance, far.shape))
    values = 255 * np.clip(plan.seam - distance, 0, None) // max(plan.seam, 1)
    mask = np.full((height, width), 255, dtype=np.uint8)
    mask[top:bottom, left:right] = values[top:bottom, left:right]
    return Image.fromarray(mask, mode="L")


def outpaint_canvas(source: Image.Image, plan: OutpaintPlan, fill: Fill) -> Image.Image:
    """The source (RGB, unchanged) on its canvas, the new area filled: white, or the source's edge pixels extended
    outwards and blurred, so the denoiser starts from the colours and light it should continue."""
    source = source.convert("RGB")
    width, height = plan.canvas
    left, top, right, bottom = plan.box
    if fill is Fill.white:
        canvas = Image.new("RGB", plan.canvas, WHITE)
    else:
        pixels = np.asarray(source)
        padding = ((top, height - bottom), (left, width - right), (0, 0))
        extended = Image.fromarray(np.pad(pixels, padding, mode="edge"), mode="RGB")
        canvas = extended.filter(ImageFilter.GaussianBlur(max(1.0, max(plan.canvas) * FILL_BLUR_FRACTION)))
    canvas.paste(source, (left, top))
    return canvas

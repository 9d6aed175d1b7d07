"""Comparing two images (a source and its result, or two results): a split view, the same zoom on both,
a difference heatmap, and what differs between their recipes. Pillow and numpy only, computed on the
server, so the Compare page needs no script from a CDN and works offline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

DIVIDER = (255, 255, 255)
BACKGROUND = (128, 128, 128)  # around an image of another shape than the other (an expanded result and its source)
# Sides that differ by less than this share of the shape are the same shape (a result rounded to multiples of 8).
SAME_SHAPE_TOLERANCE = 0.02
MAX_ZOOM, ZOOM_STEP = 8.0, 0.5  # the Compare page's zoom: up to 8× on the same centre for both images
CENTRE_STEP = 0.05


def same_size(first: Image.Image, second: Image.Image) -> tuple[Image.Image, Image.Image]:
    """Both as RGB at one size, neither stretched: of the same shape, the second at the first's size (a source is
    usually larger than its result); of another shape (a photo expanded to 16:9), each fitted whole and centred on
    a grey canvas as wide as the wider and as tall as the taller at the first's scale."""
    first, second = first.convert("RGB"), second.convert("RGB")
    if second.size == first.size:
        return first, second
    first_shape, second_shape = first.width / first.height, second.width / second.height
    if abs(first_shape - second_shape) <= SAME_SHAPE_TOLERANCE * first_shape:
        return first, second.resize(first.size, Image.Resampling.LANCZOS)
    scale = first.height / second.height  # the second at the first's height
    canvas = (max(first.width, round(second.width * scale)), first.height)
    if second_shape < first_shape:  # the second is the narrower: match widths instead
        scale = first.width / second.width
        canvas = (first.width, max(first.height, round(second.height * scale)))
    return _fitted(first, canvas), _fitted(second, canvas)


def _fitted(image: Image.Image, canvas: tuple[int, int]) -> Image.Image:
    """`image` scaled to fit `canvas` whole (its shape kept), centred on the grey background."""
    scale = min(canvas[0] / image.width, canvas[1] / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    fitted = Image.new("RGB", canvas, BACKGROUND)
    fitted.paste(image.resize(size, Image.Resampling.LANCZOS), ((canvas[0] - size[0]) // 2, (canvas[1] - size[1]) // 2))
    return fitted


def split_view(first: Image.Image, second: Image.Image, split: float) -> Image.Image:
    """`first` left of the split (0–1 of the width), `second` right of it, with a thin divider."""
    first, second = same_size(first, second)
    x = round(max(0.0, min(1.0, split)) * first.width)
    view = second.copy()
    view.paste(first.crop((0, 0, x, first.height)), (0, 0))
    ImageDraw.Draw(view).line([(x, 0), (x, view.height)], fill=DIVIDER, width=max(1, view.width // 300))
    return view


def zoom_box(size: tuple[int, int], zoom: float, center: tuple[float, float]) -> tuple[int, int, int, int]:
    """The crop box that shows 1/zoom of the image around `center` (fractions of width and height)."""
    width, height = size
    zoom = max(1.0, zoom)
    crop_w, crop_h = max(1, round(width / zoom)), max(1, round(height / zoom))
    left = round(center[0] * width - crop_w / 2)
    top = round(center[1] * height - crop_h / 2)
    left, top = min(max(0, left), width - crop_w), min(max(0, top), height - crop_h)
    return left, top, left + crop_w, top + crop_h


def zoomed(image: Image.Image, zoom: float, center: tuple[float, float]) -> Image.Image:
    """The zoomed-in part, enlarged back to the image's size with nearest-neighbour (pixels stay visible)."""
    return image.crop(zoom_box(image.size, zoom, center)).resize(image.size, Image.Resampling.NEAREST)


@dataclass(frozen=True)
class Difference:
    heatmap: Image.Image  # black where equal, through red to yellow where they differ most
    mean: float  # mean absolute difference per channel, 0–255
    changed: float  # share of pixels that differ by more than 8 levels in some channel


def difference(first: Image.Image, second: Image.Image) -> Difference:
    first, second = same_size(first, second)
    delta = np.abs(np.asarray(first, dtype=np.int16) - np.asarray(second, dtype=np.int16))
    strength = delta.max(axis=2).astype(np.float32) / 255.0
    heat = np.stack([np.clip(strength * 2, 0, 1), np.clip(strength * 2 - 1, 0, 1), np.zeros_like(strength)], axis=2)
    return Difference(
        heatmap=Image.fromarray((heat * 255).astype(np.uint8), "RGB"),
        mean=round(float(delta.mean()), 2),
        changed=round(float((delta.max(axis=2) > 8).mean()), 4),
    )


def recipe_differences(first: dict, second: dict) -> list[tuple[str, object, object]]:
    """(key, first's value, second's value) for every recipe entry that differs; nested entries as a.b."""
    flat_first, flat_second = _flatten(first), _flatten(second)
    return [
        (key, flat_first.get(key), flat_second.get(key))
        for key in sorted(flat_first.keys() | flat_second.keys())
        if flat_first.get(key) != flat_second.get(key)
    ]


def _flatten(data: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat

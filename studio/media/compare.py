"""Comparing two images (a source and its result, or two results): a split view, the same zoom on both,
a difference heatmap, and what differs between their recipes. Pillow and numpy only, computed on the
server, so the Compare page needs no script from a CDN and works offline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

DIVIDER = (255, 255, 255)
MAX_ZOOM, ZOOM_STEP = 8.0, 0.5  # the Compare page's zoom: up to 8× on the same centre for both images
CENTRE_STEP = 0.05


def same_size(first: Image.Image, second: Image.Image) -> tuple[Image.Image, Image.Image]:
    """Both as RGB at the first's size (a source is usually larger than its result)."""
    first, second = first.convert("RGB"), second.convert("RGB")
    if second.size != first.size:
        second = second.resize(first.size, Image.Resampling.LANCZOS)
    return first, second


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

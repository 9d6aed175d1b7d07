"""Masks in a batch: `name.mask.png` beside `name.png` inpaints that image under its own mask.

A mask file is never an image to transform. Each is read like an inpainting page's uploaded mask (white or
opaque white = repaint), kept as a black-and-white "L" PNG in the staging store, and paired with the image of the
same name once the whole upload is read. When a batch carries any mask, every image needs a good one: an image
whose mask is missing, empty (all black) or of another size is listed with the reason and left out of the batch
(so nothing is charged for it), and so is a mask with no image.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import PurePosixPath

from pipelines.masks import mask_from_upload
from studio.media.staging import StagedImage, stage
from studio.media.storage import AssetStore
from studio.media.validation import UploadRejected, decode_mask_upload

MASK_MARK = ".mask"  # "shoe.mask.png" is the mask of "shoe.png" (or shoe.jpg, shoe.webp)


def is_mask_name(name: str) -> bool:
    return PurePosixPath(name).stem.lower().endswith(MASK_MARK)


def image_stem(name: str) -> str:
    """The name an image and its mask share: "shoe" for shoe.png and shoe.mask.png."""
    stem = PurePosixPath(name).stem
    return stem[: -len(MASK_MARK)] if stem.lower().endswith(MASK_MARK) else stem


@dataclass(frozen=True)
class BatchMask:
    """A mask file as read: staged, or why it cannot be used."""

    name: str
    width: int = 0
    height: int = 0
    staged: StagedImage | None = None
    problem: str | None = None  # why it cannot be used (then nothing is staged)


def read_mask(staging: AssetStore, name: str, data: bytes) -> BatchMask:
    """Decode a mask file (the safety checks of any upload), threshold it and stage it; or say why not."""
    try:
        decoded = decode_mask_upload(data)
    except UploadRejected as exc:
        return BatchMask(name, problem=f"could not be read ({exc})")
    mask = mask_from_upload(decoded, decoded.size)
    if mask.getbbox() is None:
        return BatchMask(name, mask.width, mask.height, problem="is empty (all black): it marks nothing to repaint")
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    staged = stage(staging, name=name, png=buffer.getvalue(), width=mask.width, height=mask.height)
    return BatchMask(name, mask.width, mask.height, staged=staged)


@dataclass(frozen=True)
class Paired:
    images: list[StagedImage]
    masks: list[StagedImage]  # masks[i] is images[i]'s
    rejected: list[tuple[str, str]]  # (name, why), images and masks


def pair_masks(images: list[StagedImage], masks: list[BatchMask]) -> Paired:
    """Each image with the mask of its name; what cannot be paired is listed with the reason."""
    by_stem: dict[str, BatchMask] = {}
    rejected: list[tuple[str, str]] = []
    for mask in masks:
        stem = image_stem(mask.name)
        if stem in by_stem:
            rejected.append((mask.name, f"a second mask for {stem}: {by_stem[stem].name} is used."))
        else:
            by_stem[stem] = mask
    kept, kept_masks, paired_stems = [], [], set()
    for image in images:
        stem = image_stem(image.name)
        mask = by_stem.get(stem)
        paired_stems.add(stem)
        if mask is None:
            why = f"skipped: no mask. This batch inpaints: add {stem}.mask.png beside it (white = repaint)."
        elif mask.problem is not None:
            why = f"skipped: its mask {mask.name} {mask.problem}."
        elif (mask.width, mask.height) != (image.width, image.height):
            why = (
                f"skipped: its mask {mask.name} is {mask.width}×{mask.height}, the image {image.width}×{image.height}; "
                "a batch mask must be the image's size."
            )
        else:
            kept.append(image)
            kept_masks.append(mask.staged)
            continue
        rejected.append((image.name, why))
    for stem, mask in by_stem.items():
        if stem not in paired_stems:
            rejected.append((mask.name, f"a mask with no image: there is no {stem}.png (or .jpg, .webp) beside it."))
    return Paired(kept, kept_masks, rejected)

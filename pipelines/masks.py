"""Inpainting masks: turning what a user painted or uploaded into a mask, and the A1111 mask options
(feather, only-masked crop, keeping unmasked pixels exactly). PIL and numpy only, no torch, so the web
app checks a mask before storing anything.

A mask is a PIL "L" image the size of the source: 255 = repaint, 0 = keep. A soft mask (per-pixel strength,
InpaintParams.soft) keeps its grey levels: a pixel of value v runs the last v/255 of the run's denoising steps.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from pipelines.errors import PipelineInputError
from pipelines.params import SIZE_MULTIPLE

# Grey levels above this count as painted, in uploads and in resized masks.
THRESHOLD = 127
# Canvas brush colours (CSS): 60 % opaque, so the image shows through and the opacity clears THRESHOLD.
PAINT_COLOUR = "rgba(255, 255, 255, 0.6)"
ERASE_COLOUR = "rgba(0, 0, 0, 0.6)"


def mask_from_upload(image: Image.Image, size: tuple[int, int], *, soft: bool = False) -> Image.Image:
    """An uploaded mask (white = repaint) resized to `size` with nearest-neighbour and thresholded; with `soft`,
    a grey mask (grey = repaint partly) resized smoothly, its grey levels kept.

    A mask with transparency counts only its opaque white as painted (partly opaque: partly painted, when
    soft), so a PNG exported with a transparent background works as well as a black-and-white one.
    """
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        grey = Image.composite(rgba.convert("L"), Image.new("L", rgba.size, 0), rgba.getchannel("A"))
    else:
        grey = image.convert("L")
    if soft:
        return grey.resize(size, Image.Resampling.BILINEAR)
    return _threshold(grey.resize(size, Image.Resampling.NEAREST))


def mask_from_canvas(rgba: np.ndarray, size: tuple[int, int], *, soft: bool = False) -> Image.Image:
    """A canvas drawing (H×W×4 RGBA, transparent where nothing was drawn) as a mask of `size`.

    The brush paints light strokes (PAINT_COLOUR) and the eraser dark ones (ERASE_COLOUR), both
    translucent so the image shows through; a pixel is masked where the drawing is opaque enough and
    light, so an eraser stroke over paint unmasks it and paint over an eraser stroke masks it again.
    With `soft`, the brush's opacity is the strength: a pixel's value is how opaque times how light the
    drawing is there (a 30 % brush paints 30 % strength, the eraser brings it down).
    """
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise PipelineInputError(f"The canvas should give an RGBA drawing, got an array of shape {rgba.shape}.")
    if soft:
        values = rgba[:, :, 3].astype(np.uint32) * rgba[:, :, 0] // 255
        return Image.fromarray(values.astype(np.uint8), mode="L").resize(size, Image.Resampling.BILINEAR)
    painted = (rgba[:, :, 3] > THRESHOLD) & (rgba[:, :, 0] > THRESHOLD)
    mask = Image.fromarray(np.where(painted, 255, 0).astype(np.uint8), mode="L")
    return mask.resize(size, Image.Resampling.NEAREST)


def _threshold(grey: Image.Image) -> Image.Image:
    return grey.point(lambda value: 255 if value > THRESHOLD else 0)


def check_mask(mask: Image.Image) -> None:
    """Refuse masks that would repaint nothing (an empty mask is almost always a mistake)."""
    if mask.getbbox() is None:
        raise PipelineInputError(
            "The mask is empty: paint over the area to repaint (white in an uploaded mask), then run again."
        )


def feathered(mask: Image.Image, blur: int) -> Image.Image:
    """The mask with its edge softened by a Gaussian blur of `blur` px (0: unchanged)."""
    return mask.filter(ImageFilter.GaussianBlur(blur)) if blur > 0 else mask


def masked_box(mask: Image.Image, padding: int) -> tuple[int, int, int, int]:
    """The painted area's bounding box grown by `padding` px on each side, within the image."""
    box = mask.getbbox()
    if box is None:
        raise PipelineInputError("The mask is empty: there is no masked area to crop to.")
    left, top, right, bottom = box
    return (
        max(0, left - padding),
        max(0, top - padding),
        min(mask.width, right + padding),
        min(mask.height, bottom + padding),
    )


def working_size(width: int, height: int, long_side: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """`width`×`height` scaled (up or down) so the long side is `long_side`, sides rounded down to `multiple`.

    Used for the only-masked crop, which is rendered at the full working resolution whatever its size.
    """
    longest = max(width, height)
    # Integer arithmetic, so the long side lands exactly on long_side (floats lose it: 1024 / 49 * 49 < 1024).
    return (
        max(multiple, width * long_side // longest // multiple * multiple),
        max(multiple, height * long_side // longest // multiple * multiple),
    )


def keep_unmasked(original: Image.Image, generated: Image.Image, soft_mask: Image.Image) -> Image.Image:
    """The generated image where the (feathered) mask is painted, the original elsewhere.

    Where `soft_mask` is 0 the original's pixels come back byte for byte: the model's VAE never
    round-trips them, so nothing outside the mask drifts.
    """
    if generated.size != original.size:
        generated = generated.resize(original.size, Image.Resampling.LANCZOS)
    return Image.composite(generated.convert("RGB"), original.convert("RGB"), soft_mask)


# --- soft inpainting (per-pixel strength) ----------------------------------------------------------------


def latent_strengths(mask: Image.Image, scale: int) -> np.ndarray:
    """A soft mask at latent resolution (each latent covers scale×scale px): the mean of its pixels, 0…255."""
    return np.asarray(mask.resize((mask.width // scale, mask.height // scale), Image.Resampling.BOX))


def soft_active(strengths: np.ndarray, step: int, total: int) -> np.ndarray:
    """Which latents denoise at step `step` (0-based) of a run of `total` steps: a value v starts once v/255 of
    the steps remain, so it runs the last floor(v × total / 255) steps (0: none, 255: every one). In integers,
    so a value on a step boundary never flips with float rounding."""
    return strengths.astype(np.int64) * total >= (total - step) * 255


def soft_pipeline_mask(mask: Image.Image, unet_channels: int) -> Image.Image:
    """The mask a diffusers inpaint pipeline gets in a soft run, where the per-step blend decides what changes:
    a 4-channel UNet's own blend is switched off (all white keeps every denoised latent), and a 9-channel
    inpainting UNet is shown every pixel that may change (any value above 0) as the area to paint."""
    if unet_channels == 4:
        return Image.new("L", mask.size, 255)
    return mask.point(lambda value: 255 if value > 0 else 0)

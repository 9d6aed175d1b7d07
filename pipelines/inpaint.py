"""Inpainting: repaint the masked part of a source image, with the A1111 options users expect.

- mask blur: the mask's edge is feathered by a Gaussian blur before the result is blended in;
- only masked: render just the mask's box (plus padding) at the full working resolution, paste it back;
- keep unmasked: blend the result into the original through the feathered mask, so every pixel
  outside it is the original's, byte for byte (the VAE never round-trips it).

The result always has the source's size. Works with ordinary SD checkpoints (the pipeline blends the
re-noised source outside the mask at every step) and with dedicated 9-channel inpainting checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from diffusers import StableDiffusionControlNetInpaintPipeline, StableDiffusionInpaintPipeline
from PIL import Image

from pipelines.cache import get_base_pipeline, get_controlnet, request_pipeline
from pipelines.errors import PipelineInputError
from pipelines.guides import make_guide
from pipelines.img2img import Img2ImgResult, check_control, check_source, denoise, describe_run
from pipelines.masks import check_mask, feathered, keep_unmasked, masked_box, working_size
from pipelines.params import ControlParams, Img2ImgParams, InpaintParams, output_size
from pipelines.registry import ModelRef


@dataclass(frozen=True)
class InpaintRequest:
    image: Image.Image  # the source
    mask: Image.Image  # "L", the source's size, 255 = repaint (pipelines.masks makes one)
    params: Img2ImgParams
    inpaint: InpaintParams = field(default_factory=InpaintParams)
    max_side: int = 1024  # the working resolution's long side cap (the whole image, or the masked crop)
    control: ControlParams | None = None


@dataclass(frozen=True)
class InpaintRegion:
    """What the pipeline renders: the whole source or the mask's padded box, at the working size."""

    source: Image.Image  # the whole source, RGB
    box: tuple[int, int, int, int]  # the rendered part of the source
    image: Image.Image  # that part at the working size
    mask: Image.Image  # its mask at the working size


def check_inpaint(request: InpaintRequest) -> None:
    request.params.check()
    request.inpaint.check()
    check_source(request.image)
    if request.mask.mode != "L" or request.mask.size != request.image.size:
        raise PipelineInputError(
            f"The mask must be a greyscale image the size of the source ({request.image.width}×"
            f"{request.image.height}); got {request.mask.mode} {request.mask.width}×{request.mask.height}."
        )
    check_mask(request.mask)


def inpaint_region(request: InpaintRequest) -> InpaintRegion:
    """The whole image (scaled down to fit max_side), or with "only masked" the mask's padded box scaled
    to max_side, so small areas get full detail."""
    source = request.image.convert("RGB")
    if request.inpaint.only_masked:
        box = masked_box(request.mask, request.inpaint.padding)
        region, region_mask = source.crop(box), request.mask.crop(box)
        width, height = working_size(region.width, region.height, request.max_side)
    else:
        box = (0, 0, source.width, source.height)
        region, region_mask = source, request.mask
        width, height = output_size(source.width, source.height, request.max_side)
    image = region.resize((width, height), Image.Resampling.LANCZOS) if region.size != (width, height) else region
    return InpaintRegion(source, box, image, region_mask.resize((width, height), Image.Resampling.NEAREST))


def paste_back(request: InpaintRequest, region: InpaintRegion, generated: Image.Image) -> Image.Image:
    """The result at the source's size: blended through the feathered mask (only-masked always blends,
    or the crop's rectangle would show), or as rendered."""
    source, options = region.source, request.inpaint
    soft_mask = feathered(request.mask, options.mask_blur)
    if options.only_masked:
        left, top, right, bottom = region.box
        canvas = source.copy()
        canvas.paste(generated.resize((right - left, bottom - top), Image.Resampling.LANCZOS), (left, top))
        return keep_unmasked(source, canvas, soft_mask)
    if options.keep_unmasked:
        return keep_unmasked(source, generated, soft_mask)
    return generated.resize(source.size, Image.Resampling.LANCZOS) if generated.size != source.size else generated


def run_inpaint(
    ref: ModelRef,
    request: InpaintRequest,
    *,
    control_ref: ModelRef | None = None,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Img2ImgResult:
    """Repaint the masked area; same contract as run_img2img (progress, cancel, errors, determinism)."""
    # 1. Check inputs
    params = request.params
    check_inpaint(request)
    check_control(request.control, control_ref)

    # 2. Choose the region to render and its working size
    region = inpaint_region(request)
    width, height = region.image.size

    # 3. Derive this request's pipeline from the cached base (shared weights, own scheduler)
    base = get_base_pipeline(ref)
    # The inpaint pipelines render at the UNet's default size unless told otherwise.
    call: dict[str, Any] = {
        "image": region.image,
        "mask_image": region.mask,
        "strength": params.strength,
        "height": height,
        "width": width,
    }
    guide = None
    if request.control is None:
        pipe = request_pipeline(base, StableDiffusionInpaintPipeline)
    else:
        pipe = request_pipeline(base, StableDiffusionControlNetInpaintPipeline, controlnet=get_controlnet(control_ref))
        guide = make_guide(region.image, request.control, seed=params.seed)
        call |= {"control_image": guide, "controlnet_conditioning_scale": request.control.conditioning_scale}

    # 4. Denoise
    generated, seconds = denoise(pipe, params, call, on_step=on_step, should_stop=should_stop)

    # 5. Put the result back at the source's size
    image = paste_back(request, region, generated)

    # 6. Report what ran
    return describe_run(pipe, image, denoising_steps=params.denoising_steps, seconds=seconds, guide=guide)

"""Inpainting: repaint the masked part of a source image, with the A1111 options users expect.

- mask blur: the mask's edge is feathered by a Gaussian blur before the result is blended in;
- only masked: render just the mask's box (plus padding) at the full working resolution, paste it back;
- keep unmasked: blend the result into the original through the feathered mask, so every pixel
  outside it is the original's, byte for byte (the VAE never round-trips it);
- soft (per-pixel strength, as Differential Diffusion and A1111's soft inpainting): the mask is grey and each
  pixel's value says how much it may change (SoftBlend).

The result always has the source's size. Works with ordinary checkpoints of every family (the pipeline blends
the re-noised source outside the mask at every step) and with dedicated 9-channel inpainting checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import retrieve_latents
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from pipelines.adapters import applied_adapters, ip_adapter_call
from pipelines.cache import get_base_pipeline, get_controlnet, in_use, request_pipeline
from pipelines.denoise import Img2ImgResult, denoise, describe_run, encode_image
from pipelines.errors import PipelineInputError
from pipelines.families import Family, get_family
from pipelines.guides import make_guide
from pipelines.img2img import check_control, check_source
from pipelines.ip_adapters import ImagePrompt, check_ip_adapter
from pipelines.loras import LoraRef, check_loras
from pipelines.masks import (
    check_mask,
    feathered,
    keep_unmasked,
    latent_strengths,
    masked_box,
    soft_active,
    soft_pipeline_mask,
    working_size,
)
from pipelines.outpaint import outpaint_canvas, outpaint_mask, plan_outpaint
from pipelines.params import MAX_SEED, ControlParams, Img2ImgParams, InpaintParams, OutpaintParams, Task
from pipelines.registry import ModelRef


@dataclass(frozen=True)
class InpaintRequest:
    image: Image.Image  # the source
    mask: Image.Image  # "L", the source's size, 255 = repaint (grey levels: per-pixel strength with inpaint.soft)
    params: Img2ImgParams
    inpaint: InpaintParams = field(default_factory=InpaintParams)
    max_side: int = 1024  # the working resolution's long side cap (the whole image, or the masked crop)
    control: ControlParams | None = None
    loras: tuple[LoraRef, ...] = ()  # applied on the model at their weights (pipelines.adapters)
    image_prompt: ImagePrompt | None = None  # a reference image, through an IP-Adapter at its scale


@dataclass(frozen=True)
class InpaintRegion:
    """What the pipeline renders: the whole source or the mask's padded box, at the working size."""

    source: Image.Image  # the whole source, RGB
    box: tuple[int, int, int, int]  # the rendered part of the source
    image: Image.Image  # that part at the working size
    mask: Image.Image  # its mask at the working size

    @property
    def source_size(self) -> tuple[int, int]:
        """The rendered part's size in source pixels (SDXL's micro-conditioning reads it)."""
        left, top, right, bottom = self.box
        return right - left, bottom - top


def check_inpaint(request: InpaintRequest, family: Family, ref: ModelRef) -> None:
    request.params.check()
    request.inpaint.check()
    family.check_params(request.params, model=ref.name)
    check_source(request.image, family, ref)
    if request.inpaint.soft and not family.soft_inpainting:
        raise PipelineInputError(
            f"Model '{ref.name}' ({family.label}) does not take soft (per-pixel strength) masks yet: paint the "
            "mask in full strength, or choose a model of another family."
        )
    if request.mask.mode != "L" or request.mask.size != request.image.size:
        raise PipelineInputError(
            f"The mask must be a greyscale image the size of the source ({request.image.width}×"
            f"{request.image.height}); got {request.mask.mode} {request.mask.width}×{request.mask.height}."
        )
    check_mask(request.mask)


def inpaint_region(request: InpaintRequest, family: Family) -> InpaintRegion:
    """The whole image (scaled down to fit max_side and the family's cap), or with "only masked" the mask's
    padded box scaled to that side, so small areas get full detail."""
    source = request.image.convert("RGB")
    if request.inpaint.only_masked:
        box = masked_box(request.mask, request.inpaint.padding)
        region, region_mask = source.crop(box), request.mask.crop(box)
        width, height = working_size(
            region.width, region.height, min(request.max_side, family.max_side), family.size_multiple
        )
    else:
        box = (0, 0, source.width, source.height)
        region, region_mask = source, request.mask
        width, height = family.output_size(source.width, source.height, request.max_side)
    image = region.resize((width, height), Image.Resampling.LANCZOS) if region.size != (width, height) else region
    return InpaintRegion(source, box, image, region_mask.resize((width, height), Image.Resampling.NEAREST))


def paste_back(request: InpaintRequest, region: InpaintRegion, generated: Image.Image) -> Image.Image:
    """The result at the source's size: blended through the feathered mask (only-masked always blends,
    or the crop's rectangle would show), or as rendered. A soft mask blends through its grey levels too."""
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


# --- soft inpainting -----------------------------------------------------------------------------


def source_latents(pipe: DiffusionPipeline, family: Family, encoded: Any) -> torch.Tensor:
    """The source's latents a soft run keeps where pixels may not change yet: the VAE encoding's mode (no random
    draw, so the run's own generator draws exactly what a plain run draws), scaled."""
    latents = retrieve_latents(encoded, sample_mode="argmax")
    return pipe.vae.config.scaling_factor * latents.to(family.denoiser(pipe).dtype)


def soft_noise(source: torch.Tensor, seed: int) -> torch.Tensor:
    """The noise the kept source is re-noised with: from a generator of its own (seed + 1), so it neither
    repeats nor shifts the draws of the run's generator."""
    generator = torch.Generator("cpu").manual_seed((seed + 1) % (MAX_SEED + 1))
    return randn_tensor(source.shape, generator=generator, device=source.device, dtype=source.dtype)


def soft_blend(
    scheduler: Any,
    latents: torch.Tensor,
    *,
    source: torch.Tensor,
    noise: torch.Tensor,
    strengths: np.ndarray,
    step: int,
    total: int,
    next_timestep: torch.Tensor | None,
) -> torch.Tensor:
    """After step `step` of `total`: latents that have not started yet (soft_active) go back to the source,
    noised to where the next step starts (clean after the last step), as the inpaint pipelines blend the
    outside of a binary mask. A pixel of value v thus denoises only the last v/255 of the steps: 255 every
    one (a plain repaint), 0 none (it ends on the source)."""
    active = torch.from_numpy(soft_active(strengths, step, total)).to(device=latents.device, dtype=latents.dtype)
    kept = source if next_timestep is None else scheduler.add_noise(source, noise, torch.tensor([next_timestep]))
    return (1 - active) * kept + active * latents


class SoftBlend:
    """The soft blend as a `denoise` latents hook for one run of an inpaint pipeline. Its source latents and noise
    are made at the first step, inside the run (and its lock: an upcast VAE is shared)."""

    def __init__(self, family: Family, image: Image.Image, mask: Image.Image, seed: int) -> None:
        self.family, self.image, self.mask, self.seed = family, image, mask, seed
        self.source: torch.Tensor | None = None
        self.noise: torch.Tensor | None = None
        self.strengths: np.ndarray | None = None

    def __call__(self, pipe: DiffusionPipeline, step: int, latents: torch.Tensor) -> torch.Tensor:
        if self.source is None:
            width, height = self.image.size
            pixels = pipe.image_processor.preprocess(self.image, height=height, width=width).to(dtype=torch.float32)
            self.source = source_latents(pipe, self.family, encode_image(pipe, self.family, pixels))
            self.noise = soft_noise(self.source, self.seed)
            self.strengths = latent_strengths(self.mask, pipe.vae_scale_factor)
        total = pipe.num_timesteps
        timesteps = pipe.scheduler.timesteps[-total:]  # the run's: a suffix of the schedule (get_timesteps)
        return soft_blend(
            pipe.scheduler,
            latents,
            source=self.source,
            noise=self.noise,
            strengths=self.strengths,
            step=step,
            total=total,
            next_timestep=timesteps[step + 1] if step + 1 < total else None,
        )


# --- the run -------------------------------------------------------------------------------------


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
    family = get_family(ref.family, model=ref.name)
    params = request.params
    check_inpaint(request, family, ref)
    check_control(request.control, control_ref, ref)
    check_loras(request.loras, family=ref.family, model=ref.name)
    if request.image_prompt is not None:
        check_ip_adapter(request.image_prompt.adapter, family=ref.family, model=ref.name)

    # 2. Choose the region to render and its working size
    region = inpaint_region(request, family)
    width, height = region.image.size

    # Its models stay loaded (pinned in the cache) from here to the end of the run.
    with in_use():
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
            checkpoint = family.is_inpainting_checkpoint(base)
            pipe = request_pipeline(base, family, Task.inpaint, inpainting_checkpoint=checkpoint)
        else:
            pipe = request_pipeline(base, family, Task.inpaint, controlnet=get_controlnet(control_ref))
            guide = make_guide(region.image, request.control, seed=params.seed)
            call |= {"control_image": guide, "controlnet_conditioning_scale": request.control.conditioning_scale}
        on_latents = None
        if request.inpaint.soft:
            call["mask_image"] = soft_pipeline_mask(region.mask, family.denoiser(pipe).config.in_channels)
            on_latents = SoftBlend(family, region.image, region.mask, params.seed)
        conditioning = family.conditioning(pipe, source_size=region.source_size, render_size=(width, height))

        # 4. Denoise
        steps = family.denoising_steps(params.steps, params.strength)
        generated, seconds = denoise(
            pipe,
            params,
            call | conditioning | ip_adapter_call(request.image_prompt),
            total=steps,
            on_step=on_step,
            should_stop=should_stop,
            on_latents=on_latents,
            # Under the run lock: the base's layers are shared.
            inside_lock=applied_adapters(base, pipe, request.loras, request.image_prompt),
            output_size=(width, height),
        )

    # 5. Put the result back at the source's size
    image = paste_back(request, region, generated)

    # 6. Report what ran
    return describe_run(
        pipe, image, denoising_steps=steps, seconds=seconds, guide=guide, recipe=family.recipe(conditioning)
    )


def outpaint_request(
    source: Image.Image,
    outpaint: OutpaintParams,
    params: Img2ImgParams,
    inpaint: InpaintParams,
    *,
    max_side: int = 1024,
    control: ControlParams | None = None,
) -> InpaintRequest:
    """The inpaint run that expands `source` to the format of `outpaint` (pipelines.outpaint): the filled canvas
    under the seam mask. Its result has the canvas's size; with keep_unmasked the source's pixels inside the seam
    are its own, byte for byte."""
    plan = plan_outpaint(source.width, source.height, outpaint)
    canvas = outpaint_canvas(source, plan, outpaint.fill)
    return InpaintRequest(canvas, outpaint_mask(plan), params, inpaint, max_side=max_side, control=control)

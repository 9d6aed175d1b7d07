"""The denoising core every task shares: one run of a diffusers pipeline with progress, cancel, a seeded CPU
generator and the process's run lock (`denoise`), what a run reports (`Img2ImgResult`, `describe_run`,
`library_versions`), and the VAE encode a family's pipelines do (`encode_image`)."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import diffusers
import torch
import transformers
from diffusers import DiffusionPipeline
from PIL import Image

from pipelines.cache import RUN_LOCK
from pipelines.errors import RunCancelled
from pipelines.families import Family
from pipelines.params import VAE_TILING_PIXELS, Img2ImgParams

# on_latents(pipe, step_index, latents) → latents: a change to the latents after each step (soft inpainting)
LatentsHook = Callable[[DiffusionPipeline, int, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Img2ImgResult:
    """What a run of any task made, and what ran (for recipes and the UI)."""

    image: Image.Image
    width: int
    height: int
    denoising_steps: int  # the steps that actually ran (Family.denoising_steps; every step when upscaling)
    scheduler: str  # scheduler class name
    device: str
    dtype: str
    seconds: float  # time of the diffusion call itself (not model loading or waiting for the lock)
    guide: Image.Image | None = None  # the ControlNet guide it followed
    # What the recipe records about the model's family (Family.recipe): {"family": "sdxl", "target_size": …}.
    # Empty for upscales (upscalers belong to no family).
    recipe: dict[str, Any] = field(default_factory=dict)


def denoise(
    pipe: DiffusionPipeline,
    params: Img2ImgParams,
    call: dict[str, Any],
    *,
    total: int,
    on_step: Callable[[int, int], None] | None,
    should_stop: Callable[[], bool] | None,
    on_latents: LatentsHook | None = None,
    inside_lock: AbstractContextManager[None] | None = None,
    output_size: tuple[int, int] | None = None,
) -> tuple[Image.Image, float]:
    """Run `pipe` with the prompt, steps, guidance and seed of `params` plus the task's `call` arguments,
    one run at a time per process; returns the image and the seconds the call took.

    `total` is the number of denoising steps the run takes (for progress). The noise comes from a CPU
    generator seeded with params.seed, so the pixels do not depend on the device. `on_latents` may replace
    the latents after each step (before progress is reported); `inside_lock` is entered around the call, under
    the lock (Family.run_context). `output_size`: the size the VAE decodes; above VAE_TILING_PIXELS it tiles.
    """

    def after_step(step_index: int) -> None:
        if on_step is not None:
            on_step(step_index + 1, total)
        # Raising here (rather than setting pipe._interrupt) stops at once and skips the VAE decode.
        if should_stop is not None and should_stop():
            raise RunCancelled(f"Cancelled after step {step_index + 1} of {total}.")

    def on_step_end(_pipe: DiffusionPipeline, step_index: int, _timestep: int, kwargs: dict) -> dict:
        if on_latents is not None:
            kwargs["latents"] = on_latents(_pipe, step_index, kwargs["latents"])
        after_step(step_index)
        return kwargs

    def legacy_callback(step_index: int, _timestep: torch.Tensor, _latents: torch.Tensor) -> None:
        after_step(step_index)

    accepted = inspect.signature(pipe.__call__).parameters
    # FLUX.1 Fill takes no negative prompt (Family.check_params refuses one for a family that ignores it).
    negative = {"negative_prompt": params.negative_prompt or None} if "negative_prompt" in accepted else {}
    if "callback_on_step_end" in accepted:
        progress: dict[str, Any] = {"callback_on_step_end": on_step_end}
    else:
        # The upscale pipelines (diffusers 0.42) only call the older `callback(step, timestep, latents)`.
        progress = {"callback": legacy_callback, "callback_steps": 1}

    pixels = output_size[0] * output_size[1] if output_size is not None else 0
    with RUN_LOCK, inside_lock or nullcontext(), vae_tiling(pipe, pixels=pixels):
        # The caller may have given up while waiting for the lock.
        if should_stop is not None and should_stop():
            raise RunCancelled(f"Cancelled before step 1 of {total}.")
        started = time.perf_counter()
        arguments = {
            "prompt": params.prompt,
            **negative,
            "num_inference_steps": params.steps,
            "guidance_scale": params.guidance,
            "generator": torch.Generator("cpu").manual_seed(params.seed),
            "output_type": "pil",
            **progress,
        }
        # The task's arguments win: a family may take its guidance another way (Family.conditioning).
        output = pipe(**(arguments | call))
        return output.images[0], time.perf_counter() - started


def describe_run(
    pipe: DiffusionPipeline,
    image: Image.Image,
    *,
    denoising_steps: int,
    seconds: float,
    guide: Image.Image | None = None,
    recipe: dict[str, Any] | None = None,
) -> Img2ImgResult:
    """The result of a run of `pipe`, with what ran (for recipes and the UI)."""
    return Img2ImgResult(
        image=image,
        width=image.width,
        height=image.height,
        denoising_steps=denoising_steps,
        scheduler=type(pipe.scheduler).__name__,
        # Where it computed: an offloaded pipeline's own device is the CPU its weights rest on.
        device=pipe._execution_device.type,
        dtype=str(pipe.dtype).removeprefix("torch."),
        seconds=round(seconds, 3),
        guide=guide,
        recipe=recipe or {},
    )


def library_versions() -> dict[str, str]:
    """Versions that decide the pixels, for recipes."""
    return {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }


@contextmanager
def vae_tiling(pipe: DiffusionPipeline, *, pixels: int, images: int = 1) -> Iterator[bool]:
    """Run the block with the VAE tiled when an image has more than VAE_TILING_PIXELS `pixels`, and slicing a batch
    (one image at a time) when `images` of them together do; yields whether it tiles. The VAE is shared by every
    pipeline derived from the cached base: callers hold RUN_LOCK, and the previous settings come back after."""
    vae = getattr(pipe, "vae", None)
    tile = pixels > VAE_TILING_PIXELS and hasattr(vae, "use_tiling")
    split = images > 1 and pixels * images > VAE_TILING_PIXELS and hasattr(vae, "use_slicing")
    if not (tile or split):
        yield False
        return
    before = (vae.use_tiling, vae.use_slicing)
    vae.use_tiling, vae.use_slicing = before[0] or tile, before[1] or split
    try:
        yield tile
    finally:
        vae.use_tiling, vae.use_slicing = before


@contextmanager
def vae_in_float32(pipe: DiffusionPipeline, family: Family) -> Iterator[torch.dtype]:
    """Run the block with the VAE in float32 if the family's pipelines would upcast it (Family.vae_upcast: SDXL's
    VAE overflows in float16); yields the dtype the VAE runs in. Callers hold RUN_LOCK (the VAE is shared)."""
    vae = pipe.vae
    if not (family.vae_upcast and vae.dtype == torch.float16 and vae.config.force_upcast):
        yield vae.dtype
        return
    vae.to(dtype=torch.float32)
    try:
        yield torch.float32
    finally:
        vae.to(dtype=torch.float16)


def encode_image(pipe: DiffusionPipeline, family: Family, pixels: torch.Tensor) -> Any:
    """The VAE's encoding of `pixels` (preprocessed, float32) as the family's pipelines encode (in float32 where
    they upcast the VAE): diffusers' retrieve_latents samples it with a generator, or takes its mode."""
    with vae_in_float32(pipe, family) as dtype:
        return pipe.vae.encode(pixels.to(device=pipe._execution_device, dtype=dtype))

"""Run one img2img request: source image + prompt + params in, result image and what ran out."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import diffusers
import torch
import transformers
from diffusers import StableDiffusionImg2ImgPipeline
from PIL import Image

from pipelines.cache import RUN_LOCK, get_base_pipeline, request_pipeline
from pipelines.errors import PipelineInputError, RunCancelled
from pipelines.params import SIZE_MULTIPLE, Img2ImgParams, output_size
from pipelines.registry import ModelRef


@dataclass(frozen=True)
class Img2ImgRequest:
    image: Image.Image  # the source; converted to RGB
    params: Img2ImgParams
    max_side: int = 1024  # cap on the output's long side (see output_size)


@dataclass(frozen=True)
class Img2ImgResult:
    image: Image.Image
    width: int
    height: int
    denoising_steps: int  # int(steps × strength): the steps that actually ran
    scheduler: str  # scheduler class name
    device: str
    dtype: str
    seconds: float  # time of the diffusion call itself (not model loading or waiting for the lock)


def run_img2img(
    ref: ModelRef,
    request: Img2ImgRequest,
    *,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Img2ImgResult:
    """Transform the source image; on_step(step, total) after each denoising step, should_stop() to cancel.

    Same model, source, params and seed give the same pixels on any device (the noise comes from a
    CPU generator). Raises PipelineInputError for bad params, ModelUnavailableError when the model
    cannot be loaded, and RunCancelled when should_stop() turned true during the run.
    """
    # 1. Check inputs
    params = request.params
    params.check()
    source = request.image
    if source.width < SIZE_MULTIPLE or source.height < SIZE_MULTIPLE:
        raise PipelineInputError(
            f"The source image is {source.width}×{source.height} px; it needs at least {SIZE_MULTIPLE} px per side."
        )
    width, height = output_size(source.width, source.height, request.max_side)
    denoising_steps = params.denoising_steps

    # 2. Get the cached base pipeline and derive this request's own pipeline: shared weights, but its
    # own scheduler, since schedulers keep per-run state and requests may run in several threads.
    base = get_base_pipeline(ref)
    pipe = request_pipeline(base)

    # 3. Resize the source to the output size (img2img keeps the init image's size)
    if source.mode != "RGB":
        source = source.convert("RGB")
    if source.size != (width, height):
        source = source.resize((width, height), Image.Resampling.LANCZOS)

    # 4. Seed a CPU generator: the initial noise, hence the pixels, do not depend on the device
    generator = torch.Generator("cpu").manual_seed(params.seed)

    # 5. Denoise, one run at a time per process
    def on_step_end(
        pipe: StableDiffusionImg2ImgPipeline, step_index: int, timestep: int, callback_kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        if on_step is not None:
            on_step(step_index + 1, denoising_steps)
        # Raising here (rather than setting pipe._interrupt) stops at once and skips the VAE decode.
        if should_stop is not None and should_stop():
            raise RunCancelled(f"Cancelled after step {step_index + 1} of {denoising_steps}.")
        return callback_kwargs

    with RUN_LOCK:
        # The caller may have given up while waiting for the lock.
        if should_stop is not None and should_stop():
            raise RunCancelled(f"Cancelled before step 1 of {denoising_steps}.")
        started = time.perf_counter()
        output = pipe(
            prompt=params.prompt,
            negative_prompt=params.negative_prompt or None,
            image=source,
            strength=params.strength,
            num_inference_steps=params.steps,
            guidance_scale=params.guidance,
            generator=generator,
            output_type="pil",
            callback_on_step_end=on_step_end,
        )
        seconds = time.perf_counter() - started

    # 6. Report what ran
    image = output.images[0]
    return Img2ImgResult(
        image=image,
        width=image.width,
        height=image.height,
        denoising_steps=denoising_steps,
        scheduler=type(pipe.scheduler).__name__,
        device=base.device.type,
        dtype=str(base.dtype).removeprefix("torch."),
        seconds=round(seconds, 3),
    )


def library_versions() -> dict[str, str]:
    """Versions that decide the pixels, for recipes."""
    return {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }

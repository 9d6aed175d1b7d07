"""Run one img2img request: source image + prompt + params (+ ControlNet guidance) in, result image and
what ran out. `denoise` is the call every Stable Diffusion task shares (progress, cancel, seed, lock)."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import diffusers
import torch
import transformers
from diffusers import DiffusionPipeline, StableDiffusionControlNetImg2ImgPipeline, StableDiffusionImg2ImgPipeline
from PIL import Image

from pipelines.cache import RUN_LOCK, get_base_pipeline, get_controlnet, request_pipeline
from pipelines.errors import PipelineInputError, RunCancelled
from pipelines.guides import make_guide
from pipelines.params import SIZE_MULTIPLE, ControlParams, Img2ImgParams, output_size
from pipelines.registry import ModelRef


@dataclass(frozen=True)
class Img2ImgRequest:
    image: Image.Image  # the source; converted to RGB
    params: Img2ImgParams
    max_side: int = 1024  # cap on the output's long side (see output_size)
    control: ControlParams | None = None  # structure guidance through a ControlNet


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
    guide: Image.Image | None = None  # the ControlNet guide it followed


def check_source(image: Image.Image) -> None:
    if image.width < SIZE_MULTIPLE or image.height < SIZE_MULTIPLE:
        raise PipelineInputError(
            f"The source image is {image.width}×{image.height} px; it needs at least {SIZE_MULTIPLE} px per side."
        )


def check_control(control: ControlParams | None, control_ref: ModelRef | None) -> None:
    if (control is None) != (control_ref is None):
        raise PipelineInputError("ControlNet settings and a ControlNet model go together.")
    if control is not None:
        control.check()


def run_img2img(
    ref: ModelRef,
    request: Img2ImgRequest,
    *,
    control_ref: ModelRef | None = None,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Img2ImgResult:
    """Transform the source image; on_step(step, total) after each denoising step, should_stop() to cancel.

    With `request.control` (and the ControlNet `control_ref`), a guide made from the source steers
    the structure. Same model, source, params and seed give the same pixels on any device (the noise
    comes from a CPU generator). Raises PipelineInputError for bad params, ModelUnavailableError when
    a model cannot be loaded, and RunCancelled when should_stop() turned true during the run.
    """
    # 1. Check inputs
    params = request.params
    params.check()
    check_control(request.control, control_ref)
    source = request.image
    check_source(source)
    width, height = output_size(source.width, source.height, request.max_side)

    # 2. Resize the source to the output size (img2img keeps the init image's size)
    if source.mode != "RGB":
        source = source.convert("RGB")
    if source.size != (width, height):
        source = source.resize((width, height), Image.Resampling.LANCZOS)

    # 3. Get the cached base pipeline and derive this request's own pipeline: shared weights, but its
    # own scheduler, since schedulers keep per-run state and requests may run in several threads.
    base = get_base_pipeline(ref)
    call: dict[str, Any] = {"image": source, "strength": params.strength}
    guide = None
    if request.control is None:
        pipe = request_pipeline(base, StableDiffusionImg2ImgPipeline)
    else:
        pipe = request_pipeline(base, StableDiffusionControlNetImg2ImgPipeline, controlnet=get_controlnet(control_ref))
        guide = make_guide(source, request.control, seed=params.seed)
        call |= {
            "control_image": guide,
            "controlnet_conditioning_scale": request.control.conditioning_scale,
            "height": height,
            "width": width,
        }

    # 4. Denoise
    image, seconds = denoise(pipe, params, call, on_step=on_step, should_stop=should_stop)

    # 5. Report what ran
    return describe_run(pipe, image, denoising_steps=params.denoising_steps, seconds=seconds, guide=guide)


def denoise(
    pipe: DiffusionPipeline,
    params: Img2ImgParams,
    call: dict[str, Any],
    *,
    total: int | None = None,
    on_step: Callable[[int, int], None] | None,
    should_stop: Callable[[], bool] | None,
) -> tuple[Image.Image, float]:
    """Run `pipe` with the prompt, steps, guidance and seed of `params` plus the task's `call` arguments,
    one run at a time per process; returns the image and the seconds the call took.

    `total` is the number of denoising steps the run takes (default: int(steps × strength)). The noise
    comes from a CPU generator seeded with params.seed, so the pixels do not depend on the device.
    """
    total = params.denoising_steps if total is None else total

    def after_step(step_index: int) -> None:
        if on_step is not None:
            on_step(step_index + 1, total)
        # Raising here (rather than setting pipe._interrupt) stops at once and skips the VAE decode.
        if should_stop is not None and should_stop():
            raise RunCancelled(f"Cancelled after step {step_index + 1} of {total}.")

    def on_step_end(_pipe: DiffusionPipeline, step_index: int, _timestep: int, kwargs: dict) -> dict:
        after_step(step_index)
        return kwargs

    def legacy_callback(step_index: int, _timestep: torch.Tensor, _latents: torch.Tensor) -> None:
        after_step(step_index)

    if "callback_on_step_end" in inspect.signature(pipe.__call__).parameters:
        progress: dict[str, Any] = {"callback_on_step_end": on_step_end}
    else:
        # The upscale pipelines (diffusers 0.42) only call the older `callback(step, timestep, latents)`.
        progress = {"callback": legacy_callback, "callback_steps": 1}

    with RUN_LOCK:
        # The caller may have given up while waiting for the lock.
        if should_stop is not None and should_stop():
            raise RunCancelled(f"Cancelled before step 1 of {total}.")
        started = time.perf_counter()
        output = pipe(
            prompt=params.prompt,
            negative_prompt=params.negative_prompt or None,
            num_inference_steps=params.steps,
            guidance_scale=params.guidance,
            generator=torch.Generator("cpu").manual_seed(params.seed),
            output_type="pil",
            **progress,
            **call,
        )
        return output.images[0], time.perf_counter() - started


def describe_run(
    pipe: DiffusionPipeline,
    image: Image.Image,
    *,
    denoising_steps: int,
    seconds: float,
    guide: Image.Image | None = None,
) -> Img2ImgResult:
    """The result of a run of `pipe`, with what ran (for recipes and the UI)."""
    return Img2ImgResult(
        image=image,
        width=image.width,
        height=image.height,
        denoising_steps=denoising_steps,
        scheduler=type(pipe.scheduler).__name__,
        device=pipe.device.type,
        dtype=str(pipe.dtype).removeprefix("torch."),
        seconds=round(seconds, 3),
        guide=guide,
    )


def library_versions() -> dict[str, str]:
    """Versions that decide the pixels, for recipes."""
    return {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }

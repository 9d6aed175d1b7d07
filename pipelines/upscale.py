"""Upscale a picture 2× or 4× with Stable Diffusion's upscalers: the latent upscaler
(stabilityai/sd-x2-latent-upscaler) and the 4× upscaler (stabilityai/stable-diffusion-x4-upscaler), or
their tiny offline stand-ins "preview-upscaler-x2" and "preview-upscaler-x4".

Same contract as run_img2img: progress, cancel, one run at a time, pixels fixed by model + source + params.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from diffusers import StableDiffusionLatentUpscalePipeline, StableDiffusionUpscalePipeline
from PIL import Image

from pipelines.cache import get_pipeline, in_use
from pipelines.denoise import Img2ImgResult, denoise, describe_run
from pipelines.errors import PipelineInputError
from pipelines.params import (
    MIN_SOURCE_SIDE,
    UPSCALE_FACTORS,
    Img2ImgParams,
    check_limit,
    check_upscale_size,
    upscale_source_size,
)
from pipelines.registry import ModelRef


@dataclass(frozen=True)
class UpscaleRequest:
    image: Image.Image  # the source; converted to RGB
    params: Img2ImgParams  # prompt (may be empty), negative prompt, steps, guidance, seed; strength is not used
    factor: int  # 2 or 4
    noise_level: int = 20  # 4× only: noise added to the source before upscaling (more = more invented detail)


def run_upscale(
    ref: ModelRef,
    request: UpscaleRequest,
    *,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Img2ImgResult:
    """Upscale the source `request.factor`×; on_step(step, total) after each denoising step, should_stop() to cancel.

    The result is exactly factor × the source size when the source's sides are multiples of 32 px (2×) or
    8 px (4×); otherwise the source is first resized down to the nearest such sides (at most 31 or 7 px
    less), and the result is factor × that. Every step of params.steps runs (there is no strength).
    Raises PipelineInputError for bad params or sizes, ModelUnavailableError when the model cannot be
    loaded, and RunCancelled when should_stop() turned true during the run.
    """
    # 1. Check inputs (all before loading a model)
    params, factor = request.params, request.factor
    params.check(uses_strength=False, needs_prompt=False)
    if factor not in UPSCALE_FACTORS:
        raise PipelineInputError(f"Upscaling is 2× or 4×, got {factor}×.")
    check_limit("noise_level", request.noise_level, "Noise level")
    source = request.image
    check_upscale_size(source.width, source.height, factor)
    if min(source.size) < MIN_SOURCE_SIDE[factor]:
        raise PipelineInputError(
            f"Upscale {factor}× needs a source of at least {MIN_SOURCE_SIDE[factor]} px per side; "
            f"this one is {source.width}×{source.height}."
        )
    width, height = upscale_source_size(source.width, source.height, factor)

    # 2. Convert to RGB and resize to sides the upscaler takes
    if source.mode != "RGB":
        source = source.convert("RGB")
    if source.size != (width, height):
        source = source.resize((width, height), Image.Resampling.LANCZOS)

    # Its model stays loaded (pinned in the cache) from here to the end of the run.
    with in_use():
        # 3. Get the cached upscaler. It is run directly, not derived per request like a family's base: no
        # other task shares it, and RUN_LOCK keeps its scheduler to one run at a time.
        call: dict[str, Any] = {"image": source}
        if factor == 2:
            pipe = get_pipeline(ref, StableDiffusionLatentUpscalePipeline)
        else:
            # No NSFW filter, as for SD bases (a checkpoint that ships one would otherwise load and run it).
            pipe = get_pipeline(ref, StableDiffusionUpscalePipeline, safety_checker=None)
            call["noise_level"] = request.noise_level

        # 4. Denoise: every step runs (an upscale has no strength)
        image, seconds = denoise(
            pipe,
            params,
            call,
            total=params.steps,
            on_step=on_step,
            should_stop=should_stop,
            output_size=(width * factor, height * factor),
        )

    # 5. Report what ran
    return describe_run(pipe, image, denoising_steps=params.steps, seconds=seconds)

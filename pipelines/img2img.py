"""Run one img2img request: source image + prompt + params (+ ControlNet guidance) in, result image and
what ran out, on the pipelines of the model's family (pipelines.families)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from diffusers import DiffusionPipeline
from PIL import Image

from pipelines.adapters import applied_adapters, ip_adapter_call
from pipelines.cache import get_base_pipeline, get_controlnet, in_use, request_pipeline
from pipelines.denoise import Img2ImgResult, denoise, describe_run
from pipelines.denoise import library_versions as library_versions  # re-exported: studio.jobs reads it from here
from pipelines.errors import PipelineInputError
from pipelines.families import Family, get_family
from pipelines.footprint import measuring
from pipelines.guides import make_guide
from pipelines.ip_adapters import ImagePrompt, check_ip_adapter
from pipelines.loras import LoraRef, check_loras
from pipelines.params import ControlParams, Img2ImgParams, Task
from pipelines.registry import ModelRef


@dataclass(frozen=True)
class Img2ImgRequest:
    image: Image.Image  # the source; converted to RGB
    params: Img2ImgParams
    max_side: int = 1024  # cap on the output's long side (with the family's own cap: Family.output_size)
    control: ControlParams | None = None  # structure guidance through a ControlNet
    loras: tuple[LoraRef, ...] = ()  # applied on the model at their weights (pipelines.adapters)
    image_prompt: ImagePrompt | None = None  # a reference image, through an IP-Adapter at its scale


def check_source(image: Image.Image, family: Family, ref: ModelRef) -> None:
    """Refuse a source smaller than the model's family takes (the message names the model and the limit)."""
    family.check_source(image.width, image.height, model=ref.name)


def check_control(control: ControlParams | None, control_ref: ModelRef | None, ref: ModelRef) -> None:
    if (control is None) != (control_ref is None):
        raise PipelineInputError("ControlNet settings and a ControlNet model go together.")
    if control is None:
        return
    control.check()
    if control_ref.family != ref.family:
        family, controlnet_family = get_family(ref.family), get_family(control_ref.family, model=control_ref.name)
        raise PipelineInputError(
            f"ControlNet '{control_ref.name}' steers {controlnet_family.label} ({controlnet_family.name}) models; "
            f"model '{ref.name}' is {family.label} ({family.name}). Choose a ControlNet of its family."
        )


def check_img2img_model(base: DiffusionPipeline, family: Family, ref: ModelRef) -> None:
    """Refuse an inpainting checkpoint for image to image: its denoiser wants a mask and a masked source too."""
    if family.is_inpainting_checkpoint(base):
        raise PipelineInputError(
            f"Model '{ref.name}' is an inpainting model (it takes the mask and the masked source as input): it can "
            "inpaint, not transform a whole image."
        )


def run_img2img(
    ref: ModelRef,
    request: Img2ImgRequest,
    *,
    control_ref: ModelRef | None = None,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Img2ImgResult:
    """Transform the source image; on_step(step, total) after each denoising step, should_stop() to cancel.

    With `request.control` (and the ControlNet `control_ref`, of the model's family), a guide made from the
    source steers the structure. Same model, source, params and seed give the same pixels on any device (the
    noise comes from a CPU generator). Raises PipelineInputError for bad params (a source below the family's
    minimum, a ControlNet or LoRA of another family, a LoRA file whose hash changed, …), ModelUnavailableError
    when a model cannot be loaded, and RunCancelled when should_stop() turned true during the run.
    """
    # 1. Check inputs
    family = get_family(ref.family, model=ref.name)
    params = request.params
    params.check()
    family.check_params(params, model=ref.name)
    check_control(request.control, control_ref, ref)
    check_loras(request.loras, family=ref.family, model=ref.name)
    if request.image_prompt is not None:
        check_ip_adapter(request.image_prompt.adapter, family=ref.family, model=ref.name)
    source = request.image
    check_source(source, family, ref)
    width, height = family.output_size(source.width, source.height, request.max_side)

    # 2. Resize the source to the output size (img2img keeps the init image's size)
    if source.mode != "RGB":
        source = source.convert("RGB")
    if source.size != (width, height):
        source = source.resize((width, height), Image.Resampling.LANCZOS)

    # Its models stay loaded (pinned in the cache) from here to the end of the run.
    with in_use():
        # 3. Get the cached base pipeline and derive this request's own pipeline: shared weights, but its
        # own scheduler, since schedulers keep per-run state and requests may run in several threads.
        base = get_base_pipeline(ref)
        check_img2img_model(base, family, ref)
        call: dict[str, Any] = {"image": source, "strength": params.strength}
        guide = None
        if request.control is None:
            pipe = request_pipeline(base, family, Task.img2img)
        else:
            pipe = request_pipeline(base, family, Task.img2img, controlnet=get_controlnet(control_ref))
            guide = make_guide(source, request.control, seed=params.seed)
            call |= {
                "control_image": guide,
                "controlnet_conditioning_scale": request.control.conditioning_scale,
                "height": height,
                "width": width,
            }
        conditioning = family.conditioning(pipe, source_size=request.image.size, render_size=(width, height))

        # 4. Denoise
        steps = family.denoising_steps(params.steps, params.strength)
        call |= ip_adapter_call(request.image_prompt)
        # Under the run lock: the base's layers are shared. A run as a batch runs it (no ControlNet, no LoRA, no
        # reference image) is measured: its footprint sizes batches on a GPU (pipelines.footprint).
        plain = request.control is None and not request.loras and request.image_prompt is None
        inside_lock = _entered(
            applied_adapters(base, pipe, request.loras, request.image_prompt),
            measuring(ref.name, pixels=width * height, images=1) if plain else nullcontext(),
        )
        image, seconds = denoise(
            pipe,
            params,
            call | conditioning,
            total=steps,
            on_step=on_step,
            should_stop=should_stop,
            inside_lock=inside_lock,
            output_size=(width, height),
        )

    # 5. Report what ran
    return describe_run(
        pipe, image, denoising_steps=steps, seconds=seconds, guide=guide, recipe=family.recipe(conditioning)
    )


@contextmanager
def _entered(*managers: AbstractContextManager[None]) -> Iterator[None]:
    """Enter each of `managers` in order for the block (exited in reverse)."""
    with ExitStack() as stack:
        for manager in managers:
            stack.enter_context(manager)
        yield

"""Run one instruction edit: a source image and an instruction ("put the bottle on white marble, keep the label")
in, the edited image and what ran out, on an instruction editor's family (FLUX.1 Kontext, Qwen-Image-Edit).
There is no strength: the editor sees the whole source and runs every step. With a mask, only the masked area
changes (the family's masked editor; pixels outside the feathered mask come back byte for byte). Qwen-Image-Edit
Plus also reads reference images the instruction names."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from diffusers import DiffusionPipeline
from PIL import Image

from pipelines.adapters import applied_loras
from pipelines.cache import get_base_pipeline, in_use, request_pipeline
from pipelines.denoise import Img2ImgResult, denoise, describe_run
from pipelines.errors import PipelineInputError
from pipelines.families import Family, get_family
from pipelines.img2img import check_source
from pipelines.loras import LoraRef, check_loras
from pipelines.masks import check_mask, feathered, keep_unmasked
from pipelines.params import Img2ImgParams, InpaintParams, Task
from pipelines.registry import ModelRef

# An edit runs every step of its schedule; its params carry this strength so recipes and prices read one value.
EDIT_STRENGTH = 1.0


@dataclass(frozen=True)
class EditRequest:
    image: Image.Image  # the source
    params: Img2ImgParams  # the prompt is the instruction; strength is not used (EDIT_STRENGTH)
    max_side: int = 1024  # cap on the output's long side (with the family's pixel budget: Family.output_size)
    mask: Image.Image | None = None  # "L", the source's size, 255 = may change; None: the whole image
    # More images the instruction refers to ("Picture 2", …: a background or style reference), for families that
    # take them (Family.max_images)
    references: tuple[Image.Image, ...] = ()
    inpaint: InpaintParams = field(default_factory=InpaintParams)  # mask_blur and keep_unmasked apply
    loras: tuple[LoraRef, ...] = ()  # applied on the editor's transformer at their weights (pipelines.adapters)


def check_edit(request: EditRequest, family: Family, ref: ModelRef) -> None:
    """Refuse what the editor cannot run, naming the model: no instruction, a model that does not edit, a mask
    for an editor without a masked pipeline, a source below the family's minimum."""
    params = request.params
    params.check(uses_strength=False)
    family.check_params(params, model=ref.name)
    if family.pipelines.edit is None:
        raise PipelineInputError(
            f"Model '{ref.name}' ({family.label}) is not an instruction editor: transform or inpaint with it instead."
        )
    if len(request.references) > family.max_images - 1:
        takes = "no reference images" if family.max_images == 1 else f"up to {family.max_images - 1} reference images"
        raise PipelineInputError(
            f"Model '{ref.name}' ({family.label}) takes {takes}; this edit has {len(request.references)}."
        )
    for reference in request.references:
        family.check_source(reference.width, reference.height, model=ref.name)
    if request.mask is not None and family.pipelines.masked_edit is None:
        raise PipelineInputError(f"Model '{ref.name}' ({family.label}) edits the whole image only: remove the mask.")
    check_source(request.image, family, ref)
    check_loras(request.loras, family=ref.family, model=ref.name)
    if request.mask is not None:
        if request.mask.mode != "L" or request.mask.size != request.image.size:
            raise PipelineInputError(
                f"The mask must be a greyscale image the size of the source ({request.image.width}×"
                f"{request.image.height}); got {request.mask.mode} {request.mask.width}×{request.mask.height}."
            )
        check_mask(request.mask)
        request.inpaint.check()
        if request.inpaint.soft or request.inpaint.only_masked:
            raise PipelineInputError("An edit's mask is applied whole: soft masks and only-masked are for Inpaint.")


def run_edit(
    ref: ModelRef,
    request: EditRequest,
    *,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Img2ImgResult:
    """Edit the source as the instruction says; on_step(step, total) after each step, should_stop() to cancel.

    Same model, source, instruction, params and seed give the same pixels (the noise comes from a CPU generator).
    Raises PipelineInputError, ModelUnavailableError and RunCancelled as run_img2img does.
    """
    # 1. Check inputs
    family = get_family(ref.family, model=ref.name)
    check_edit(request, family, ref)
    params = replace(request.params, strength=EDIT_STRENGTH)

    # 2. Resize the source (and mask) to the render size: its aspect, within the family's budget
    source = request.image.convert("RGB")
    width, height = family.output_size(source.width, source.height, request.max_side)
    work_image = source.resize((width, height), Image.Resampling.LANCZOS) if source.size != (width, height) else source

    # Its models stay loaded (pinned in the cache) from here to the end of the run.
    with in_use():
        # 3. This request's pipeline: the cached base's weights, its own scheduler
        base = get_base_pipeline(ref)
        pipe = request_pipeline(base, family, Task.edit, masked=request.mask is not None)
        images = [work_image, *(reference.convert("RGB") for reference in request.references)]
        call: dict[str, Any] = {"image": images if request.references else work_image} | family.call_arguments(params)
        if request.mask is not None:
            call |= {
                "mask_image": request.mask.resize((width, height), Image.Resampling.NEAREST),
                "strength": EDIT_STRENGTH,
            }
        conditioning = family.conditioning(pipe, source_size=source.size, render_size=(width, height))

        # 4. Denoise: every step
        steps = family.denoising_steps(params.steps, params.strength)
        generated, seconds = denoise(
            pipe,
            params,
            call | conditioning,
            total=steps,
            on_step=on_step,
            should_stop=should_stop,
            inside_lock=_edit_context(family, ref, base, request.loras),
            output_size=(width, height),
        )

    # 5. Outside the mask, the source's own pixels
    image = generated
    if request.mask is not None and request.inpaint.keep_unmasked:
        blend = feathered(request.mask, request.inpaint.mask_blur)
        image = keep_unmasked(request.image.convert("RGB"), generated, blend)

    # 6. Report what ran
    return describe_run(pipe, image, denoising_steps=steps, seconds=seconds, recipe=family.recipe(conditioning))


@contextmanager
def _edit_context(family: Family, ref: ModelRef, base: DiffusionPipeline, loras: tuple[LoraRef, ...]) -> Iterator[None]:
    """What the edit runs inside, under the run lock: the family's own context and the request's LoRAs on the base
    pipeline (the masked editor shares its transformer, so they apply there too)."""
    with family.run_context(preview=ref.is_preview), applied_loras(base, loras):
        yield

"""What running a job means: its spec on its source (and mask) through `pipelines`, and the result PNG with
its recipe. Torch is imported only when a job runs (`pipelines.import_model_stack`).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image

from pipelines import import_model_stack
from pipelines.errors import PipelineInputError
from pipelines.params import InpaintParams, RunSpec, Task
from studio.catalogue.recipes import RECIPE_VERSION, png_with_recipe
from studio.catalogue.references import job_ip_adapter, reference_recipe
from studio.catalogue.requests import job_loras
from studio.config import Settings
from studio.db.tables import Asset, AssetKind, Job
from studio.media.storage import sha256_hex

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class Rendered:
    """A finished run: the result PNG (recipe inside) and the asset row to record for it."""

    png: bytes
    asset: Asset
    recipe: dict


def render_job(
    job: Job,
    *,
    source_png: bytes,
    source_sha256: str,
    settings: Settings,
    mask_png: bytes | None = None,
    mask_sha256: str | None = None,
    references_png: Sequence[bytes] = (),
    reference_png: bytes | None = None,
    sweep: dict | None = None,
    on_step: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Rendered:
    """Run a job's spec on its source (and mask, and an edit's reference images, in the order of
    job.params["references"], or the reference image an IP-Adapter reads, job.params["reference"]); `sweep`: the
    sweep it is a cell of, for its recipe. Raises what the pipeline raises (the worker decides)."""
    load_model_stack(settings)
    spec = RunSpec.from_dict(job.params)
    source = Image.open(io.BytesIO(source_png)).convert("RGB")
    mask = Image.open(io.BytesIO(mask_png)).convert("L") if mask_png is not None else None
    references = tuple(Image.open(io.BytesIO(png)).convert("RGB") for png in references_png)
    reference = Image.open(io.BytesIO(reference_png)).convert("RGB") if reference_png is not None else None
    result = _run(
        spec,
        job,
        source,
        mask,
        settings,
        references=references,
        reference=reference,
        on_step=on_step,
        should_stop=should_stop,
    )
    ran = _ran(result, source_sha256=source_sha256, mask_sha256=mask_sha256)
    if references := job.params.get("references"):
        ran["references"] = list(references)  # sha256 of each reference PNG, in the user's assets
    if sweep is not None:
        ran["sweep"] = sweep
    return _rendered(job, spec, result.image, ran)


def _ran(result, *, source_sha256: str, mask_sha256: str | None) -> dict:
    """What ran, for the recipe, from a run's pipelines.denoise.Img2ImgResult."""
    return {
        **result.recipe,  # the family and its conditioning (Family.recipe)
        "scheduler": result.scheduler,
        "width": result.width,
        "height": result.height,
        "denoising_steps": result.denoising_steps,
        "device": result.device,
        "dtype": result.dtype,
        "source_sha256": source_sha256,
        "mask_sha256": mask_sha256,
    }


def render_batch(
    jobs: list[Job],
    *,
    sources_png: list[bytes],
    sources_sha256: list[str],
    settings: Settings,
    on_step: Callable[[int, int, int], None] | None = None,
    should_stop: Callable[[int], bool] | None = None,
) -> list[Rendered | None]:
    """Run compatible img2img jobs (studio.jobs.batching) in one batched loop (pipelines.batch), one result per job
    (None: stopped by its should_stop(index)). on_step(index, step, total) counts each job's own steps. Raises
    RunCancelled when every job was stopped, and what the pipeline raises."""
    load_model_stack(settings)
    from pipelines.batch import BatchJob, run_batch

    specs = [RunSpec.from_dict(job.params) for job in jobs]
    members = tuple(
        BatchJob(Image.open(io.BytesIO(png)).convert("RGB"), spec.params)
        for png, spec in zip(sources_png, specs, strict=True)
    )
    batch = run_batch(
        model_ref(jobs[0], settings),
        members,
        max_side=settings.max_output_side,
        on_step=on_step,
        should_stop=should_stop,
    )
    rendered: list[Rendered | None] = []
    for job, spec, result, sha256 in zip(jobs, specs, batch.results, sources_sha256, strict=True):
        if result is None:
            rendered.append(None)
            continue
        ran = _ran(result, source_sha256=sha256, mask_sha256=None)
        # Batched with other jobs: pixels within 1/255 of a run alone (pipelines.batch).
        ran["batch"] = {"jobs": len(jobs), "mode": batch.mode}
        rendered.append(_rendered(job, spec, result.image, ran))
    return rendered


ProgressOfCells = Callable[[int, int, Sequence[int]], None]


def render_sweep(
    jobs: list[Job],
    *,
    source_png: bytes,
    source_sha256: str,
    settings: Settings,
    mask_png: bytes | None = None,
    mask_sha256: str | None = None,
    on_step: ProgressOfCells | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[Rendered]:
    """Run the cells of one sweep, one result per job, in job order.

    Cells with the same LoRAs at the same weights run together (pipelines.sweep: one denoising pass); adapters are
    set on the whole model, so each other set of LoRA weights (a LoRA-weight axis: one per row) runs as a pass of its
    own. on_step(step, total, cells) counts a pass's loop steps for the indices of the cells in that pass (see
    pipelines.sweep.run_sweep for each cell's own). An edit's cells share no schedule (they differ in seed, guidance
    or LoRA weight, every step runs): they run one after another, and on_step counts the running cell's steps.
    """
    load_model_stack(settings)
    if any(job.params.get("reference") for job in jobs):
        raise PipelineInputError("Sweeps do not take a reference image yet: run each setting on its own.")
    specs = [RunSpec.from_dict(job.params) for job in jobs]
    passes: dict[tuple, list[int]] = {}  # the cells' LoRAs (name, hash, weight) → their indices, in job order
    for index, job in enumerate(jobs):
        key = tuple((lora["name"], lora["sha256"], lora["weight"]) for lora in job.params.get("loras", []))
        passes.setdefault(key, []).append(index)
    rendered: list[Rendered | None] = [None] * len(jobs)
    if specs[0].task == Task.edit:
        from pipelines.sweep import SEPARATE

        inputs = dict(source_png=source_png, source_sha256=source_sha256, mask_png=mask_png, mask_sha256=mask_sha256)
        for index, job in enumerate(jobs):
            rendered[index] = render_job(
                job,
                **inputs,
                settings=settings,
                sweep={"id": job.sweep_id, "cells": len(jobs), "mode": SEPARATE},
                on_step=_cells_progress(on_step, [index]),
                should_stop=should_stop,
            )
        return rendered
    for indices in passes.values():
        results = _sweep_pass(
            [jobs[i] for i in indices],
            [specs[i] for i in indices],
            source_png=source_png,
            source_sha256=source_sha256,
            mask_png=mask_png,
            mask_sha256=mask_sha256,
            settings=settings,
            on_step=_cells_progress(on_step, indices),
            should_stop=should_stop,
            passes=len(passes),
            cells=len(jobs),
        )
        for index, result in zip(indices, results, strict=True):
            rendered[index] = result
    return rendered


def _cells_progress(on_step: ProgressOfCells | None, indices: list[int]) -> ProgressCallback | None:
    return None if on_step is None else lambda step, total: on_step(step, total, indices)


def _sweep_pass(
    jobs: list[Job],
    specs: list[RunSpec],
    *,
    source_png: bytes,
    source_sha256: str,
    mask_png: bytes | None,
    mask_sha256: str | None,
    settings: Settings,
    on_step: ProgressCallback | None,
    should_stop: Callable[[], bool] | None,
    passes: int,
    cells: int,
) -> list[Rendered]:
    """One denoising pass over cells that share their LoRAs (pipelines.sweep.run_sweep)."""
    from pipelines.sweep import SweepRequest, run_sweep

    source = Image.open(io.BytesIO(source_png)).convert("RGB")
    mask = Image.open(io.BytesIO(mask_png)).convert("L") if mask_png is not None else None
    request = SweepRequest(
        source,
        tuple(spec.params for spec in specs),
        max_side=settings.max_output_side,
        mask=mask,
        inpaint=specs[0].inpaint or InpaintParams(),
        loras=job_loras(jobs[0].params, jobs[0].params.get("family")),
    )
    result = run_sweep(model_ref(jobs[0], settings), request, on_step=on_step, should_stop=should_stop)
    rendered = []
    for job, spec, image, steps in zip(jobs, specs, result.images, result.denoising_steps, strict=True):
        ran = {
            **result.recipe,
            "scheduler": result.scheduler,
            "width": result.width,
            "height": result.height,
            "denoising_steps": steps,
            "device": result.device,
            "dtype": result.dtype,
            "source_sha256": source_sha256,
            "mask_sha256": mask_sha256,
            # Batched with the other cells of its pass: pixels within 1/255 of a single run (pipelines.sweep); a
            # LoRA-weight axis runs one pass per weight (`passes`).
            "sweep": {"id": job.sweep_id, "cells": cells, "mode": result.mode}
            | ({"passes": passes} if passes > 1 else {}),
        }
        rendered.append(_rendered(job, spec, image, ran))
    return rendered


def load_model_stack(settings: Settings) -> None:
    """Import torch and diffusers (once) and keep the model cache to the configured memory budget, loading models with
    the configured speed options (STUDIO_COMPILE, STUDIO_ATTENTION)."""
    import_model_stack()
    from pipelines.cache import SpeedOptions, set_memory_budget, set_speed_options

    set_memory_budget(settings.model_memory)
    set_speed_options(SpeedOptions(compile=settings.compile, attention=settings.attention))


def _rendered(job: Job, spec: RunSpec, image: Image.Image, ran: dict) -> Rendered:
    """The result PNG with its recipe (what was asked, `ran`: what ran) and the asset row for it."""
    from pipelines.img2img import library_versions

    loras = [{key: lora[key] for key in ("name", "sha256", "weight")} for lora in job.params.get("loras", [])]
    reference = reference_recipe(job.params)
    recipe = {
        "recipe_version": RECIPE_VERSION,
        "model": job.model,
        "catalogue_model": job.params.get("catalogue_model"),
        "family": None,  # the upscalers belong to no family; every other run's `ran` names its own
        "offload": job.params.get("offload", "none"),
        "style": job.style,
        "quality": job.quality,
        **spec.to_dict(),
        "user_prompt": job.params.get("user_prompt", spec.params.prompt),
        "user_negative_prompt": job.params.get("user_negative_prompt", spec.params.negative_prompt),
        **ran,
        **({"loras": loras} if loras else {}),  # by catalogue name and file hash: re-runs check both
        **({"reference": reference} if reference else {}),  # the image by hash, the IP-Adapter by name and hashes
        **({"kit": job.params["kit"]} if "kit" in job.params else {}),  # the team's brand kit, by id and name
        "versions": library_versions(),
    }
    png = png_with_recipe(image, recipe)
    asset = Asset(
        user_id=job.user_id,
        kind=AssetKind.result,
        sha256=sha256_hex(png),
        width=image.width,
        height=image.height,
        size_bytes=len(png),
    )
    return Rendered(png=png, asset=asset, recipe=recipe)


def model_ref(job: Job, settings: Settings, model: str | None = None):
    """The pipelines.registry.ModelRef of the job's model (or of `model`, its ControlNet), of the family and with
    the offload the job was submitted with. Jobs queued before families existed are of the default family."""
    from pipelines.registry import resolve_model

    family = job.params.get("family") if Task(job.task).upscale_factor is None else None
    offload = job.params.get("offload", "none") if model is None else "none"
    return resolve_model(model or job.model, models_dir=settings.models_dir, family=family, offload=offload)


def _run(
    spec: RunSpec,
    job: Job,
    source: Image.Image,
    mask: Image.Image | None,
    settings: Settings,
    *,
    references: tuple[Image.Image, ...],
    reference: Image.Image | None,
    on_step: ProgressCallback | None,
    should_stop: Callable[[], bool] | None,
):
    """Hand the spec to the pipeline of its task."""
    ref = model_ref(job, settings)
    control_ref = model_ref(job, settings, spec.control.model) if spec.control else None
    loras = job_loras(job.params, job.params.get("family"))  # image to image, inpainting and edits take them
    image_prompt = _image_prompt(job, reference)  # image to image and inpainting take a reference image
    progress = {"on_step": on_step, "should_stop": should_stop}
    if spec.task == Task.img2img:
        from pipelines.img2img import Img2ImgRequest, run_img2img

        request = Img2ImgRequest(
            source,
            spec.params,
            max_side=settings.max_output_side,
            control=spec.control,
            loras=loras,
            image_prompt=image_prompt,
        )
        return run_img2img(ref, request, control_ref=control_ref, **progress)
    if spec.task == Task.inpaint:
        from pipelines.inpaint import InpaintRequest, outpaint_request, run_inpaint

        options = {"max_side": settings.max_output_side, "control": spec.control}
        if spec.outpaint is not None:  # expanding to a format: the canvas and its seam make the mask
            request = outpaint_request(source, spec.outpaint, spec.params, spec.inpaint, **options)
        elif mask is None:
            raise PipelineInputError("This inpainting job has no mask (it may have been deleted by retention).")
        else:
            request = InpaintRequest(
                source, mask, spec.params, spec.inpaint, **options, loras=loras, image_prompt=image_prompt
            )
        return run_inpaint(ref, request, control_ref=control_ref, **progress)
    if spec.task == Task.edit:
        from pipelines.edit import EditRequest, run_edit

        request = EditRequest(
            source, spec.params, max_side=settings.max_output_side, mask=mask, references=references, loras=loras
        )
        return run_edit(ref, request, **progress)
    from pipelines.upscale import UpscaleRequest, run_upscale

    request = UpscaleRequest(source, spec.params, factor=spec.task.upscale_factor, noise_level=spec.noise_level)
    return run_upscale(ref, request, **progress)


def _image_prompt(job: Job, reference: Image.Image | None):
    """The job's reference image with the IP-Adapter that reads it (pipelines.ip_adapters.ImagePrompt), or None."""
    adapter = job_ip_adapter(job.params, job.params.get("family") or "")
    if adapter is None:
        return None
    if reference is None:
        raise PipelineInputError("This job's reference image is missing (it may have been deleted by retention).")
    from pipelines.ip_adapters import ImagePrompt

    return ImagePrompt(adapter, reference)

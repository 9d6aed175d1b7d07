"""Several img2img jobs in one denoising loop: the sweep engine's one pass (pipelines.sweep.one_pass), with a
source, a prompt and a conditioning per member instead of one shared by all.

Jobs that can share the loop run the same model (so the same family and scheduler), render at the same output
size and take the same step count; prompts, negative prompts, sources, strengths, seeds and guidance are each
job's own. Each job joins the loop at its own start step (the last int(steps × strength) steps of the shared
schedule), keeps its own generator and scheduler, and leaves when its own `should_stop` says so; the others go
on. Pixels: a one-job batch is bitwise the job run alone (pipelines.img2img); a larger batch is within 1/255,
batching only changes float rounding in the UNet and VAE.

What cannot share one schedule (see pipelines.sweep.one_pass_obstacle) or runs on another loop (FLUX.1) runs the
jobs one after another, each with its own callbacks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from pipelines.cache import RUN_LOCK, get_base_pipeline, in_use, request_pipeline
from pipelines.denoise import Img2ImgResult, describe_run
from pipelines.errors import PipelineInputError, RunCancelled
from pipelines.families import Family, get_family
from pipelines.footprint import measuring
from pipelines.img2img import Img2ImgRequest, check_img2img_model, check_source, run_img2img
from pipelines.params import MAX_BATCH_JOBS, Img2ImgParams, Task
from pipelines.registry import ModelRef
from pipelines.sweep import ONE_PASS, SEPARATE, fitted_source, one_pass, one_pass_obstacle

# on_step(member, step, total): the member's own steps; should_stop(member): True drops it from the loop.
MemberProgress = Callable[[int, int, int], None]
MemberStop = Callable[[int], bool]


@dataclass(frozen=True)
class BatchJob:
    image: Image.Image  # the job's source
    params: Img2ImgParams


@dataclass(frozen=True)
class BatchResult:
    results: tuple[Img2ImgResult | None, ...]  # in job order; None: the job was stopped (its should_stop)
    mode: str  # ONE_PASS, or SEPARATE (with `reason`)
    reason: str
    unet_calls: int  # batched UNet calls in one pass, or the sum of the separate runs' steps


def check_batch(ref: ModelRef, jobs: tuple[BatchJob, ...], *, max_side: int) -> Family:
    """Refuse a batch whose jobs cannot share one loop (the message says which job and why); the family."""
    if not 1 <= len(jobs) <= MAX_BATCH_JOBS:
        raise PipelineInputError(f"A batch has 1 to {MAX_BATCH_JOBS} jobs, got {len(jobs)}.")
    family = get_family(ref.family, model=ref.name)
    for job in jobs:
        job.params.check()
        family.check_params(job.params, model=ref.name)
        check_source(job.image, family, ref)
    steps = {job.params.steps for job in jobs}
    if len(steps) > 1:
        raise PipelineInputError(f"The jobs of a batch share one step count, got {sorted(steps)}.")
    sizes = {family.output_size(job.image.width, job.image.height, max_side) for job in jobs}
    if len(sizes) > 1:
        raise PipelineInputError(f"The jobs of a batch render at one size, got {sorted(sizes)}.")
    return family


def run_batch(
    ref: ModelRef,
    jobs: tuple[BatchJob, ...],
    *,
    max_side: int = 1024,
    on_step: MemberProgress | None = None,
    should_stop: MemberStop | None = None,
) -> BatchResult:
    """Run the jobs together. Raises PipelineInputError (check_batch) and ModelUnavailableError before any step,
    and RunCancelled only when every job was stopped; a stopped job's result is None."""
    # 1. Check inputs; each source at the shared output size
    family = check_batch(ref, jobs, max_side=max_side)
    members = tuple(job.params for job in jobs)
    sources = [fitted_source(job.image, family, max_side) for job in jobs]
    own_steps = [family.denoising_steps(m.steps, m.strength) for m in members]

    with in_use():
        # 2. The request's pipeline: the cached base's weights, its own scheduler
        base = get_base_pipeline(ref)
        check_img2img_model(base, family, ref)
        pipe = request_pipeline(base, family, Task.img2img)
        obstacle = one_pass_obstacle(pipe, family)
        if not obstacle and family.sweep_engine != "unet":
            obstacle = f"{family.label} jobs run one after another"
        if obstacle:
            return _run_separately(ref, jobs, obstacle, max_side=max_side, on_step=on_step, should_stop=should_stop)
        render_size = sources[0].size
        conditionings = [family.conditioning(pipe, source_size=job.image.size, render_size=render_size) for job in jobs]

        def loop_step(step: int, total: int) -> None:
            # Every member ends on the loop's last step; one of d steps starts d steps before the end.
            for member, own in enumerate(own_steps):
                if on_step is not None and not stopped(member):
                    on_step(member, max(0, step - (total - own)), own)

        left: set[int] = set()

        def stopped(member: int) -> bool:
            if member not in left and should_stop is not None and should_stop(member):
                left.add(member)
            return member in left

        # 3. One pass for every job
        width, height = render_size
        with RUN_LOCK, measuring(ref.name, pixels=width * height, images=len(jobs)):
            if all(stopped(m) for m in range(len(jobs))):
                raise RunCancelled("Every job of the batch was cancelled before it started.")
            started = time.perf_counter()
            images, unet_calls = one_pass(
                pipe,
                family,
                sources,
                None,
                members,
                conditionings=conditionings,
                strengths=None,
                on_step=loop_step,
                should_stop=lambda: all(stopped(m) for m in range(len(jobs))),
                member_stopped=stopped,
            )
            seconds = time.perf_counter() - started

    # 4. Each job's result, as a single run reports it
    results = tuple(
        None
        if image is None
        else describe_run(pipe, image, denoising_steps=steps, seconds=seconds, recipe=family.recipe(conditioning))
        for image, steps, conditioning in zip(images, own_steps, conditionings, strict=True)
    )
    return BatchResult(results=results, mode=ONE_PASS, reason="", unet_calls=unet_calls)


def _run_separately(
    ref: ModelRef,
    jobs: tuple[BatchJob, ...],
    reason: str,
    *,
    max_side: int,
    on_step: MemberProgress | None,
    should_stop: MemberStop | None,
) -> BatchResult:
    """The fallback: each job as its own img2img run with its own callbacks; a stopped job's result is None."""
    results: list[Img2ImgResult | None] = []
    for member, job in enumerate(jobs):
        progress = None if on_step is None else (lambda step, total, m=member: on_step(m, step, total))
        stop = None if should_stop is None else (lambda m=member: should_stop(m))
        try:
            request = Img2ImgRequest(image=job.image, params=job.params, max_side=max_side)
            results.append(run_img2img(ref, request, on_step=progress, should_stop=stop))
        except RunCancelled:
            results.append(None)
    if all(result is None for result in results):
        raise RunCancelled("Every job of the batch was cancelled.")
    unet_calls = sum(result.denoising_steps for result in results if result is not None)
    return BatchResult(results=tuple(results), mode=SEPARATE, reason=reason, unet_calls=unet_calls)

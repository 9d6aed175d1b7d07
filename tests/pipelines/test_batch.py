"""Jobs batched in one denoising loop (pipelines.batch) on the tiny models, fp32 on the CPU: each job within 1/255
of the same job run alone, a one-job batch bitwise equal, a stopped member leaving the others as they would be."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageOps

from pipelines.batch import ONE_PASS, BatchJob, run_batch
from pipelines.errors import PipelineInputError, RunCancelled
from pipelines.img2img import Img2ImgRequest, run_img2img
from pipelines.params import Img2ImgParams
from pipelines.registry import ModelRef
from tests.pipelines.conftest import xl_source
from tests.support import gradient

MAX_SIDE = 96
BASE = Img2ImgParams(prompt="a red shoe", negative_prompt="blurry", steps=4, guidance=5.0, seed=5)
# Each job its own source (one at twice the output size), prompt, negative prompt, strength, seed and guidance;
# one runs without classifier-free guidance (guidance ≤ 1) beside ones with it.
JOBS = (
    BatchJob(gradient(96, 64), replace(BASE, strength=0.5, seed=1)),
    BatchJob(ImageOps.mirror(gradient(192, 128)), replace(BASE, prompt="a blue car", strength=1.0, guidance=1.0)),
    BatchJob(ImageOps.flip(gradient(96, 64)), replace(BASE, prompt="a cat", negative_prompt="", strength=0.75, seed=9)),
)
# Batching changes float rounding in the UNet and VAE; the arithmetic is otherwise a single run's.
TOLERANCE = 1


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def alone(ref: ModelRef, job: BatchJob) -> Image.Image:
    return run_img2img(ref, Img2ImgRequest(job.image, job.params, max_side=MAX_SIDE)).image


def test_each_job_matches_its_run_alone_in_max_steps_unet_calls(preview, unet_calls):
    seen: list[tuple[int, int, int]] = []
    result = run_batch(preview, JOBS, max_side=MAX_SIDE, on_step=lambda *progress: seen.append(progress))
    assert result.mode == ONE_PASS
    steps = [job.params.denoising_steps for job in JOBS]
    assert [r.denoising_steps for r in result.results] == steps == [2, 4, 3]
    assert len(unet_calls) == result.unet_calls == max(steps)
    for job, own in zip(JOBS, result.results, strict=True):
        single = alone(preview, job)
        assert own.image.size == single.size == (96, 64)
        assert np.abs(pixels(own.image) - pixels(single)).max() <= TOLERANCE, job.params
    assert len({pixels(r.image).tobytes() for r in result.results}) == len(JOBS)
    # Each job's progress counts its own steps, ending on the loop's last one.
    assert [s for m, s, _ in seen if m == 0] == [0, 0, 1, 2] and {t for m, _, t in seen if m == 0} == {2}
    assert [s for m, s, _ in seen if m == 1] == [1, 2, 3, 4]


def test_a_one_job_batch_is_bitwise_the_job_alone(preview):
    for job in JOBS[:2]:
        [own] = run_batch(preview, (job,), max_side=MAX_SIDE).results
        assert np.array_equal(pixels(own.image), pixels(alone(preview, job)))


def test_a_member_stopped_mid_batch_leaves_only_it_out(preview, unet_calls):
    cancelled_steps: list[int] = []

    def on_step(member: int, step: int, _total: int) -> None:
        if member == 1:
            cancelled_steps.append(step)

    # Job 1 is cancelled once it has done two steps; the others go on to the end.
    result = run_batch(
        preview,
        JOBS,
        max_side=MAX_SIDE,
        on_step=on_step,
        should_stop=lambda member: member == 1 and len(cancelled_steps) >= 2,
    )
    assert result.results[1] is None and cancelled_steps == [1, 2]
    assert len(unet_calls) == 4
    for index in (0, 2):
        single = alone(preview, JOBS[index])
        assert np.abs(pixels(result.results[index].image) - pixels(single)).max() <= TOLERANCE


def test_every_member_stopped_stops_the_loop(preview):
    with pytest.raises(RunCancelled, match="before it started"):
        run_batch(preview, JOBS, max_side=MAX_SIDE, should_stop=lambda member: True)
    loop_steps: list[int] = []
    with pytest.raises(RunCancelled, match="after step 1 of 4"):
        run_batch(
            preview,
            JOBS,
            max_side=MAX_SIDE,
            on_step=lambda member, step, _total: loop_steps.append(step) if member == 1 else None,
            should_stop=lambda member: len(loop_steps) >= 1,
        )


def test_sdxl_jobs_keep_their_own_micro_conditioning(preview_sdxl):
    # Two sources of other sizes render at one size: each job's original_size is its own.
    jobs = (
        BatchJob(xl_source(), replace(BASE, strength=0.75)),
        BatchJob(gradient(1152, 768), replace(BASE, prompt="a cat", strength=0.5, guidance=1.0, seed=3)),
    )
    result = run_batch(preview_sdxl, jobs, max_side=MAX_SIDE)
    assert [r.recipe["original_size"] for r in result.results] == [[512, 768], [768, 1152]]
    for job, own in zip(jobs, result.results, strict=True):
        assert np.abs(pixels(own.image) - pixels(alone(preview_sdxl, job))).max() <= TOLERANCE


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        ((), "1 to 16 jobs"),
        ((JOBS[0], BatchJob(gradient(96, 64), replace(BASE, steps=5))), "one step count"),
        ((JOBS[0], BatchJob(gradient(64, 96), BASE)), "render at one size"),
        ((BatchJob(gradient(96, 64), replace(BASE, strength=1.5)),), "Strength must be between 0 and 1"),
    ],
)
def test_jobs_that_cannot_share_a_loop_are_refused_before_loading(preview, jobs, message):
    with pytest.raises(PipelineInputError, match=message):
        run_batch(preview, jobs, max_side=MAX_SIDE)

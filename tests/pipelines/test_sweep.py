"""The one-pass sweep engine on the tiny model: each cell as a single run would make it, in max(steps) UNet calls."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from PIL import Image

from pipelines.cache import get_base_pipeline
from pipelines.errors import PipelineInputError, RunCancelled
from pipelines.img2img import Img2ImgRequest, run_img2img
from pipelines.inpaint import InpaintRequest, run_inpaint
from pipelines.masks import feathered
from pipelines.params import Img2ImgParams, InpaintParams
from pipelines.sweep import ONE_PASS, SEPARATE, SweepRequest, run_sweep
from tests.support import gradient

BASE = Img2ImgParams(prompt="a red shoe", negative_prompt="blurry", steps=8, guidance=7.0, seed=5)
# Strength, seed and guidance all vary; one cell runs without classifier-free guidance (guidance ≤ 1).
MEMBERS = tuple(
    replace(BASE, strength=strength, seed=5 + index, guidance=guidance)
    for index, (strength, guidance) in enumerate([(0.25, 7.0), (0.5, 1.0), (0.75, 4.0), (1.0, 9.0)])
)
SOURCE = gradient(96, 64)
# Batching changes float rounding in the UNet and VAE (other kernel blocking for another batch size),
# which can move a pixel by one level after quantisation; the arithmetic is otherwise a single run's.
TOLERANCE = 1


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture
def scheduler(request, preview):
    """Swap the cached base's scheduler class for the test (request pipelines copy its class and config)."""
    base = get_base_pipeline(preview)
    original = base.scheduler
    base.scheduler = request.param.from_config(original.config)
    yield request.param
    base.scheduler = original


@pytest.mark.parametrize(
    "scheduler",
    [
        DDIMScheduler,
        EulerDiscreteScheduler,
        EulerAncestralDiscreteScheduler,  # adds noise in every step: per-cell generators matter
        DPMSolverMultistepScheduler,  # multistep history: per-cell schedulers matter
        UniPCMultistepScheduler,
    ],
    indirect=True,
)
def test_every_cell_matches_its_single_run_in_max_steps_unet_calls(preview, scheduler, unet_calls):
    result = run_sweep(preview, SweepRequest(SOURCE, MEMBERS, max_side=96))
    assert result.mode == ONE_PASS and result.scheduler == scheduler.__name__
    steps = [m.denoising_steps for m in MEMBERS]
    assert result.denoising_steps == tuple(steps) == (2, 4, 6, 8)
    assert len(unet_calls) == result.unet_calls == max(steps)

    for member, image in zip(MEMBERS, result.images, strict=True):
        single = run_img2img(preview, Img2ImgRequest(SOURCE, member, max_side=96)).image
        assert image.size == single.size == (96, 64)
        assert np.abs(pixels(image) - pixels(single)).max() <= TOLERANCE, member
    # The cells really differ (strength, seed and guidance reached each of them).
    assert len({pixels(image).tobytes() for image in result.images}) == len(MEMBERS)


def test_a_one_cell_sweep_is_bitwise_a_single_run(preview):
    member = MEMBERS[2]
    [image] = run_sweep(preview, SweepRequest(SOURCE, (member,), max_side=96)).images
    single = run_img2img(preview, Img2ImgRequest(SOURCE, member, max_side=96)).image
    assert np.array_equal(pixels(image), pixels(single))


def test_progress_counts_the_shared_loop_and_cancel_stops_it(preview):
    seen = []
    run_sweep(preview, SweepRequest(SOURCE, MEMBERS, max_side=96), on_step=lambda s, t: seen.append((s, t)))
    assert seen == [(step, 8) for step in range(1, 9)]
    with pytest.raises(RunCancelled, match="before the sweep started"):
        run_sweep(preview, SweepRequest(SOURCE, MEMBERS, max_side=96), should_stop=lambda: True)
    # Asked to stop during the pass: it stops after the step in hand.
    asks = iter([False, False, True])
    with pytest.raises(RunCancelled, match="after step 2 of 8"):
        run_sweep(preview, SweepRequest(SOURCE, MEMBERS, max_side=96), should_stop=lambda: next(asks))


@pytest.mark.parametrize("scheduler", [PNDMScheduler], indirect=True)
def test_a_scheduler_without_shared_suffixes_runs_cells_one_by_one(preview, scheduler, unet_calls):
    result = run_sweep(preview, SweepRequest(SOURCE, MEMBERS[:2], max_side=96))
    assert result.mode == SEPARATE and "PNDM" in result.reason
    for member, image in zip(MEMBERS[:2], result.images, strict=True):
        single = run_img2img(preview, Img2ImgRequest(SOURCE, member, max_side=96)).image
        assert np.array_equal(pixels(image), pixels(single))


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ((), "1 to 12 cells"),
        ((BASE,) * 13, "1 to 12 cells"),
        ((BASE, replace(BASE, prompt="another")), "share one prompt"),
        ((BASE, replace(BASE, steps=9)), "share one prompt, negative prompt and step count"),
        ((replace(BASE, strength=1.5),), "Strength must be between 0 and 1"),
    ],
)
def test_bad_sweeps_are_refused_before_loading(preview, members, message):
    with pytest.raises(PipelineInputError, match=message):
        run_sweep(preview, SweepRequest(SOURCE, members))


# Inpainting sweeps (the tiny UNet has 4 channels: the source is blended back outside the mask every step)


def box_mask(size=(96, 64), box=(20, 12, 60, 44)) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


@pytest.mark.parametrize(
    "options",
    [InpaintParams(mask_blur=2), InpaintParams(mask_blur=0, only_masked=True, padding=8)],
    ids=["whole-image", "only-masked"],
)
@pytest.mark.parametrize("scheduler", [DDIMScheduler, EulerAncestralDiscreteScheduler], indirect=True)
def test_inpainting_cells_match_their_single_runs(preview, scheduler, options, unet_calls):
    mask = box_mask()
    request = SweepRequest(SOURCE, MEMBERS, max_side=96, mask=mask, inpaint=options)
    result = run_sweep(preview, request)
    assert result.mode == ONE_PASS and len(unet_calls) == max(m.denoising_steps for m in MEMBERS)
    outside = np.asarray(feathered(mask, options.mask_blur)) == 0
    source = pixels(SOURCE)
    for member, image in zip(MEMBERS, result.images, strict=True):
        single = run_inpaint(preview, InpaintRequest(SOURCE, mask, member, options, max_side=96)).image
        assert image.size == SOURCE.size
        assert np.abs(pixels(image) - pixels(single)).max() <= TOLERANCE, member
        assert np.array_equal(pixels(image)[outside], source[outside])


def test_a_one_cell_inpainting_sweep_is_bitwise_a_single_run(preview):
    mask, member = box_mask(), MEMBERS[3]  # strength 1.0: the pure-noise start
    [image] = run_sweep(preview, SweepRequest(SOURCE, (member,), max_side=96, mask=mask)).images
    single = run_inpaint(preview, InpaintRequest(SOURCE, mask, member, max_side=96)).image
    assert np.array_equal(pixels(image), pixels(single))


def test_an_empty_mask_is_refused(preview):
    with pytest.raises(PipelineInputError, match="The mask is empty"):
        run_sweep(preview, SweepRequest(SOURCE, MEMBERS, mask=Image.new("L", SOURCE.size, 0)))

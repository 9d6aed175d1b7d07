"""One-pass sweeps on SDXL (and SD 2.x): each cell as its single run would make it, in max(steps) UNet calls.

The same checks as tests/test_sweep.py makes for SD 1.x: within 1/255 of the single run in float32 on the CPU,
a one-cell sweep bitwise equal, inpainting sweeps (4- and 9-channel UNets, binary and soft masks) and the
fallback for schedulers whose strengths do not share one schedule.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from diffusers import (
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
)

from pipelines.cache import get_base_pipeline
from pipelines.img2img import Img2ImgRequest, run_img2img
from pipelines.inpaint import InpaintRequest, run_inpaint
from pipelines.masks import feathered
from pipelines.params import Img2ImgParams, InpaintParams
from pipelines.registry import ModelRef
from pipelines.sweep import ONE_PASS, SEPARATE, SweepRequest, run_sweep
from tests.pipelines.conftest import XL_SOURCE_SIZE, box_mask, xl_source
from tests.support import gradient

BASE = Img2ImgParams(prompt="a red shoe", negative_prompt="blurry", steps=4, guidance=5.0, seed=5)
# Strength, seed and guidance all vary; one cell runs without classifier-free guidance (guidance ≤ 1).
MEMBERS = tuple(
    replace(BASE, strength=strength, seed=5 + index, guidance=guidance)
    for index, (strength, guidance) in enumerate([(0.25, 5.0), (0.5, 1.0), (0.75, 3.0), (1.0, 7.0)])
)
MAX_SIDE = 96  # 768×512 → 96×64
# Batching changes float rounding in the UNet and VAE; the arithmetic is otherwise a single run's.
TOLERANCE = 1
MASK_BOX = (160, 96, 480, 352)


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture
def xl_scheduler(request, preview_sdxl: ModelRef):
    """Swap the cached SDXL base's scheduler class for the test (request pipelines copy its class and config)."""
    base = get_base_pipeline(preview_sdxl)
    original = base.scheduler
    base.scheduler = request.param.from_config(original.config)
    yield request.param
    base.scheduler = original


@pytest.mark.parametrize(
    "xl_scheduler",
    [
        EulerDiscreteScheduler,  # SDXL's own: keeps a step index
        EulerAncestralDiscreteScheduler,  # adds noise in every step: per-cell generators matter
        DPMSolverMultistepScheduler,  # multistep history: per-cell schedulers matter
    ],
    indirect=True,
)
def test_every_sdxl_cell_matches_its_single_run_in_max_steps_unet_calls(
    preview_sdxl: ModelRef, xl_scheduler, xl_unet_calls: list[dict]
) -> None:
    result = run_sweep(preview_sdxl, SweepRequest(xl_source(), MEMBERS, max_side=MAX_SIDE))
    assert result.mode == ONE_PASS and result.scheduler == xl_scheduler.__name__
    assert result.denoising_steps == (1, 2, 3, 4)
    assert len(xl_unet_calls) == result.unet_calls == 4
    # The last step batches all four cells: their negative rows, then their positive rows, each with its own
    # pooled text embedding and added time ids.
    added = xl_unet_calls[-1]["added_cond_kwargs"]
    assert added["time_ids"].tolist() == [[512, 768, 0, 0, 64, 96]] * 8
    assert tuple(added["text_embeds"].shape) == (8, 32)
    assert result.recipe == {
        "family": "sdxl",
        "original_size": [512, 768],
        "target_size": [64, 96],
        "crops_coords_top_left": [0, 0],
    }

    for member, image in zip(MEMBERS, result.images, strict=True):
        single = run_img2img(preview_sdxl, Img2ImgRequest(xl_source(), member, max_side=MAX_SIDE)).image
        assert image.size == single.size == (96, 64)
        assert np.abs(pixels(image) - pixels(single)).max() <= TOLERANCE, member
    assert len({pixels(image).tobytes() for image in result.images}) == len(MEMBERS)


def test_a_one_cell_sdxl_sweep_is_bitwise_a_single_run(preview_sdxl: ModelRef) -> None:
    member = MEMBERS[2]
    [image] = run_sweep(preview_sdxl, SweepRequest(xl_source(), (member,), max_side=MAX_SIDE)).images
    single = run_img2img(preview_sdxl, Img2ImgRequest(xl_source(), member, max_side=MAX_SIDE)).image
    assert np.array_equal(pixels(image), pixels(single))


@pytest.mark.parametrize("xl_scheduler", [PNDMScheduler], indirect=True)
def test_an_sdxl_scheduler_without_shared_suffixes_runs_cells_one_by_one(preview_sdxl: ModelRef, xl_scheduler) -> None:
    result = run_sweep(preview_sdxl, SweepRequest(xl_source(), MEMBERS[:2], max_side=MAX_SIDE))
    assert result.mode == SEPARATE and "PNDM" in result.reason
    assert result.denoising_steps == (1, 2)
    assert result.recipe["family"] == "sdxl"
    for member, image in zip(MEMBERS[:2], result.images, strict=True):
        single = run_img2img(preview_sdxl, Img2ImgRequest(xl_source(), member, max_side=MAX_SIDE)).image
        assert np.array_equal(pixels(image), pixels(single))


# --- inpainting sweeps ---------------------------------------------------------------------------


def soft_mask():
    """Four grey levels side by side inside the box (a soft mask), nothing outside it."""
    mask = box_mask(XL_SOURCE_SIZE, MASK_BOX, 0)
    for index, value in enumerate((255, 192, 128, 64)):
        left = MASK_BOX[0] + index * 80
        mask.paste(value, (left, MASK_BOX[1], left + 80, MASK_BOX[3]))
    return mask


@pytest.mark.parametrize("soft", [False, True], ids=["binary", "soft"])
@pytest.mark.parametrize("model", ["preview_sdxl", "preview_sdxl_inpaint"], ids=["4-channel", "9-channel"])
def test_sdxl_inpainting_cells_match_their_single_runs(request: pytest.FixtureRequest, model: str, soft: bool) -> None:
    ref = request.getfixturevalue(model)
    mask = soft_mask() if soft else box_mask(XL_SOURCE_SIZE, MASK_BOX)
    options = InpaintParams(mask_blur=2, soft=soft)
    result = run_sweep(ref, SweepRequest(xl_source(), MEMBERS, max_side=MAX_SIDE, mask=mask, inpaint=options))
    assert result.mode == ONE_PASS and result.unet_calls == 4
    outside = np.asarray(feathered(mask, options.mask_blur)) == 0
    source = pixels(xl_source())
    for member, image in zip(MEMBERS, result.images, strict=True):
        single = run_inpaint(ref, InpaintRequest(xl_source(), mask, member, options, max_side=MAX_SIDE)).image
        assert image.size == XL_SOURCE_SIZE
        assert np.abs(pixels(image) - pixels(single)).max() <= TOLERANCE, member
        assert np.array_equal(pixels(image)[outside], source[outside])


@pytest.mark.parametrize("soft", [False, True], ids=["binary", "soft"])
@pytest.mark.parametrize("model", ["preview_sdxl", "preview_sdxl_inpaint"], ids=["4-channel", "9-channel"])
def test_a_one_cell_sdxl_inpainting_sweep_is_bitwise_a_single_run(
    request: pytest.FixtureRequest, model: str, soft: bool
) -> None:
    ref = request.getfixturevalue(model)
    mask = soft_mask() if soft else box_mask(XL_SOURCE_SIZE, MASK_BOX)
    options, member = InpaintParams(soft=soft), MEMBERS[3]  # strength 1.0: the pure-noise start
    [image] = run_sweep(ref, SweepRequest(xl_source(), (member,), MAX_SIDE, mask, options)).images
    single = run_inpaint(ref, InpaintRequest(xl_source(), mask, member, options, max_side=MAX_SIDE)).image
    assert np.array_equal(pixels(image), pixels(single))


def test_soft_sd15_inpainting_cells_match_their_single_runs(preview: ModelRef) -> None:
    source, mask = gradient(96, 64), box_mask((96, 64), (16, 8, 80, 56), 0)
    mask.paste(100, (16, 8, 48, 56))
    mask.paste(255, (48, 8, 80, 56))
    members = tuple(replace(m, guidance=7.0) for m in MEMBERS)
    options = InpaintParams(mask_blur=0, soft=True)
    result = run_sweep(preview, SweepRequest(source, members, max_side=96, mask=mask, inpaint=options))
    assert result.mode == ONE_PASS and result.recipe == {"family": "sd15"}
    for member, image in zip(members, result.images, strict=True):
        single = run_inpaint(preview, InpaintRequest(source, mask, member, options, max_side=96)).image
        assert np.abs(pixels(image) - pixels(single)).max() <= TOLERANCE, member


def test_sd21_cells_match_their_single_runs(preview_sd21: ModelRef) -> None:
    source = gradient(96, 64)
    members = tuple(replace(m, guidance=7.0) for m in MEMBERS[::2])
    result = run_sweep(preview_sd21, SweepRequest(source, members, max_side=96))
    assert result.mode == ONE_PASS and result.recipe == {"family": "sd21"}
    for member, image in zip(members, result.images, strict=True):
        single = run_img2img(preview_sd21, Img2ImgRequest(source, member, max_side=96)).image
        assert np.abs(pixels(image) - pixels(single)).max() <= TOLERANCE, member

"""FLUX.1 on the family layer, with the tiny offline models: img2img, inpaint, FLUX.1 Fill, sweeps, refusals."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines import cache
from pipelines.errors import PipelineInputError
from pipelines.families import get_family
from pipelines.img2img import Img2ImgRequest, run_img2img
from pipelines.inpaint import InpaintRequest, run_inpaint
from pipelines.masks import feathered
from pipelines.params import ControlParams, Guide, Img2ImgParams, InpaintParams, Task
from pipelines.registry import ModelRef
from pipelines.sweep import ONE_PASS, SEPARATE, SweepRequest, run_sweep
from tests.pipelines.conftest import box_mask, preview_ref
from tests.support import gradient

FLUX = get_family("flux")
SOURCE_SIZE = (320, 272)  # not square, and not a multiple of 16 on one side once scaled
PARAMS = Img2ImgParams(prompt="a red sneaker on white marble", strength=0.35, steps=10, guidance=3.5, seed=3)
MASK_BOX = (80, 64, 240, 208)


@pytest.fixture(scope="module")
def preview_flux(shared_models_dir: Path) -> ModelRef:
    return preview_ref(shared_models_dir, "preview-flux")


@pytest.fixture(scope="module")
def preview_flux_fill(shared_models_dir: Path) -> ModelRef:
    return preview_ref(shared_models_dir, "preview-flux-fill")


def source() -> Image.Image:
    return gradient(*SOURCE_SIZE)


def flux_img2img(ref: ModelRef, params: Img2ImgParams = PARAMS, **kwargs) -> object:
    return run_img2img(ref, Img2ImgRequest(source(), params, max_side=kwargs.pop("max_side", 1024)), **kwargs)


def flux_inpaint(ref: ModelRef, params: Img2ImgParams = PARAMS, options: InpaintParams | None = None, **kwargs):
    request = InpaintRequest(source(), box_mask(SOURCE_SIZE, MASK_BOX), params, options or InpaintParams())
    return run_inpaint(ref, request, **kwargs)


@pytest.mark.parametrize(
    ("steps", "strength", "expected"), [(10, 0.35, 4), (10, 1.0, 10), (28, 0.6, 17), (4, 0.1, 1), (4, 0.0, 0)]
)
def test_flux_counts_its_steps_rounding_up(steps: int, strength: float, expected: int) -> None:
    # Stable Diffusion's pipelines run int(steps × strength): 3 of 10 at 0.35; FLUX's run 4.
    assert FLUX.denoising_steps(steps, strength) == expected


def test_img2img_runs_the_steps_it_counts_at_the_source_aspect(preview_flux: ModelRef) -> None:
    progress: list[tuple[int, int]] = []
    result = flux_img2img(preview_flux, on_step=lambda step, total: progress.append((step, total)))
    # FLUX renders at 1024² unless told the size; the family passes it, in multiples of 16.
    assert (result.width, result.height) == (320, 272)
    assert result.denoising_steps == FLUX.denoising_steps(PARAMS.steps, PARAMS.strength) == 4
    assert progress == [(step, 4) for step in range(1, 5)]
    assert result.scheduler == "FlowMatchEulerDiscreteScheduler"
    assert result.recipe == {"family": "flux"}


def test_sizes_are_multiples_of_16_within_the_cap(preview_flux: ModelRef) -> None:
    result = flux_img2img(preview_flux, replace(PARAMS, steps=2, strength=0.5), max_side=300)
    # 320×272 scaled to a long side of 300 is 300×255, rounded down to multiples of 16.
    assert (result.width, result.height) == (288, 240)


def test_same_seed_same_pixels_other_seed_other_pixels(preview_flux: ModelRef) -> None:
    params = replace(PARAMS, steps=4)
    first, again = flux_img2img(preview_flux, params), flux_img2img(preview_flux, params)
    other = flux_img2img(preview_flux, replace(params, seed=4))
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
    assert not np.array_equal(np.asarray(first.image), np.asarray(other.image))


@pytest.mark.parametrize("ref_name", ["preview_flux", "preview_flux_fill"])
def test_inpainting_keeps_every_unmasked_pixel(ref_name: str, request: pytest.FixtureRequest) -> None:
    ref = request.getfixturevalue(ref_name)
    result = flux_inpaint(ref)
    kept = np.asarray(feathered(box_mask(SOURCE_SIZE, MASK_BOX), InpaintParams().mask_blur)) == 0
    got, original = np.asarray(result.image), np.asarray(source())
    assert result.image.size == SOURCE_SIZE
    assert np.array_equal(got[kept], original[kept])
    assert not np.array_equal(got[~kept], original[~kept])


def test_a_fill_checkpoint_inpaints_through_the_fill_pipeline(
    preview_flux: ModelRef, preview_flux_fill: ModelRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[str] = []
    real = cache.request_pipeline

    def recording(*args, **kwargs):
        pipe = real(*args, **kwargs)
        built.append(type(pipe).__name__)
        return pipe

    monkeypatch.setattr("pipelines.inpaint.request_pipeline", recording)
    flux_inpaint(preview_flux_fill, replace(PARAMS, steps=2, strength=0.5))
    flux_inpaint(preview_flux, replace(PARAMS, steps=2, strength=0.5))
    assert built == ["FluxFillPipeline", "FluxInpaintPipeline"]


def test_a_fill_checkpoint_is_refused_for_image_to_image(preview_flux_fill: ModelRef) -> None:
    with pytest.raises(PipelineInputError, match=r"'preview-flux-fill' is an inpainting model"):
        flux_img2img(preview_flux_fill)


@pytest.mark.parametrize(
    ("run", "params", "message"),
    [
        (flux_img2img, replace(PARAMS, negative_prompt="blurry"), r"\(FLUX\.1\) takes no negative prompt"),
        (flux_inpaint, replace(PARAMS, negative_prompt="blurry"), r"\(FLUX\.1\) takes no negative prompt"),
    ],
)
def test_settings_flux_would_ignore_are_refused(preview_flux: ModelRef, run, params, message: str) -> None:
    with pytest.raises(PipelineInputError, match=message):
        run(preview_flux, params)


def test_soft_masks_are_refused_with_the_model_named(preview_flux: ModelRef) -> None:
    with pytest.raises(PipelineInputError, match=r"'preview-flux' \(FLUX\.1\) does not take soft"):
        flux_inpaint(preview_flux, options=InpaintParams(soft=True))


def test_a_controlnet_is_refused_for_flux(preview_flux: ModelRef, preview_controlnet: ModelRef) -> None:
    control = ControlParams(model="preview-controlnet", guide=Guide.canny)
    with pytest.raises(PipelineInputError, match=r"ControlNet 'preview-controlnet' steers Stable Diffusion 1\.x"):
        run_img2img(preview_flux, Img2ImgRequest(source(), PARAMS, control=control), control_ref=preview_controlnet)
    with pytest.raises(PipelineInputError, match=r"FLUX\.1 family has no ControlNet image to image pipeline"):
        FLUX.pipeline_class_name(Task.img2img, controlnet=True)


def test_a_source_below_the_minimum_is_refused_before_loading(preview_flux: ModelRef) -> None:
    small = gradient(320, 200)
    with pytest.raises(PipelineInputError, match=r"320×200 px; model 'preview-flux' \(FLUX\.1\) needs at least 256"):
        run_img2img(preview_flux, Img2ImgRequest(small, PARAMS))


@pytest.mark.parametrize("guidances", [(3.5, 3.5, 3.5), (1.0, 3.5, 7.0)])
def test_a_strength_sweep_runs_in_one_pass_each_cell_within_1_of_255_of_its_single_run(
    preview_flux: ModelRef, guidances: tuple[float, ...]
) -> None:
    members = tuple(
        replace(PARAMS, steps=6, strength=strength, guidance=guidance, seed=seed)
        for strength, guidance, seed in zip((0.3, 0.6, 1.0), guidances, (3, 4, 5), strict=True)
    )
    progress: list[tuple[int, int]] = []
    result = run_sweep(
        preview_flux, SweepRequest(source(), members), on_step=lambda step, total: progress.append((step, total))
    )
    assert result.mode == ONE_PASS and result.reason == ""
    assert result.denoising_steps == (2, 4, 6)
    assert result.unet_calls == 6  # max(cell steps), not their sum (12)
    assert progress == [(step, 6) for step in range(1, 7)]
    for member, image in zip(members, result.images, strict=True):
        single = np.asarray(flux_img2img(preview_flux, member).image).astype(int)
        assert np.abs(np.asarray(image).astype(int) - single).max() <= 1


def test_a_one_cell_sweep_is_bitwise_its_single_run(preview_flux: ModelRef) -> None:
    member = replace(PARAMS, steps=5, strength=0.7)
    [image] = run_sweep(preview_flux, SweepRequest(source(), (member,))).images
    assert np.array_equal(np.asarray(image), np.asarray(flux_img2img(preview_flux, member).image))


def test_inpainting_sweeps_run_cell_by_cell_each_equal_to_its_single_run(preview_flux: ModelRef) -> None:
    members = tuple(replace(PARAMS, steps=4, strength=strength) for strength in (0.3, 0.6, 1.0))
    result = run_sweep(preview_flux, SweepRequest(source(), members, mask=box_mask(SOURCE_SIZE, MASK_BOX)))
    assert result.mode == SEPARATE
    assert result.reason == "FLUX.1 inpainting cells run one after another"
    assert result.denoising_steps == (2, 3, 4)
    for member, image in zip(members, result.images, strict=True):
        assert np.array_equal(np.asarray(image), np.asarray(flux_inpaint(preview_flux, member).image))


def test_a_sweep_with_a_negative_prompt_is_refused(preview_flux: ModelRef) -> None:
    members = tuple(replace(PARAMS, negative_prompt="blurry", strength=s) for s in (0.3, 0.6))
    with pytest.raises(PipelineInputError, match="takes no negative prompt"):
        run_sweep(preview_flux, SweepRequest(source(), members))

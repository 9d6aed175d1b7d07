"""Inpainting (pipelines.inpaint.run_inpaint) on the tiny offline preview model: 64–128 px, 2–4 steps."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipelines import cache, inpaint
from pipelines.errors import PipelineInputError, RunCancelled
from pipelines.img2img import Img2ImgResult
from pipelines.inpaint import InpaintRequest, run_inpaint
from pipelines.masks import feathered
from pipelines.params import ControlParams, Img2ImgParams, InpaintParams
from pipelines.registry import ModelRef
from tests.support import gradient

PARAMS = Img2ImgParams(prompt="a red sneaker, watercolor", strength=0.75, steps=4, guidance=7.5, seed=1)
SOURCE_SIZE = (100, 76)  # not multiples of 8
MASK_BOX = (40, 24, 70, 52)
DEFAULT_OPTIONS = InpaintParams()  # blur 4, whole image, keep unmasked


@pytest.fixture
def denoise_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What run_inpaint hands the pipeline (and the size it rendered), delegating to the real denoise."""
    calls: list[dict[str, Any]] = []
    real_denoise = inpaint.denoise

    def recording(pipe, params, call, **kwargs):
        image, seconds = real_denoise(pipe, params, call, **kwargs)
        calls.append({**call, "pipe": pipe, "rendered": image.size})
        return image, seconds

    monkeypatch.setattr(inpaint, "denoise", recording)
    return calls


def rect_mask(size: tuple[int, int] = SOURCE_SIZE, box: tuple[int, int, int, int] = MASK_BOX) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def run(
    ref: ModelRef,
    *,
    params: Img2ImgParams = PARAMS,
    options: InpaintParams = DEFAULT_OPTIONS,
    image: Image.Image | None = None,
    mask: Image.Image | None = None,
    max_side: int = 128,
    control: ControlParams | None = None,
    **kwargs: Any,
) -> Img2ImgResult:
    request = InpaintRequest(
        image=image or gradient(*SOURCE_SIZE),
        mask=mask or rect_mask(),
        params=params,
        inpaint=options,
        max_side=max_side,
        control=control,
    )
    return run_inpaint(ref, request, **kwargs)


def outside_and_inside(options: InpaintParams, mask: Image.Image | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pixels the feathered mask does not touch at all, and pixels it fully repaints."""
    soft = np.asarray(feathered(mask or rect_mask(), options.mask_blur))
    return soft == 0, soft == 255


# --- sizes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("only_masked", [False, True])
def test_result_has_the_source_size(preview: ModelRef, only_masked: bool) -> None:
    result = run(preview, options=InpaintParams(only_masked=only_masked))
    assert result.image.size == (result.width, result.height) == SOURCE_SIZE
    assert result.image.mode == "RGB"
    assert result.denoising_steps == 3 and result.scheduler == "DDIMScheduler"


def test_bigger_source_runs_at_the_scaled_size_and_comes_back_full_size(
    preview: ModelRef, denoise_calls: list[dict[str, Any]]
) -> None:
    result = run(preview, max_side=64)
    (call,) = denoise_calls
    # 100×76 scaled to a long side of 64 and rounded down to ×8; explicit sizes, or the inpaint
    # pipeline would render at the UNet's default 256 px.
    assert (call["width"], call["height"]) == (64, 48)
    assert call["image"].size == call["mask_image"].size == call["rendered"] == (64, 48)
    assert result.image.size == SOURCE_SIZE


def test_whole_image_passes_explicit_height_and_width(preview: ModelRef, denoise_calls: list[dict[str, Any]]) -> None:
    result = run(preview, image=gradient(90, 70), mask=rect_mask((90, 70), (10, 10, 50, 40)), max_side=1024)
    (call,) = denoise_calls
    assert (call["width"], call["height"]) == call["rendered"] == (88, 64)
    assert result.image.size == (90, 70)


def test_only_masked_renders_the_padded_box_at_working_size(
    preview: ModelRef, denoise_calls: list[dict[str, Any]]
) -> None:
    source = gradient(*SOURCE_SIZE)
    options = InpaintParams(only_masked=True, padding=4, mask_blur=2)
    result = run(preview, image=source, options=options, max_side=64)
    (call,) = denoise_calls
    # Box (36, 20, 74, 56) = 38×36 px, scaled *up* to a long side of 64 → 64×60.6 → 64×56.
    assert (call["width"], call["height"]) == call["rendered"] == (64, 56)
    assert call["image"].size == call["mask_image"].size == (64, 56)
    expected_crop = source.crop((36, 20, 74, 56)).resize((64, 56), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(call["image"]), np.asarray(expected_crop))
    assert result.image.size == SOURCE_SIZE


# --- what changes and what does not --------------------------------------------------------------


def test_keep_unmasked_outside_is_byte_identical_inside_changes(preview: ModelRef) -> None:
    source = gradient(*SOURCE_SIZE)
    options = InpaintParams(mask_blur=4, keep_unmasked=True)
    result = np.asarray(run(preview, image=source, options=options).image)
    outside, inside = outside_and_inside(options)
    assert outside.sum() > 0.5 * outside.size
    assert np.array_equal(result[outside], np.asarray(source)[outside])
    assert (result[inside] != np.asarray(source)[inside]).any()


def test_without_keep_unmasked_the_vae_round_trip_changes_the_outside(preview: ModelRef) -> None:
    source = gradient(*SOURCE_SIZE)
    options = InpaintParams(mask_blur=4, keep_unmasked=False, only_masked=False)
    result = np.asarray(run(preview, image=source, options=options).image)
    outside, _ = outside_and_inside(options)
    assert not np.array_equal(result[outside], np.asarray(source)[outside])


@pytest.mark.parametrize("keep_unmasked", [True, False])
def test_only_masked_keeps_the_outside_byte_identical(preview: ModelRef, keep_unmasked: bool) -> None:
    """Only-masked always blends the patch through the feathered mask, whatever keep_unmasked says."""
    source = gradient(*SOURCE_SIZE)
    options = InpaintParams(only_masked=True, padding=8, mask_blur=2, keep_unmasked=keep_unmasked)
    result = np.asarray(run(preview, image=source, options=options, max_side=64).image)
    outside, inside = outside_and_inside(options)
    assert np.array_equal(result[outside], np.asarray(source)[outside])
    assert (result[inside] != np.asarray(source)[inside]).any()


# --- the run -------------------------------------------------------------------------------------


def test_same_seed_same_pixels_other_seed_other_pixels(preview: ModelRef) -> None:
    options = InpaintParams(keep_unmasked=False)
    first = np.asarray(run(preview, options=options).image)
    again = np.asarray(run(preview, options=options).image)
    other = np.asarray(run(preview, options=options, params=replace(PARAMS, seed=2)).image)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize(("steps", "strength", "expected"), [(4, 0.75, 3), (4, 1.0, 4), (3, 0.5, 1)])
def test_progress_reports_the_denoising_steps(
    preview: ModelRef, unet_calls: list[int], steps: int, strength: float, expected: int
) -> None:
    progress: list[tuple[int, int]] = []
    result = run(
        preview,
        params=replace(PARAMS, steps=steps, strength=strength),
        max_side=64,
        on_step=lambda step, total: progress.append((step, total)),
    )
    assert progress == [(step, expected) for step in range(1, expected + 1)]
    # Guidance 7.5 batches the conditional and unconditional passes: one UNet call per step.
    assert len(unet_calls) == result.denoising_steps == expected


def test_should_stop_cancels_after_current_step(preview: ModelRef, unet_calls: list[int]) -> None:
    progress: list[int] = []
    with pytest.raises(RunCancelled, match="after step 1 of 4"):
        run(
            preview,
            params=replace(PARAMS, strength=1.0),
            max_side=64,
            on_step=lambda step, _total: progress.append(step),
            should_stop=lambda: bool(progress),
        )
    assert len(unet_calls) == 1
    assert not cache.RUN_LOCK.locked()


# --- input checks --------------------------------------------------------------------------------


@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> ModelRef:
    monkeypatch.setattr(inpaint, "get_base_pipeline", lambda _ref: pytest.fail("loaded a model for a bad request"))
    monkeypatch.setattr(inpaint, "get_controlnet", lambda _ref: pytest.fail("loaded a ControlNet for a bad request"))
    return ModelRef("nobody/model", "nobody/model", is_preview=False, is_local=False)


def test_empty_mask_is_refused_before_loading(no_model_load: ModelRef) -> None:
    with pytest.raises(PipelineInputError, match="The mask is empty: paint over the area"):
        run(no_model_load, mask=Image.new("L", SOURCE_SIZE, 0))


@pytest.mark.parametrize(
    "mask",
    [
        rect_mask((96, 72), (10, 10, 40, 40)),  # another size
        rect_mask((76, 100), (10, 10, 40, 40)),  # transposed
        rect_mask().convert("RGB"),  # not greyscale
        rect_mask().convert("1"),
    ],
    ids=["other-size", "transposed", "rgb", "bilevel"],
)
def test_wrong_mask_is_refused_before_loading(no_model_load: ModelRef, mask: Image.Image) -> None:
    with pytest.raises(PipelineInputError, match=re.escape("the size of the source (100×76)")):
        run(no_model_load, mask=mask)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (InpaintParams(mask_blur=-1), "Mask blur must be between 0 and 64 px, got -1"),
        (InpaintParams(mask_blur=65), "Mask blur must be between 0 and 64 px, got 65"),
        (InpaintParams(only_masked=True, padding=257), "padding must be between 0 and 256 px, got 257"),
    ],
)
def test_bad_mask_options_are_refused_before_loading(
    no_model_load: ModelRef, options: InpaintParams, message: str
) -> None:
    with pytest.raises(PipelineInputError, match=re.escape(message)):
        run(no_model_load, options=options)


# --- ControlNet ----------------------------------------------------------------------------------


def test_controlnet_inpaint_returns_the_source_size_and_uses_the_guide(
    preview: ModelRef, preview_controlnet: ModelRef, denoise_calls: list[dict[str, Any]]
) -> None:
    control = ControlParams("preview-controlnet", conditioning_scale=0.8)
    result = run(preview, control=control, control_ref=preview_controlnet, max_side=64)
    (call,) = denoise_calls
    assert type(call["pipe"]).__name__ == "StableDiffusionControlNetInpaintPipeline"
    assert call["control_image"] is result.guide
    assert result.guide.size == (call["width"], call["height"]) == call["rendered"] == (64, 48)
    assert call["controlnet_conditioning_scale"] == 0.8
    assert result.image.size == SOURCE_SIZE


def test_controlnet_changes_the_inpainted_pixels(preview: ModelRef, preview_controlnet: ModelRef) -> None:
    options = InpaintParams(keep_unmasked=False)
    plain = np.asarray(run(preview, options=options, max_side=64).image)
    control = ControlParams("preview-controlnet", conditioning_scale=1.0)
    guided = run(preview, options=options, max_side=64, control=control, control_ref=preview_controlnet)
    assert guided.image.size == SOURCE_SIZE
    assert not np.array_equal(np.asarray(guided.image), plain)
    # Scale 0 adds exactly zero residuals: the same pixels as without a ControlNet.
    off = run(
        preview,
        options=options,
        max_side=64,
        control=replace(control, conditioning_scale=0.0),
        control_ref=preview_controlnet,
    )
    assert np.array_equal(np.asarray(off.image), plain)

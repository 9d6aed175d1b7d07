"""SDXL (and SD 2.x) on the family layer, with the tiny offline models: img2img, ControlNet, inpainting, refusals."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipelines import cache, img2img, inpaint, tiny
from pipelines.errors import PipelineInputError
from pipelines.img2img import Img2ImgRequest, run_img2img
from pipelines.inpaint import InpaintRequest, run_inpaint
from pipelines.masks import feathered
from pipelines.params import ControlParams, Guide, Img2ImgParams, InpaintParams
from pipelines.registry import ModelRef, resolve_model
from tests.pipelines.conftest import XL_SOURCE_SIZE, box_mask, xl_source
from tests.support import gradient

PARAMS = Img2ImgParams(prompt="a red sneaker, watercolor", negative_prompt="blurry", strength=0.75, steps=4, seed=1)
XL_PARAMS = replace(PARAMS, guidance=5.0)
MAX_SIDE = 128
RENDER = (128, 80)  # 768×512 scaled to a long side of 128: 128×85.3 → 128×80
MASK_BOX = (240, 160, 560, 400)


@pytest.fixture
def denoise_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What run_img2img / run_inpaint hand the pipeline (and the pipeline), delegating to the real denoise."""
    calls: list[dict[str, Any]] = []
    real_denoise = img2img.denoise

    def recording(pipe, params, call, **kwargs):
        image, seconds = real_denoise(pipe, params, call, **kwargs)
        calls.append({**call, "pipe": pipe})
        return image, seconds

    monkeypatch.setattr(img2img, "denoise", recording)
    monkeypatch.setattr(inpaint, "denoise", recording)
    return calls


def xl_img2img(ref: ModelRef, params: Img2ImgParams = XL_PARAMS, **kwargs: Any):
    control = kwargs.pop("control", None)
    return run_img2img(ref, Img2ImgRequest(xl_source(), params, max_side=MAX_SIDE, control=control), **kwargs)


def xl_inpaint(ref: ModelRef, params: Img2ImgParams = XL_PARAMS, options: InpaintParams | None = None, **kwargs: Any):
    control = kwargs.pop("control", None)
    request = InpaintRequest(
        xl_source(), box_mask(XL_SOURCE_SIZE, MASK_BOX), params, options or InpaintParams(), MAX_SIDE, control
    )
    return run_inpaint(ref, request, **kwargs)


def pixels(result) -> np.ndarray:
    return np.asarray(result.image, dtype=np.int16)


# --- img2img -------------------------------------------------------------------------------------


def test_sdxl_img2img_conditions_on_the_source_size_and_records_it(
    preview_sdxl: ModelRef, xl_unet_calls: list[dict]
) -> None:
    result = xl_img2img(preview_sdxl)
    assert result.image.size == (result.width, result.height) == RENDER
    assert (result.scheduler, result.device, result.dtype) == ("EulerDiscreteScheduler", "cpu", "float32")
    assert result.recipe == {
        "family": "sdxl",
        "original_size": [512, 768],  # the source's (height, width): a big photo scaled down
        "target_size": [80, 128],
        "crops_coords_top_left": [0, 0],
    }
    # Guidance 5 batches the negative and positive rows: one UNet call per denoising step, each with the
    # pooled text embedding and SDXL's added time ids (original size, crop corner, target size).
    assert len(xl_unet_calls) == result.denoising_steps == 3
    for call in xl_unet_calls:
        added = call["added_cond_kwargs"]
        assert added["time_ids"].tolist() == [[512, 768, 0, 0, 80, 128]] * 2
        assert tuple(added["text_embeds"].shape) == (2, 32)


def test_sdxl_img2img_is_deterministic_and_the_seed_matters(preview_sdxl: ModelRef) -> None:
    first, again = pixels(xl_img2img(preview_sdxl)), pixels(xl_img2img(preview_sdxl))
    other = pixels(xl_img2img(preview_sdxl, replace(XL_PARAMS, seed=2)))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_request_pipelines_share_the_sdxl_weights(preview_sdxl: ModelRef, denoise_calls: list[dict]) -> None:
    xl_img2img(preview_sdxl)
    xl_img2img(preview_sdxl)
    base = cache.get_base_pipeline(preview_sdxl)
    first, second = (call["pipe"] for call in denoise_calls)
    for pipe in (first, second):
        assert type(pipe).__name__ == "StableDiffusionXLImg2ImgPipeline"
        for part in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"):
            assert getattr(pipe, part) is getattr(base, part), part
        assert pipe.scheduler is not base.scheduler and pipe.watermark is None
        assert not pipe.config.requires_aesthetics_score
    assert first.scheduler is not second.scheduler


def test_a_refiner_style_unet_gets_aesthetic_scores_whatever_its_config_says(tmp_path: Path) -> None:
    """The UNet's added-time embedding decides: 5 ids (aesthetic score) here, though model_index.json says no."""
    pipe = tiny.build_tiny_sdxl_pipeline(aesthetics=True)
    pipe.register_to_config(requires_aesthetics_score=False)
    pipe.save_pretrained(tmp_path / "refiner")
    ref = resolve_model(str(tmp_path / "refiner"), models_dir=tmp_path, family="sdxl")
    calls: list[dict] = []
    unet = cache.get_base_pipeline(ref).unet
    handle = unet.register_forward_pre_hook(lambda _m, _a, kwargs: calls.append(kwargs), with_kwargs=True)
    try:
        result = xl_img2img(ref)
    finally:
        handle.remove()
    assert result.recipe["aesthetic_score"] == 6.0 and result.recipe["negative_aesthetic_score"] == 2.5
    # Negative rows first: the negative aesthetic score, then the positive one.
    assert calls[0]["added_cond_kwargs"]["time_ids"].tolist() == [[512, 768, 0, 0, 2.5], [512, 768, 0, 0, 6.0]]


# --- ControlNet ----------------------------------------------------------------------------------


@pytest.mark.parametrize("guide", [Guide.canny, Guide.lineart])
def test_sdxl_controlnet_img2img_follows_the_guide(
    preview_sdxl: ModelRef, preview_sdxl_controlnet: ModelRef, denoise_calls: list[dict], guide: Guide
) -> None:
    control = ControlParams("preview-sdxl-controlnet", guide=guide, conditioning_scale=1.0)
    guided = xl_img2img(preview_sdxl, control=control, control_ref=preview_sdxl_controlnet)
    (call,) = denoise_calls
    assert type(call["pipe"]).__name__ == "StableDiffusionXLControlNetImg2ImgPipeline"
    assert call["pipe"].controlnet is cache.get_controlnet(preview_sdxl_controlnet)
    assert guided.image.size == guided.guide.size == RENDER
    assert call["control_image"] is guided.guide and (call["width"], call["height"]) == RENDER
    assert guided.recipe["family"] == "sdxl"
    off = xl_img2img(
        preview_sdxl, control=replace(control, conditioning_scale=0.0), control_ref=preview_sdxl_controlnet
    )
    assert not np.array_equal(pixels(guided), pixels(off))
    # Scale 0 adds exactly zero residuals: the same pixels as plain SDXL img2img with the same seed.
    assert np.array_equal(pixels(off), pixels(xl_img2img(preview_sdxl)))


def test_sdxl_controlnet_inpaint_returns_the_source_size(
    preview_sdxl: ModelRef, preview_sdxl_controlnet: ModelRef, denoise_calls: list[dict]
) -> None:
    control = ControlParams("preview-sdxl-controlnet", conditioning_scale=0.8)
    result = xl_inpaint(preview_sdxl, control=control, control_ref=preview_sdxl_controlnet)
    (call,) = denoise_calls
    assert type(call["pipe"]).__name__ == "StableDiffusionXLControlNetInpaintPipeline"
    assert result.image.size == XL_SOURCE_SIZE and result.guide.size == RENDER


# --- inpainting ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["preview_sdxl", "preview_sdxl_inpaint"], ids=["4-channel", "9-channel"])
def test_sdxl_inpaint_keeps_the_outside_byte_for_byte(request: pytest.FixtureRequest, model: str) -> None:
    ref = request.getfixturevalue(model)
    options = InpaintParams(mask_blur=4)
    result = np.asarray(xl_inpaint(ref, options=options).image)
    source = np.asarray(xl_source())
    soft = np.asarray(feathered(box_mask(XL_SOURCE_SIZE, MASK_BOX), options.mask_blur))
    outside, inside = soft == 0, soft == 255
    assert result.shape[:2] == source.shape[:2]
    assert np.array_equal(result[outside], source[outside])
    assert (result[inside] != source[inside]).any()


def test_an_inpainting_checkpoint_is_refused_for_image_to_image(preview_sdxl_inpaint: ModelRef) -> None:
    with pytest.raises(PipelineInputError, match=r"'preview-sdxl-inpaint' is an inpainting model"):
        xl_img2img(preview_sdxl_inpaint)


# --- SD 2.x --------------------------------------------------------------------------------------


def test_sd21_runs_on_the_stable_diffusion_pipelines_with_v_prediction(
    preview_sd21: ModelRef, shared_models_dir: Path
) -> None:
    result = run_img2img(preview_sd21, Img2ImgRequest(gradient(96, 64), PARAMS))
    assert result.image.size == (96, 64) and result.recipe == {"family": "sd21"}
    assert cache.get_base_pipeline(preview_sd21).scheduler.config.prediction_type == "v_prediction"
    controlnet = resolve_model("preview-sd21-controlnet", models_dir=shared_models_dir)
    control = ControlParams("preview-sd21-controlnet")
    guided = run_img2img(
        preview_sd21, Img2ImgRequest(gradient(96, 64), PARAMS, control=control), control_ref=controlnet
    )
    assert guided.image.size == (96, 64)


# --- refusals, all before any model loads --------------------------------------------------------


@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (img2img, inpaint):
        monkeypatch.setattr(module, "get_base_pipeline", lambda _ref: pytest.fail("loaded a model for a bad request"))
        monkeypatch.setattr(module, "get_controlnet", lambda _ref: pytest.fail("loaded a ControlNet for a bad request"))


SDXL_HUB = ModelRef("stabilityai/sdxl", "stabilityai/sdxl", is_preview=False, is_local=False, family="sdxl")
SD15_CONTROLNET = ModelRef("lllyasviel/canny", "lllyasviel/canny", is_preview=False, is_local=False)


@pytest.mark.parametrize("task", ["img2img", "inpaint"])
def test_a_small_source_is_refused_for_sdxl(no_model_load: None, task: str) -> None:
    small = gradient(640, 480)
    message = "640×480 px; model 'stabilityai/sdxl' (Stable Diffusion XL) needs at least 512 px per side"
    with pytest.raises(PipelineInputError, match=re.escape(message)):
        if task == "img2img":
            run_img2img(SDXL_HUB, Img2ImgRequest(small, XL_PARAMS))
        else:
            run_inpaint(SDXL_HUB, InpaintRequest(small, box_mask(small.size, (10, 10, 50, 50)), XL_PARAMS))


@pytest.mark.parametrize("task", ["img2img", "inpaint"])
def test_a_controlnet_of_another_family_is_refused(no_model_load: None, task: str) -> None:
    control = ControlParams("lllyasviel/canny")
    message = (
        "ControlNet 'lllyasviel/canny' steers Stable Diffusion 1.x (sd15) models; model 'stabilityai/sdxl' is "
        "Stable Diffusion XL (sdxl)"
    )
    with pytest.raises(PipelineInputError, match=re.escape(message)):
        if task == "img2img":
            run_img2img(SDXL_HUB, Img2ImgRequest(xl_source(), XL_PARAMS, control=control), control_ref=SD15_CONTROLNET)
        else:
            mask = box_mask(XL_SOURCE_SIZE, MASK_BOX)
            request = InpaintRequest(xl_source(), mask, XL_PARAMS, control=control)
            run_inpaint(SDXL_HUB, request, control_ref=SD15_CONTROLNET)


def test_a_model_of_an_unknown_family_is_refused(no_model_load: None) -> None:
    sd3 = replace(SDXL_HUB, name="stabilityai/sd3", family="sd3")
    with pytest.raises(PipelineInputError, match="'stabilityai/sd3' belongs to the unknown model family 'sd3'"):
        run_img2img(sd3, Img2ImgRequest(xl_source(), XL_PARAMS))


def test_the_mask_of_an_sdxl_inpaint_must_fit_the_source(no_model_load: None) -> None:
    with pytest.raises(PipelineInputError, match="the size of the source"):
        run_inpaint(SDXL_HUB, InpaintRequest(xl_source(), Image.new("L", (10, 10), 255), XL_PARAMS))

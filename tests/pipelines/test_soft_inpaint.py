"""Soft inpainting (per-pixel strength) on the tiny models of every family that inpaints.

A grey mask of four bands — 0, 64, 128 and 255 — at strength 1 over 4 steps: the bands run 0, 1, 2 and 4
denoising steps (a value v runs the last floor(v × 4 / 255) of them). Value-0 pixels come back byte for byte
with keep-unmasked, and the change grows with the value, in the pixels and in the latents the VAE decodes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.cache import get_base_pipeline
from pipelines.inpaint import InpaintRequest, run_inpaint
from pipelines.masks import feathered
from pipelines.params import ControlParams, Img2ImgParams, InpaintParams
from pipelines.registry import ModelRef
from tests.support import gradient

PARAMS = Img2ImgParams(prompt="a red sneaker", negative_prompt="blurry", strength=1.0, steps=4, guidance=6.0, seed=2)
LEVELS = (0, 64, 128, 255)
# Per model: the source size (SDXL takes at least 512 px per side) and the long side it renders at.
CASES = {"preview": ((256, 64), 256), "preview_sdxl": ((1024, 512), 256), "preview_sdxl_inpaint": ((1024, 512), 256)}


def bands(size: tuple[int, int], levels: tuple[int, ...] = LEVELS) -> Image.Image:
    """Vertical bands of the grey levels, left to right."""
    width, height = size
    mask = Image.new("L", size, 0)
    for index, level in enumerate(levels):
        mask.paste(level, (index * width // len(levels), 0, (index + 1) * width // len(levels), height))
    return mask


def soft_run(
    ref: ModelRef,
    mask: Image.Image,
    options: InpaintParams,
    max_side: int,
    control: ControlParams | None = None,
    **kwargs: ModelRef,
) -> np.ndarray:
    """The result's pixels; `kwargs` go to run_inpaint (the ControlNet model)."""
    request = InpaintRequest(gradient(*mask.size), mask, PARAMS, options, max_side=max_side, control=control)
    return np.asarray(run_inpaint(ref, request, **kwargs).image, dtype=np.int16)


def band_means(values: np.ndarray) -> list[float]:
    """The mean of `values` over each band (vertical stripes of its last axis, the width)."""
    width = values.shape[-1] // len(LEVELS)
    return [float(values[..., i * width : (i + 1) * width].mean()) for i in range(len(LEVELS))]


@pytest.mark.parametrize("model", list(CASES), ids=["sd15", "sdxl", "sdxl-9-channel"])
def test_value_0_pixels_come_back_byte_for_byte(request: pytest.FixtureRequest, model: str) -> None:
    ref = request.getfixturevalue(model)
    size, max_side = CASES[model]
    mask = bands(size)
    result = soft_run(ref, mask, InpaintParams(mask_blur=0, keep_unmasked=True, soft=True), max_side)
    source = np.asarray(gradient(*size), dtype=np.int16)
    zero, painted = np.asarray(mask) == 0, np.asarray(mask) > 0
    assert np.array_equal(result[zero], source[zero])
    assert (result[painted] != source[painted]).any()


@pytest.mark.parametrize("model", list(CASES), ids=["sd15", "sdxl", "sdxl-9-channel"])
def test_the_change_grows_with_the_mask_value(request: pytest.FixtureRequest, model: str) -> None:
    ref = request.getfixturevalue(model)
    size, max_side = CASES[model]
    result = soft_run(ref, bands(size), InpaintParams(mask_blur=0, soft=True), max_side)
    change = band_means(np.abs(result - np.asarray(gradient(*size), dtype=np.int16)).mean(axis=2))
    assert change[0] == 0 < change[1] < change[2] < change[3], change


@pytest.mark.parametrize("model", list(CASES), ids=["sd15", "sdxl", "sdxl-9-channel"])
def test_each_latent_changes_as_much_as_its_value_allows(request: pytest.FixtureRequest, model: str) -> None:
    """In the latents the VAE decodes (pixels would mix them: the VAE decoder attends over the whole image),
    against a run where nothing may change (every value 1: no step starts), which ends on the source's latents:
    value 0 stays exactly the source, and more steps move further from it."""
    ref = request.getfixturevalue(model)
    size, max_side = CASES[model]
    decoded: list[torch.Tensor] = []
    vae = get_base_pipeline(ref).vae
    handle = vae.post_quant_conv.register_forward_pre_hook(lambda _module, args: decoded.append(args[0].clone()))
    try:
        options = InpaintParams(mask_blur=0, keep_unmasked=False, soft=True)
        soft_run(ref, Image.new("L", size, 1), options, max_side)
        soft_run(ref, bands(size), options, max_side)
    finally:
        handle.remove()
    unchanged, latents = decoded
    change = band_means((latents - unchanged).abs()[0].numpy())
    assert change[0] == 0 < change[1] < change[2] < change[3], change


def test_a_binary_soft_mask_keeps_exactly_what_it_does_not_paint(preview: ModelRef) -> None:
    """Value 255 repaints at the run's strength, value 0 keeps: the soft path with a black-and-white mask."""
    mask = bands((256, 64), (0, 255, 0, 255))
    result = soft_run(preview, mask, InpaintParams(mask_blur=2, soft=True), 256)
    source = np.asarray(gradient(256, 64), dtype=np.int16)
    outside = np.asarray(feathered(mask, 2)) == 0
    assert np.array_equal(result[outside], source[outside])
    assert np.abs(result - source)[np.asarray(mask) == 255].mean() > 10


def test_soft_inpainting_combines_with_controlnet_and_only_masked(
    preview: ModelRef, preview_controlnet: ModelRef
) -> None:
    mask = Image.new("L", (256, 64), 0)
    mask.paste(128, (64, 8, 128, 56))
    mask.paste(255, (128, 8, 192, 56))
    options = InpaintParams(mask_blur=0, only_masked=True, padding=8, soft=True)
    control = ControlParams("preview-controlnet")
    result = soft_run(preview, mask, options, 128, control=control, control_ref=preview_controlnet)
    source = np.asarray(gradient(256, 64), dtype=np.int16)
    zero = np.asarray(mask) == 0
    assert np.array_equal(result[zero], source[zero])
    assert not np.array_equal(result[~zero], source[~zero])

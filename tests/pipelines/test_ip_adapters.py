"""IP-Adapter reference images on the tiny preview models (SD 1.x and SDXL, img2img and inpaint): the adapter and its
image encoder are read from files on disk, attached for one run at a scale, and detached so nothing leaks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.errors import ModelUnavailableError, PipelineInputError
from pipelines.img2img import Img2ImgRequest, run_img2img
from pipelines.inpaint import InpaintRequest, run_inpaint
from pipelines.ip_adapters import (
    PREVIEW_ENCODER,
    PREVIEW_WEIGHTS,
    ImagePrompt,
    IpAdapterRef,
    adapter_files,
    ensure_preview_ip_adapter,
)
from pipelines.loras import file_sha256
from pipelines.params import LIMITS
from pipelines.registry import ModelRef, ensure_preview_model, resolve_model
from tests.pipelines.conftest import XL_SOURCE_SIZE
from tests.pipelines.test_loras import PARAMS, preview
from tests.support import gradient

__all__ = ["preview"]  # the fixture, shared with the LoRA tests


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny IP-Adapters as a user's files: built, saved, then only ever read from disk."""
    folder = tmp_path_factory.mktemp("ip-adapters")
    for family in ("sd15", "sdxl"):
        ensure_preview_ip_adapter(folder, family)
    return folder


def adapter(models_dir: Path, built_for: str = "sd15", scale: float = 1.0, **changes) -> IpAdapterRef:
    """The tiny adapter built for the family `built_for`, as a request names it (`changes`: what it says instead)."""
    folder = ensure_preview_ip_adapter(models_dir, built_for)
    weights, encoder = adapter_files(str(folder), PREVIEW_WEIGHTS, PREVIEW_ENCODER, name="brand")
    sha256, encoder_sha256 = file_sha256(weights), file_sha256(encoder / "model.safetensors")
    ref = IpAdapterRef("brand", str(weights), str(encoder), built_for, sha256, encoder_sha256, scale)
    return replace(ref, **changes)


def reference(seed: int = 1) -> Image.Image:
    """A noisy reference of its own size (the image encoder resizes it)."""
    return Image.fromarray((np.random.default_rng(seed).random((40, 72, 3)) * 255).astype("uint8"))


def pixels(ref: ModelRef, ip_adapter: IpAdapterRef | None = None, image: Image.Image | None = None) -> np.ndarray:
    prompt = ImagePrompt(ip_adapter, image or reference()) if ip_adapter is not None else None
    request = Img2ImgRequest(image=gradient(96, 96), params=PARAMS, image_prompt=prompt)
    return np.asarray(run_img2img(ref, request).image, dtype=np.int16)


def test_a_reference_changes_the_result_and_never_leaks(preview: ModelRef, adapters: Path) -> None:
    base = pixels(preview)
    with_reference = pixels(preview, adapter(adapters))
    assert np.abs(with_reference - base).mean() > 1  # it applies
    assert np.array_equal(pixels(preview), base)  # the next run without a reference is the base's, exactly
    assert np.array_equal(pixels(preview, adapter(adapters)), with_reference)  # and it re-runs identically
    assert not np.array_equal(pixels(preview, adapter(adapters), reference(seed=2)), with_reference)  # by the image


def test_scale_zero_gives_the_base_pixels_exactly(preview: ModelRef, adapters: Path) -> None:
    # The IP-Adapter's attention adds scale × its output to the text attention's: + 0 × x is exact.
    assert np.array_equal(pixels(preview, adapter(adapters, scale=0.0)), pixels(preview))


def test_scales_at_the_limits_run_and_differ(preview: ModelRef, adapters: Path) -> None:
    low, high = LIMITS["ip_adapter_scale"]
    assert not np.array_equal(
        pixels(preview, adapter(adapters, scale=low)), pixels(preview, adapter(adapters, scale=high))
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"family": "sdxl"}, "trained for Stable Diffusion XL"),
        ({"scale": LIMITS["ip_adapter_scale"][1] + 0.5}, "must be between 0 and 1.5"),
        ({"scale": -0.1}, "must be between 0 and 1.5"),
        ({"sha256": "0" * 64}, "changed since it was recorded: its weights file"),
        ({"encoder_sha256": "0" * 64}, "changed since it was recorded: its image encoder"),
    ],
)
def test_a_bad_reference_is_refused_with_a_message(
    preview: ModelRef, adapters: Path, change: dict, message: str
) -> None:
    with pytest.raises(PipelineInputError, match=message):
        pixels(preview, adapter(adapters, **change))
    assert np.array_equal(pixels(preview), pixels(preview))  # and the model is untouched


def test_an_adapter_of_another_model_is_refused_and_leaks_nothing(preview: ModelRef, adapters: Path) -> None:
    """The SDXL adapter's layers do not fit the SD 1.x UNet (passed off as an SD 1.x one): refused, base intact."""
    base = pixels(preview)
    with pytest.raises(PipelineInputError, match="does not fit this model"):
        pixels(preview, adapter(adapters, "sdxl", family="sd15"))
    assert np.array_equal(pixels(preview), base)


def test_families_without_ip_adapters_are_refused(shared_models_dir: Path, adapters: Path) -> None:
    ensure_preview_model(shared_models_dir, "preview-flux")
    flux = resolve_model("preview-flux", models_dir=shared_models_dir)
    with pytest.raises(PipelineInputError, match=r"FLUX\.1 models take no reference image"):
        pixels(flux, adapter(adapters, family="flux"))


def test_missing_files_are_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match=r"hf download someone/no-such-adapter models/ip\.safetensors"):
        adapter_files("someone/no-such-adapter", "models/ip.safetensors", "models/image_encoder", name="hub")
    with pytest.raises(ModelUnavailableError, match="no folder"):
        adapter_files(str(tmp_path / "gone"), "ip.safetensors", "image_encoder", name="gone")
    with pytest.raises(ModelUnavailableError, match=r"has no ip\.safetensors"):
        adapter_files(str(tmp_path), "ip.safetensors", "image_encoder", name="empty")


def test_inpainting_takes_a_reference_and_leaks_nothing(preview: ModelRef, adapters: Path) -> None:
    mask = Image.new("L", (96, 96), 0)
    mask.paste(255, (24, 24, 72, 72))

    def inpainted(ip_adapter: IpAdapterRef | None = None) -> np.ndarray:
        prompt = ImagePrompt(ip_adapter, reference()) if ip_adapter else None
        request = InpaintRequest(gradient(96, 96), mask, PARAMS, max_side=96, image_prompt=prompt)
        return np.asarray(run_inpaint(preview, request).image, dtype=np.int16)

    base = inpainted()
    assert np.abs(inpainted(adapter(adapters)) - base).mean() > 0.5
    assert np.array_equal(inpainted(adapter(adapters, scale=0.0)), base)
    assert np.array_equal(inpainted(), base)


def test_sdxl_img2img_and_inpaint_take_a_reference(
    preview_sdxl: ModelRef, preview_sdxl_inpaint: ModelRef, adapters: Path
) -> None:
    xl = adapter(adapters, "sdxl")
    source = gradient(*XL_SOURCE_SIZE)
    mask = Image.new("L", XL_SOURCE_SIZE, 0)
    mask.paste(255, (128, 128, 512, 384))

    def run(ref: ModelRef, ip_adapter: IpAdapterRef | None, inpaint: bool) -> np.ndarray:
        prompt = ImagePrompt(ip_adapter, reference()) if ip_adapter else None
        if inpaint:
            result = run_inpaint(ref, InpaintRequest(source, mask, PARAMS, max_side=128, image_prompt=prompt))
        else:
            result = run_img2img(ref, Img2ImgRequest(source, PARAMS, max_side=128, image_prompt=prompt))
        return np.asarray(result.image, dtype=np.int16)

    for ref, inpaint in ((preview_sdxl, False), (preview_sdxl, True), (preview_sdxl_inpaint, True)):
        base = run(ref, None, inpaint)
        assert np.abs(run(ref, xl, inpaint) - base).mean() > 0.5, (ref.name, inpaint)
        assert np.array_equal(run(ref, replace(xl, scale=0.0), inpaint), base)
        assert np.array_equal(run(ref, None, inpaint), base)

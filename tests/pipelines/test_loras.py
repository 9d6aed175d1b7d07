"""LoRAs on the tiny preview model: loaded from a safetensors file on disk, applied at a weight, and switched off
so that nothing leaks into the next run."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.errors import ModelUnavailableError, PipelineInputError
from pipelines.img2img import Img2ImgRequest, run_img2img
from pipelines.inpaint import InpaintRequest, run_inpaint
from pipelines.loras import LoraRef, ensure_preview_lora, file_sha256, weights_file
from pipelines.params import LIMITS, MAX_LORAS, Img2ImgParams
from pipelines.registry import ModelRef, ensure_preview_model, resolve_model
from tests.support import gradient

PARAMS = Img2ImgParams(prompt="a red sneaker", strength=0.75, steps=4, guidance=7.5, seed=3)


@pytest.fixture(scope="module")
def preview(shared_models_dir: Path) -> ModelRef:
    ensure_preview_model(shared_models_dir)
    return resolve_model("preview", models_dir=shared_models_dir)


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny LoRA as a user's file: built, saved, then only ever read from disk."""
    return ensure_preview_lora(tmp_path_factory.mktemp("loras"), "sd15")


def lora(path: Path, weight: float = 1.0, **changes) -> LoraRef:
    return replace(LoraRef("brand", str(path), "sd15", file_sha256(path), weight), **changes)


def pixels(ref: ModelRef, *loras: LoraRef) -> np.ndarray:
    request = Img2ImgRequest(image=gradient(96, 96), params=PARAMS, loras=loras)
    return np.asarray(run_img2img(ref, request).image, dtype=np.int16)


def test_a_lora_changes_the_result_and_switching_never_leaks(preview: ModelRef, lora_file: Path) -> None:
    base = pixels(preview)
    with_lora = pixels(preview, lora(lora_file))
    assert np.abs(with_lora - base).mean() > 1  # it applies
    assert np.array_equal(pixels(preview), base)  # the next run without LoRAs is the base's, exactly
    assert np.array_equal(pixels(preview, lora(lora_file)), with_lora)  # and it re-runs identically


def test_weight_zero_gives_the_base_pixels(preview: ModelRef, lora_file: Path) -> None:
    assert np.array_equal(pixels(preview, lora(lora_file, 0.0)), pixels(preview))


def test_weights_at_the_limits_run_and_differ(preview: ModelRef, lora_file: Path) -> None:
    low, high = LIMITS["lora_weight"]
    at_low, at_high = pixels(preview, lora(lora_file, low)), pixels(preview, lora(lora_file, high))
    assert not np.array_equal(at_low, at_high)


def test_two_copies_of_one_file_apply_as_two_loras(preview: ModelRef, lora_file: Path, tmp_path: Path) -> None:
    """Adapters are named by content: a second name for the same file shares it, and both apply."""
    copy = Path(shutil.copy(lora_file, tmp_path / "copy.safetensors"))
    one = pixels(preview, lora(lora_file, 1.0))
    two = pixels(preview, lora(lora_file, 0.5), lora(copy, 0.5, name="copy"))
    base = pixels(preview)
    assert np.abs(two - base).mean() > 1 and np.abs(one - base).mean() > 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"family": "sdxl"}, "trained for Stable Diffusion XL"),
        ({"weight": LIMITS["lora_weight"][1] + 0.5}, "must be between -2 and 2"),
        ({"weight": LIMITS["lora_weight"][0] - 0.5}, "must be between -2 and 2"),
        ({"sha256": "0" * 64}, "changed since it was recorded"),
    ],
)
def test_a_bad_lora_is_refused_with_a_message(preview: ModelRef, lora_file: Path, change: dict, message: str) -> None:
    with pytest.raises(PipelineInputError, match=message):
        pixels(preview, lora(lora_file, **change))
    assert np.array_equal(pixels(preview), pixels(preview))  # and the model is untouched


def test_too_many_or_repeated_loras_are_refused(preview: ModelRef, lora_file: Path) -> None:
    with pytest.raises(PipelineInputError, match=f"at most {MAX_LORAS}"):
        pixels(preview, *(lora(lora_file, name=f"l{i}") for i in range(MAX_LORAS + 1)))
    with pytest.raises(PipelineInputError, match="added once"):
        pixels(preview, lora(lora_file), lora(lora_file))


def test_a_missing_file_is_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="hf download someone/no-such-lora"):
        weights_file("someone/no-such-lora", name="hub")
    with pytest.raises(ModelUnavailableError, match="no file or folder"):
        weights_file(str(tmp_path / "gone.safetensors"), name="gone")
    with pytest.raises(ModelUnavailableError, match="has no pytorch_lora_weights"):
        weights_file(str(tmp_path), name="empty")


def test_a_file_that_is_no_lora_is_refused(preview: ModelRef, tmp_path: Path) -> None:
    path = tmp_path / "picture.safetensors"
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    path.write_bytes((tmp_path / "x.png").read_bytes())
    with pytest.raises(PipelineInputError, match="does not fit this model"):
        pixels(preview, lora(path))
    assert np.array_equal(pixels(preview), pixels(preview))


def test_inpainting_applies_a_lora_and_leaks_nothing(preview: ModelRef, lora_file: Path) -> None:
    mask = Image.new("L", (96, 96), 0)
    mask.paste(255, (24, 24, 72, 72))

    def inpainted(*loras: LoraRef) -> np.ndarray:
        request = InpaintRequest(gradient(96, 96), mask, PARAMS, max_side=96, loras=loras)
        return np.asarray(run_inpaint(preview, request).image, dtype=np.int16)

    base = inpainted()
    assert np.abs(inpainted(lora(lora_file)) - base).mean() > 0.5
    assert np.array_equal(inpainted(lora(lora_file, 0.0)), base)
    assert np.array_equal(inpainted(), base)
    with pytest.raises(PipelineInputError, match="trained for Stable Diffusion XL"):
        inpainted(lora(lora_file, family="sdxl"))

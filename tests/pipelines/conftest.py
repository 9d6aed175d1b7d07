"""Fixtures for the model-family tests: the tiny preview models of each family, built once per run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from pipelines.registry import ModelRef, ensure_preview_model, resolve_model
from tests.support import gradient

# SDXL takes sources of at least 512 px per side (Family.min_side); tests render them at a small max_side.
XL_SOURCE_SIZE = (768, 512)


def preview_ref(models_dir: Path, name: str) -> ModelRef:
    ensure_preview_model(models_dir, name)
    return resolve_model(name, models_dir=models_dir)


@pytest.fixture(scope="session")
def preview_sdxl(shared_models_dir: Path) -> ModelRef:
    """The tiny SDXL model (4-channel UNet, target-size conditioning)."""
    return preview_ref(shared_models_dir, "preview-sdxl")


@pytest.fixture(scope="session")
def preview_sdxl_controlnet(shared_models_dir: Path) -> ModelRef:
    return preview_ref(shared_models_dir, "preview-sdxl-controlnet")


@pytest.fixture(scope="session")
def preview_sdxl_inpaint(shared_models_dir: Path) -> ModelRef:
    """The tiny 9-channel SDXL inpainting model."""
    return preview_ref(shared_models_dir, "preview-sdxl-inpaint")


@pytest.fixture(scope="session")
def preview_sd21(shared_models_dir: Path) -> ModelRef:
    return preview_ref(shared_models_dir, "preview-sd21")


@pytest.fixture
def xl_unet_calls(preview_sdxl: ModelRef) -> Iterator[list[dict]]:
    """The keyword arguments of every forward call of the tiny SDXL base's UNet (request pipelines share it)."""
    from pipelines.cache import get_base_pipeline

    calls: list[dict] = []
    unet = get_base_pipeline(preview_sdxl).unet
    handle = unet.register_forward_pre_hook(
        lambda _m, args, kwargs: calls.append({"args": args, **kwargs}), with_kwargs=True
    )
    yield calls
    handle.remove()


def xl_source() -> Image.Image:
    return gradient(*XL_SOURCE_SIZE)


def box_mask(size: tuple[int, int], box: tuple[int, int, int, int], value: int = 255) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(value, box)
    return mask

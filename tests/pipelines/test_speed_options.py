"""Opt-in speed options (pipelines.cache.SpeedOptions): STUDIO_ATTENTION selects the denoiser's attention backend
and STUDIO_COMPILE=1 compiles it, once per loaded model; both keep the pixels (within 1/255 on the CPU)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry
from PIL import Image
from torch.nn.attention import SDPBackend

from pipelines import cache
from pipelines.errors import ModelUnavailableError
from pipelines.img2img import Img2ImgRequest, run_img2img
from pipelines.params import ATTENTION_BACKENDS, Img2ImgParams
from pipelines.registry import ModelRef
from studio.config import load_settings
from studio.errors import ConfigError
from tests.pipelines.conftest import preview_ref

REQUEST = Img2ImgRequest(
    image=Image.new("RGB", (128, 128), (200, 80, 40)),
    params=Img2ImgParams(prompt="a watercolor shoe", strength=0.5, steps=4, seed=1),
    max_side=128,
)


@pytest.fixture
def speed_options():
    """Set options for one test; the default options and diffusers' global backend come back after it."""
    yield cache.set_speed_options
    cache.set_speed_options(cache.SpeedOptions())
    _AttentionBackendRegistry.set_active_backend(AttentionBackendName.NATIVE)


def pixels(ref: ModelRef) -> np.ndarray:
    return np.asarray(run_img2img(ref, REQUEST).image).astype(int)


def test_every_offered_backend_is_one_of_diffusers_own():
    assert set(ATTENTION_BACKENDS) <= {backend.value for backend in AttentionBackendName}
    assert not any(name.endswith("_hub") for name in ATTENTION_BACKENDS)  # they download kernels at run time


@pytest.mark.parametrize("value", ["fastest", "flash_hub", "sdpa"])
def test_an_unknown_backend_stops_the_studio_naming_the_valid_ones(tmp_path, value):
    with pytest.raises(ConfigError, match=r"STUDIO_ATTENTION must be one of native, _native_flash, .*xformers"):
        load_settings({"STUDIO_DATA_DIR": str(tmp_path), "STUDIO_ATTENTION": value}, secrets_path=Path("/none"))


@pytest.mark.skipif(importlib.util.find_spec("xformers") is not None, reason="xformers is installed here")
def test_a_backend_whose_package_is_missing_stops_the_studio_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"needs the Python package 'xformers'.*native, _native_flash"):
        load_settings({"STUDIO_DATA_DIR": str(tmp_path), "STUDIO_ATTENTION": "xformers"}, secrets_path=Path("/none"))


def test_the_options_are_read_and_off_by_default(tmp_path):
    base = {"STUDIO_DATA_DIR": str(tmp_path)}
    default = load_settings(base, secrets_path=Path("/none"))
    assert (default.compile, default.attention) == (False, None)
    chosen = load_settings(base | {"STUDIO_COMPILE": "1", "STUDIO_ATTENTION": "_Native_Math"}, secrets_path=Path("/x"))
    assert (chosen.compile, chosen.attention) == (True, "_native_math")


def test_a_unet_takes_a_backend_as_its_attention_processor_with_the_same_pixels(preview, speed_options):
    default = pixels(preview)
    speed_options(cache.SpeedOptions(attention="_native_math"))
    unet = cache.get_base_pipeline(preview).unet
    kernels = {processor.kernel for processor in unet.attn_processors.values()}
    assert kernels == {SDPBackend.MATH}
    assert np.abs(pixels(preview) - default).max() <= 1


def test_a_backend_a_unet_cannot_take_is_refused_by_name(preview, speed_options):
    speed_options(cache.SpeedOptions(attention="flex"))
    with pytest.raises(ModelUnavailableError, match="STUDIO_ATTENTION=flex applies to transformer models"):
        cache.get_base_pipeline(preview)


def test_a_transformer_takes_it_through_diffusers_dispatcher(shared_models_dir, speed_options):
    flux = preview_ref(shared_models_dir, "preview-flux")
    speed_options(cache.SpeedOptions(attention="_native_math"))
    transformer = cache.get_base_pipeline(flux).transformer
    backends = {module.processor._attention_backend for module in transformer.modules() if hasattr(module, "processor")}
    assert backends == {AttentionBackendName._NATIVE_MATH}


@pytest.mark.slow  # the first compiled run compiles: minutes on a 2-core CPU
def test_a_compiled_unet_is_compiled_once_and_gives_the_same_pixels(preview, speed_options):
    default = pixels(preview)
    speed_options(cache.SpeedOptions(compile=True))
    unet = cache.get_base_pipeline(preview).unet
    assert unet._compiled_call_impl is not None  # nn.Module.compile, in place
    assert np.abs(pixels(preview) - default).max() <= 1
    assert cache.get_base_pipeline(preview).unet is unet  # kept in the cache: not compiled again

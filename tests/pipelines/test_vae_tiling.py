"""VAE tiling (pipelines.denoise.vae_tiling): outputs above VAE_TILING_PIXELS (a 4096-px upscale) encode and decode in
overlapping tiles, so memory stays that of a tile; a batch above it decodes one image at a time; smaller outputs are
untouched. Figures: bench/vae_tiling.py."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionUpscalePipeline

import pipelines.denoise
from pipelines.cache import get_base_pipeline, get_pipeline
from pipelines.denoise import vae_tiling
from pipelines.params import MAX_UPSCALED_SIDE, VAE_TILING_PIXELS, Img2ImgParams
from pipelines.registry import resolve_model
from pipelines.upscale import UpscaleRequest, run_upscale
from tests.pipelines.test_upscale import models_dir as models_dir
from tests.pipelines.test_upscale import photo


def test_a_4096_px_upscale_is_above_the_threshold_and_every_earlier_size_below():
    assert MAX_UPSCALED_SIDE**2 > VAE_TILING_PIXELS >= 2048 * 2048


def test_tiling_switches_on_above_the_threshold_and_back_after(preview):
    vae = get_base_pipeline(preview).vae
    pipe = type("Pipe", (), {"vae": vae})()
    with vae_tiling(pipe, pixels=VAE_TILING_PIXELS) as tiled:
        assert (tiled, vae.use_tiling, vae.use_slicing) == (False, False, False)
    with vae_tiling(pipe, pixels=VAE_TILING_PIXELS + 1) as tiled:
        assert (tiled, vae.use_tiling, vae.use_slicing) == (True, True, False)
    with vae_tiling(pipe, pixels=VAE_TILING_PIXELS // 2 + 1, images=2) as tiled:
        assert (tiled, vae.use_tiling, vae.use_slicing) == (False, False, True)  # a batch: one image at a time
    with pytest.raises(RuntimeError), vae_tiling(pipe, pixels=VAE_TILING_PIXELS + 1):
        raise RuntimeError("out of memory")
    assert (vae.use_tiling, vae.use_slicing) == (False, False)  # the shared VAE is left as it was, whatever happens


def local_decoder_vae() -> AutoencoderKL:
    """A tiny VAE whose decoder only sees nearby latents (no GroupNorm, no mid-block attention): random GroupNorm
    statistics and attention are whole-image, so on random weights they, not the tiling, would decide the difference.
    Trained VAEs are close to local, which is what makes tiling work for them."""
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(32, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        sample_size=128,  # tiles of 128 px (16 latents), overlapping by a quarter
        mid_block_add_attention=False,
    ).eval()
    for module in list(vae.decoder.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.GroupNorm):
                setattr(module, name, torch.nn.Identity())
    return vae


def test_a_tiled_decode_matches_the_whole_one_within_tolerance():
    vae = local_decoder_vae()
    torch.manual_seed(1)
    latents = torch.nn.functional.interpolate(torch.randn(1, 4, 6, 8), size=(48, 64), mode="bilinear")  # 384×512 px
    with torch.no_grad():
        whole = vae.decode(latents).sample
        vae.enable_tiling()
        tiled = vae.decode(latents).sample
    assert tiled.shape == whole.shape == (1, 3, 384, 512)
    # Measured: mean 4 %, seams at most 1.6 of the image's standard deviation.
    assert (tiled - whole).abs().mean() <= 0.06 * whole.std()
    assert (tiled - whole).abs().max() <= 2.5 * whole.std()


def test_an_upscale_above_the_threshold_decodes_in_tiles(models_dir, monkeypatch):
    """The threshold lowered to a small upscale's output, so the tiny 4× upscaler runs above it on a CPU."""
    ref = resolve_model("preview-upscaler-x4", models_dir=models_dir)
    pipe = get_pipeline(ref, StableDiffusionUpscalePipeline, safety_checker=None)
    seen: list[bool] = []
    decode = pipe.vae.decode

    def watched(*args, **kwargs):
        seen.append(pipe.vae.use_tiling)
        return decode(*args, **kwargs)

    monkeypatch.setattr(pipe.vae, "decode", watched)
    request = UpscaleRequest(photo(64, 48), Img2ImgParams(prompt="", steps=2, seed=1), 4)
    run_upscale(ref, request)
    monkeypatch.setattr(pipelines.denoise, "VAE_TILING_PIXELS", 256 * 192 - 1)
    result = run_upscale(ref, request)
    assert seen == [False, True] and not pipe.vae.use_tiling
    assert result.image.size == (256, 192)

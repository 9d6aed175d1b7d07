"""A tiny, randomly initialised Stable Diffusion img2img pipeline that needs no download.

It has the shapes of real SD 1.x (4 latent channels, a VAE that downscales ×8, CLIP text conditioning)
at a few MB, so the whole app runs offline and tests run in seconds. Its pictures are noise: it is a
preview of the plumbing, not of image quality. Same recipe as diffusers' own pipeline tests.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DDIMScheduler,
    StableDiffusionImg2ImgPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MAX_TOKENS = 77


def build_tiny_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP tokenizer with no merges: every byte is a token, so it needs no vocab files."""
    chars = list(bytes_to_unicode().values())
    # CLIP's BPE marks a word's last symbol with "</w>", so each byte needs both forms.
    tokens = chars + [c + "</w>" for c in chars] + [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=MAX_TOKENS)


def build_tiny_sd_pipeline(seed: int = 0) -> StableDiffusionImg2ImgPipeline:
    """Build the tiny pipeline; the same seed gives the same weights."""
    tokenizer = build_tiny_tokenizer()
    vocab = tokenizer.get_vocab()

    # Seed before each component so its weights do not depend on how the others were built.
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )
    torch.manual_seed(seed)
    # Four blocks → three downsamplings → the same ×8 pixel-to-latent ratio as real SD.
    vae = AutoencoderKL(
        block_out_channels=(32, 32, 32, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        sample_size=128,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=5,
            max_position_embeddings=MAX_TOKENS,
            layer_norm_eps=1e-5,
            # The pooled output is taken at the EOS token, so the ids must match the tokenizer's.
            bos_token_id=vocab[BOS_TOKEN],
            eos_token_id=vocab[EOS_TOKEN],
            pad_token_id=vocab[EOS_TOKEN],
        )
    )
    # Real SD 1.x's DDIM settings, so schedules (and strength → steps) behave as with a real model.
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionImg2ImgPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_controlnet(seed: int = 0) -> ControlNetModel:
    """A ControlNet for the tiny pipeline, made from its UNet (as real ControlNets start from SD's UNet).

    Its default conditioning embedding downsamples ×8, matching the VAE, so guide images of any ×8 size fit.
    """
    return ControlNetModel.from_unet(build_tiny_sd_pipeline(seed).unet)


def save_tiny_sd_pipeline(folder: Path, seed: int = 0) -> Path:
    """Build the tiny pipeline and save it (safetensors, model_index.json) for an offline from_pretrained."""
    folder = Path(folder)
    build_tiny_sd_pipeline(seed).save_pretrained(folder, safe_serialization=True)
    return folder


def save_tiny_model(name: str, folder: Path) -> Path:
    """Build and save the tiny model called `name` (see pipelines.registry.PREVIEW_MODELS) into `folder`."""
    builders = {
        "preview": build_tiny_sd_pipeline,
        "preview-controlnet": build_tiny_controlnet,
    }
    if name not in builders:
        raise ValueError(f"No tiny model called {name!r}; known: {', '.join(builders)}.")
    builders[name]().save_pretrained(Path(folder), safe_serialization=True)
    return Path(folder)

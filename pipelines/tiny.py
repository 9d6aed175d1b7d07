"""Tiny, randomly initialised pipelines that need no download: the preview models of every family.

Each has the shapes of the real thing (4 latent channels, a VAE that downscales ×8, CLIP text conditioning;
SD 2.x's linear projections and v-prediction; SDXL's two text encoders and added time ids) at a few MB, so
the whole app runs offline and tests run in seconds. Their pictures are noise: they preview the plumbing,
not image quality. Same recipe as diffusers' own pipeline tests (../shared/PLATFORM.md has the details).
pipelines.registry.PREVIEW_BUILDERS says which function builds which preview model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLQwenImage,
    ControlNetModel,
    DDIMScheduler,
    DDPMScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxFillPipeline,
    FluxImg2ImgPipeline,
    FluxKontextPipeline,
    FluxTransformer2DModel,
    QwenImageEditPipeline,
    QwenImageEditPlusPipeline,
    QwenImageTransformer2DModel,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionLatentUpscalePipeline,
    StableDiffusionUpscalePipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
    Qwen2VLImageProcessorPil,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode

from pipelines.families.sdxl import TIME_IDS_WITH_AESTHETIC_SCORE, TIME_IDS_WITH_TARGET_SIZE
from pipelines.registry import PREVIEW_BUILDERS

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MAX_TOKENS = 77
TINY_IMAGE_EMBEDS = 16  # the tiny image encoder's projection width


def build_tiny_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP tokenizer with no merges: every byte is a token, so it needs no vocab files."""
    chars = list(bytes_to_unicode().values())
    # CLIP's BPE marks a word's last symbol with "</w>", so each byte needs both forms.
    tokens = chars + [c + "</w>" for c in chars] + [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=MAX_TOKENS)


def build_tiny_text_encoder(
    tokenizer: CLIPTokenizer,
    seed: int = 0,
    hidden_act: str = "quick_gelu",
    model_class: type[CLIPTextModel | CLIPTextModelWithProjection] = CLIPTextModel,
    **config: object,
) -> CLIPTextModel | CLIPTextModelWithProjection:
    """A 5-layer, 32-wide CLIP text encoder for the byte-level tokenizer (`config`: more CLIPTextConfig fields)."""
    vocab = tokenizer.get_vocab()
    torch.manual_seed(seed)
    return model_class(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=5,
            max_position_embeddings=MAX_TOKENS,
            layer_norm_eps=1e-5,
            hidden_act=hidden_act,
            # The pooled output is taken at the EOS token, so the ids must match the tokenizer's.
            bos_token_id=vocab[BOS_TOKEN],
            eos_token_id=vocab[EOS_TOKEN],
            pad_token_id=vocab[EOS_TOKEN],
            **config,
        )
    )


def build_tiny_vae(seed: int = 0, blocks: int = 4) -> AutoencoderKL:
    """`blocks` encoder blocks → blocks − 1 downsamplings: 4 gives SD's ×8 pixels per latent, 3 the 4× upscaler's ×4."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(32,) * blocks,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        latent_channels=4,
        sample_size=128 if blocks == 4 else 32,
    )


# The tiny UNet's shape, shared by every family's (which add their conditioning: text width, time ids, …).
TINY_UNET = {
    "block_out_channels": (32, 64),
    "layers_per_block": 2,
    "sample_size": 32,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
}
# Real SD 1.x/2.x DDIM settings, so schedules (and strength → steps) behave as with a real model.
SD_DDIM = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


def build_tiny_sd_pipeline(seed: int = 0) -> StableDiffusionImg2ImgPipeline:
    """Build the tiny pipeline; the same seed gives the same weights."""
    tokenizer = build_tiny_tokenizer()

    # Seed before each component so its weights do not depend on how the others were built.
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET, in_channels=4, cross_attention_dim=32)
    vae = build_tiny_vae(seed)
    text_encoder = build_tiny_text_encoder(tokenizer, seed)
    scheduler = DDIMScheduler(**SD_DDIM)
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
    """A ControlNet for the tiny SD 1.x pipeline (see controlnet_from_unet)."""
    return controlnet_from_unet(build_tiny_sd_pipeline(seed).unet, seed)


def controlnet_from_unet(unet: UNet2DConditionModel, seed: int = 0) -> ControlNetModel:
    """A ControlNet made from a tiny pipeline's UNet (as real ControlNets start from their base model's UNet).

    `from_unet` zero-initialises the "zero convolutions" that feed the guide into the UNet, as training
    starts; untrained, that ControlNet would change nothing. So they get seeded random weights (as in
    diffusers' own ControlNet tests), and the guide and conditioning scale visibly steer the result.
    Its conditioning embedding downsamples ×8, matching the VAE, so guide images of any ×8 size fit.
    """
    controlnet = ControlNetModel.from_unet(unet)
    generator = torch.Generator().manual_seed(seed)
    zero_convolutions = [
        controlnet.controlnet_cond_embedding.conv_out,
        *controlnet.controlnet_down_blocks,
        controlnet.controlnet_mid_block,
    ]
    with torch.no_grad():
        for conv in zero_convolutions:
            conv.weight.normal_(0, 0.1, generator=generator)
            conv.bias.normal_(0, 0.1, generator=generator)
    return controlnet


def build_tiny_sd21_pipeline(seed: int = 0) -> StableDiffusionImg2ImgPipeline:
    """The tiny pipeline with SD 2.x's settings (as diffusers' SD 2 tests): linear projections in the transformer
    blocks, per-level attention heads, a GELU text encoder (OpenCLIP's) and SD 2.1-768's v-prediction DDIM."""
    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        **TINY_UNET, in_channels=4, cross_attention_dim=32, attention_head_dim=(2, 4), use_linear_projection=True
    )
    scheduler = DDIMScheduler(**SD_DDIM, prediction_type="v_prediction")
    pipe = StableDiffusionImg2ImgPipeline(
        vae=build_tiny_vae(seed).eval(),
        text_encoder=build_tiny_text_encoder(tokenizer, seed, hidden_act="gelu").eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_sd21_controlnet(seed: int = 0) -> ControlNetModel:
    return controlnet_from_unet(build_tiny_sd21_pipeline(seed).unet, seed)


def build_tiny_sdxl_unet(seed: int = 0, *, aesthetics: bool = False, in_channels: int = 4) -> UNet2DConditionModel:
    """SDXL's UNet in small: the SD one plus text-time added embeddings (8 wide per time id, plus the 32-wide pooled
    text embedding), cross-attention on both encoders' hidden states (32 + 32), linear projections, two
    transformer layers at the deeper level. `aesthetics`: refiner-style (5 time ids, an aesthetic score instead of
    the target size); `in_channels` 9: an inpainting UNet (latents, mask, masked source)."""
    time_ids = TIME_IDS_WITH_AESTHETIC_SCORE if aesthetics else TIME_IDS_WITH_TARGET_SIZE
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        **TINY_UNET,
        in_channels=in_channels,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=8 * time_ids + 32,
        cross_attention_dim=64,
    ).eval()


def build_tiny_sdxl_pipeline(
    seed: int = 0, *, aesthetics: bool = False, in_channels: int = 4
) -> StableDiffusionXLImg2ImgPipeline | StableDiffusionXLInpaintPipeline:
    """The tiny SDXL pipeline (an inpainting pipeline when the UNet takes 9 channels), with SDXL's Euler scheduler
    ("leading" spacing). Both tokenizers are the byte-level one; the second encoder adds a 32-wide projection."""
    tokenizer = build_tiny_tokenizer()
    components = {
        "vae": build_tiny_vae(seed).eval(),
        "text_encoder": build_tiny_text_encoder(tokenizer, seed, hidden_act="gelu", projection_dim=32).eval(),
        "text_encoder_2": build_tiny_text_encoder(
            tokenizer, seed + 1, hidden_act="gelu", model_class=CLIPTextModelWithProjection, projection_dim=32
        ).eval(),
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer,
        "unet": build_tiny_sdxl_unet(seed, aesthetics=aesthetics, in_channels=in_channels),
        "scheduler": EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            steps_offset=1,
            timestep_spacing="leading",
        ),
        "requires_aesthetics_score": aesthetics,
        "add_watermarker": False,
    }
    cls = StableDiffusionXLInpaintPipeline if in_channels == 9 else StableDiffusionXLImg2ImgPipeline
    pipe = cls(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_sdxl_inpainting_pipeline(seed: int = 0) -> StableDiffusionXLInpaintPipeline:
    """A tiny dedicated SDXL inpainting checkpoint: its UNet also takes the mask and the masked source's latents."""
    return build_tiny_sdxl_pipeline(seed, in_channels=9)


def build_tiny_sdxl_controlnet(seed: int = 0) -> ControlNetModel:
    return controlnet_from_unet(build_tiny_sdxl_unet(seed), seed)


def build_tiny_t5_tokenizer() -> T5Tokenizer:
    """A T5 tokenizer with no sentencepiece file: a Unigram vocabulary of the printable ASCII characters, alone
    and after the word-start mark "▁" (in transformers 5, T5Tokenizer is backed by the `tokenizers` library)."""
    chars = [chr(code) for code in range(32, 127)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(char, -3.0) for char in chars] + [("▁" + char, -2.5) for char in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def build_tiny_t5_encoder(tokenizer: T5Tokenizer, seed: int = 0, width: int = 32) -> T5EncoderModel:
    """A 2-layer T5 encoder `width` wide (FLUX's joint_attention_dim), in eval mode: T5's dropout would
    otherwise change every run's output."""
    torch.manual_seed(seed)
    config = T5Config(
        d_model=width,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        vocab_size=len(tokenizer),
        relative_attention_num_buckets=8,
        is_encoder_decoder=False,
        use_cache=False,
    )
    return T5EncoderModel(config).eval()


def build_tiny_flux_vae(seed: int = 0) -> AutoencoderKL:
    """FLUX's VAE layout (×8, no quant convs, a shift factor) at 4 channels and 1 latent channel."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(4,) * 4,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=1,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    ).eval()


def build_tiny_flux_transformer(seed: int = 0, *, in_channels: int = 4) -> FluxTransformer2DModel:
    """One double and one single block on 4-channel tokens (1 latent channel packed 2×2); `in_channels` more for
    FLUX.1 Fill, whose tokens also carry the packed masked source and mask."""
    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=in_channels,
        out_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
        guidance_embeds=True,
    ).eval()


def flux_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """FLUX.1 [dev]'s scheduler config: the shift grows with the image's token count (dynamic shifting)."""
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_image_seq_len=256,
        max_image_seq_len=4096,
        base_shift=0.5,
        max_shift=1.15,
    )


def _flux_components(seed: int, transformer_channels: int) -> dict:
    tokenizer, tokenizer_2 = build_tiny_tokenizer(), build_tiny_t5_tokenizer()
    return {
        "scheduler": flux_scheduler(),
        "vae": build_tiny_flux_vae(seed),
        "text_encoder": build_tiny_text_encoder(tokenizer, seed, model_class=CLIPTextModel).eval(),
        "tokenizer": tokenizer,
        "text_encoder_2": build_tiny_t5_encoder(tokenizer_2, seed),
        "tokenizer_2": tokenizer_2,
        "transformer": build_tiny_flux_transformer(seed, in_channels=transformer_channels),
    }


def build_tiny_flux_pipeline(seed: int = 0) -> FluxImg2ImgPipeline:
    """A tiny FLUX.1 (its pooled CLIP and T5 text embeddings are both 32 wide)."""
    return FluxImg2ImgPipeline(**_flux_components(seed, 4))


def build_tiny_flux_fill_pipeline(seed: int = 0) -> FluxFillPipeline:
    """A tiny FLUX.1 Fill: the transformer also takes the packed masked source (4 channels) and the mask, packed
    from its ×8 pixel blocks (8 · 8 · 4 = 256 channels)."""
    return FluxFillPipeline(**_flux_components(seed, 4 + 4 + 256))


def build_tiny_flux_kontext_pipeline(seed: int = 0) -> FluxKontextPipeline:
    """A tiny FLUX.1 Kontext: FLUX.1's components; the source's latents join the noise as tokens."""
    return FluxKontextPipeline(**_flux_components(seed, 4))


QWEN_SPECIAL_TOKENS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


def build_tiny_qwen_tokenizer() -> Qwen2Tokenizer:
    """A byte-level Qwen2 tokenizer with no merges (every byte a token) and the chat and vision special tokens the
    editors' prompt template uses; "<|endoftext|>" ends and pads."""
    vocab = {char: index for index, char in enumerate(bytes_to_unicode().values())}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], eos_token=EOS_TOKEN, pad_token=EOS_TOKEN, unk_token=None)
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS)})
    return tokenizer


def _qwen_components(seed: int) -> dict:
    from pipelines.qwen import ImageOnlyQwenProcessor

    tokenizer = build_tiny_qwen_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in (EOS_TOKEN, *QWEN_SPECIAL_TOKENS)}
    torch.manual_seed(seed)
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
            "vocab_size": len(tokenizer),
            "bos_token_id": ids[EOS_TOKEN],
            "eos_token_id": ids[EOS_TOKEN],
        },
        vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16},
        hidden_size=16,
        vocab_size=len(tokenizer),
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
    )
    text_encoder = Qwen2_5_VLForConditionalGeneration(config).eval()
    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    ).eval()
    torch.manual_seed(seed)
    vae = AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 2, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    ).eval()
    return {
        "scheduler": flux_scheduler(),
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "processor": ImageOnlyQwenProcessor(image_processor=Qwen2VLImageProcessorPil(), tokenizer=tokenizer),
        "transformer": transformer,
    }


def build_tiny_qwen_image_edit_pipeline(seed: int = 0) -> QwenImageEditPipeline:
    """A tiny Qwen-Image-Edit: a 2-layer Qwen2.5-VL reads the instruction with the source, a 2-layer MMDiT edits."""
    return QwenImageEditPipeline(**_qwen_components(seed))


def build_tiny_qwen_image_edit_plus_pipeline(seed: int = 0) -> QwenImageEditPlusPipeline:
    """The same tiny parts as Qwen-Image-Edit Plus, which reads up to three images."""
    return QwenImageEditPlusPipeline(**_qwen_components(seed))


def build_tiny_latent_upscaler_pipeline(seed: int = 0) -> StableDiffusionLatentUpscalePipeline:
    """A tiny 2× latent upscaler (stabilityai/sd-x2-latent-upscaler's shapes, as in diffusers' tests).

    Its VAE is the tiny SD one (the real upscaler uses SD's VAE); its K-UNet takes the noisy latents and
    the source's latents (8 channels) and predicts the sample plus a variance channel (5), conditioned
    on the text encoder's hidden states and pooled output (time_cond_proj_dim = 32 × 5).
    """
    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        act_fn="gelu",
        attention_head_dim=8,
        block_out_channels=(32, 32, 64, 64),
        conv_in_kernel=1,
        conv_out_kernel=1,
        cross_attention_dim=32,
        down_block_types=("KDownBlock2D", "KCrossAttnDownBlock2D", "KCrossAttnDownBlock2D", "KCrossAttnDownBlock2D"),
        in_channels=8,
        mid_block_type=None,
        norm_num_groups=None,
        out_channels=5,
        resnet_time_scale_shift="scale_shift",
        time_cond_proj_dim=160,
        time_embedding_type="fourier",
        timestep_post_act="gelu",
        up_block_types=("KCrossAttnUpBlock2D", "KCrossAttnUpBlock2D", "KCrossAttnUpBlock2D", "KUpBlock2D"),
    )
    scheduler = EulerDiscreteScheduler(prediction_type="sample")
    pipe = StableDiffusionLatentUpscalePipeline(
        vae=build_tiny_vae(seed),
        text_encoder=build_tiny_text_encoder(tokenizer, seed),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_x4_upscaler_pipeline(seed: int = 0) -> StableDiffusionUpscalePipeline:
    """A tiny 4× upscaler (stabilityai/stable-diffusion-x4-upscaler's shapes, as in diffusers' tests).

    The UNet runs at the source's resolution on the noisy latents plus the (noised) source's RGB
    (7 channels), with the noise level as a class embedding (1000 classes, so every level up to the
    real max_noise_level 350 fits); the VAE decodes ×4. One layer per block keeps it at ~6 MB.
    """
    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=7,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        only_cross_attention=(True, True, False),
        use_linear_projection=True,
        cross_attention_dim=32,
        attention_head_dim=8,
        num_class_embeds=1000,
    )
    vae = build_tiny_vae(seed, blocks=3)
    vae.register_to_config(scaling_factor=0.08333)  # the real 4× upscaler's
    pipe = StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=build_tiny_text_encoder(tokenizer, seed, hidden_act="gelu"),
        tokenizer=tokenizer,
        unet=unet,
        low_res_scheduler=DDPMScheduler(
            beta_start=0.0001, beta_end=0.02, beta_schedule="scaled_linear", clip_sample=True
        ),
        scheduler=DDIMScheduler(
            beta_start=0.0001,
            beta_end=0.02,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
            prediction_type="v_prediction",
        ),
        safety_checker=None,
        watermarker=None,
        max_noise_level=350,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_sd_pipeline(folder: Path, seed: int = 0) -> Path:
    """Build the tiny pipeline and save it (safetensors, model_index.json) for an offline from_pretrained."""
    folder = Path(folder)
    build_tiny_sd_pipeline(seed).save_pretrained(folder, safe_serialization=True)
    return folder


# The tiny model a preview LoRA is shaped for, by family, and the denoiser its layers go on (pipelines.loras)
TINY_LORA_BASES = {
    "sd15": ("build_tiny_sd_pipeline", "unet"),
    "flux-kontext": ("build_tiny_flux_kontext_pipeline", "transformer"),
    "qwen-image-edit": ("build_tiny_qwen_image_edit_pipeline", "transformer"),
    "qwen-image-edit-plus": ("build_tiny_qwen_image_edit_plus_pipeline", "transformer"),
}


def save_tiny_lora(folder: Path, seed: int = 1, *, family: str = "sd15") -> Path:
    """A rank-4 LoRA on the attention projections of `family`'s tiny denoiser (the SD 1.x UNet, or the FLUX.1
    Kontext / Qwen-Image-Edit transformer), saved as a user's LoRA file would be (diffusers' save_lora_weights:
    folder/pytorch_lora_weights.safetensors). Random, not zero, up-projections (a trained LoRA's), so it visibly
    changes the result; the same seed gives the same file."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    builder, part = TINY_LORA_BASES[family]
    pipe = globals()[builder]()
    denoiser = getattr(pipe, part)
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False)
    denoiser.add_adapter(config)
    # The transformers' few tiny layers barely move the pixels at peft's initial scale: up-projections 4× larger
    gain = 1.0 if part == "unet" else 4.0
    state = get_peft_model_state_dict(denoiser)
    layers = {key: value * gain if "lora_B" in key else value for key, value in state.items()}
    type(pipe).save_lora_weights(Path(folder), **{f"{part}_lora_layers": layers}, safe_serialization=True)
    return Path(folder) / "pytorch_lora_weights.safetensors"


def build_tiny_image_encoder(seed: int = 0) -> CLIPVisionModelWithProjection:
    """A 2-layer, 32-wide CLIP vision encoder on 32 px images, projecting to TINY_IMAGE_EMBEDS (an IP-Adapter's
    image-embedding width is its encoder's projection_dim)."""
    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=32,
        projection_dim=TINY_IMAGE_EMBEDS,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        image_size=32,
        patch_size=4,
    )
    return CLIPVisionModelWithProjection(config).eval()


def tiny_ip_adapter_weights(unet: UNet2DConditionModel, seed: int = 2) -> dict[str, torch.Tensor]:
    """An IP-Adapter for `unet` in the original layout: the image projection (image embeds → 4 tokens of the UNet's
    cross-attention width) and, per cross-attention layer in diffusers' order (keys 1, 3, 5, …), the key and
    value projections of those tokens. Random, as a trained adapter's, so a reference visibly changes the result."""
    torch.manual_seed(seed)
    width, channels = unet.config.cross_attention_dim, unet.config.block_out_channels
    weights = {
        "image_proj.proj.weight": torch.randn(width * 4, TINY_IMAGE_EMBEDS) * 0.5,
        "image_proj.proj.bias": torch.randn(width * 4) * 0.1,
        "image_proj.norm.weight": torch.ones(width),
        "image_proj.norm.bias": torch.zeros(width),
    }
    cross_attention = [name for name in unet.attn_processors if not name.endswith("attn1.processor")]
    for index, name in enumerate(cross_attention):
        level = int(name.split(".")[1]) if not name.startswith("mid_block") else -1
        hidden = list(reversed(channels))[level] if name.startswith("up_blocks") else channels[level]
        for projection in ("to_k_ip", "to_v_ip"):
            weights[f"ip_adapter.{2 * index + 1}.{projection}.weight"] = torch.randn(hidden, width) * 0.3
    return weights


def save_tiny_ip_adapter(folder: Path, family: str, seed: int = 2) -> Path:
    """The tiny IP-Adapter of `family`'s preview models (sd15, sdxl) as a user's would be laid out: folder/
    ip-adapter.safetensors and its image encoder in folder/image_encoder/. The same seed gives the same files."""
    from safetensors.torch import save_file

    unet = {"sd15": lambda: build_tiny_sd_pipeline().unet, "sdxl": build_tiny_sdxl_unet}[family]()
    folder = Path(folder)
    build_tiny_image_encoder(seed).save_pretrained(folder / "image_encoder", safe_serialization=True)
    save_file(tiny_ip_adapter_weights(unet, seed), folder / "ip-adapter.safetensors")
    return folder


def save_tiny_model(name: str, folder: Path) -> Path:
    """Build and save the tiny model called `name` (see pipelines.registry.PREVIEW_MODELS) into `folder`."""
    if name not in PREVIEW_BUILDERS:
        raise ValueError(f"No tiny model called {name!r}; known: {', '.join(PREVIEW_BUILDERS)}.")
    globals()[PREVIEW_BUILDERS[name]]().save_pretrained(Path(folder), safe_serialization=True)
    index_file = Path(folder) / "model_index.json"
    if index_file.is_file():
        index = json.loads(index_file.read_text())
        if "processor" in index:
            # As a real checkpoint records it; the cache hands the pipeline an image-only one (pipelines.qwen).
            index["processor"] = ["transformers", "Qwen2VLProcessor"]
            index_file.write_text(json.dumps(index, indent=2))
    return Path(folder)

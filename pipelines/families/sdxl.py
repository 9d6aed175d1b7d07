"""Stable Diffusion XL: two text encoders (the second's pooled output conditions the UNet too), micro-conditioning
on image sizes ("added time ids"), 1024 px native. Base models and fine-tunes (SDXL 1.0, SDXL-Turbo, …) condition
on the target size; refiner-style UNets on an aesthetic score instead."""

from __future__ import annotations

from typing import Any

from pipelines.families.base import BASE, CONTROLNET, INPAINTING, Defaults, Family, Pipelines, Preview
from pipelines.families.sd15 import HALF_ON_CUDA

# diffusers' defaults for refiner-style UNets: what a "good" picture scores, and what the negative prompt scores.
AESTHETIC_SCORE = 6.0
NEGATIVE_AESTHETIC_SCORE = 2.5
# SDXL's added time ids: original size (2), crop corner (2), then the target size (2) or an aesthetic score (1).
TIME_IDS_WITH_TARGET_SIZE = 6
TIME_IDS_WITH_AESTHETIC_SCORE = 5


def takes_aesthetic_score(unet: Any, text_encoder_2: Any) -> bool:
    """Whether the UNet's added-time embedding is sized for an aesthetic score (refiner) rather than a target size
    (base): its input is addition_time_embed_dim per time id plus the pooled text embedding. The UNet decides, not
    model_index.json: diffusers raises a ValueError when `requires_aesthetics_score` disagrees with the UNet."""
    pooled = text_encoder_2.config.projection_dim
    per_id = unet.config.addition_time_embed_dim
    return unet.config.projection_class_embeddings_input_dim == TIME_IDS_WITH_AESTHETIC_SCORE * per_id + pooled


class StableDiffusionXLFamily(Family):
    def pipeline_options(self, base: Any) -> dict[str, Any]:
        return {
            "requires_aesthetics_score": takes_aesthetic_score(base.unet, base.text_encoder_2),
            "force_zeros_for_empty_prompt": base.config.force_zeros_for_empty_prompt,
            # Pixels must not depend on whether invisible-watermark happens to be installed (sweeps never add one).
            "add_watermarker": False,
        }

    def conditioning(self, pipe: Any, *, source_size: tuple[int, int], render_size: tuple[int, int]) -> dict:
        """SDXL's micro-conditioning from the source: `original_size` is the source region's size in source pixels
        (a big photo scaled down reads as the sharp original it is), never below the render size (an upscaled
        crop conditioned on its low resolution would be painted blurry); the crop corner is (0, 0): the whole
        region is rendered. Refiner-style UNets get the aesthetic scores instead of the target size."""
        (source_width, source_height), (width, height) = source_size, render_size
        call: dict[str, Any] = {
            "original_size": (max(source_height, height), max(source_width, width)),
            "target_size": (height, width),
            "crops_coords_top_left": (0, 0),
        }
        if pipe.config.requires_aesthetics_score:
            call |= {"aesthetic_score": AESTHETIC_SCORE, "negative_aesthetic_score": NEGATIVE_AESTHETIC_SCORE}
        return call


FAMILY = StableDiffusionXLFamily(
    name="sdxl",
    label="Stable Diffusion XL",
    pipelines=Pipelines(
        base="StableDiffusionXLImg2ImgPipeline",
        img2img="StableDiffusionXLImg2ImgPipeline",
        inpaint="StableDiffusionXLInpaintPipeline",
        controlnet_img2img="StableDiffusionXLControlNetImg2ImgPipeline",
        controlnet_inpaint="StableDiffusionXLControlNetInpaintPipeline",
    ),
    previews=(
        Preview("preview-sdxl", BASE, "build_tiny_sdxl_pipeline"),
        Preview("preview-sdxl-controlnet", CONTROLNET, "build_tiny_sdxl_controlnet", marker="config.json"),
        Preview("preview-sdxl-inpaint", INPAINTING, "build_tiny_sdxl_inpainting_pipeline"),
    ),
    native_side=1024,
    max_side=2048,  # twice the native side
    # Below this SDXL paints mush; its smallest training buckets are 512 px on the short side.
    min_side=512,
    # diffusers' SDXL img2img default strength is 0.3: it keeps more of the source than SD's 0.8.
    defaults=Defaults(steps=30, guidance=5.0, strength=0.3),
    dtypes=HALF_ON_CUDA,
    vae_upcast=True,
    load_options={"add_watermarker": False},
)

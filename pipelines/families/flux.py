"""FLUX.1 (dev, schnell and their fine-tunes): a rectified-flow transformer on packed latents, CLIP + T5 text
encoders, guidance distilled into an embedding (no negative prompt), 1024 px native. FLUX.1 Fill is its dedicated
inpainting checkpoint. FLUX.1 [dev] weights are under a non-commercial licence; schnell's are Apache 2.0."""

from __future__ import annotations

from typing import Any

from pipelines.families.base import BASE, INPAINTING, Defaults, Family, Pipelines, Preview

# Latents are packed 2×2 into tokens after the VAE's ×8, so rendered sides are multiples of 16.
FLUX_SIZE_MULTIPLE = 16


class FluxFamily(Family):
    def denoiser(self, pipe: Any) -> Any:
        return pipe.transformer

    def is_inpainting_checkpoint(self, base: Any) -> bool:
        """FLUX.1 Fill's transformer takes the packed masked source and mask beside the latents."""
        config = base.transformer.config
        return config.in_channels != config.out_channels

    def denoising_steps(self, steps: int, strength: float) -> int:
        """FLUX's img2img and inpaint pipelines start at step int(steps − steps × strength): they run
        steps − that, rounding the count up where Stable Diffusion's pipelines round it down (10 steps at
        0.35: 4, not 3)."""
        return steps - int(max(steps - steps * strength, 0))

    def conditioning(self, pipe: Any, *, source_size: tuple[int, int], render_size: tuple[int, int]) -> dict:
        """The render size, always: FLUX's pipelines otherwise render at 1024² whatever the source's shape."""
        width, height = render_size
        return {"width": width, "height": height}

    def recipe(self, conditioning: dict[str, Any]) -> dict[str, Any]:
        # The size is the result's own; the recipe already has it.
        return {"family": self.name}


FAMILY = FluxFamily(
    name="flux",
    label="FLUX.1",
    pipelines=Pipelines(
        base="FluxImg2ImgPipeline",
        img2img="FluxImg2ImgPipeline",
        inpaint="FluxInpaintPipeline",
        controlnet_img2img=None,
        controlnet_inpaint=None,
        inpainting_checkpoint="FluxFillPipeline",
    ),
    previews=(
        Preview("preview-flux", BASE, "build_tiny_flux_pipeline"),
        Preview("preview-flux-fill", INPAINTING, "build_tiny_flux_fill_pipeline"),
    ),
    native_side=1024,
    max_side=2048,  # about 4 MP at the most; FLUX.1 was trained up to 2 MP
    min_side=256,  # below this its packed 2×2 tokens leave too few to paint with
    # diffusers' FLUX img2img defaults: 28 steps, distilled guidance 3.5 (schnell ignores it), strength 0.6.
    defaults=Defaults(steps=28, guidance=3.5, strength=0.6),
    # bfloat16 on CUDA: FLUX's activations overflow float16.
    dtypes={"cuda": "bfloat16", "mps": "float32", "cpu": "float32"},
    size_multiple=FLUX_SIZE_MULTIPLE,
    # Its schedule shifts with the image size; a sweep has one size, so strengths share one schedule.
    sweep_engine="flux",
    negative_prompt=False,
    soft_inpainting=False,
)

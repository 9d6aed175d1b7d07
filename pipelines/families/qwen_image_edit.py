"""Qwen-Image-Edit: an instruction editor whose prompt is read by Qwen2.5-VL together with the source image, on a
20 B MMDiT. Classifier-free guidance is "true" CFG (a negative prompt, two passes per step), so the studio's
guidance value is its true_cfg_scale. Qwen-Image-Edit Plus (2509) also takes up to two more images: the product and
a background or style reference ("Picture 1", "Picture 2", … in the instruction). Apache 2.0 weights."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

from pipelines.families.base import BASE, Defaults, Family, Pipelines, Preview
from pipelines.params import Img2ImgParams

QWEN_SIZE_MULTIPLE = 16  # the VAE's ×8, patches of 2×2 latents
PIXEL_BUDGET = 1024 * 1024  # its pipelines render about one megapixel
# Its pipelines skip classifier-free guidance without a negative prompt; the model card's runs use a blank one.
BLANK_NEGATIVE_PROMPT = " "


class QwenImageEditFamily(Family):
    def denoiser(self, pipe: Any) -> Any:
        return pipe.transformer

    def is_inpainting_checkpoint(self, base: Any) -> bool:
        return False

    def denoising_steps(self, steps: int, strength: float) -> int:
        """An edit has no strength: it runs every step."""
        return steps

    def conditioning(self, pipe: Any, *, source_size: tuple[int, int], render_size: tuple[int, int]) -> dict:
        """The render size: the editors otherwise render at about 1 MP at the (last) image's aspect."""
        width, height = render_size
        return {"width": width, "height": height}

    def recipe(self, conditioning: dict[str, Any]) -> dict[str, Any]:
        # The size is the result's own; the recipe already has it.
        return {"family": self.name}

    def call_arguments(self, params: Img2ImgParams) -> dict[str, Any]:
        """Guidance as true CFG, with the user's negative prompt or a blank one (guidance_scale is for
        guidance-distilled variants only)."""
        return {
            "true_cfg_scale": params.guidance,
            "guidance_scale": None,
            "negative_prompt": params.negative_prompt or BLANK_NEGATIVE_PROMPT,
        }

    def load_components(self, location: str, *, local_files_only: bool) -> dict[str, Any]:
        from pipelines.qwen import load_processor

        return {"processor": load_processor(location, local_files_only=local_files_only)}

    def run_context(self, *, preview: bool) -> AbstractContextManager[None]:
        if not preview:
            return nullcontext()
        from pipelines.qwen import small_condition_images

        return small_condition_images()


def _family(name: str, label: str, pipeline: str, preview: Preview, max_images: int) -> QwenImageEditFamily:
    return QwenImageEditFamily(
        name=name,
        label=label,
        pipelines=Pipelines(base=pipeline, img2img=None, inpaint=None, edit=pipeline),
        previews=(preview,),
        native_side=1024,
        max_side=2048,
        min_side=256,
        # The model card: 50 steps, true CFG 4.
        defaults=Defaults(steps=50, guidance=4.0, strength=1.0),
        dtypes={"cuda": "bfloat16", "mps": "float32", "cpu": "float32"},
        size_multiple=QWEN_SIZE_MULTIPLE,
        pixel_budget=PIXEL_BUDGET,
        one_pass_sweeps=False,
        soft_inpainting=False,
        max_images=max_images,
    )


FAMILY = _family(
    "qwen-image-edit",
    "Qwen-Image-Edit",
    "QwenImageEditPipeline",
    Preview("preview-qwen-image-edit", BASE, "build_tiny_qwen_image_edit_pipeline"),
    max_images=1,
)
PLUS_FAMILY = _family(
    "qwen-image-edit-plus",
    "Qwen-Image-Edit Plus",
    "QwenImageEditPlusPipeline",
    Preview("preview-qwen-image-edit-plus", BASE, "build_tiny_qwen_image_edit_plus_pipeline"),
    max_images=3,
)

"""FLUX.1 Kontext: an instruction editor ("put the bottle on white marble, keep the label") on FLUX.1's transformer.
The source's latents ride beside the noise as extra tokens; there is no strength: every step runs. Mask-restricted
edits run on Kontext's inpaint pipeline. FLUX.1 Kontext [dev] weights are under a non-commercial licence."""

from __future__ import annotations

from typing import Any

from pipelines.families.base import BASE, Defaults, Pipelines, Preview
from pipelines.families.flux import FLUX_SIZE_MULTIPLE, FluxFamily

# Kontext was trained at about one megapixel: larger renders cost quadratically and drift.
PIXEL_BUDGET = 1024 * 1024


class FluxKontextFamily(FluxFamily):
    def denoising_steps(self, steps: int, strength: float) -> int:
        """An edit has no strength: it runs every step."""
        return steps

    def conditioning(self, pipe: Any, *, source_size: tuple[int, int], render_size: tuple[int, int]) -> dict:
        """The render size, exactly: Kontext rescales height × width to `max_area` (1 MP by default) at their
        aspect, and with `_auto_resize` snaps the source to a preferred resolution instead of its own."""
        width, height = render_size
        return {"width": width, "height": height, "max_area": width * height, "_auto_resize": False}


FAMILY = FluxKontextFamily(
    name="flux-kontext",
    label="FLUX.1 Kontext",
    pipelines=Pipelines(
        base="FluxKontextPipeline",
        img2img=None,
        inpaint=None,
        edit="FluxKontextPipeline",
        masked_edit="FluxKontextInpaintPipeline",
    ),
    previews=(Preview("preview-flux-kontext", BASE, "build_tiny_flux_kontext_pipeline"),),
    native_side=1024,
    max_side=2048,
    min_side=256,
    # FLUX.1 Kontext [dev]'s model card: 28 steps, distilled guidance 2.5.
    defaults=Defaults(steps=28, guidance=2.5, strength=1.0),
    dtypes={"cuda": "bfloat16", "mps": "float32", "cpu": "float32"},
    size_multiple=FLUX_SIZE_MULTIPLE,
    pixel_budget=PIXEL_BUDGET,
    one_pass_sweeps=False,
    negative_prompt=False,
    soft_inpainting=False,
)

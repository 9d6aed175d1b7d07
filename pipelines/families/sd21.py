"""Stable Diffusion 2.x: SD 1.x's pipelines with an OpenCLIP text encoder (1024 wide) and, for the 768 px models,
v-prediction. Its ControlNets, LoRAs and embeddings do not fit SD 1.x models, hence a family of its own."""

from __future__ import annotations

from pipelines.families.base import BASE, CONTROLNET, Defaults, Family, Preview
from pipelines.families.sd15 import HALF_ON_CUDA, NO_SAFETY_CHECKER, STABLE_DIFFUSION_PIPELINES
from pipelines.params import SIZE_MULTIPLE

FAMILY = Family(
    name="sd21",
    label="Stable Diffusion 2.x",
    pipelines=STABLE_DIFFUSION_PIPELINES,
    previews=(
        Preview("preview-sd21", BASE, "build_tiny_sd21_pipeline"),
        Preview("preview-sd21-controlnet", CONTROLNET, "build_tiny_sd21_controlnet", marker="config.json"),
    ),
    native_side=768,
    max_side=1536,  # twice the native side
    min_side=SIZE_MULTIPLE,
    defaults=Defaults(steps=25, guidance=7.5, strength=0.6),
    dtypes=HALF_ON_CUDA,
    load_options=NO_SAFETY_CHECKER,
    request_options={"requires_safety_checker": False},
)

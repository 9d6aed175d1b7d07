"""Stable Diffusion 1.x: the studio's first family (SD 1.5 and its fine-tunes), 512 px native."""

from __future__ import annotations

from pipelines.families.base import BASE, CONTROLNET, Defaults, Family, Pipelines, Preview
from pipelines.params import SIZE_MULTIPLE

# The pipelines both Stable Diffusion families (1.x and 2.x) run on.
STABLE_DIFFUSION_PIPELINES = Pipelines(
    base="StableDiffusionImg2ImgPipeline",
    img2img="StableDiffusionImg2ImgPipeline",
    inpaint="StableDiffusionInpaintPipeline",
    controlnet_img2img="StableDiffusionControlNetImg2ImgPipeline",
    controlnet_inpaint="StableDiffusionControlNetInpaintPipeline",
)
# Half precision halves memory and time on CUDA; CPU and MPS are slow or unreliable in fp16.
HALF_ON_CUDA = {"cuda": "float16", "mps": "float32", "cpu": "float32"}
# No NSFW filter: a checkpoint that ships one would otherwise load and run it on every result.
NO_SAFETY_CHECKER = {"safety_checker": None, "requires_safety_checker": False}

FAMILY = Family(
    name="sd15",
    label="Stable Diffusion 1.x",
    pipelines=STABLE_DIFFUSION_PIPELINES,
    previews=(
        Preview("preview", BASE, "build_tiny_sd_pipeline"),
        Preview("preview-controlnet", CONTROLNET, "build_tiny_controlnet", marker="config.json"),
    ),
    native_side=512,
    max_side=1024,  # twice the native side; beyond it SD 1.x repeats its subjects
    min_side=SIZE_MULTIPLE,
    defaults=Defaults(steps=20, guidance=7.5, strength=0.6),
    dtypes=HALF_ON_CUDA,
    load_options=NO_SAFETY_CHECKER,
    request_options={"requires_safety_checker": False},
)

"""The family layer and the torch-free helpers it brings: families, model refs, sizes, recipes, budgets, soft masks."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.errors import PipelineInputError
from pipelines.families import BASE, CONTROLNET, FAMILIES, INPAINTING, get_family, preview_family
from pipelines.masks import latent_strengths, mask_from_canvas, mask_from_upload, soft_active, soft_pipeline_mask
from pipelines.params import Img2ImgParams, InpaintParams, MemoryBudget, RunSpec, Task
from pipelines.registry import PREVIEW_BUILDERS, PREVIEW_MODELS, ModelRef, resolve_model

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_family_layer_does_not_import_torch() -> None:
    code = (
        "import sys, pipelines, pipelines.families, pipelines.registry, pipelines.params, pipelines.masks\n"
        "from pipelines.families import FAMILIES\n"
        "[f.output_size(3000, 2000, 1024) for f in FAMILIES.values()]\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- families ------------------------------------------------------------------------------------


def test_each_family_declares_its_pipelines_previews_and_defaults() -> None:
    assert list(FAMILIES) == ["sd15", "sd21", "sdxl", "flux", "flux-kontext", "qwen-image-edit", "qwen-image-edit-plus"]
    sd15, sd21, sdxl, flux, kontext, qwen, qwen_plus = FAMILIES.values()
    assert sd15.pipeline_class_name(Task.img2img) == "StableDiffusionImg2ImgPipeline"
    assert sd21.pipeline_class_name(Task.inpaint, controlnet=True) == "StableDiffusionControlNetInpaintPipeline"
    assert sdxl.pipeline_class_name(None) == "StableDiffusionXLImg2ImgPipeline"
    assert sdxl.pipeline_class_name(Task.inpaint) == "StableDiffusionXLInpaintPipeline"
    assert sdxl.pipeline_class_name(Task.img2img, controlnet=True) == "StableDiffusionXLControlNetImg2ImgPipeline"
    with pytest.raises(PipelineInputError, match="no upscale 2× pipeline"):
        sdxl.pipeline_class_name(Task.upscale_2x)
    assert (sd15.native_side, sd21.native_side, sdxl.native_side) == (512, 768, 1024)
    assert sdxl.defaults.strength == 0.3 and sd15.defaults.strength == 0.6
    assert [sdxl.dtype_name(d) for d in ("cuda", "cuda:1", "mps", "cpu")] == [
        "float16",
        "float16",
        "float32",
        "float32",
    ]
    assert sd15.one_pass_sweeps and sd21.one_pass_sweeps and sdxl.one_pass_sweeps
    assert flux.pipeline_class_name(Task.inpaint, inpainting_checkpoint=True) == "FluxFillPipeline"
    assert flux.pipeline_class_name(Task.inpaint) == "FluxInpaintPipeline"
    assert kontext.pipeline_class_name(Task.edit, masked=True) == "FluxKontextInpaintPipeline"
    with pytest.raises(PipelineInputError, match=r"FLUX\.1 Kontext family has no image to image pipeline"):
        kontext.pipeline_class_name(Task.img2img)
    with pytest.raises(PipelineInputError, match="Stable Diffusion XL family has no instruction edit pipeline"):
        sdxl.pipeline_class_name(Task.edit)
    assert [flux.dtype_name(d) for d in ("cuda", "cpu")] == ["bfloat16", "float32"]
    assert qwen.pipeline_class_name(Task.edit) == "QwenImageEditPipeline" and qwen.max_images == 1
    assert qwen_plus.pipeline_class_name(Task.edit) == "QwenImageEditPlusPipeline" and qwen_plus.max_images == 3
    assert (sdxl.preview(BASE), sdxl.preview(CONTROLNET), sdxl.preview(INPAINTING)) == (
        "preview-sdxl",
        "preview-sdxl-controlnet",
        "preview-sdxl-inpaint",
    )
    assert sd15.preview(BASE) == "preview" and sd15.preview(INPAINTING) is None


def test_every_preview_model_has_a_builder_and_a_family() -> None:
    assert set(PREVIEW_MODELS) == set(PREVIEW_BUILDERS)
    # The models every earlier studio version knew keep their names.
    assert {"preview", "preview-controlnet", "preview-upscaler-x2", "preview-upscaler-x4"} <= set(PREVIEW_MODELS)
    assert preview_family("preview-sdxl-inpaint").name == "sdxl"
    assert preview_family("preview-sd21-controlnet").name == "sd21"
    assert preview_family("preview-upscaler-x4") is None


def test_an_unknown_family_is_refused_naming_the_model() -> None:
    with pytest.raises(PipelineInputError, match=r"Model 'my/sd3' belongs to the unknown model family 'sd3'.*sd15"):
        get_family("sd3", model="my/sd3")


@pytest.mark.parametrize(
    ("steps", "strength", "expected"), [(20, 0.3, 6), (10, 0.35, 3), (4, 1.0, 4), (3, 0.7, 2), (30, 0.0, 0)]
)
def test_stable_diffusion_steps_round_down_as_diffusers_does(steps: int, strength: float, expected: int) -> None:
    for name in ("sd15", "sd21", "sdxl"):
        assert FAMILIES[name].denoising_steps(steps, strength) == expected
    assert Img2ImgParams("x", strength=strength, steps=steps).denoising_steps == expected


@pytest.mark.parametrize(
    ("family", "size", "max_side", "expected"),
    [
        ("sd15", (3000, 2000), 4096, (1024, 680)),  # the family's cap wins over a bigger studio cap
        ("sd15", (3000, 2000), 768, (768, 512)),  # the studio's smaller cap wins
        ("sdxl", (3000, 2000), 4096, (2048, 1360)),
        ("sdxl", (1200, 900), 4096, (1200, 896)),  # never scaled up; sides rounded down to ×8
        ("sd21", (2000, 3000), 4096, (1024, 1536)),
    ],
)
def test_output_size_is_capped_per_family(family: str, size, max_side: int, expected) -> None:
    assert get_family(family).output_size(*size, max_side) == expected


def test_a_source_below_the_family_minimum_is_refused_naming_the_model_and_the_limit() -> None:
    sdxl = get_family("sdxl")
    sdxl.check_source(512, 512, model="stabilityai/sdxl")
    with pytest.raises(
        PipelineInputError,
        match=re.escape("500×700 px; model 'stabilityai/sdxl' (Stable Diffusion XL) needs at least 512 px per side"),
    ):
        sdxl.check_source(500, 700, model="stabilityai/sdxl")
    get_family("sd15").check_source(8, 8, model="x")


def test_the_recipe_names_the_family_and_its_conditioning_as_json() -> None:
    conditioning = {"original_size": (512, 768), "target_size": (512, 768), "crops_coords_top_left": (0, 0)}
    assert get_family("sdxl").recipe(conditioning) == {
        "family": "sdxl",
        "original_size": [512, 768],
        "target_size": [512, 768],
        "crops_coords_top_left": [0, 0],
    }
    assert get_family("sd15").recipe({}) == {"family": "sd15"}


# --- model refs ----------------------------------------------------------------------------------


def test_a_model_ref_carries_its_family_and_offload(tmp_path: Path) -> None:
    assert resolve_model("preview", models_dir=tmp_path).family == "sd15"
    assert resolve_model("preview-sdxl", models_dir=tmp_path) == ModelRef(
        "preview-sdxl", str(tmp_path / "preview-sdxl"), True, True, family="sdxl"
    )
    hub = resolve_model("stabilityai/stable-diffusion-xl-base-1.0", models_dir=tmp_path, family="sdxl", offload="model")
    assert (hub.family, hub.offload, hub.is_local) == ("sdxl", "model", False)
    folder = resolve_model(str(tmp_path), models_dir=tmp_path, family="sd21")
    assert folder.family == "sd21" and folder.is_local
    # Without a family, a real model is SD 1.x (STUDIO_MODEL's family), as before families existed.
    assert resolve_model("someone/model", models_dir=tmp_path).family == "sd15"


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("someone/sd3", {"family": "sd3"}, "Model 'someone/sd3' belongs to the unknown model family 'sd3'"),
        ("preview", {"family": "sdxl"}, "Preview model 'preview' stands in for the sd15 family, not sdxl: use "),
        ("preview-sdxl-controlnet", {"family": "sd15"}, "stands in for the sdxl family, not sd15"),
        ("someone/sdxl", {"family": "sdxl", "offload": "disk"}, "asks for CPU offload 'disk'; the modes are"),
    ],
)
def test_bad_family_or_offload_is_refused(tmp_path: Path, name: str, kwargs: dict, message: str) -> None:
    with pytest.raises(PipelineInputError, match=re.escape(message)):
        resolve_model(name, models_dir=tmp_path, **kwargs)


# --- memory budget -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", MemoryBudget(None, 0.9)),
        ("  ", MemoryBudget(None, 0.9)),
        ("75%", MemoryBudget(None, 0.75)),
        ("24GB", MemoryBudget(24 * 10**9)),
        ("24 GiB", MemoryBudget(24 * 2**30)),
        ("512mb", MemoryBudget(512 * 10**6)),
        ("1.5GiB", MemoryBudget(int(1.5 * 2**30))),
        ("123456", MemoryBudget(123456)),
    ],
)
def test_memory_budgets_parse(text: str, expected: MemoryBudget) -> None:
    assert MemoryBudget.parse(text) == expected


@pytest.mark.parametrize("text", ["lots", "0%", "120%", "-3GB", "12 parsecs", "GB", "nan"])
def test_bad_memory_budgets_are_refused(text: str) -> None:
    with pytest.raises(PipelineInputError, match="budget"):
        MemoryBudget.parse(text)


def test_a_budget_in_bytes_or_as_a_share_of_the_device() -> None:
    assert MemoryBudget().bytes_of(1000) == 900
    assert MemoryBudget(limit=123).bytes_of(1000) == 123


# --- soft masks ----------------------------------------------------------------------------------


def test_a_value_runs_the_last_value_over_255_of_the_steps() -> None:
    strengths = np.array([[0, 1, 63, 64, 127, 128, 191, 192, 254, 255]], dtype=np.uint8)
    steps_run = sum(soft_active(strengths, step, 4).astype(int) for step in range(4))
    # floor(v × 4 / 255) steps, always the last ones.
    assert steps_run.tolist() == [[0, 0, 0, 1, 1, 2, 2, 3, 3, 4]]
    for step in range(3):
        assert (soft_active(strengths, step, 4) <= soft_active(strengths, step + 1, 4)).all()


def test_latent_strengths_average_each_latents_pixels() -> None:
    mask = Image.new("L", (16, 8), 0)
    mask.paste(255, (0, 0, 4, 8))  # half of the first latent's 8×8 pixels
    mask.paste(200, (8, 0, 16, 8))
    assert latent_strengths(mask, 8).tolist() == [[128, 200]]


def test_the_pipeline_mask_of_a_soft_run() -> None:
    mask = Image.fromarray(np.array([[0, 1, 128, 255]], dtype=np.uint8), mode="L")
    assert np.asarray(soft_pipeline_mask(mask, 4)).tolist() == [[255, 255, 255, 255]]
    assert np.asarray(soft_pipeline_mask(mask, 9)).tolist() == [[0, 255, 255, 255]]


def test_soft_uploads_and_canvas_drawings_keep_their_grey_levels() -> None:
    grey = Image.fromarray(np.array([[0, 64], [128, 255]], dtype=np.uint8), mode="L")
    assert np.asarray(mask_from_upload(grey, (2, 2), soft=True)).tolist() == [[0, 64], [128, 255]]
    assert np.asarray(mask_from_upload(grey, (2, 2))).tolist() == [[0, 0], [255, 255]]
    drawing = np.zeros((1, 3, 4), dtype=np.uint8)
    drawing[0, 1] = (255, 255, 255, 77)  # a 30 % brush
    drawing[0, 2] = (0, 0, 0, 153)  # the eraser
    assert np.asarray(mask_from_canvas(drawing, (3, 1), soft=True)).tolist() == [[0, 77, 0]]


def test_soft_is_recorded_only_when_on() -> None:
    spec = RunSpec(Task.inpaint, Img2ImgParams("x"), inpaint=InpaintParams())
    assert "soft" not in spec.to_dict()["inpaint"]
    soft = RunSpec(Task.inpaint, Img2ImgParams("x"), inpaint=InpaintParams(soft=True))
    assert soft.to_dict()["inpaint"]["soft"] is True
    assert RunSpec.from_dict(soft.to_dict()) == soft
    assert RunSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(PipelineInputError, match="soft should be true or false"):
        RunSpec.from_dict(spec.to_dict() | {"inpaint": {"soft": "yes"}})

"""The style catalogue: the repository's file is valid and complete, and broken edits are named precisely."""

from __future__ import annotations

import os
import time
from pathlib import Path

import huggingface_hub.constants
import pytest

from pipelines.params import Guide, Task
from studio.billing.pricing import QUALITY_TIERS, Quality
from studio.catalogue.styles import (
    CatalogueError,
    ModelKind,
    load_catalogue,
    model_availability,
    parse_catalogue,
    starting_steps,
)
from studio.config import PROJECT_ROOT

REPO_CATALOGUE = PROJECT_ROOT / "data" / "styles.toml"

MINIMAL = """
[models.base]
kind = "sd"
location = "stable-diffusion-v1-5/stable-diffusion-v1-5"
credits = 2

[models.edges]
kind = "controlnet"
location = "lllyasviel/control_v11p_sd15_canny"

[controlnets]
canny = "edges"

[styles.paint]
name = "Paint"
task = "img2img"
model = "base"
prompt = "{prompt}, oil painting"
"""


def test_the_repository_catalogue_has_the_seed_styles_with_sensible_defaults():
    catalogue = load_catalogue(REPO_CATALOGUE)
    names = {style.name for style in catalogue.styles.values()}
    assert names == {
        "Artistic Style",
        "Photorealistic",
        "Anime",
        "Cartoon",
        "Abstract",
        "Quality Enhancement",
        "Product Shot XL",
        "Photoreal XL",
        "Quick Sketch XL",
        "Product Photo FLUX",
        "Quick Restyle FLUX",
        "Clean studio background",
        "Seasonal scene",
        "Lifestyle setting",
        "Relight warm",
        "Upscale 2×",
        "Upscale 4×",
    }
    assert catalogue.styles["upscale-2x"].task is Task.upscale_2x
    assert catalogue.models[catalogue.styles["upscale-2x"].model].kind is ModelKind.upscaler_x2
    assert catalogue.models[catalogue.styles["upscale-4x"].model].kind is ModelKind.upscaler_x4
    # Quality enhancement is a light img2img touch.
    enhance = catalogue.styles["quality-enhancement"]
    assert enhance.task is Task.img2img and enhance.strength <= 0.3
    assert set(catalogue.controlnets) == set(Guide)
    for style in catalogue.styles.values():
        assert style.credits == catalogue.models[style.model].credits, style.id  # a price follows the model
        assert 1 <= style.credits <= 5, style.id
        assert Quality.standard in style.qualities


def test_a_style_fills_its_template_and_adds_its_negative_prompt():
    style = parse_catalogue(MINIMAL).style("paint")
    assert style.prompt_for(" a red shoe ") == "a red shoe, oil painting"
    assert style.prompt_for("") == "oil painting"  # no dangling comma
    assert style.negative_for("blurry") == "blurry"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("credits = 2", "credits = 0"), "[models.base]: credits must be a whole number from 1 to 20"),
        (("credits = 2", 'credits = "2"'), "[models.base]: `credits` should be a int"),
        (("credits = 2\n", ""), "[models.base]: `credits` is missing"),
        (('prompt = "{prompt}, oil painting"', 'prompt = "{prompt}"\ncredits = 1'), "set `credits` on its model"),
        (('location = "lllyasviel/control_v11p_sd15_canny"', 'location = "x/y"\ncredits = 1'), "no price of its own"),
        (('model = "base"', 'model = "nope"'), "[styles.paint]: model 'nope' is not in [models]"),
        (('model = "base"', 'model = "edges"'), "a img2img style needs a sd model, not 'edges'"),
        (('"{prompt}, oil painting"', '"oil painting"'), "must contain {prompt}"),
        (('task = "img2img"', 'task = "upscale_2x"'), "a upscale_2x style needs a upscaler_x2 model"),
        (('task = "img2img"', 'task = "inpaint"'), "every img2img style also works for inpainting"),
        (('task = "img2img"', 'task = "paint"'), "task 'paint' is not one of"),
        (('canny = "edges"', 'canny = "base"'), "[controlnets] canny: 'base' is not a controlnet"),
        (('canny = "edges"', 'depth = "edges"'), "[controlnets] depth: unknown guide"),
        (('kind = "sd"', 'kind = "sdxl"'), "[models.base]: kind 'sdxl' is not one of"),
        (('model = "base"', 'model = "base"\nqualities = []'), "offer at least one quality tier"),
        (('model = "base"', 'model = "base"\nqualities = ["best"]'), "qualities must be from standard, high, ultra"),
        (('model = "base"', 'model = "base"\nstrength = 1.5'), "strength must be in (0, 1]"),
        (("[styles.paint]", "[styles.paint\n"), "is not valid TOML"),
        (("credits = 2", "credits = 2\nsteps = 0"), "`steps` (a distilled model's schedule length) is for an sd model"),
        (("credits = 2", "credits = 2\nsteps = 26"), "1 to 25"),
        (('canny"\n', 'canny"\nsteps = 4\n'), "is for an sd model"),
    ],
)
def test_a_broken_edit_names_the_entry_and_the_problem(edit, message):
    old, new = edit
    assert old in MINIMAL
    with pytest.raises(CatalogueError) as caught:
        parse_catalogue(MINIMAL.replace(old, new), source="styles.toml")
    assert message in str(caught.value)


def test_a_distilled_models_styles_start_from_its_own_steps_in_every_tier():
    """SD-Turbo, SDXL-Turbo and FLUX.1 [schnell] are made for a few steps: their styles start there, every other
    style from its quality tier's."""
    catalogue = load_catalogue(REPO_CATALOGUE)
    distilled = {name for name, entry in catalogue.models.items() if entry.steps}
    assert distilled == {"sd-turbo", "sdxl-turbo", "flux-schnell"}
    for style in catalogue.styles.values():
        for quality in Quality:
            expected = catalogue.models[style.model].steps or QUALITY_TIERS[quality].steps
            assert starting_steps(style, quality) == expected <= QUALITY_TIERS[quality].max_steps, style.id
    assert starting_steps(None, Quality.high) == QUALITY_TIERS[Quality.high].steps


def test_a_catalogue_without_styles_is_refused():
    without_styles = MINIMAL[: MINIMAL.index("[styles.paint]")]
    with pytest.raises(CatalogueError, match="needs a \\[styles\\] table"):
        parse_catalogue(without_styles)
    with pytest.raises(CatalogueError, match="has no \\[styles"):
        parse_catalogue(without_styles + "[styles]\n")


def test_an_admins_edit_is_picked_up_without_a_restart(tmp_path: Path):
    path = tmp_path / "styles.toml"
    path.write_text(MINIMAL)
    assert load_catalogue(path).style("paint").credits == 2
    path.write_text(MINIMAL.replace("credits = 2", "credits = 4"))  # the style's model
    later = time.time() + 5  # a different mtime even on coarse-grained file systems
    os.utime(path, (later, later))
    assert load_catalogue(path).style("paint").credits == 4
    path.unlink()
    with pytest.raises(CatalogueError, match="cannot be read"):
        load_catalogue(path)


def test_availability_says_how_to_get_a_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cache = tmp_path / "hub-cache"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    missing = model_availability("stable-diffusion-v1-5/stable-diffusion-v1-5", ModelKind.sd)
    assert not missing.ready
    assert "hf download stable-diffusion-v1-5/stable-diffusion-v1-5" in missing.note

    # A hub download leaves refs/main and a snapshot with the model's files: that is "available".
    repo = cache / "models--stable-diffusion-v1-5--stable-diffusion-v1-5"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    (repo / "snapshots" / "0123abcd" / "model_index.json").write_text("{}")
    assert model_availability("stable-diffusion-v1-5/stable-diffusion-v1-5", ModelKind.sd).ready

    folder = tmp_path / "my-model"
    folder.mkdir()
    incomplete = model_availability(str(folder), ModelKind.sd)
    assert not incomplete.ready and "model_index.json" in incomplete.note
    (folder / "model_index.json").write_text("{}")
    assert model_availability(str(folder), ModelKind.sd).ready
    assert not model_availability(str(tmp_path / "gone"), ModelKind.controlnet).ready

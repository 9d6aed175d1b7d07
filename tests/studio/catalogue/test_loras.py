"""The catalogue's [loras]: broken entries are named precisely, and a LoRA's hash follows its file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pipelines.loras import file_sha256
from pipelines.params import LIMITS, MAX_LORAS
from studio.catalogue.form_settings import FormSettings
from studio.catalogue.loras import lora_ref
from studio.catalogue.styles import CatalogueError, load_catalogue, parse_catalogue
from studio.config import PROJECT_ROOT, Settings
from studio.errors import Refused

REPO = load_catalogue(PROJECT_ROOT / "data" / "styles.toml")

MINIMAL = """
[models.base]
kind = "sd"
location = "stable-diffusion-v1-5/stable-diffusion-v1-5"
credits = 2

[styles.paint]
name = "Paint"
task = "img2img"
model = "base"
prompt = "{prompt}, oil painting"
"""


def with_lora(**fields: str) -> str:
    return MINIMAL + "\n[loras.brand]\n" + "".join(f"{key} = {value!r}\n" for key, value in fields.items())


def test_the_repository_catalogue_offers_its_loras_by_family() -> None:
    catalogue = REPO
    assert catalogue.loras, "data/styles.toml registers at least one LoRA"
    for entry in catalogue.loras.values():
        assert entry in catalogue.loras_for(entry.family) and entry.about


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"location": "owner/lora", "family": "sd99"},
            r"\[loras.brand\]: LoRA 'brand' names the unknown family",
        ),
        ({"location": "/nowhere/brand.safetensors", "family": "sd15"}, r"\[loras.brand\].*does not exist"),
        ({"location": " ", "family": "sd15"}, r"\[loras.brand\]: `location` is empty"),
        ({"location": "owner/lora"}, r"\[loras.brand\]: `family` is missing"),
        ({"location": "owner/lora", "family": "sd15", "sha256": "abc"}, r"\[loras.brand\]: `sha256` should be 64 hex"),
    ],
)
def test_a_broken_lora_entry_is_named(fields: dict, message: str) -> None:
    with pytest.raises(CatalogueError, match=message):
        parse_catalogue(with_lora(**fields), source="styles.toml")


def test_the_hash_follows_the_file_and_a_pinned_hash_must_match(studio_settings: Settings, tmp_path: Path) -> None:
    settings = dataclasses.replace(studio_settings, model="someone/real-model")  # not preview: the file itself runs
    path = tmp_path / "brand.safetensors"
    path.write_bytes(b"first version")
    catalogue = parse_catalogue(with_lora(location=str(path), family="sd15"))
    first = lora_ref(catalogue, "brand", 0.5, settings)
    assert (first.sha256, first.location, first.weight) == (file_sha256(path), str(path), 0.5)

    path.write_bytes(b"second, longer version")
    assert lora_ref(catalogue, "brand", 0.5, settings).sha256 == file_sha256(path) != first.sha256

    pinned = parse_catalogue(with_lora(location=str(path), family="sd15", sha256=first.sha256))
    with pytest.raises(Refused, match="LoRA 'brand' changed"):
        lora_ref(pinned, "brand", 0.5, settings)
    path.unlink()
    with pytest.raises(Refused, match="LoRA 'brand' is not available here"):
        lora_ref(catalogue, "brand", 0.5, settings)


def test_settings_with_loras_a_form_cannot_show_change_nothing() -> None:
    base = {"task": "img2img", "prompt": "x", "steps": 4, "strength": 0.5, "seed": 1, "style": "artistic"}
    lora = {"name": "lcm-sd15", "sha256": "0" * 64, "weight": 1.0}
    cases = [
        (base | {"loras": [lora | {"name": "gone"}]}, "'gone' is not in the catalogue"),
        (base | {"style": "sdxl-product", "loras": [lora]}, "is for sd15 models"),
        (base | {"loras": [lora | {"weight": LIMITS["lora_weight"][1] + 1}]}, "must be between -2 and 2"),
        (base | {"loras": [lora] * (MAX_LORAS + 1)}, f"at most {MAX_LORAS}"),
        (base | {"loras": [lora | {"weight": "max"}]}, "needs a numeric weight"),
    ]
    offered = list(REPO.styles.values())
    for recipe, message in cases:
        try:
            FormSettings.from_recipe(recipe, REPO).check(REPO, offered)
        except Refused as exc:
            assert message in str(exc), (message, str(exc))
        else:
            raise AssertionError(f"loaded: {recipe}")

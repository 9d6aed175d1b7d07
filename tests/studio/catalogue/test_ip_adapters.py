"""The catalogue's [ip_adapters]: broken entries are named precisely, one per family, and a reference's IP-Adapter
is resolved with the hashes of its files (a pinned hash must match)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from pipelines.ip_adapters import PREVIEW_ENCODER, PREVIEW_WEIGHTS, ensure_preview_ip_adapter
from pipelines.loras import file_sha256
from studio.catalogue.references import ReferenceImage, ip_adapter_ref
from studio.catalogue.styles import CatalogueError, load_catalogue, parse_catalogue
from studio.config import PROJECT_ROOT, Settings
from studio.errors import Refused
from tests.studio.catalogue.test_loras import MINIMAL

REPO = load_catalogue(PROJECT_ROOT / "data" / "styles.toml")
IMAGE = "a" * 64


def with_adapter(name: str = "brand", **fields: str) -> str:
    return MINIMAL + f"\n[ip_adapters.{name}]\n" + "".join(f"{key} = {value!r}\n" for key, value in fields.items())


GOOD = {"location": "owner/ip", "weight_name": "ip.safetensors", "image_encoder": "image_encoder", "family": "sd15"}


def test_the_repository_catalogue_has_one_ip_adapter_for_sd15_and_sdxl_and_none_for_flux() -> None:
    assert REPO.ip_adapter_for("sd15").name == "ip-adapter-sd15"
    assert REPO.ip_adapter_for("sdxl").name == "ip-adapter-sdxl"
    assert REPO.ip_adapter_for("flux") is None and REPO.ip_adapter_for("sd21") is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (GOOD | {"family": "sd99"}, r"\[ip_adapters.brand\]: IP-Adapter 'brand' names the unknown family"),
        (GOOD | {"family": "flux"}, r"\[ip_adapters.brand\]: the studio attaches IP-Adapters to sd15, sdxl"),
        (GOOD | {"location": "/nowhere/ip"}, r"\[ip_adapters.brand\].*does not exist"),
        ({k: v for k, v in GOOD.items() if k != "image_encoder"}, r"`image_encoder` is missing"),
        (GOOD | {"sha256": "abc"}, r"`sha256` should be 64 hex"),
        (GOOD | {"encoder_sha256": "xyz"}, r"`encoder_sha256` should be 64 hex"),
    ],
)
def test_a_broken_ip_adapter_entry_is_named(fields: dict, message: str) -> None:
    with pytest.raises(CatalogueError, match=message):
        parse_catalogue(with_adapter(**fields), source="styles.toml")


def test_a_family_takes_one_ip_adapter() -> None:
    text = with_adapter("one", **GOOD) + with_adapter("two", **GOOD).removeprefix(MINIMAL)
    with pytest.raises(CatalogueError, match=r"the sd15 family has several IP-Adapters \(one, two\)"):
        parse_catalogue(text)


def test_the_hashes_follow_the_files_and_pinned_hashes_must_match(studio_settings: Settings, tmp_path: Path) -> None:
    settings = dataclasses.replace(studio_settings, model="someone/real-model")  # not preview: the files themselves
    folder = Path(shutil.copytree(ensure_preview_ip_adapter(tmp_path / "built", "sd15"), tmp_path / "mine"))
    fields = {"location": str(folder), "weight_name": PREVIEW_WEIGHTS, "image_encoder": PREVIEW_ENCODER}
    catalogue = parse_catalogue(with_adapter(**fields, family="sd15"))
    adapter = ip_adapter_ref(catalogue, ReferenceImage(IMAGE, 0.7), family="sd15", model="base", settings=settings)
    weights, encoder = folder / PREVIEW_WEIGHTS, folder / PREVIEW_ENCODER / "model.safetensors"
    assert (adapter.sha256, adapter.encoder_sha256, adapter.scale) == (file_sha256(weights), file_sha256(encoder), 0.7)

    pinned = parse_catalogue(with_adapter(**fields, family="sd15", encoder_sha256="0" * 64))
    with pytest.raises(Refused, match="its image encoder no longer has the SHA-256 the catalogue records"):
        ip_adapter_ref(pinned, ReferenceImage(IMAGE, 0.7), family="sd15", model="base", settings=settings)
    with pytest.raises(Refused, match="has no IP-Adapter for Stable Diffusion XL models"):
        ip_adapter_ref(catalogue, ReferenceImage(IMAGE, 0.7), family="sdxl", model="xl", settings=settings)
    (folder / PREVIEW_WEIGHTS).unlink()
    with pytest.raises(Refused, match=r"not available here.*has no ip-adapter\.safetensors"):
        ip_adapter_ref(catalogue, ReferenceImage(IMAGE, 0.7), family="sd15", model="base", settings=settings)

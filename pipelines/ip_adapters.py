"""IP-Adapters: a reference image steering a run through an image encoder (`ImagePrompt`): what names an adapter
(`IpAdapterRef`), where its weights file and image encoder are, their SHA-256, and the checks a request's reference
passes before anything loads.

Torch-free, so the studio validates a request and records the hashes without loading the model stack;
pipelines.adapters attaches one to a pipeline for one run. An IP-Adapter is a safetensors file in the original
layout (`image_proj.*`, `ip_adapter.N.to_k_ip/to_v_ip.*`) plus a CLIP vision encoder with projection (a folder
with config.json and model.safetensors), both in a local folder or a hub repo, as diffusers' load_ip_adapter names
them: `location`, the weights' path inside it (`weight_name`) and the encoder's (`image_encoder`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.errors import ModelUnavailableError, PipelineInputError
from pipelines.families import get_family
from pipelines.loras import build_preview_folder, hub_file
from pipelines.params import check_limit

if TYPE_CHECKING:
    from PIL import Image

# Families whose img2img and inpaint pipelines this studio attaches IP-Adapters to. diffusers 0.42 also takes
# XLabs' FLUX.1 IP-Adapter in FluxImg2ImgPipeline/FluxInpaintPipeline, with another layout and attention processors;
# the studio does not wire it (nor build a tiny one) yet, so FLUX runs refuse a reference image.
IP_ADAPTER_FAMILIES = ("sd15", "sdxl")
# The tiny offline IP-Adapter of each family's preview models (pipelines.tiny.save_tiny_ip_adapter), by family.
PREVIEW_IP_ADAPTERS = {"sd15": "preview-ip-adapter", "sdxl": "preview-sdxl-ip-adapter"}
PREVIEW_WEIGHTS = "ip-adapter.safetensors"
PREVIEW_ENCODER = "image_encoder"
ENCODER_WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class IpAdapterRef:
    """One IP-Adapter a run attaches, at `scale`: its files must still hash to the recorded SHA-256s when it loads."""

    name: str  # as registered (the catalogue's name)
    weights: str  # the local safetensors file
    image_encoder: str  # the local folder of the CLIP vision encoder
    family: str  # the pipelines.families name of the models it was trained on
    sha256: str  # of the weights file, hex
    encoder_sha256: str  # of the encoder's model.safetensors, hex
    scale: float = 1.0  # how strongly the reference steers (LIMITS["ip_adapter_scale"]); 0 gives the base's pixels


@dataclass(frozen=True)
class ImagePrompt:
    """A reference image and the IP-Adapter that reads it."""

    adapter: IpAdapterRef
    image: Image.Image


def refuse_family(family: str, *, model: str) -> None:
    """PipelineInputError when models of `family` take no reference image here."""
    if family not in IP_ADAPTER_FAMILIES:
        info = get_family(family, model=model)
        offered = ", ".join(get_family(name).label for name in IP_ADAPTER_FAMILIES)
        raise PipelineInputError(
            f"{info.label} models take no reference image here (IP-Adapters run on {offered} models); "
            f"model '{model}' is {info.label}. Remove the reference image or choose a style of those families."
        )


def check_ip_adapter(adapter: IpAdapterRef, *, family: str, model: str) -> None:
    """The model's family takes IP-Adapters, this one is of it, and the scale is within LIMITS (PipelineInputError)."""
    refuse_family(family, model=model)
    check_limit("ip_adapter_scale", adapter.scale, "The reference image's scale")
    if adapter.family != family:
        own, theirs = get_family(family), get_family(adapter.family, model=adapter.name)
        raise PipelineInputError(
            f"IP-Adapter '{adapter.name}' was trained for {theirs.label} ({theirs.name}) models; model '{model}' is "
            f"{own.label} ({own.name}). Choose an IP-Adapter of its family."
        )


def adapter_files(location: str, weight_name: str, image_encoder: str, *, name: str) -> tuple[Path, Path]:
    """The weights file and the image encoder's folder of an IP-Adapter: under the local folder `location`, or
    in the hub repo `location` (read from the local Hugging Face cache, else downloaded once unless HF_HUB_OFFLINE
    is set). ModelUnavailableError when either is absent."""
    what = f"IP-Adapter '{name}'"
    folder = Path(location).expanduser()
    if folder.is_dir():
        weights, encoder = folder / weight_name, folder / image_encoder
        if not weights.is_file():
            raise ModelUnavailableError(f"{what}: the folder {location} has no {weight_name}.")
        if not (encoder / ENCODER_WEIGHTS).is_file():
            raise ModelUnavailableError(f"{what}: the folder {location} has no image encoder {image_encoder}/.")
        return weights, encoder
    if location.startswith((".", "/", "~")) or location.count("/") != 1:
        raise ModelUnavailableError(f"{what}: there is no folder {location} on this machine.")
    weights = hub_file(location, weight_name, what=what)
    hub_file(location, f"{image_encoder}/config.json", what=f"{what}'s image encoder")
    return weights, hub_file(location, f"{image_encoder}/{ENCODER_WEIGHTS}", what=f"{what}'s image encoder").parent


def ensure_preview_ip_adapter(models_dir: Path, family: str) -> Path:
    """The folder of the tiny IP-Adapter for `family`'s preview models (PREVIEW_WEIGHTS and PREVIEW_ENCODER in it),
    built into models_dir/<PREVIEW_IP_ADAPTERS name> unless it is there."""
    if family not in PREVIEW_IP_ADAPTERS:
        raise ModelUnavailableError(
            f"There is no preview IP-Adapter for the {family} family; they exist for {', '.join(PREVIEW_IP_ADAPTERS)}."
        )
    folder = Path(models_dir) / PREVIEW_IP_ADAPTERS[family]
    return build_preview_folder(folder, PREVIEW_WEIGHTS, "save_tiny_ip_adapter", family)

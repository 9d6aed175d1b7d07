"""Which model a configured name means, and the on-demand build of the offline preview model.

Torch-free at import: the app resolves and validates the configured model without loading the
diffusion stack; only `ensure_preview_model` imports it, and only when it has to build.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import ModelUnavailableError, PipelineInputError
from pipelines.families import DEFAULT_FAMILY, FAMILIES, get_family, preview_family

# The configured model name that means "the tiny offline preview model" (of the SD 1.x family).
PREVIEW_MODEL = "preview"
# Every tiny offline model the studio can build, by name: per family its pipeline, a ControlNet made from its
# UNet (and for SDXL a 9-channel inpainting pipeline), and the two upscaler pipelines (which belong to no family).
# PREVIEW_BUILDERS names the function of pipelines.tiny that builds each, PREVIEW_MODELS the file that marks
# its saved folder complete.
PREVIEW_BUILDERS = {preview.name: preview.builder for family in FAMILIES.values() for preview in family.previews} | {
    "preview-upscaler-x2": "build_tiny_latent_upscaler_pipeline",
    "preview-upscaler-x4": "build_tiny_x4_upscaler_pipeline",
}
PREVIEW_MODELS = {preview.name: preview.marker for family in FAMILIES.values() for preview in family.previews} | {
    "preview-upscaler-x2": "model_index.json",
    "preview-upscaler-x4": "model_index.json",
}
# How a model may keep its weights off the accelerator between uses (diffusers' CPU offload): "model" moves each
# whole component (text encoder, UNet, VAE) onto it only while that component runs, "sequential" streams every
# layer (least memory, slowest). pipelines.cache ignores both on a CPU device, where the weights already are.
OFFLOAD_MODES = ("none", "model", "sequential")

# Hugging Face repo ids: "owner/name", letters, digits, "-", "_" and "." (no leading punctuation).
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")


@dataclass(frozen=True)
class ModelRef:
    name: str  # what the user configured: "preview", a hub id or a local folder
    location: str  # what from_pretrained gets: a local folder path or a hub id
    is_preview: bool
    is_local: bool
    family: str = DEFAULT_FAMILY  # pipelines.families name: which pipelines run it (upscalers ignore it)
    offload: str = "none"  # one of OFFLOAD_MODES


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1


def resolve_model(name: str, *, models_dir: Path, family: str | None = None, offload: str = "none") -> ModelRef:
    """Turn a configured model name into what the loader needs; refuse names that cannot be a model.

    `family` is the catalogue's for the model (None: the preview's own, else sd15); `offload` one of
    OFFLOAD_MODES. An unknown family, a preview model of another family or an unknown offload mode is a
    PipelineInputError naming the model.
    """
    name = name.strip()
    if family is not None:
        get_family(family, model=name)
    if offload not in OFFLOAD_MODES:
        raise PipelineInputError(
            f"Model '{name}' asks for CPU offload {offload!r}; the modes are {', '.join(map(repr, OFFLOAD_MODES))}."
        )
    if name in PREVIEW_MODELS:
        own = preview_family(name)
        if family is not None and own is not None and own.name != family:
            raise PipelineInputError(
                f"Preview model '{name}' stands in for the {own.name} family, not {family}: use "
                f"'{get_family(family).preview()}'."
            )
        own_family = own.name if own is not None else DEFAULT_FAMILY
        return ModelRef(name, str(Path(models_dir) / name), True, True, family=own_family, offload=offload)
    family = family or DEFAULT_FAMILY
    if not name:
        raise PipelineInputError(
            f"No model configured: set STUDIO_MODEL to {PREVIEW_MODEL!r}, a hub id or a local folder."
        )

    # A folder on disk wins over a hub id of the same spelling, as in diffusers' from_pretrained.
    folder = Path(name).expanduser()
    if folder.is_dir():
        return ModelRef(name, str(folder.resolve()), False, True, family=family, offload=offload)
    if _looks_like_path(name):
        raise ModelUnavailableError(
            f"Model folder '{name}' does not exist on this machine. Point STUDIO_MODEL at a folder "
            f"saved with diffusers' save_pretrained, a hub id, or {PREVIEW_MODEL!r}."
        )
    if _HUB_ID.fullmatch(name):
        return ModelRef(name, name, False, False, family=family, offload=offload)
    raise PipelineInputError(
        f"Model '{name}' is neither {PREVIEW_MODEL!r}, an existing folder nor a hub id like "
        "'stable-diffusion-v1-5/stable-diffusion-v1-5'."
    )


def ensure_preview_model(models_dir: Path, name: str = PREVIEW_MODEL) -> Path:
    """Build and save the tiny model `name` (a PREVIEW_MODELS key) in models_dir/name unless it is there.

    Built in a temporary folder next to the target and renamed into place, so a reader never sees a
    half-written model, and when two processes race, the first rename wins and the other build is dropped.
    """
    marker = PREVIEW_MODELS[name]
    folder = Path(models_dir) / name
    if (folder / marker).is_file():
        return folder

    from pipelines import tiny  # imports torch: only when a build is needed

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    try:
        tiny.save_tiny_model(name, staging)
        os.rename(staging, folder)  # atomic; fails if another process put a complete folder there first
    except OSError as exc:
        if not (folder / marker).is_file():
            raise ModelUnavailableError(
                f"Could not build the preview model {name!r} in '{folder}': the folder exists but is incomplete "
                "or not writable. Remove it and try again."
            ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder

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

# The configured model name that means "the tiny offline preview model".
PREVIEW_MODEL = "preview"
# Every tiny offline model the studio can build, by name, with the file that marks its folder complete:
# the SD pipeline, a ControlNet made from its UNet, and the two upscaler pipelines.
PREVIEW_MODELS = {
    PREVIEW_MODEL: "model_index.json",
    "preview-controlnet": "config.json",
    "preview-upscaler-x2": "model_index.json",
    "preview-upscaler-x4": "model_index.json",
}

# Hugging Face repo ids: "owner/name", letters, digits, "-", "_" and "." (no leading punctuation).
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")


@dataclass(frozen=True)
class ModelRef:
    name: str  # what the user configured: "preview", a hub id or a local folder
    location: str  # what from_pretrained gets: a local folder path or a hub id
    is_preview: bool
    is_local: bool


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1


def resolve_model(name: str, *, models_dir: Path) -> ModelRef:
    """Turn a configured model name into what the loader needs; refuse names that cannot be a model."""
    name = name.strip()
    if name in PREVIEW_MODELS:
        return ModelRef(name, str(Path(models_dir) / name), is_preview=True, is_local=True)
    if not name:
        raise PipelineInputError(
            f"No model configured: set STUDIO_MODEL to {PREVIEW_MODEL!r}, a hub id or a local folder."
        )

    # A folder on disk wins over a hub id of the same spelling, as in diffusers' from_pretrained.
    folder = Path(name).expanduser()
    if folder.is_dir():
        return ModelRef(name, str(folder.resolve()), is_preview=False, is_local=True)
    if _looks_like_path(name):
        raise ModelUnavailableError(
            f"Model folder '{name}' does not exist on this machine. Point STUDIO_MODEL at a folder "
            f"saved with diffusers' save_pretrained, a hub id, or {PREVIEW_MODEL!r}."
        )
    if _HUB_ID.fullmatch(name):
        return ModelRef(name, name, is_preview=False, is_local=False)
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

"""LoRAs a run applies on top of its model: what names one (`LoraRef`), where its weights file is, its SHA-256, and
the checks a request's LoRAs pass before anything loads.

Torch-free, so the studio validates a request and records a LoRA's hash without loading the model stack;
pipelines.adapters loads them into a cached base pipeline. A LoRA is one safetensors file in diffusers' (or
kohya's) layout: a local file, a local folder holding WEIGHTS_NAME, or a hub repo holding it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import ModelUnavailableError, PipelineInputError
from pipelines.families import get_family
from pipelines.params import MAX_LORAS, check_limit

# The file diffusers' save_lora_weights writes, and the one looked for in a folder or a hub repo.
WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
# The tiny offline LoRA for the preview model (pipelines.tiny.save_tiny_lora), by the family it is made for.
PREVIEW_LORAS = {"sd15": "preview-lora"}


@dataclass(frozen=True)
class LoraRef:
    """One LoRA a run applies: its weights file must still hash to `sha256` when it loads."""

    name: str  # as registered (the catalogue's name)
    location: str  # a local file or folder, or a hub id
    family: str  # the pipelines.families name of the models it was trained on
    sha256: str  # of the weights file, hex
    weight: float = 1.0  # how strongly it applies (LIMITS["lora_weight"]); 0 gives the base model's pixels

    @property
    def adapter_name(self) -> str:
        """Its name inside a pipeline: by content, so a changed file never reuses the adapter of the old one."""
        return f"lora_{self.sha256[:16]}"


def check_loras(loras: tuple[LoraRef, ...], *, family: str, model: str) -> None:
    """At most MAX_LORAS, each once, each of the model's family, weights within LIMITS (PipelineInputError)."""
    if len(loras) > MAX_LORAS:
        raise PipelineInputError(f"A run takes at most {MAX_LORAS} LoRAs, got {len(loras)}.")
    names = [lora.name for lora in loras]
    if len(set(names)) != len(names):
        raise PipelineInputError("Each LoRA can be added once; change its weight instead of adding it again.")
    for lora in loras:
        check_limit("lora_weight", lora.weight, f"The weight of LoRA '{lora.name}'")
        if lora.family != family:
            own, theirs = get_family(family), get_family(lora.family, model=lora.name)
            raise PipelineInputError(
                f"LoRA '{lora.name}' was trained for {theirs.label} ({theirs.name}) models; model '{model}' is "
                f"{own.label} ({own.name}). Choose a LoRA of its family."
            )


def weights_file(location: str, *, name: str) -> Path:
    """The safetensors file of a LoRA at `location` (a file, a folder with WEIGHTS_NAME, or a hub id whose repo holds
    it: read from the local Hugging Face cache, else downloaded once unless HF_HUB_OFFLINE is set).
    ModelUnavailableError when absent."""
    path = Path(location).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if (path / WEIGHTS_NAME).is_file():
            return path / WEIGHTS_NAME
        raise ModelUnavailableError(f"LoRA '{name}': the folder {location} has no {WEIGHTS_NAME}.")
    if location.startswith((".", "/", "~")) or location.count("/") != 1:
        raise ModelUnavailableError(f"LoRA '{name}': there is no file or folder {location} on this machine.")
    return hub_file(location, WEIGHTS_NAME, what=f"LoRA '{name}'")


def hub_file(repo: str, filename: str, *, what: str) -> Path:
    """The file `filename` of the hub repo `repo`: read from the local Hugging Face cache, else downloaded once unless
    HF_HUB_OFFLINE is set. ModelUnavailableError (saying how to get it, `what`: whose file) when it cannot be had."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache  # torch-free
    from huggingface_hub.errors import HTTPError

    # The cached file first: a page asks on every rerun, and hf_hub_download would ask the hub each time.
    cached = try_to_load_from_cache(repo, filename)
    if isinstance(cached, str):
        return Path(cached)
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    try:
        return Path(hf_hub_download(repo, filename, local_files_only=offline))
    except (OSError, HTTPError) as exc:
        raise ModelUnavailableError(
            f"{what} ({repo}) is not available on this machine: download it once where the hub is "
            f"reachable (`hf download {repo} {filename}`), or point its location at a local file."
        ) from exc


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, hex, read in 1 MiB blocks (LoRAs are tens to hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def ensure_preview_lora(models_dir: Path, family: str) -> Path:
    """The tiny LoRA for `family`'s preview model, built into models_dir/<PREVIEW_LORAS name> unless it is there (in a
    temporary folder renamed into place, as pipelines.registry.ensure_preview_model)."""
    if family not in PREVIEW_LORAS:
        raise ModelUnavailableError(
            f"There is no preview LoRA for the {family} family; preview LoRAs exist for {', '.join(PREVIEW_LORAS)}."
        )
    folder = Path(models_dir) / PREVIEW_LORAS[family]
    return build_preview_folder(folder, WEIGHTS_NAME, "save_tiny_lora") / WEIGHTS_NAME


def build_preview_folder(folder: Path, marker: str, builder: str, *args: object) -> Path:
    """`folder`, built by pipelines.tiny's function `builder` (called with the folder and `args`) unless its file
    `marker` is there: in a temporary folder renamed into place (as pipelines.registry.ensure_preview_model)."""
    if (folder / marker).is_file():
        return folder

    from pipelines import import_model_stack

    import_model_stack()  # only when a build is needed; one thread at a time (a web page may be first here)
    from pipelines import tiny

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        getattr(tiny, builder)(staging, *args)
        os.rename(staging, folder)  # atomic; fails if another process put a complete folder there first
    except OSError as exc:
        if not (folder / marker).is_file():
            raise ModelUnavailableError(f"Could not build the preview files in '{folder}'.") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder

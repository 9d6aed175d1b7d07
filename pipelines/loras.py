"""LoRAs a run applies on top of its model: what names one (`LoraRef`), where its weights file is, its SHA-256, and
the checks a request's LoRAs pass before anything loads.

Torch-free, so the studio validates a request and records a LoRA's hash without loading the model stack;
pipelines.adapters loads them into a cached base pipeline. A LoRA is one safetensors file in diffusers' (or
kohya's) layout: a local file, a local folder holding WEIGHTS_NAME, a hub repo holding it, or a file in a hub repo
("owner/repo/path/in/repo.safetensors").
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import ModelUnavailableError, PipelineInputError
from pipelines.families import get_family
from pipelines.params import MAX_LORAS, check_limit

# The file diffusers' save_lora_weights writes, and the one looked for in a folder or a hub repo.
WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
# The tiny offline LoRA for a family's preview model (pipelines.tiny.save_tiny_lora), by the family it is made for.
PREVIEW_LORAS = {
    "sd15": "preview-lora",
    "flux-kontext": "preview-lora-flux-kontext",
    "qwen-image-edit": "preview-lora-qwen-image-edit",
    "qwen-image-edit-plus": "preview-lora-qwen-image-edit-plus",
}


# What a LoRA file of each family must look like (check_lora_file): the denoiser its layers go on, and for the UNet
# families the width of the text embedding their cross-attention reads (real models; the tiny preview models').
UNET_FAMILIES = ("sd15", "sd21", "sdxl")
CROSS_ATTENTION_WIDTHS = {"sd15": 768, "sd21": 1024, "sdxl": 2048}
PREVIEW_CROSS_ATTENTION_WIDTHS = {"sd15": 32, "sd21": 32, "sdxl": 64}
_LORA_MARKS = ("lora_A", "lora_B", "lora_down", "lora_up", "lora.down", "lora.up")
_UNET_PREFIXES = ("unet.", "lora_unet_")
_TRANSFORMER_PREFIXES = ("transformer.", "diffusion_model.", "lora_transformer_", "lora_unet_double_blocks")
_TRANSFORMER_PREFIXES += ("lora_unet_single_blocks",)
_FLUX_BLOCKS = ("single_transformer_blocks", "single_blocks", "double_blocks")  # FLUX.1's, in either layout
FLUX_DOUBLE_BLOCKS = 19
_QWEN_BLOCKS = ("img_mlp", "txt_mlp", "img_mod", "txt_mod")  # Qwen-Image's (FLUX.1's original double blocks too)


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
    """The safetensors file of a LoRA at `location` (a file, a folder with WEIGHTS_NAME, a hub id whose repo holds
    it, or "owner/repo/path.safetensors": read from the local Hugging Face cache, else downloaded once unless
    HF_HUB_OFFLINE is set). ModelUnavailableError when absent."""
    path = Path(location).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if (path / WEIGHTS_NAME).is_file():
            return path / WEIGHTS_NAME
        raise ModelUnavailableError(f"LoRA '{name}': the folder {location} has no {WEIGHTS_NAME}.")
    in_repo = location.count("/") >= 2 and location.endswith(".safetensors")  # a file inside a hub repo
    if location.startswith((".", "/", "~")) or (location.count("/") != 1 and not in_repo):
        raise ModelUnavailableError(f"LoRA '{name}': there is no file or folder {location} on this machine.")
    owner, repo, *rest = location.split("/")
    return hub_file(f"{owner}/{repo}", "/".join(rest) or WEIGHTS_NAME, what=f"LoRA '{name}'")


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


def check_lora_file(path: Path, family: str, *, preview: bool = False) -> None:
    """Refuse (PipelineInputError, saying why) a file that is not a LoRA for models of `family`, reading only its
    safetensors header (torch-free, so a web page checks a file without the model stack): it must hold LoRA layers
    (lora_A/lora_B, or kohya's lora_down/lora_up) on the family's denoiser (the UNet of SD 1.x/2.x/SDXL, the
    transformer of FLUX.1 and Qwen-Image), with FLUX.1's or Qwen-Image's blocks where the file names them, and for
    the UNet families a cross-attention as wide as the family's text embedding (768, 1024, 2048; with `preview`
    also the tiny preview models' widths). FLUX.1 and FLUX.1 Kontext, or Qwen-Image-Edit and its Plus, share one
    architecture, so a file cannot tell them apart."""
    tensors = _safetensors_header(path)
    layers = {name: shape for name, shape in tensors.items() if any(mark in name for mark in _LORA_MARKS)}
    if not layers:
        raise PipelineInputError(f"{path.name} holds no LoRA layers (no lora_A/lora_B or lora_down/lora_up weights).")
    label = get_family(family).label
    unet = [name for name in layers if name.startswith(_UNET_PREFIXES) and not name.startswith(_TRANSFORMER_PREFIXES)]
    transformer = [name for name in layers if name.startswith(_TRANSFORMER_PREFIXES)]
    if family in UNET_FAMILIES:
        if not unet:
            found = "a transformer's (FLUX.1 or Qwen-Image)" if transformer else "no denoiser's"
            raise PipelineInputError(f"{path.name} has {found} layers, not the UNet layers of a {label} LoRA.")
        widths = {shape[-1] for name, shape in layers.items() if "attn2.to_k" in name and _is_down(name)}
        allowed = {CROSS_ATTENTION_WIDTHS[family]} | ({PREVIEW_CROSS_ATTENTION_WIDTHS[family]} if preview else set())
        if widths and not widths <= allowed:
            others = [name for name, width in CROSS_ATTENTION_WIDTHS.items() if width in widths and name != family]
            hint = f" (that is a {get_family(others[0]).label} width)" if others else ""
            raise PipelineInputError(
                f"{path.name} reads text embeddings {sorted(widths)} wide{hint}; {label} models read "
                f"{' or '.join(str(width) for width in sorted(allowed))}."
            )
        return
    if not transformer:
        found = "a UNet's (Stable Diffusion)" if unet else "no denoiser's"
        raise PipelineInputError(f"{path.name} has {found} layers, not the transformer layers of a {label} LoRA.")
    flux_like = any(block in name for name in transformer for block in _FLUX_BLOCKS)
    # FLUX.1 has 19 double blocks beside its single ones; Qwen-Image has 60 of one kind
    deep = any(
        int(index) >= FLUX_DOUBLE_BLOCKS for index in re.findall(r"transformer_blocks[._](\d+)", " ".join(transformer))
    )
    qwen_like = not flux_like and (deep or any(block in name for name in transformer for block in _QWEN_BLOCKS))
    if (flux_like and family.startswith("qwen")) or (qwen_like and family.startswith("flux")):
        theirs = "FLUX.1" if flux_like else "Qwen-Image"
        raise PipelineInputError(f"{path.name} has {theirs} transformer blocks, not those of a {label} LoRA.")


def _is_down(name: str) -> bool:
    """Whether a LoRA weight is the down-projection (its last dimension is the layer's input width)."""
    return "lora_A" in name or "lora_down" in name or "lora.down" in name


def _safetensors_header(path: Path) -> dict[str, list[int]]:
    """Each tensor's name and shape in a safetensors file (an 8-byte header length, then a JSON header)."""
    try:
        with open(path, "rb") as file:
            (length,) = struct.unpack("<Q", file.read(8))
            if length > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(file.read(length))
        tensors = {name: list(entry["shape"]) for name, entry in header.items() if name != "__metadata__"}
    except (OSError, ValueError, struct.error, KeyError, TypeError, AttributeError) as exc:
        raise PipelineInputError(f"{path.name} is not a safetensors file ({type(exc).__name__}).") from exc
    return tensors


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
    return build_preview_folder(folder, WEIGHTS_NAME, "save_tiny_lora", family=family) / WEIGHTS_NAME


def build_preview_folder(folder: Path, marker: str, builder: str, *args: object, **kwargs: object) -> Path:
    """`folder`, built by pipelines.tiny's function `builder` (called with the folder, `args` and `kwargs`) unless its
    file `marker` is there: in a temporary folder renamed into place (as pipelines.registry.ensure_preview_model)."""
    if (folder / marker).is_file():
        return folder

    from pipelines import import_model_stack

    import_model_stack()  # only when a build is needed; one thread at a time (a web page may be first here)
    from pipelines import tiny

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        getattr(tiny, builder)(staging, *args, **kwargs)
        os.rename(staging, folder)  # atomic; fails if another process put a complete folder there first
    except OSError as exc:
        if not (folder / marker).is_file():
            raise ModelUnavailableError(f"Could not build the preview files in '{folder}'.") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder

"""Process-wide cache of loaded base pipelines, and the lock that serialises diffusion runs.

A base pipeline is loaded once per (model, device, dtype) and never run directly: each request
derives its own pipeline from it (`request_pipeline`: shared weights, own scheduler), because
diffusers pipelines are not thread-safe and schedulers keep per-run state.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch
from diffusers import StableDiffusionImg2ImgPipeline
from huggingface_hub.errors import HTTPError as HubHTTPError

from pipelines.errors import ModelUnavailableError
from pipelines.registry import ModelRef, ensure_preview_model

# Held around each diffusion call, so runs in one process take the accelerator one at a time.
RUN_LOCK = threading.Lock()

_LOAD_LOCK = threading.Lock()
_CacheKey = tuple[str, str, torch.dtype]
_pipelines: dict[_CacheKey, StableDiffusionImg2ImgPipeline] = {}


def pick_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str) -> torch.dtype:
    # Half precision halves memory and time on CUDA; CPU and MPS are slow or unreliable in fp16.
    return torch.float16 if device == "cuda" else torch.float32


def _hub_offline() -> bool:
    # Read at call time (huggingface_hub reads it once at import), so setting it later still applies.
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _unavailable_message(ref: ModelRef) -> str:
    if ref.is_local:
        return (
            f"Model '{ref.name}' could not be loaded from '{ref.location}': it is not a complete "
            "diffusers pipeline folder (save one with save_pretrained). Point STUDIO_MODEL at a "
            "complete folder or a hub id."
        )
    return (
        f"Model '{ref.name}' is not available on this machine: it is not in the local Hugging Face "
        "cache and the hub cannot be reached. To use it, download it once where the hub is reachable "
        f"(e.g. `hf download {ref.location}`), or point STUDIO_MODEL at a local folder with the model "
        "(or 'preview' for the offline preview model)."
    )


def get_base_pipeline(ref: ModelRef) -> StableDiffusionImg2ImgPipeline:
    """The loaded pipeline for a model on this machine's device; loads it on first use."""
    device = pick_device()
    dtype = pick_dtype(device)
    key = (ref.location, device, dtype)
    # One lock for all loads: two callers asking for a model at once load it once, and a big
    # model is never loaded twice side by side.
    with _LOAD_LOCK:
        if key in _pipelines:
            return _pipelines[key]
        if ref.is_preview:
            # The preview folder is models_dir/"preview" (resolve_model); build it on first use.
            ensure_preview_model(Path(ref.location).parent)
        try:
            pipe = StableDiffusionImg2ImgPipeline.from_pretrained(
                ref.location,
                dtype=dtype,
                safety_checker=None,
                requires_safety_checker=False,
                local_files_only=ref.is_local or _hub_offline(),
            )
        # Not cached offline, missing repo or files (OSError and its hub subclasses such as
        # LocalEntryNotFoundError, RepositoryNotFoundError); a hub that cannot be reached (HTTP errors).
        except (OSError, HubHTTPError) as exc:
            raise ModelUnavailableError(_unavailable_message(ref)) from exc
        pipe = pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        _pipelines[key] = pipe
        return pipe


def request_pipeline(base: StableDiffusionImg2ImgPipeline) -> StableDiffusionImg2ImgPipeline:
    """A pipeline for one request: the base's models (shared, no copy) with a fresh scheduler of its own."""
    scheduler = type(base.scheduler).from_config(base.scheduler.config)
    # Built with the constructor rather than `from_pipe`: in diffusers 0.42, from_pipe ends with
    # `.to(dtype=...)` (float32 unless told otherwise), which casts the *shared* fp16 models of the
    # cached base in place, and it logs a warning on every call even when the dtype matches.
    pipe = StableDiffusionImg2ImgPipeline(**{**base.components, "scheduler": scheduler}, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def loaded_models() -> list[str]:
    """The loaded pipelines, as "location (device, dtype)"."""
    with _LOAD_LOCK:
        return [f"{location} ({device}, {str(dtype).removeprefix('torch.')})" for location, device, dtype in _pipelines]


def clear_cache() -> None:
    """Forget every loaded pipeline (tests, or to free memory)."""
    with _LOAD_LOCK:
        _pipelines.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

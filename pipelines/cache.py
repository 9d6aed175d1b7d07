"""Process-wide cache of loaded base pipelines, and the lock that serialises diffusion runs.

A model is loaded once per (class, location, device, dtype). A base Stable Diffusion pipeline is
never run directly: each request derives the pipeline of its task from it (`request_pipeline`:
img2img, inpaint, ControlNet; shared weights, own scheduler), because diffusers pipelines are not
thread-safe and schedulers keep per-run state.
"""

from __future__ import annotations

import inspect
import os
import threading
from pathlib import Path
from typing import Any, TypeVar

import torch
from diffusers import ControlNetModel, DiffusionPipeline, StableDiffusionImg2ImgPipeline
from huggingface_hub.errors import HTTPError as HubHTTPError

from pipelines.errors import ModelUnavailableError
from pipelines.registry import ModelRef, ensure_preview_model

# Held around each diffusion call, so runs in one process take the accelerator one at a time.
RUN_LOCK = threading.Lock()

_LOAD_LOCK = threading.Lock()
# (class name, location, device, dtype) → the loaded pipeline or model
_CacheKey = tuple[str, str, str, torch.dtype]
_loaded: dict[_CacheKey, Any] = {}
_Loadable = TypeVar("_Loadable")
_Pipeline = TypeVar("_Pipeline", bound=DiffusionPipeline)


# Set by `python -m studio worker --device cuda:1` (one worker process per GPU); None: the best available.
_device_override: str | None = None


def set_device(device: str | None) -> None:
    """Run every model of this process on `device` ("cpu", "cuda", "cuda:1", "mps"); None: pick_device's choice."""
    global _device_override
    if device is not None:
        parsed = torch.device(device)  # refuse a malformed name now, not at the first job
        if parsed.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"Device {device!r} asked for, but CUDA is not available on this machine")
        if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(
                f"Device {device!r} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s) "
                f"(cuda:0 … cuda:{torch.cuda.device_count() - 1})"
            )
    _device_override = device


def pick_device() -> str:
    if _device_override is not None:
        return _device_override
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str) -> torch.dtype:
    # Half precision halves memory and time on CUDA; CPU and MPS are slow or unreliable in fp16.
    return torch.float16 if device.startswith("cuda") else torch.float32


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
        f"(e.g. `hf download {ref.location}`), or point the style catalogue or STUDIO_MODEL at a local "
        "folder with the model (or STUDIO_MODEL=preview for the offline preview models)."
    )


def get_pipeline(ref: ModelRef, cls: type[_Loadable], **load_kwargs: Any) -> _Loadable:
    """The loaded `cls` (a pipeline or model class) for a model on this machine's device; loads it on first use."""
    device = pick_device()
    dtype = pick_dtype(device)
    key = (cls.__name__, ref.location, device, dtype)
    # One lock for all loads: two callers asking for a model at once load it once, and a big
    # model is never loaded twice side by side.
    with _LOAD_LOCK:
        if key in _loaded:
            return _loaded[key]
        if ref.is_preview:
            # Preview folders are models_dir/<name> (resolve_model); build on first use.
            ensure_preview_model(Path(ref.location).parent, ref.name)
        try:
            loaded = cls.from_pretrained(
                ref.location, dtype=dtype, local_files_only=ref.is_local or _hub_offline(), **load_kwargs
            )
        # Not cached offline, missing repo or files (OSError and its hub subclasses such as
        # LocalEntryNotFoundError, RepositoryNotFoundError); a hub that cannot be reached (HTTP errors).
        except (OSError, HubHTTPError) as exc:
            raise ModelUnavailableError(_unavailable_message(ref)) from exc
        loaded = loaded.to(device)
        if hasattr(loaded, "set_progress_bar_config"):
            loaded.set_progress_bar_config(disable=True)
        _loaded[key] = loaded
        return loaded


def get_base_pipeline(ref: ModelRef) -> StableDiffusionImg2ImgPipeline:
    """The loaded Stable Diffusion model every SD task derives its pipeline from (see request_pipeline)."""
    return get_pipeline(ref, StableDiffusionImg2ImgPipeline, safety_checker=None, requires_safety_checker=False)


def get_controlnet(ref: ModelRef) -> ControlNetModel:
    return get_pipeline(ref, ControlNetModel)


def request_pipeline(
    base: DiffusionPipeline, cls: type[_Pipeline] = StableDiffusionImg2ImgPipeline, **extra: Any
) -> _Pipeline:
    """A `cls` pipeline for one request: the base's models (shared, no copy), a fresh scheduler of its own,
    and `extra` components (a ControlNet).

    This is what `cls.from_pipe(base, scheduler=…)` does, built with the constructor instead: in
    diffusers 0.42, from_pipe ends with `.to(dtype=...)` (float32 unless told otherwise), which casts
    the *shared* fp16 models of the cached base in place, and it logs a warning on every call.
    """
    accepted = inspect.signature(cls.__init__).parameters
    components = {name: part for name, part in base.components.items() if name in accepted}
    components["scheduler"] = type(base.scheduler).from_config(base.scheduler.config)
    if "requires_safety_checker" in accepted:
        components["requires_safety_checker"] = False
    pipe = cls(**components, **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def loaded_models() -> list[str]:
    """The loaded pipelines and models, as "location (device, dtype)"."""
    with _LOAD_LOCK:
        return [f"{location} ({device}, {str(dtype).removeprefix('torch.')})" for _, location, device, dtype in _loaded]


def clear_cache() -> None:
    """Forget every loaded pipeline (tests, or to free memory)."""
    with _LOAD_LOCK:
        _loaded.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

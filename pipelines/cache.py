"""Process-wide cache of loaded models within a memory budget, and the lock that serialises diffusion runs.

A model is loaded once per (class, location, device, dtype, offload). A family's base pipeline is never run
directly: each request derives the pipeline of its task from it (`request_pipeline`: img2img, inpaint,
ControlNet; shared weights, own scheduler), because diffusers pipelines are not thread-safe and schedulers
keep per-run state.

Memory budget: each loaded model is tracked by the bytes of its parameters and buffers that stay on the
device. Loading one that would take the total past the budget (`set_memory_budget`: the studio passes
STUDIO_MODEL_MEMORY; default 90 % of the device's memory, of RAM on CPU) first evicts the least recently used
models. Models fetched inside `in_use()` are pinned until the block ends, so a run's models are never evicted
mid-run. When a model does not fit even after evicting every unpinned one, its load is refused with a
ModelUnavailableError naming the sizes and the budget, rather than waiting: a run waiting for room held by
its own pinned models would wait forever.

CPU offload (ModelRef.offload): on an accelerator, "model" and "sequential" apply diffusers'
enable_model_cpu_offload / enable_sequential_cpu_offload to a pipeline instead of moving it to the device;
the budget then counts what stays on the device while it runs (its largest component, or its largest layer).
On a CPU device both are no-ops (the weights are in RAM already, and diffusers refuses offload without an
accelerator): the model loads without offload, and memory_report shows the offload it asked for and the one
that applies.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from diffusers import ControlNetModel, DiffusionPipeline
from diffusers.models.attention_processor import AttnProcessor2_0, XFormersAttnProcessor
from huggingface_hub.errors import HTTPError as HubHTTPError
from torch.nn.attention import SDPBackend, sdpa_kernel

from pipelines.errors import ModelUnavailableError
from pipelines.families import DEFAULT_FAMILY, Family, get_family
from pipelines.params import ATTENTION_BACKENDS, MemoryBudget, Task
from pipelines.registry import ModelRef, ensure_preview_model

log = logging.getLogger(__name__)

# Held around each diffusion call, so runs in one process take the accelerator one at a time.
RUN_LOCK = threading.Lock()

_LOAD_LOCK = threading.Lock()
_Loadable = TypeVar("_Loadable")


@dataclass
class _Entry:
    """A loaded model and what the budget knows about it."""

    model: Any
    ref: ModelRef
    kind: str  # the class it was loaded as
    device: str
    dtype: torch.dtype
    offload: str  # the offload that applies (ref.offload, or "none" on a CPU device or for a bare model)
    bytes: int  # parameters and buffers, wherever they are
    device_bytes: int  # what of them stays on the device; counted against the budget
    pins: int = 0  # runs using it now (in_use blocks): never evicted while above 0


# (class name, location, device, dtype, offload, speed options) → the entry, least recently used first
_CacheKey = tuple[str, str, str, torch.dtype, str, "SpeedOptions"]
_loaded: OrderedDict[_CacheKey, _Entry] = OrderedDict()
_budget = MemoryBudget()


@dataclass(frozen=True)
class SpeedOptions:
    """Opt-in speed-ups applied to a pipeline's denoiser (its UNet or transformer) once, when it loads.

    `compile`: torch.compile it (STUDIO_COMPILE=1): the first run at each new shape compiles (seconds to minutes),
    later runs reuse the kernels for as long as the model stays in the cache. `attention`: the attention backend of
    diffusers' dispatcher (STUDIO_ATTENTION; pipelines.params.ATTENTION_BACKENDS), None: diffusers' default."""

    compile: bool = False
    attention: str | None = None


_speed = SpeedOptions()
_holds = threading.local()  # per thread: a stack of lists of the entries each open in_use() block pinned


@dataclass(frozen=True)
class LoadedModel:
    """One loaded model, for the admin Models page (`str()` is the one-line form)."""

    name: str  # as configured: a preview name, hub id or folder
    location: str
    family: str
    kind: str  # the class it was loaded as
    bytes: int
    device_bytes: int  # counted against the budget
    device: str
    dtype: str
    offload: str  # the offload that applies
    offload_requested: str  # what the model asked for (differs on a CPU device)
    in_use: bool

    def __str__(self) -> str:
        offload = f", offload {self.offload}" if self.offload != "none" else ""
        in_use = ", in use" if self.in_use else ""
        return f"{self.name} ({self.kind}, {_size(self.bytes)}, {self.device}, {self.dtype}{offload}{in_use})"


@dataclass(frozen=True)
class MemoryReport:
    """What this process has loaded on its device and the budget it keeps to."""

    device: str
    budget_bytes: int
    used_bytes: int  # device bytes of the loaded models
    models: tuple[LoadedModel, ...]  # least recently used first

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (a worker's heartbeat)."""
        return asdict(self)


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


def pick_dtype(device: str, family: str = DEFAULT_FAMILY) -> torch.dtype:
    """The dtype models of `family` run in on `device` (pipelines.families: float16 on CUDA, else float32)."""
    return getattr(torch, get_family(family).dtype_name(device))


# --- the memory budget ---------------------------------------------------------------------------


def set_memory_budget(budget: MemoryBudget | str | None) -> None:
    """The memory this process's models may take (MemoryBudget, or its text form such as "24GB" or "80%"; None:
    the default, 90 % of the device's memory). Applies from the next load on: nothing is evicted now."""
    global _budget
    if budget is None:
        budget = MemoryBudget()
    elif isinstance(budget, str):
        budget = MemoryBudget.parse(budget)
    with _LOAD_LOCK:
        _budget = budget


def set_speed_options(options: SpeedOptions) -> None:
    """The speed options models loaded from now on get (loaded ones keep theirs: the options are in the cache key,
    so a model is never compiled twice, nor used with options other than those it was loaded with)."""
    global _speed
    if options.attention is not None and options.attention not in ATTENTION_BACKENDS:
        raise ValueError(f"Unknown attention backend {options.attention!r}: one of {', '.join(ATTENTION_BACKENDS)}")
    with _LOAD_LOCK:
        _speed = options


def device_memory(device: str) -> int:
    """Bytes of memory on `device`: a CUDA device's own, else the machine's RAM (CPU, and MPS's unified memory)."""
    parsed = torch.device(device)
    if parsed.type == "cuda":
        index = parsed.index if parsed.index is not None else torch.cuda.current_device()
        return torch.cuda.get_device_properties(index).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_budget_bytes(device: str | None = None) -> int:
    """The budget in bytes on `device` (default: this process's)."""
    return _budget.bytes_of(device_memory(device or pick_device()))


@contextmanager
def in_use() -> Iterator[None]:
    """Pin every model this thread fetches (get_pipeline, get_base_pipeline, get_controlnet) until the block ends:
    a run wraps the fetching of its models and its denoising in one, so they cannot be evicted mid-run."""
    pinned: list[_Entry] = []
    stack = _holds.__dict__.setdefault("stack", [])
    stack.append(pinned)
    try:
        yield
    finally:
        stack.pop()
        with _LOAD_LOCK:
            for entry in pinned:
                entry.pins -= 1


# --- loading -------------------------------------------------------------------------------------


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


def get_pipeline(
    ref: ModelRef,
    cls: type[_Loadable],
    *,
    components: Callable[..., dict[str, Any]] | None = None,
    **load_kwargs: Any,
) -> _Loadable:
    """The loaded `cls` (a pipeline or model class) for a model on this machine's device; loads it on first use,
    evicting least recently used models to stay within the budget. Pinned when called inside `in_use()`.
    `components(location, local_files_only=…)` builds components to hand to from_pretrained (Family.load_components),
    only when it loads."""
    device = pick_device()
    dtype = pick_dtype(device, ref.family)
    # Offload moves a pipeline's components between RAM and an accelerator; a bare model (a ControlNet) and
    # anything on the CPU stay where they are.
    offloads = issubclass(cls, DiffusionPipeline) and torch.device(device).type != "cpu"
    offload = ref.offload if offloads else "none"
    key = (cls.__name__, ref.location, device, dtype, offload, _speed)
    # One lock for all loads: two callers asking for a model at once load it once, and a big
    # model is never loaded twice side by side.
    with _LOAD_LOCK:
        entry = _loaded.get(key)
        if entry is None:
            entry = _load(ref, cls, key, load_kwargs, components)
        _loaded.move_to_end(key)
        stack = getattr(_holds, "stack", None)
        if stack:
            entry.pins += 1
            stack[-1].append(entry)
        return entry.model


def _load(
    ref: ModelRef,
    cls: type,
    key: _CacheKey,
    load_kwargs: dict[str, Any],
    components: Callable[..., dict[str, Any]] | None,
) -> _Entry:
    """Load to RAM, count its bytes, make room on the device, then place it there (called under _LOAD_LOCK)."""
    _, _, device, dtype, offload, speed = key
    if ref.is_preview:
        # Preview folders are models_dir/<name> (resolve_model); build on first use.
        ensure_preview_model(Path(ref.location).parent, ref.name)
    local_files_only = ref.is_local or _hub_offline()
    try:
        built = components(ref.location, local_files_only=local_files_only) if components is not None else {}
        loaded = cls.from_pretrained(
            ref.location, dtype=dtype, local_files_only=local_files_only, **load_kwargs, **built
        )
    # Not cached offline, missing repo or files (OSError and its hub subclasses such as
    # LocalEntryNotFoundError, RepositoryNotFoundError); a hub that cannot be reached (HTTP errors).
    except (OSError, HubHTTPError) as exc:
        raise ModelUnavailableError(_unavailable_message(ref)) from exc
    total, on_device = _parameter_bytes(loaded, offload)
    _make_room(ref, on_device, device)
    if offload == "model":
        loaded.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        loaded.enable_sequential_cpu_offload(device=device)
    else:
        loaded = loaded.to(device)
    if hasattr(loaded, "set_progress_bar_config"):
        loaded.set_progress_bar_config(disable=True)
    _apply_speed_options(loaded, speed)
    entry = _Entry(loaded, ref, cls.__name__, device, dtype, offload, total, on_device)
    _loaded[key] = entry
    return entry


def _apply_speed_options(loaded: Any, speed: SpeedOptions) -> None:
    """Set the attention backend of, and compile, a pipeline's denoiser in place: every request pipeline derived
    from it (request_pipeline) shares the module, so it is compiled once per loaded model."""
    components = getattr(loaded, "components", {})
    denoiser = components.get("unet") or components.get("transformer")
    if denoiser is None:
        return
    if speed.attention is not None:
        _set_attention(denoiser, speed.attention)
    if speed.compile:
        denoiser.compile()  # nn.Module.compile: in place, so the pipeline and its derived ones call the compiled one


class SdpaKernelProcessor(AttnProcessor2_0):
    """A UNet's default attention (torch's scaled-dot-product attention) held to one of torch's kernels."""

    def __init__(self, kernel: SDPBackend) -> None:
        super().__init__()
        self.kernel = kernel

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        with sdpa_kernel(self.kernel):
            return super().__call__(*args, **kwargs)


# UNets (SD 1.5, SDXL, the upscalers) call their attention processors' own kernels, not diffusers' dispatcher: the
# backends they can take, as processors (AttnProcessor2_0, torch's scaled-dot-product attention, is their default).
_UNET_PROCESSORS: dict[str, Callable[[], Any]] = {
    "native": AttnProcessor2_0,
    "_native_flash": lambda: SdpaKernelProcessor(SDPBackend.FLASH_ATTENTION),
    "_native_efficient": lambda: SdpaKernelProcessor(SDPBackend.EFFICIENT_ATTENTION),
    "_native_cudnn": lambda: SdpaKernelProcessor(SDPBackend.CUDNN_ATTENTION),
    "_native_math": lambda: SdpaKernelProcessor(SDPBackend.MATH),
    "xformers": XFormersAttnProcessor,
}


def _set_attention(denoiser: torch.nn.Module, backend: str) -> None:
    """Select `backend` on a denoiser: through diffusers' attention dispatcher where its processors use it (FLUX.1,
    SD3, Qwen-Image transformers: ModelMixin.set_attention_backend), else as a UNet's attention processor."""
    processors = [module.processor for module in denoiser.modules() if hasattr(module, "processor")]
    try:
        if any(hasattr(processor, "_attention_backend") for processor in processors):
            denoiser.set_attention_backend(backend)
        elif backend in _UNET_PROCESSORS:
            denoiser.set_attn_processor(_UNET_PROCESSORS[backend]())
        else:
            raise ModelUnavailableError(
                f"STUDIO_ATTENTION={backend} applies to transformer models (FLUX.1, SD3, Qwen-Image); "
                f"{type(denoiser).__name__} takes {', '.join(_UNET_PROCESSORS)}."
            )
    except (RuntimeError, ImportError, ValueError) as exc:  # its package is missing or too old
        raise ModelUnavailableError(f"STUDIO_ATTENTION={backend}: {exc}") from exc


def _parameter_bytes(loaded: Any, offload: str) -> tuple[int, int]:
    """(all its parameter and buffer bytes, those that stay on the device): all without offload, the largest
    component with model offload (one component is on the device at a time), the largest layer with
    sequential offload (weights stream in layer by layer)."""
    if isinstance(loaded, torch.nn.Module):
        modules = [loaded]
    else:
        modules = [part for part in loaded.components.values() if isinstance(part, torch.nn.Module)]

    def size(tensors: Iterator[torch.Tensor]) -> int:
        return sum(tensor.numel() * tensor.element_size() for tensor in tensors)

    sizes = [size(itertools.chain(module.parameters(), module.buffers())) for module in modules]
    if offload == "model":
        return sum(sizes), max(sizes)
    if offload == "sequential":
        layers = (layer for module in modules for layer in module.modules())
        return sum(sizes), max(size(itertools.chain(m.parameters(False), m.buffers(False))) for m in layers)
    return sum(sizes), sum(sizes)


def _make_room(ref: ModelRef, needed: int, device: str) -> None:
    """Evict unpinned models, least recently used first, until `needed` more bytes fit the budget on `device`."""
    budget = memory_budget_bytes(device)
    used = sum(entry.device_bytes for entry in _loaded.values() if entry.device == device)
    evicted = False
    for key, entry in list(_loaded.items()):
        if used + needed <= budget:
            break
        if entry.pins == 0 and entry.device == device:
            del _loaded[key]
            used -= entry.device_bytes
            evicted = True
            log.info("Evicted model %s (%s) to load %s", entry.ref.name, _size(entry.device_bytes), ref.name)
    if used + needed > budget:
        in_use = [f"'{e.ref.name}' ({_size(e.device_bytes)})" for e in _loaded.values() if e.device == device]
        held = f"; in use by runs now: {', '.join(in_use)}" if in_use else ""
        raise ModelUnavailableError(
            f"Model '{ref.name}' needs {_size(needed)} on {device}, more than the model memory budget of "
            f"{_size(budget)} leaves{held}. Raise STUDIO_MODEL_MEMORY, or give the model CPU offload "
            '(offload = "model" or "sequential").'
        )
    if evicted and torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _size(count: int) -> str:
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def get_base_pipeline(ref: ModelRef) -> DiffusionPipeline:
    """The loaded pipeline of the model's family that every task derives its pipeline from (request_pipeline)."""
    family = get_family(ref.family, model=ref.name)
    return get_pipeline(ref, family.pipeline_class(None), components=family.load_components, **family.load_options)


def get_controlnet(ref: ModelRef) -> ControlNetModel:
    return get_pipeline(ref, ControlNetModel)


def request_pipeline(
    base: DiffusionPipeline,
    family: Family,
    task: Task = Task.img2img,
    *,
    controlnet: ControlNetModel | None = None,
    inpainting_checkpoint: bool = False,
    masked: bool = False,
) -> DiffusionPipeline:
    """The family's pipeline for `task` for one request: the base's models (shared, no copy), a fresh scheduler
    of its own, the family's options (pipeline_options) and, given one, a ControlNet. `inpainting_checkpoint`:
    the base is one (Family.is_inpainting_checkpoint), for families that inpaint those with another pipeline;
    `masked`: an edit restricted to a mask.

    This is what `cls.from_pipe(base, scheduler=…)` does, built with the constructor instead: in
    diffusers 0.42, from_pipe ends with `.to(dtype=...)` (float32 unless told otherwise), which casts
    the *shared* fp16 models of the cached base in place, and it logs a warning on every call.
    """
    cls = family.pipeline_class(
        task, controlnet=controlnet is not None, inpainting_checkpoint=inpainting_checkpoint, masked=masked
    )
    accepted = inspect.signature(cls.__init__).parameters
    components = {name: part for name, part in base.components.items() if name in accepted}
    components["scheduler"] = type(base.scheduler).from_config(base.scheduler.config)
    if controlnet is not None:
        components["controlnet"] = controlnet
    options = {name: value for name, value in family.pipeline_options(base).items() if name in accepted}
    pipe = cls(**components, **options)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --- what is loaded ------------------------------------------------------------------------------


def loaded_models() -> list[str]:
    """The loaded pipelines and models, as "location (device, dtype)" (memory_report has the details)."""
    with _LOAD_LOCK:
        return [f"{e.ref.location} ({e.device}, {str(e.dtype).removeprefix('torch.')})" for e in _loaded.values()]


def memory_report() -> MemoryReport:
    """What is loaded on this process's device, least recently used first, with sizes and the budget."""
    device = pick_device()
    with _LOAD_LOCK:
        models = tuple(
            LoadedModel(
                name=entry.ref.name,
                location=entry.ref.location,
                family=entry.ref.family,
                kind=entry.kind,
                bytes=entry.bytes,
                device_bytes=entry.device_bytes,
                device=entry.device,
                dtype=str(entry.dtype).removeprefix("torch."),
                offload=entry.offload,
                offload_requested=entry.ref.offload,
                in_use=entry.pins > 0,
            )
            for entry in _loaded.values()
        )
        budget = memory_budget_bytes(device)
    used = sum(model.device_bytes for model in models if model.device == device)
    return MemoryReport(device=device, budget_bytes=budget, used_bytes=used, models=models)


def clear_cache() -> None:
    """Forget every loaded pipeline (tests, or to free memory)."""
    with _LOAD_LOCK:
        _loaded.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

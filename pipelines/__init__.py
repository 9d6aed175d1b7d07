"""Model code: the only package that imports torch, diffusers and transformers.

Importing this package, `pipelines.errors`, `pipelines.params`, `pipelines.registry`, `pipelines.masks` or
`pipelines.families` stays cheap (no torch); the heavy modules (`pipelines.tiny`, `pipelines.cache`,
`pipelines.denoise`, `pipelines.img2img`, …) import the diffusion stack at the top. A process that runs models
from several threads (the Streamlit server: its model warm-up, its queue worker, a guide preview) calls
`import_model_stack()` before using them.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading

# Every module that imports the diffusion stack at the top, in the order they build on each other.
MODEL_MODULES = (
    "pipelines.cache",
    "pipelines.adapters",
    "pipelines.denoise",
    "pipelines.guides",
    "pipelines.img2img",
    "pipelines.inpaint",
    "pipelines.upscale",
    "pipelines.sweep",
    "pipelines.edit",
)

_stack_lock = threading.Lock()
_stack_ready = threading.Event()


def import_model_stack() -> None:
    """Import the model code once per process, one thread at a time, before any thread uses it.

    transformers' and diffusers' lazy modules are not thread-safe: a thread that imports a model class while
    another is halfway through importing the same package gets a half-initialised module ("cannot import name
    'CLIPTextModel'"), as the served studio's worker did when its first job (an upscale) raced the model
    warm-up. Once everything is imported here, their lazy attributes are resolved and cached.
    """
    if _stack_ready.is_set():
        return
    with _stack_lock:
        if not _stack_ready.is_set():
            for name in MODEL_MODULES:
                importlib.import_module(name)
            importlib.import_module("pipelines.guides").import_detectors()
            _stack_ready.set()


def set_cpu_threads(count: int) -> None:
    """The threads torch may use on the CPU in this process, without importing torch.

    Before torch is loaded, the environment its OpenMP and MKL runtimes read when they start; after, torch's own
    setting. Several CPU workers on one host each take cores ÷ workers: torch's threads spin-wait, and two
    workers with two threads each on two cores run many times slower than with one each.
    """
    if count < 1:
        raise ValueError(f"A process needs at least one thread, got {count}.")
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(count)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(count)


def model_stack_ready() -> bool:
    """Whether `import_model_stack` has finished (reading the model cache before then finds a half-made module)."""
    return _stack_ready.is_set()

"""What one image of a run adds to a GPU's memory at its peak, measured per model, and the batch size it allows.

A run on a CUDA device is measured (`measuring`): the peak allocated during the run less what was allocated
before it (the loaded weights), per image and per output pixel. Activations, latents and the VAE decode grow with
the pixels, so a footprint measured at one size scales to another. With STUDIO_BATCH_MAX unset, a worker batches as
many jobs as fit its GPU's free memory at that footprint (`chosen_batch_max`; pipelines.params.choose_batch_max).
On a CPU nothing is measured and batches stay at one job: batching saves nothing there (bench/throughput.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from pipelines.cache import pick_device
from pipelines.params import BATCH_MEMORY_SHARE, choose_batch_max

_lock = threading.Lock()
_bytes_per_pixel: dict[str, float] = {}  # model name → the largest peak bytes per image and output pixel measured


@contextmanager
def measuring(model: str, *, pixels: int, images: int) -> Iterator[None]:
    """Measure the run inside the block (hold RUN_LOCK: peak statistics are the device's, not the run's). A
    no-op except on CUDA."""
    device = torch.device(pick_device())
    if device.type != "cuda":
        yield
        return
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    yield
    torch.cuda.synchronize(device)
    record(model, (torch.cuda.max_memory_allocated(device) - before) / (images * pixels))


def record(model: str, bytes_per_pixel: float) -> None:
    """Keep the largest footprint seen for `model` (a batch's share of fixed costs can make it smaller)."""
    with _lock:
        _bytes_per_pixel[model] = max(bytes_per_pixel, _bytes_per_pixel.get(model, 0.0))


def per_image_bytes(model: str, pixels: int) -> int | None:
    """One image's measured footprint for `model` at `pixels` output pixels; None before its first measured run."""
    with _lock:
        per_pixel = _bytes_per_pixel.get(model)
    return None if per_pixel is None else int(per_pixel * pixels)


def free_memory(device: str) -> int:
    """Bytes a batch may still take on a CUDA device: what the driver reports free, plus what torch's caching
    allocator holds reserved but unused (it reuses that before asking the driver)."""
    parsed = torch.device(device)
    free, _total = torch.cuda.mem_get_info(parsed)
    return free + torch.cuda.memory_reserved(parsed) - torch.cuda.memory_allocated(parsed)


def chosen_batch_max(model: str, pixels: int) -> tuple[int, str]:
    """(the most jobs of `model` at `pixels` output pixels one loop takes on this process's device, why)."""
    device = pick_device()
    if torch.device(device).type != "cuda":
        return 1, f"{device}: one at a time (batching saves nothing without a GPU)"
    per_image = per_image_bytes(model, pixels)
    if per_image is None:
        return 1, f"measuring: the first {model} job at this size runs alone"
    free = free_memory(device)
    chosen = choose_batch_max(free_bytes=free, per_image_bytes=per_image)
    return chosen, (f"memory: {_gib(free)} free × {BATCH_MEMORY_SHARE:.0%} / {_gib(per_image)} per {model} image")


def forget() -> None:
    """Drop every measured footprint (tests)."""
    with _lock:
        _bytes_per_pixel.clear()


def _gib(count: float) -> str:
    return f"{count / 2**30:.2f} GiB"

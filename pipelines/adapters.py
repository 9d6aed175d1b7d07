"""Applying LoRAs to a cached base pipeline for one run, and taking them off again (`applied_loras`).

The base pipeline's UNet and text encoders are shared by every run of the process (pipelines.cache), so a LoRA
is loaded into them once (diffusers' `load_lora_weights`, a peft adapter named by the file's hash) and then only
switched: `set_adapters(names, weights)` when a run starts, `disable_lora()` when it ends, both under RUN_LOCK.
A disabled adapter's layers compute exactly the base layer, so the next run without LoRAs gets the base model's
pixels. At most MAX_LOADED adapters stay loaded per pipeline; the least recently used is deleted past that.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from diffusers import DiffusionPipeline

from pipelines.errors import PipelineInputError
from pipelines.loras import LoraRef, file_sha256, weights_file

# Adapters kept loaded in one base pipeline between runs (a real SD 1.5 LoRA of rank 32 is ~0.1 GB).
MAX_LOADED = 8


@contextmanager
def applied_loras(base: DiffusionPipeline, loras: tuple[LoraRef, ...]) -> Iterator[None]:
    """Run the block with `loras` at their weights on `base` (and every pipeline derived from it); none are active
    after it, whatever happened inside. The caller holds RUN_LOCK. A file whose hash is not the recorded one, or a
    pipeline that takes no LoRAs, is a PipelineInputError."""
    loaded: OrderedDict[str, None] | None = getattr(base, "_studio_adapters", None)
    if not loras:
        if loaded:  # a run that stopped before disabling cannot exist (finally below), but be sure
            base.disable_lora()
        yield
        return
    if not hasattr(base, "load_lora_weights"):
        raise PipelineInputError(f"{type(base).__name__} takes no LoRAs.")
    if loaded is None:
        loaded = base._studio_adapters = OrderedDict()
    # 1. Load the ones not loaded yet, checking each file is the one the request recorded
    for lora in loras:
        if lora.adapter_name not in loaded:
            _load(base, lora, loaded, keep={other.adapter_name for other in loras})
        loaded.move_to_end(lora.adapter_name)
    # 2. Activate exactly these, at their weights, for the block
    try:
        base.enable_lora()
        base.set_adapters([lora.adapter_name for lora in loras], adapter_weights=[lora.weight for lora in loras])
        yield
    finally:
        base.disable_lora()


def _load(base: DiffusionPipeline, lora: LoraRef, loaded: OrderedDict[str, None], *, keep: set[str]) -> None:
    path = weights_file(lora.location, name=lora.name)
    found = file_sha256(path)
    if found != lora.sha256:
        raise PipelineInputError(
            f"LoRA '{lora.name}' changed since it was recorded: its file {path} has SHA-256 {found[:12]}…, the "
            f"request names {lora.sha256[:12]}…. Register it again, or restore the recorded file."
        )
    # Make room first, never deleting one this run uses.
    for name in [name for name in loaded if name not in keep][: max(0, len(loaded) + 1 - MAX_LOADED)]:
        base.delete_adapters(name)
        del loaded[name]
    try:
        base.load_lora_weights(str(path), adapter_name=lora.adapter_name)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # not safetensors, not a LoRA, other layers
        raise PipelineInputError(
            f"LoRA '{lora.name}' does not fit this model: {str(exc).splitlines()[0][:200]}"
        ) from exc
    base.disable_lora()  # loading activates it; it applies only inside applied_loras
    loaded[lora.adapter_name] = None

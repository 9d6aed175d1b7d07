"""Applying LoRAs to a cached base pipeline for one run, and taking them off again (`applied_loras`); attaching an
IP-Adapter and its reference image for one run, and detaching it (`applied_ip_adapter`); both (`applied_adapters`).

The base pipeline's UNet and text encoders are shared by every run of the process (pipelines.cache), so a LoRA
is loaded into them once (diffusers' `load_lora_weights`, a peft adapter named by the file's hash) and then only
switched: `set_adapters(names, weights)` when a run starts, `disable_lora()` when it ends, both under RUN_LOCK.
A disabled adapter's layers compute exactly the base layer, so the next run without LoRAs gets the base model's
pixels. At most MAX_LOADED adapters stay loaded per pipeline; the least recently used is deleted past that.

An IP-Adapter replaces the UNet's attention processors and adds an image projection, which diffusers can only undo
as a whole (`unload_ip_adapter`): so it is attached when a run starts and detached when it ends, under RUN_LOCK.
Attaching from memory is cheap (the weights file and the image encoder are read once and kept, MAX_IP_ADAPTERS of
them), and after detaching the UNet computes exactly what it did before: the next run without a reference gets the
base model's pixels.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from safetensors import safe_open
from transformers import CLIPImageProcessorPil, CLIPVisionModelWithProjection

from pipelines.errors import PipelineInputError
from pipelines.ip_adapters import ImagePrompt, IpAdapterRef
from pipelines.loras import LoraRef, file_sha256, weights_file

# Adapters kept loaded in one base pipeline between runs (a real SD 1.5 LoRA of rank 32 is ~0.1 GB).
MAX_LOADED = 8
# IP-Adapters kept in memory between runs, weights and image encoder (SD 1.5's: 44 MB + ViT-H's 2.5 GB).
MAX_IP_ADAPTERS = 2

IpAdapterParts = tuple[dict[str, dict[str, torch.Tensor]], CLIPVisionModelWithProjection, CLIPImageProcessorPil]
_ip_adapters: OrderedDict[tuple[str, str], IpAdapterParts] = OrderedDict()
_ip_adapters_lock = threading.Lock()


@contextmanager
def applied_adapters(
    base: DiffusionPipeline, pipe: DiffusionPipeline, loras: tuple[LoraRef, ...], image_prompt: ImagePrompt | None
) -> Iterator[None]:
    """The block runs with `loras` on `base` and `image_prompt`'s IP-Adapter on `pipe` (derived from `base`); neither
    is active after it. Entered under RUN_LOCK (pipelines.denoise's inside_lock)."""
    with applied_loras(base, loras), applied_ip_adapter(pipe, image_prompt.adapter if image_prompt else None):
        yield


def ip_adapter_call(image_prompt: ImagePrompt | None) -> dict[str, object]:
    """The pipeline call's arguments for a reference image (none without one)."""
    return {} if image_prompt is None else {"ip_adapter_image": image_prompt.image.convert("RGB")}


@contextmanager
def applied_ip_adapter(pipe: DiffusionPipeline, adapter: IpAdapterRef | None) -> Iterator[None]:
    """Run the block with `adapter` attached to `pipe` (its UNet is the cached base's, shared) at its scale, and its
    image encoder registered on `pipe`; detached after it, whatever happened inside. The caller holds RUN_LOCK. A
    pipeline that takes no IP-Adapter, files whose hashes are not the recorded ones, or an adapter that does not fit
    the model, are PipelineInputErrors."""
    if adapter is None:
        yield
        return
    if not hasattr(pipe, "load_ip_adapter") or not hasattr(pipe, "unet"):
        raise PipelineInputError(f"{type(pipe).__name__} takes no reference image (IP-Adapter).")
    weights, encoder, processor = _ip_adapter_parts(adapter)
    proj = weights["image_proj"].get("proj.weight")
    if proj is not None and proj.shape[-1] != encoder.config.projection_dim:
        raise PipelineInputError(
            f"IP-Adapter '{adapter.name}' takes {proj.shape[-1]}-wide image embeddings, and its image encoder makes "
            f"{encoder.config.projection_dim}-wide ones: they do not belong together."
        )
    pipe.register_modules(image_encoder=encoder.to(device=pipe._execution_device, dtype=pipe.unet.dtype))
    pipe.register_modules(feature_extractor=processor)
    try:
        try:
            # A copy of the outer dict: diffusers reads the tensors, the cached dict stays as it was.
            pipe.load_ip_adapter(
                {part: dict(tensors) for part, tensors in weights.items()},
                subfolder="",
                weight_name="",
                image_encoder_folder=None,
            )
        except (KeyError, ValueError, RuntimeError) as exc:  # other layers, other widths
            raise PipelineInputError(
                f"IP-Adapter '{adapter.name}' does not fit this model: {str(exc).splitlines()[0][:200]}"
            ) from exc
        pipe.set_ip_adapter_scale(adapter.scale)
        yield
    finally:
        pipe.unload_ip_adapter()  # default attention processors, no image projection, no image encoder


def _ip_adapter_parts(adapter: IpAdapterRef) -> IpAdapterParts:
    """The adapter's weights (split as diffusers' load_ip_adapter splits a safetensors file), its image encoder and
    that encoder's image processor: read once (after checking both files' hashes), then kept."""
    key = (adapter.sha256, adapter.encoder_sha256)
    with _ip_adapters_lock:
        if key in _ip_adapters:
            _ip_adapters.move_to_end(key)
            return _ip_adapters[key]
    weights_path, encoder_folder = Path(adapter.weights), Path(adapter.image_encoder)
    for path, recorded, what in (
        (weights_path, adapter.sha256, "weights file"),
        (encoder_folder / "model.safetensors", adapter.encoder_sha256, "image encoder"),
    ):
        found = file_sha256(path) if path.is_file() else "missing"
        if found != recorded:
            raise PipelineInputError(
                f"IP-Adapter '{adapter.name}' changed since it was recorded: its {what} {path} has SHA-256 "
                f"{found[:12]}…, the request names {recorded[:12]}…. Register it again, or restore the recorded file."
            )
    weights: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    with safe_open(str(weights_path), framework="pt", device="cpu") as file:
        for name in file.keys():  # noqa: SIM118 (a safetensors handle is no dict)
            part, _, rest = name.partition(".")
            if part in weights:
                weights[part][rest] = file.get_tensor(name)
    if not weights["image_proj"] or not weights["ip_adapter"]:
        raise PipelineInputError(
            f"IP-Adapter '{adapter.name}': {weights_path.name} has no image_proj.* and ip_adapter.* weights."
        )
    encoder = CLIPVisionModelWithProjection.from_pretrained(str(encoder_folder)).eval()
    size = encoder.config.image_size  # what diffusers' load_ip_adapter makes when the folder has no processor
    parts = (weights, encoder, CLIPImageProcessorPil(size=size, crop_size=size))
    with _ip_adapters_lock:
        _ip_adapters[key] = parts
        while len(_ip_adapters) > MAX_IP_ADAPTERS:
            _ip_adapters.popitem(last=False)
    return parts


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

"""The catalogue's LoRAs as a run takes them: each registered LoRA's weights file and SHA-256, and the
pipelines.loras.LoraRef a request carries (name, location, family, hash, weight).

Admins also register LoRAs on the Models page (RegisteredLora rows, `with_registered_loras`): they are offered beside
the catalogue's and resolve the same way, their SHA-256 pinned when registered.

The hash is computed from the file when a LoRA is first used and again whenever the file changes (by size and
modification time), so a request and its recipe always record the bytes that run. An entry may pin `sha256` in
the catalogue: a file that no longer matches it is refused. In preview mode every LoRA of a family with a preview
LoRA runs as that tiny file (pipelines.loras.PREVIEW_LORAS), built on first use.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

from sqlmodel import Session, col, select

from pipelines.errors import ModelUnavailableError, PipelineInputError
from pipelines.families import FAMILIES
from pipelines.loras import LoraRef, check_lora_file, ensure_preview_lora, file_sha256, weights_file
from studio.catalogue.styles import Catalogue, LoraEntry
from studio.config import Settings
from studio.db.tables import RegisteredLora
from studio.errors import Refused

_hash_lock = threading.Lock()
_hashes: dict[Path, tuple[int, int, str]] = {}  # file → (size, mtime_ns, sha256)


def lora_file(entry: LoraEntry, settings: Settings) -> Path:
    """The weights file a LoRA runs from here (the preview LoRA in preview mode); Refused when it is not here."""
    try:
        if settings.uses_preview_model:
            return ensure_preview_lora(settings.models_dir, entry.family)  # imports torch only to build it
        return weights_file(entry.location, name=entry.name)
    except ModelUnavailableError as exc:
        raise Refused(f"LoRA '{entry.name}' is not available here: {exc}") from exc


def lora_sha256(entry: LoraEntry, settings: Settings) -> str:
    """The SHA-256 of the LoRA's file as it is now (computed once per version of the file)."""
    path = lora_file(entry, settings).resolve()
    sha256 = cached_sha256(path)
    if entry.sha256 and sha256 != entry.sha256 and not settings.uses_preview_model:
        raise Refused(
            f"LoRA '{entry.name}' changed: its file {path} no longer has the SHA-256 the catalogue records "
            f"({entry.sha256[:12]}…). Ask an admin to check it and record the new hash."
        )
    return sha256


def cached_sha256(path: Path) -> str:
    """The SHA-256 of the file at `path`, computed once per version of it (by size and modification time)."""
    path = path.resolve()
    stat = path.stat()
    with _hash_lock:
        known = _hashes.get(path)
    if known is not None and known[:2] == (stat.st_size, stat.st_mtime_ns):
        return known[2]
    sha256 = file_sha256(path)
    with _hash_lock:
        _hashes[path] = (stat.st_size, stat.st_mtime_ns, sha256)
    return sha256


def lora_ref(catalogue: Catalogue, name: str, weight: float, settings: Settings) -> LoraRef:
    """The LoRA `name` of the catalogue at `weight`, as the worker loads it, with its hash now."""
    entry = catalogue.loras.get(name)
    if entry is None:
        raise Refused(f"There is no LoRA {name!r} in the catalogue (it may have been removed).")
    path = lora_file(entry, settings)
    return LoraRef(entry.name, str(path), entry.family, lora_sha256(entry, settings), weight)


def recipe_lora_choices(recipe: dict, *, refusal: str) -> tuple[tuple[str, float, str], ...]:
    """A recipe's `loras` ([{name, sha256, weight}]) as (name, weight, sha256), type-checked (Refused: why)."""
    listed = recipe.get("loras") or []
    if not isinstance(listed, list) or not all(isinstance(item, dict) for item in listed):
        raise Refused(f"{refusal}: loras should be a list of {{name, sha256, weight}} tables, got {listed!r}.")
    choices = []
    for item in listed:
        name, sha256, weight = item.get("name"), item.get("sha256"), item.get("weight")
        if not isinstance(name, str) or not isinstance(sha256, str):
            raise Refused(f"{refusal}: each LoRA needs a name and a sha256, got {item!r}.")
        if not isinstance(weight, int | float) or isinstance(weight, bool):
            raise Refused(f"{refusal}: LoRA {name!r} needs a numeric weight, got {weight!r}.")
        choices.append((name, float(weight), sha256))
    return tuple(choices)


def recipe_loras(catalogue: Catalogue, recipe: dict, settings: Settings, *, refusal: str) -> tuple[LoraRef, ...]:
    """A recipe's LoRAs as the catalogue offers them today: each must still be registered and its file must still hash
    to what the recipe recorded (else another picture would come out)."""
    loras = []
    for name, weight, sha256 in recipe_lora_choices(recipe, refusal=refusal):
        if name not in catalogue.loras:
            raise Refused(f"{refusal}: it uses the LoRA {name!r}, which this studio does not offer.")
        ref = lora_ref(catalogue, name, weight, settings)
        if ref.sha256 != sha256:
            raise Refused(
                f"{refusal}: its LoRA {name!r} has changed since the result was made (SHA-256 {sha256[:12]}… then, "
                f"{ref.sha256[:12]}… now), so it would not give the same picture. Nothing was charged."
            )
        loras.append(ref)
    return tuple(loras)


def registered_loras(*, session: Session) -> dict[str, LoraEntry]:
    """The LoRAs admins registered on the Models page, by name in registration order, as catalogue entries (their
    SHA-256 pinned)."""
    rows = session.exec(select(RegisteredLora).order_by(col(RegisteredLora.registered_at)))
    return {row.name: LoraEntry(row.name, row.location, row.family, row.about, row.sha256) for row in rows}


def with_registered_loras(catalogue: Catalogue, *, session: Session) -> Catalogue:
    """The catalogue with the registered LoRAs after its own [loras] (the catalogue's win a name clash, which
    registering refuses anyway)."""
    registered = registered_loras(session=session)
    if not registered:
        return catalogue
    extra = {name: entry for name, entry in registered.items() if name not in catalogue.loras}
    return replace(catalogue, loras=catalogue.loras | extra)


def checked_lora_file(location: str, family: str, settings: Settings) -> tuple[Path, str]:
    """The weights file at `location` and its SHA-256, once it is known to be a LoRA for models of `family`
    (pipelines.loras.check_lora_file: its layers, read from the safetensors header); Refused, saying why, when it is
    absent or is not one."""
    if family not in FAMILIES:
        raise Refused(f"There is no model family {family!r}; the families are {', '.join(FAMILIES)}.")
    try:
        path = weights_file(location.strip(), name=location.strip())
        check_lora_file(path, family, preview=settings.uses_preview_model)
    except (ModelUnavailableError, PipelineInputError) as exc:
        raise Refused(f"This LoRA cannot be registered: {exc} Nothing was changed.") from exc
    return path, file_sha256(path)

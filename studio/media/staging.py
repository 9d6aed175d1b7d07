"""Staged uploads: validated images waiting on disk until they are submitted, instead of in the server's memory.

A batch upload is validated one image at a time (studio.batches.uploads); each accepted image's normalised PNG
goes here, under its SHA-256 (`<root>/<sha[:2]>/<sha>`, written atomically like the asset store), and the page
keeps only its name, size, hash and a thumbnail. A submit copies the files it needs into the asset store, one
at a time. Staged files are never the studio's record of anything: whatever was not submitted is deleted once
it is older than STAGED_HOURS (`purge_staged`, which the Batch page runs about once an hour).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from studio.errors import Refused
from studio.media.storage import AssetStore, sha256_hex

STAGED_HOURS = 24


@dataclass(frozen=True)
class StagedImage:
    """A validated image on disk: what a batch submit needs of it."""

    name: str  # the uploaded file's name (display only; never a path)
    sha256: str  # of the normalised PNG
    width: int
    height: int
    path: Path  # where the PNG is staged

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def read(self) -> bytes:
        """The normalised PNG; Refused if it is no longer staged (older than STAGED_HOURS) or was changed."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError as exc:
            raise expired(self) from exc
        if sha256_hex(data) != self.sha256:
            raise Refused(f"The staged copy of {self.name} is damaged: upload it again. Nothing was charged.")
        return data


def expired(image: StagedImage) -> Refused:
    return Refused(
        f"{image.name} is no longer staged (uploads not submitted within {STAGED_HOURS} hours are deleted): "
        "upload it again. Nothing was charged."
    )


def stage(store: AssetStore, *, name: str, png: bytes, width: int, height: int) -> StagedImage:
    """Write a validated PNG to the staging store (the same image staged again stays another STAGED_HOURS)."""
    sha = sha256_hex(png)
    path = store.path(sha)
    try:
        os.utime(path)
    except FileNotFoundError:
        store.put(png)
    return StagedImage(name=name, sha256=sha, width=width, height=height, path=path)


def purge_staged(store: AssetStore, *, max_age_s: float = STAGED_HOURS * 3600, now: float | None = None) -> int:
    """Delete staged files older than `max_age_s` (by modification time); the number deleted."""
    cutoff = (time.time() if now is None else now) - max_age_s
    deleted = 0
    for path in store.root.glob("*/*") if store.root.is_dir() else ():
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                deleted += 1
        except FileNotFoundError:  # another process purged it first
            continue
    return deleted

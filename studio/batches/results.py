"""Reading a batch back, and its results packed with a manifest for download."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from sqlmodel import Session, col, select

from studio.db.tables import Asset, Job, JobStatus
from studio.media.storage import AssetStore
from studio.spreadsheets import csv_text

MANIFEST_HEADER = ("source", "result", "job_id", "status", "credits", "error", "recipe")


@dataclass(frozen=True)
class BatchItem:
    job: Job
    source: Asset | None
    result: Asset | None


@dataclass(frozen=True)
class Batch:
    id: str
    items: list[BatchItem]

    @property
    def done(self) -> int:
        return sum(item.job.status.is_final for item in self.items)

    @property
    def finished(self) -> bool:
        return self.done == len(self.items)

    def count(self, status: JobStatus) -> int:
        return sum(item.job.status is status for item in self.items)


def get_user_batch(*, session: Session, user_id: int, batch_id: str) -> Batch | None:
    jobs = list(session.exec(select(Job).where(Job.batch_id == batch_id).order_by(col(Job.id))).all())
    if not jobs or any(job.user_id != user_id for job in jobs):
        return None
    ids = {job.source_asset_id for job in jobs} | {job.result_asset_id for job in jobs}
    assets = {a.id: a for a in session.exec(select(Asset).where(col(Asset.id).in_(ids - {None})))}
    return Batch(
        batch_id, [BatchItem(job, assets.get(job.source_asset_id), assets.get(job.result_asset_id)) for job in jobs]
    )


def download_name(batch: Batch, label: str) -> str:
    """e.g. batch-2026-11-23-artistic-style-12-images.zip"""
    slug = "-".join("".join(ch if ch.isalnum() else " " for ch in label.lower()).split()) or "own-settings"
    day = batch.items[0].job.created_at.strftime("%Y-%m-%d")
    return f"batch-{day}-{slug}-{len(batch.items)}-images.zip"


def batch_zip(batch: Batch, store: AssetStore) -> bytes:
    """Every finished result, named after its source, and manifest.csv (one row per image)."""
    buffer, rows = io.BytesIO(), []
    used: set[str] = set()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for item in batch.items:
            source_name = (
                item.source.original_name if item.source and item.source.original_name else f"job-{item.job.id}"
            )
            result_name = ""
            if item.result is not None:
                result_name = _unique(f"{_safe_stem(source_name, item.job.id)}-img2img.png", used)
                archive.writestr(result_name, store.read(item.result.sha256))
            rows.append(
                [
                    source_name,
                    result_name,
                    item.job.id,
                    item.job.status.value,
                    item.job.cost,
                    item.job.error or "",
                    json.dumps(item.job.recipe or item.job.params, sort_keys=True),
                ]
            )
        # Source names are the uploaded files' names, as given: `=HYPERLINK(…).png` stays text (studio.spreadsheets).
        archive.writestr("manifest.csv", csv_text(MANIFEST_HEADER, rows))
    return buffer.getvalue()


def _safe_stem(source_name: str, job_id: int) -> str:
    """The source's name without folders or extension, as a file name any system unpacks where it is meant to:
    letters (any script), digits, '.', '_', '-' and spaces; '_' for the rest (a '\\' of a Windows path, ':')."""
    stem = "".join(ch if ch.isalnum() or ch in "._- " else "_" for ch in PurePosixPath(source_name).stem)
    return stem.strip(". ") or f"job-{job_id}"


def _unique(name: str, used: set[str]) -> str:
    stem, suffix, number = PurePosixPath(name).stem, PurePosixPath(name).suffix, 2
    candidate = name
    while candidate in used:
        candidate, number = f"{stem}-{number}{suffix}", number + 1
    used.add(candidate)
    return candidate

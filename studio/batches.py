"""Batches: one recipe over many images (a product catalogue in one consistent look).

Uploads come as image files or ZIPs of them; each image is validated like any upload, and the ones
that cannot be used are listed with the reason (the batch runs the rest, if the user goes on). Each
image becomes its own job (studio.queue.submit_batch); this module also reads a batch back and packs
its results with a manifest for download.
"""

from __future__ import annotations

import csv
import io
import json
import random
import zipfile
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from sqlmodel import Session, col, select

from pipelines.params import MAX_SEED
from studio.config import Settings
from studio.job_requests import JobRequest
from studio.models import Asset, Job, JobStatus
from studio.presets import SeedPolicy
from studio.queue import quote
from studio.storage import AssetStore
from studio.validation import MAX_UPLOAD_BYTES, UploadRejected, ValidatedImage, validate_image_bytes

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
MAX_ZIP_MEMBERS = 500
MAX_ZIP_TOTAL_BYTES = 1024 * 1024 * 1024  # uncompressed; a ZIP that claims more is refused unopened


@dataclass(frozen=True)
class BatchUploads:
    images: list[tuple[str, ValidatedImage]]  # (name, image), in upload order
    rejected: list[tuple[str, str]]  # (name, why)


def read_uploads(files: list[tuple[str, bytes]]) -> BatchUploads:
    """Images and ZIPs of images → the usable images and, for each file that is not, the reason."""
    images: list[tuple[str, ValidatedImage]] = []
    rejected: list[tuple[str, str]] = []
    for name, data in files:
        if name.lower().endswith(".zip") or data[:4] == b"PK\x03\x04":
            for member_name, member_data in _zip_members(name, data, rejected):
                _validate(member_name, member_data, images, rejected)
        else:
            _validate(name, data, images, rejected)
    return BatchUploads(images, rejected)


def _validate(name: str, data: bytes, images: list, rejected: list) -> None:
    try:
        images.append((name, validate_image_bytes(data, filename=name)))
    except UploadRejected as exc:
        rejected.append((name, str(exc)))


def _zip_members(name: str, data: bytes, rejected: list[tuple[str, str]]) -> list[tuple[str, bytes]]:
    """The image files inside a ZIP (folders flattened, hidden and macOS resource files skipped);
    what cannot be used goes to `rejected` with the reason."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = [
            info
            for info in archive.infolist()
            if not info.is_dir()
            and PurePosixPath(info.filename).suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith((".", "__MACOSX")) for part in PurePosixPath(info.filename).parts)
        ]
        if len(entries) > MAX_ZIP_MEMBERS:
            rejected.append((name, f"holds {len(entries)} images; a batch ZIP may hold {MAX_ZIP_MEMBERS}."))
            return []
        if sum(info.file_size for info in entries) > MAX_ZIP_TOTAL_BYTES:
            rejected.append((name, "unpacks to more than 1 GB; split it."))
            return []
        members = []
        for info in entries:
            member = PurePosixPath(info.filename).name
            if info.file_size > MAX_UPLOAD_BYTES:
                rejected.append((member, f"File too large: {info.file_size / 1024 / 1024:.1f} MB, max 10 MB."))
            else:
                members.append((member, archive.read(info)))
        return members
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        rejected.append((name, f"is not a readable ZIP file ({exc})."))
        return []


def batch_requests(request: JobRequest, count: int, *, seed_policy: SeedPolicy, rng: random.Random) -> list[JobRequest]:
    """One request per image: the same recipe; with the random seed policy, a new seed for each image."""
    if seed_policy is SeedPolicy.fixed:
        return [request] * count
    return [
        replace(request, spec=replace(request.spec, params=replace(request.spec.params, seed=rng.randint(0, MAX_SEED))))
        for _ in range(count)
    ]


def batch_cost(*, settings: Settings, images: list[tuple[str, ValidatedImage]], requests: list[JobRequest]) -> int:
    """What the whole batch costs: each image priced at its own size."""
    return sum(
        quote(settings=settings, request=request, width=image.width, height=image.height).credits
        for request, (_, image) in zip(requests, images, strict=True)
    )


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
    buffer, manifest = io.BytesIO(), io.StringIO()
    writer = csv.writer(manifest)
    writer.writerow(["source", "result", "job_id", "status", "credits", "error", "recipe"])
    used: set[str] = set()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for item in batch.items:
            source_name = (
                item.source.original_name if item.source and item.source.original_name else f"job-{item.job.id}"
            )
            result_name = ""
            if item.result is not None:
                result_name = _unique(f"{PurePosixPath(source_name).stem}-img2img.png", used)
                archive.writestr(result_name, store.read(item.result.sha256))
            writer.writerow(
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
        archive.writestr("manifest.csv", manifest.getvalue())
    return buffer.getvalue()


def _unique(name: str, used: set[str]) -> str:
    stem, suffix, number = PurePosixPath(name).stem, PurePosixPath(name).suffix, 2
    candidate = name
    while candidate in used:
        candidate, number = f"{stem}-{number}{suffix}", number + 1
    used.add(candidate)
    return candidate

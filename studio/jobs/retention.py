"""Retention and deletion: images go, accounting stays.

Uploads, masks and results older than the retention period (STUDIO_RETENTION_DAYS, 30 by default) are
deleted — their rows and, once no row names them, their files — while the jobs and their ledger rows
stay for accounting and analytics (the job's asset references become None; its recipe keeps the
hashes). Images of jobs still queued or running are kept until those jobs end, a brand kit's reference image as
long as the kit has it. Workers run this
every hour; `python -m studio retention` runs it on demand. A user deleting a job from their history
uses the same path for that job's images.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, update
from sqlmodel import Session, col, select

from studio.db.tables import Asset, BrandKit, Job, JobStatus, Role, User, utcnow
from studio.errors import NotFound, Refused
from studio.media.storage import AssetStore

PURGE_CHUNK = 500  # assets per transaction, so a large first purge never holds the database for long


@dataclass(frozen=True)
class Purged:
    assets: int  # rows deleted
    files: int  # files deleted (a file shared by several rows goes with the last of them)


def purge_expired(*, session: Session, store: AssetStore, days: int, now: datetime | None = None) -> Purged:
    """Delete every image older than `days` that no unfinished job still needs."""
    if days <= 0:
        return Purged(0, 0)
    cutoff = (now or utcnow()) - timedelta(days=days)
    unfinished = session.exec(select(Job).where(col(Job.status).in_([JobStatus.queued, JobStatus.processing]))).all()
    in_use = {
        asset_id
        for job in unfinished
        for asset_id in (job.source_asset_id, job.mask_asset_id, job.result_asset_id)
        if asset_id is not None
    }
    # An edit names its reference images by hash (job.params["references"]), as does a run with an IP-Adapter's
    # reference image (job.params["reference"]): the worker reads them from the store. A team's brand kit names its
    # reference image the same way, and every run of the kit reads it: kept while the kit has it.
    referenced = {sha256 for job in unfinished for sha256 in (job.params or {}).get("references", [])} | {
        job.params["reference"]["sha256"] for job in unfinished if (job.params or {}).get("reference")
    }
    referenced |= {
        kit.settings["reference"]["image_sha256"]
        for kit in session.exec(select(BrandKit))
        if kit.settings.get("reference")
    }
    assets = files = 0
    while True:
        expired = session.exec(
            select(Asset.id)
            .where(
                Asset.created_at < cutoff,
                col(Asset.id).not_in(in_use or {-1}),
                col(Asset.sha256).not_in(referenced or {""}),
            )
            .order_by(col(Asset.id))
            .limit(PURGE_CHUNK)
        ).all()
        if not expired:
            return Purged(assets, files)
        files += delete_assets(session=session, store=store, asset_ids=list(expired))
        assets += len(expired)


def delete_assets(*, session: Session, store: AssetStore, asset_ids: list[int]) -> int:
    """Delete these asset rows (jobs keep their ledger and recipe; their references become None) and
    commit, then the files no remaining row names. Returns the number of files deleted."""
    rows = list(session.exec(select(Asset).where(col(Asset.id).in_(asset_ids))).all())
    hashes = {asset.sha256 for asset in rows}
    for column in (Job.source_asset_id, Job.mask_asset_id, Job.result_asset_id):
        session.exec(update(Job).where(col(column).in_(asset_ids)).values({column.key: None}))
    for asset in rows:
        session.delete(asset)
    session.commit()
    # After the commit: a crash here leaves a file without a row (harmless), never a row without its file.
    still_named = set(session.exec(select(Asset.sha256).where(col(Asset.sha256).in_(hashes))).all())
    deleted = 0
    for sha256 in hashes - still_named:
        if store.exists(sha256):
            store.delete(sha256)
            deleted += 1
    return deleted


def delete_job(*, session: Session, store: AssetStore, user: User, job_id: int, now: datetime | None = None) -> Job:
    """Remove a finished job from its owner's history with its images (an admin may remove their team's)."""
    job = session.get(Job, job_id)
    allowed = job is not None and (
        job.user_id == user.id or (user.role is Role.admin and job.team_id is not None and job.team_id == user.team_id)
    )
    if not allowed or job.deleted_at is not None:
        raise NotFound(f"You have no job #{job_id}.")
    if not job.status.is_final:
        raise Refused(f"Job #{job_id} is still {job.status.value}: cancel it first, then delete it.")
    job.deleted_at = now or utcnow()
    asset_ids = [i for i in (job.source_asset_id, job.mask_asset_id, job.result_asset_id) if i is not None]
    # A source shared with another job (a sweep's cells, a re-run) stays while that job uses it.
    others = session.exec(
        select(Job).where(
            Job.id != job.id,
            col(Job.deleted_at).is_(None),
            or_(
                col(Job.source_asset_id).in_(asset_ids),
                col(Job.mask_asset_id).in_(asset_ids),
                col(Job.result_asset_id).in_(asset_ids),
            ),
        )
    ).all()
    shared = {i for other in others for i in (other.source_asset_id, other.mask_asset_id, other.result_asset_id)}
    session.add(job)
    delete_assets(session=session, store=store, asset_ids=[i for i in asset_ids if i not in shared])
    session.refresh(job)
    return job

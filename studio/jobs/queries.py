"""Reading jobs back for the pages: one of a user's jobs, their stored images, usage."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func
from sqlmodel import Session, col, select

from studio.db.tables import Asset, AssetKind, Job, JobStatus


def get_user_job(*, session: Session, user_id: int, job_id: int) -> Job | None:
    """A job, only if it belongs to the user."""
    job = session.get(Job, job_id)
    return job if job is not None and job.user_id == user_id else None


def find_user_asset(*, session: Session, user_id: int, sha256: str, kind: AssetKind) -> Asset | None:
    """The user's own stored image with this content hash (a recipe names its source and mask by hash)."""
    return session.exec(
        select(Asset).where(Asset.user_id == user_id, Asset.sha256 == sha256, Asset.kind == kind).limit(1)
    ).first()


def list_user_jobs(
    *, session: Session, user_id: int, limit: int = 24, offset: int = 0
) -> list[tuple[Job, Asset | None, Asset | None]]:
    """The user's jobs, newest first, with their source and result assets."""
    jobs = session.exec(
        select(Job)
        .where(Job.user_id == user_id)
        .order_by(col(Job.created_at).desc(), col(Job.id).desc())
        .offset(offset)
        .limit(limit)
    ).all()
    asset_ids = {i for job in jobs for i in (job.source_asset_id, job.result_asset_id) if i is not None}
    assets = {a.id: a for a in session.exec(select(Asset).where(col(Asset.id).in_(asset_ids)))}
    # Retention (or a delete) leaves a job without its images: None here.
    return [(job, assets.get(job.source_asset_id), assets.get(job.result_asset_id)) for job in jobs]


def count_user_jobs(*, session: Session, user_id: int) -> int:
    return session.exec(select(func.count()).select_from(Job).where(Job.user_id == user_id)).one()


@dataclass(frozen=True)
class Usage:
    jobs: int
    complete: int
    failed: int
    cancelled: int
    credits_spent: int  # charged for completed jobs
    credits_refunded: int  # reserved for failed or cancelled jobs, then returned


def usage_summary(*, session: Session, user_id: int, since: datetime) -> Usage:
    rows = session.exec(
        select(Job.status, func.count(), func.coalesce(func.sum(Job.cost), 0))
        .where(Job.user_id == user_id, Job.created_at >= since)
        .group_by(Job.status)
    ).all()
    count = {status: n for status, n, _ in rows}
    cost = {status: int(total) for status, _, total in rows}
    return Usage(
        jobs=sum(count.values()),
        complete=count.get(JobStatus.complete, 0),
        failed=count.get(JobStatus.failed, 0),
        cancelled=count.get(JobStatus.cancelled, 0),
        credits_spent=cost.get(JobStatus.complete, 0),
        credits_refunded=cost.get(JobStatus.failed, 0) + cost.get(JobStatus.cancelled, 0),
    )

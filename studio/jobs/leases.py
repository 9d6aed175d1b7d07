"""The queue's state machine: the Job table, worked by any number of workers in any number of processes.

Life of a job: queued → processing → complete | failed | cancelled. The one step back is the reaper's: a
processing job whose lease ran out (its worker died or hung) returns to queued for another attempt, or fails
after MAX_ATTEMPTS. Every transition that ends a job settles its credits in the same transaction: commit on
success, refund on failure or cancel.

Workers hold a lease (worker, attempt, lease_until) and renew it with each progress report (`renew_lease`).
Every write a worker makes is fenced by (job, worker, attempt, status=processing): a worker that lost its
lease — it was presumed dead and the job went to someone else — changes nothing.

Call these with a session from `studio.db.engine.write_session`: on SQLite each call is then one
`BEGIN IMMEDIATE` transaction; on PostgreSQL the row locks (`FOR UPDATE SKIP LOCKED`) do the work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from studio.billing.credits import settle
from studio.db.tables import Asset, CreditKind, Job, JobStatus, utcnow
from studio.errors import NotFound
from studio.jobs.fair_queue import claim_order, claims_ahead, current_round, requeue_tag

LEASE_SECONDS = 30.0
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Lease:
    held: bool  # False: the job is no longer this worker's (stop, and report nothing)
    cancel_requested: bool


def queue_position(*, session: Session, job: Job) -> int | None:
    """1 when the next claim takes this job (with its sweep); None unless the job is queued.

    Counted in claims, in the queue's order now (studio.jobs.fair_queue): a job submitted later in another
    lane or an earlier round can move it back, which the page shows as it happens.
    """
    if job.status is not JobStatus.queued:
        return None
    return claims_ahead(session=session, job=job) + 1


def claim_next(
    *, session: Session, worker: str, lease_seconds: float = LEASE_SECONDS, now: datetime | None = None
) -> Job | None:
    """Take the next job (lowest lane, then round, then oldest: studio.jobs.fair_queue) and lease it to `worker`
    (with its sweep's other cells)."""
    claimed = claim_batch(session=session, worker=worker, lease_seconds=lease_seconds, now=now)
    return claimed[0] if claimed else None


def claim_batch(
    *,
    session: Session,
    worker: str,
    lease_seconds: float = LEASE_SECONDS,
    now: datetime | None = None,
    batch_max: int | Callable[[object], int] = 1,
    batch_key: Callable[[Job], object | None] | None = None,
) -> list[Job]:
    """Take the head of the queue as claim_next does and, up to `batch_max` jobs in all, the queued jobs right
    behind it that share its `batch_key` (studio.jobs.batching; None: runs alone), in one transaction. `batch_max`
    may be a function of the head's key (the jobs of a model and size a GPU's memory holds: batching.batch_limit).

    Only the unbroken run of compatible jobs at the head is taken: the first incompatible job ends the batch, so no
    job ever runs ahead of one that comes before it in the queue's order (an older or higher-priority job). Rows
    another worker is claiming are skipped (SKIP LOCKED on PostgreSQL), as for the head. Each job gets its own
    lease (worker, attempt). Returns [head, batchmates…]; for a sweep, [head] (claimed_sweep lists its cells).
    """
    now = now or utcnow()
    job = session.exec(
        select(Job)
        .where(Job.status == JobStatus.queued)
        .order_by(*claim_order())
        .limit(1)
        .with_for_update(skip_locked=True)
    ).first()
    if job is None:
        session.commit()
        return []
    claimed = [job]
    if job.sweep_id is not None:
        # A sweep's cells run together in one pass: whoever claims one claims every queued cell.
        claimed += session.exec(
            select(Job)
            .where(Job.sweep_id == job.sweep_id, Job.status == JobStatus.queued, Job.id != job.id)
            .with_for_update(skip_locked=True)
        ).all()
    elif (
        (callable(batch_max) or batch_max > 1)
        and batch_key is not None
        and (key := batch_key(job)) is not None
        and (limit := batch_max(key) if callable(batch_max) else batch_max) > 1
    ):
        behind = session.exec(
            select(Job)
            .where(Job.status == JobStatus.queued, Job.id != job.id)
            .order_by(*claim_order())
            .limit(limit - 1)
            .with_for_update(skip_locked=True)
        ).all()
        for other in behind:
            if batch_key(other) != key:
                break
            claimed.append(other)
    for member in claimed:
        member.status = JobStatus.processing
        member.worker = worker
        member.attempt += 1
        member.lease_until = now + timedelta(seconds=lease_seconds)
        member.started_at = now
        member.progress_step = member.progress_total = 0
    session.commit()
    return claimed if job.sweep_id is None else [job]


def claimed_sweep(*, session: Session, job: Job, worker: str) -> list[Job]:
    """The cells of `job`'s sweep that `worker` holds now (claim_next claims them together), in cell order."""
    return list(
        session.exec(
            select(Job)
            .where(Job.sweep_id == job.sweep_id, Job.status == JobStatus.processing, Job.worker == worker)
            .order_by(col(Job.id))
        ).all()
    )


def _leased(session: Session, job_id: int, worker: str, attempt: int) -> Job | None:
    """The job if `worker`'s attempt still holds it, locked for this transaction; else None (rolled back)."""
    job = session.exec(
        select(Job)
        .where(
            Job.id == job_id,
            Job.status == JobStatus.processing,
            Job.worker == worker,
            Job.attempt == attempt,
        )
        .with_for_update()
    ).first()
    if job is None:
        session.rollback()
    return job


def renew_lease(
    *,
    session: Session,
    job_id: int,
    worker: str,
    attempt: int,
    step: int,
    total: int,
    lease_seconds: float = LEASE_SECONDS,
    now: datetime | None = None,
) -> Lease:
    """Record progress and renew the lease; tells the worker whether to go on."""
    now = now or utcnow()
    job = _leased(session, job_id, worker, attempt)
    if job is None:
        return Lease(held=False, cancel_requested=False)
    job.progress_step, job.progress_total = step, total
    job.lease_until = now + timedelta(seconds=lease_seconds)
    cancel = job.cancel_requested
    session.commit()
    return Lease(held=True, cancel_requested=cancel)


def _finish(job: Job, status: JobStatus, now: datetime, error: str | None = None) -> None:
    job.status = status
    job.error = error[:2000] if error else None
    job.finished_at = now
    job.lease_until = None


def complete_job(
    *,
    session: Session,
    job_id: int,
    worker: str,
    attempt: int,
    result: Asset,
    recipe: dict,
    now: datetime | None = None,
) -> bool:
    """Record the result and commit the charge; False (and no change) if the lease was lost."""
    now = now or utcnow()
    job = _leased(session, job_id, worker, attempt)
    if job is None:
        return False
    session.add(result)
    session.flush()
    job.result_asset_id = result.id
    job.recipe = recipe
    job.progress_step = job.progress_total
    _finish(job, JobStatus.complete, now)
    settle(session=session, job_id=job.id, outcome=CreditKind.commit, now=now)
    session.commit()
    return True


def fail_job(
    *, session: Session, job_id: int, worker: str, attempt: int, error: str, now: datetime | None = None
) -> bool:
    """Fail the job and refund it; False (and no change) if the lease was lost."""
    return _end_leased(session, job_id, worker, attempt, JobStatus.failed, error, now)


def finish_cancelled(*, session: Session, job_id: int, worker: str, attempt: int, now: datetime | None = None) -> bool:
    """The worker stopped a job whose cancel was requested: cancel and refund it."""
    return _end_leased(session, job_id, worker, attempt, JobStatus.cancelled, "Cancelled by its owner.", now)


def _end_leased(
    session: Session,
    job_id: int,
    worker: str,
    attempt: int,
    status: JobStatus,
    error: str,
    now: datetime | None,
) -> bool:
    now = now or utcnow()
    job = _leased(session, job_id, worker, attempt)
    if job is None:
        return False
    _finish(job, status, now, error)
    settle(session=session, job_id=job.id, outcome=CreditKind.refund, now=now)
    session.commit()
    return True


def cancel_job(*, session: Session, job_id: int, user_id: int, now: datetime | None = None) -> Job:
    """Cancel one of the user's jobs: a queued job at once (refunded), a running one at its next step."""
    now = now or utcnow()
    job = session.exec(select(Job).where(Job.id == job_id).with_for_update()).first()
    if job is None or job.user_id != user_id:
        session.rollback()
        raise NotFound(f"You have no job #{job_id}.")
    if job.status is JobStatus.queued:
        _finish(job, JobStatus.cancelled, now, "Cancelled by its owner.")
        settle(session=session, job_id=job.id, outcome=CreditKind.refund, now=now)
    elif job.status is JobStatus.processing:
        job.cancel_requested = True
    session.commit()
    return job


def reap_expired(*, session: Session, now: datetime | None = None, max_attempts: int = MAX_ATTEMPTS) -> list[Job]:
    """Deal with processing jobs whose lease ran out: requeue (in its lane's current round), or fail/cancel and
    refund."""
    now = now or utcnow()
    expired = session.exec(
        select(Job)
        .where(Job.status == JobStatus.processing, col(Job.lease_until) < now)
        .with_for_update(skip_locked=True)
    ).all()
    rounds = {lane: current_round(session=session, lane=lane) for lane in {job.lane for job in expired}}
    for job in expired:
        if job.cancel_requested:
            _finish(job, JobStatus.cancelled, now, "Cancelled by its owner.")
            settle(session=session, job_id=job.id, outcome=CreditKind.refund, now=now)
        elif job.attempt >= max_attempts:
            _finish(job, JobStatus.failed, now, f"The worker stopped responding {job.attempt} times; giving up.")
            settle(session=session, job_id=job.id, outcome=CreditKind.refund, now=now)
        else:
            job.fair_tag = requeue_tag(job, rounds[job.lane])
            job.status = JobStatus.queued
            job.worker = job.lease_until = None
            job.progress_step = job.progress_total = 0
    session.commit()
    return list(expired)

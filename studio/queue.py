"""The job queue: the Job table, worked by any number of workers in any number of processes.

Life of a job: queued → processing → complete | failed | cancelled. The one step back is the
reaper's: a processing job whose lease ran out (its worker died or hung) returns to queued for
another attempt, or fails after MAX_ATTEMPTS. Every transition that ends a job settles its
credits in the same transaction: commit on success, refund on failure or cancel.

Workers hold a lease (worker, attempt, lease_until) and renew it with each progress report.
Every write a worker makes is fenced by (job, worker, attempt, status=processing): a worker that
lost its lease — it was presumed dead and the job went to someone else — changes nothing.

Call these with a session from `studio.db.write_session`: on SQLite each call is then one
`BEGIN IMMEDIATE` transaction; on PostgreSQL the row locks (`FOR UPDATE SKIP LOCKED`) do the work.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from PIL import Image
from sqlalchemy import func, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from pipelines.errors import PipelineInputError
from pipelines.masks import check_mask
from pipelines.params import MAX_SWEEP_MEMBERS, Task, check_upscale_size
from studio.budgets import check_team_budget
from studio.config import Settings
from studio.credits import InsufficientCredits, reserve, settle, spendable
from studio.job_requests import JobRequest, SubmitRefused
from studio.models import Asset, AssetKind, CreditKind, Job, JobStatus, User, utcnow
from studio.plans import PLANS, allocate_monthly, queue_priority
from studio.pricing import Price, price
from studio.storage import AssetStore, sha256_hex
from studio.validation import ValidatedImage

LEASE_SECONDS = 30.0
MAX_BATCH_IMAGES = 200  # per submit; larger catalogues go in several batches (or through the CLI)
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Lease:
    held: bool  # False: the job is no longer this worker's (stop, and report nothing)
    cancel_requested: bool


def quote(*, settings: Settings, request: JobRequest, width: int, height: int) -> Price:
    """The price of `request` on a width×height source."""
    return price(
        base=request.base_credits,
        quality=request.quality,
        width=width,
        height=height,
        max_side=settings.max_output_side,
        upscale_factor=request.task.upscale_factor,
    )


def submit_job(
    *,
    session: Session,
    store: AssetStore,
    settings: Settings,
    user: User,
    upload: ValidatedImage,
    original_name: str | None,
    request: JobRequest,
    mask: Image.Image | None = None,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> Job:
    """Price, charge and queue a job in one transaction.

    `mask` ("L", the upload's size, 255 = repaint; see pipelines.masks) goes with an inpaint request.
    The same idempotency key returns the job it created the first time, charging nothing again.
    A refused submit (bad parameters or mask, a source too big to upscale, not enough credits)
    leaves no row, no file and no charge.
    """
    [job] = _submit(session, store, settings, user, upload, original_name, [request], mask, idempotency_key, now)
    return job


def submit_sweep(
    *,
    session: Session,
    store: AssetStore,
    settings: Settings,
    user: User,
    upload: ValidatedImage,
    original_name: str | None,
    requests: list[JobRequest],
    mask: Image.Image | None = None,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> list[Job]:
    """Queue the cells of a strength sweep (studio.sweeps) as one job each, all or none, in one transaction.

    Each cell is priced and charged on its own (a failed cell refunds only itself); they share a
    sweep_id, so a worker that claims one claims them all and runs them in one denoising pass.
    """
    if not 1 <= len(requests) <= MAX_SWEEP_MEMBERS:
        raise SubmitRefused(f"A sweep has 1 to {MAX_SWEEP_MEMBERS} cells, got {len(requests)}.")
    return _submit(
        session, store, settings, user, upload, original_name, requests, mask, idempotency_key, now, sweep=True
    )


def _submit(
    session: Session,
    store: AssetStore,
    settings: Settings,
    user: User,
    upload: ValidatedImage,
    original_name: str | None,
    requests: list[JobRequest],
    mask: Image.Image | None,
    idempotency_key: str | None,
    now: datetime | None,
    *,
    sweep: bool = False,
) -> list[Job]:
    now = now or utcnow()
    if idempotency_key is not None and (existing := _jobs_for_key(session, idempotency_key, user)):
        return existing
    for request in requests:
        request.check()
        if (factor := request.task.upscale_factor) is not None:
            try:
                check_upscale_size(upload.width, upload.height, factor)
            except PipelineInputError as exc:
                raise SubmitRefused(str(exc)) from exc
    mask_png = _checked_mask_png(requests[0], mask, upload)
    prices = [quote(settings=settings, request=r, width=upload.width, height=upload.height).credits for r in requests]
    cost = sum(prices)

    _lock_payer(session, user)
    check_team_budget(session=session, user=user, cost=cost, now=now)
    allocate_monthly(session=session, user=user, now=now)
    if len(requests) > 1 and (available := spendable(session=session, user=user, now=now).total) < cost:
        raise SubmitRefused(
            f"Not enough credits: these {len(requests)} cells cost {cost} together, you can spend {available}. "
            "Nothing was charged."
        )
    source = _asset(user, AssetKind.source, upload.png_bytes, upload.width, upload.height, now, original_name)
    mask_asset = _asset(user, AssetKind.mask, mask_png, upload.width, upload.height, now) if mask_png else None
    session.add(source)
    if mask_asset is not None:
        session.add(mask_asset)
    session.flush()
    sweep_id = uuid.uuid4().hex if sweep else None
    jobs = [
        _job_row(
            request,
            price,
            user,
            source,
            mask_asset,
            now,
            sweep_id=sweep_id,
            # The key names the submit: on the first job, which leads back to the others through sweep_id.
            idempotency_key=idempotency_key if index == 0 else None,
        )
        for index, (request, price) in enumerate(zip(requests, prices, strict=True))
    ]
    files = [upload.png_bytes] + ([mask_png] if mask_png is not None else [])
    return _reserve_and_commit(session, store, user, jobs, files, idempotency_key, now)


def submit_batch(
    *,
    session: Session,
    store: AssetStore,
    settings: Settings,
    user: User,
    images: list[tuple[str, ValidatedImage]],
    requests: list[JobRequest],
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> list[Job]:
    """Queue one job per image (`requests[i]` for `images[i]`: one recipe, the seed may differ), all or none.

    Batches are a Pro feature. Each job is priced, charged and refunded on its own, so one image that
    fails gives back only its own credits; the jobs share a batch_id for progress and downloads.
    """
    now = now or utcnow()
    if not PLANS[user.plan].batch:
        raise SubmitRefused(
            "Batches are part of the Pro plans (Pro monthly or annual): on Free, transform images one at a time. "
            "Nothing was charged."
        )
    if not 1 <= len(images) <= MAX_BATCH_IMAGES or len(requests) != len(images):
        raise SubmitRefused(f"A batch has 1 to {MAX_BATCH_IMAGES} images, one request each; got {len(images)}.")
    if idempotency_key is not None and (existing := _jobs_for_key(session, idempotency_key, user)):
        return existing
    prices = []
    for (name, upload), request in zip(images, requests, strict=True):
        request.check()
        if request.task == Task.inpaint:
            raise SubmitRefused("A batch applies one recipe to many images; inpainting needs a mask per image.")
        if (factor := request.task.upscale_factor) is not None:
            try:
                check_upscale_size(upload.width, upload.height, factor)
            except PipelineInputError as exc:
                raise SubmitRefused(f"{name}: {exc}") from exc
        prices.append(quote(settings=settings, request=request, width=upload.width, height=upload.height).credits)
    cost = sum(prices)

    _lock_payer(session, user)
    check_team_budget(session=session, user=user, cost=cost, now=now)
    allocate_monthly(session=session, user=user, now=now)
    if (available := spendable(session=session, user=user, now=now).total) < cost:
        raise SubmitRefused(
            f"Not enough credits: these {len(images)} images cost {cost} together, you can spend {available}. "
            "Nothing was charged."
        )
    sources = [_asset(user, AssetKind.source, u.png_bytes, u.width, u.height, now, name) for name, u in images]
    session.add_all(sources)
    session.flush()
    batch_id = uuid.uuid4().hex
    jobs = [
        _job_row(
            request,
            price,
            user,
            source,
            None,
            now,
            batch_id=batch_id,
            idempotency_key=idempotency_key if index == 0 else None,
        )
        for index, (request, price, source) in enumerate(zip(requests, prices, sources, strict=True))
    ]
    return _reserve_and_commit(session, store, user, jobs, [u.png_bytes for _, u in images], idempotency_key, now)


def _lock_payer(session: Session, user: User) -> None:
    """Hold the user's row until the submit commits, so two submits never both spend the same credits.

    SQLite's write transaction (BEGIN IMMEDIATE) already serialises submits; on PostgreSQL this
    `SELECT … FOR UPDATE` does (the team's row is locked next, by check_team_budget: always user, then team).
    """
    session.exec(select(User.id).where(User.id == user.id).with_for_update()).first()


def _job_row(
    request: JobRequest,
    price: int,
    user: User,
    source: Asset,
    mask: Asset | None,
    now: datetime,
    *,
    sweep_id: str | None = None,
    batch_id: str | None = None,
    idempotency_key: str | None = None,
) -> Job:
    return Job(
        task=request.task.value,
        model=request.model,
        style=request.style,
        params=request.job_params(),
        quality=request.quality.value,
        cost=price,
        user_id=user.id,
        team_id=user.team_id,
        priority=queue_priority(user),
        source_asset_id=source.id,
        mask_asset_id=mask.id if mask is not None else None,
        sweep_id=sweep_id,
        batch_id=batch_id,
        idempotency_key=idempotency_key,
        created_at=now,
    )


def _reserve_and_commit(
    session: Session,
    store: AssetStore,
    user: User,
    jobs: list[Job],
    files: list[bytes],
    idempotency_key: str | None,
    now: datetime,
) -> list[Job]:
    """Charge every job and store the files, then commit: all or nothing."""
    session.add_all(jobs)
    try:
        session.flush()
        for job in jobs:
            reserve(session=session, user=user, job_id=job.id, cost=job.cost, now=now)
        # Files last, so a refused submit never stores one.
        for data in files:
            store.put(data)
        session.commit()
    except InsufficientCredits as exc:
        session.rollback()
        raise SubmitRefused(str(exc)) from exc
    except IntegrityError:
        # Another submit with the same key won the race (PostgreSQL; SQLite serialises them).
        session.rollback()
        if idempotency_key is not None and (existing := _jobs_for_key(session, idempotency_key, user)):
            return existing
        raise
    return jobs


def _checked_mask_png(request: JobRequest, mask: Image.Image | None, upload: ValidatedImage) -> bytes | None:
    """The inpaint mask as PNG bytes, after checking it fits the request and the source."""
    if (mask is not None) != (request.task == Task.inpaint):
        raise SubmitRefused("Inpainting needs a mask, and only inpainting takes one.")
    if mask is None:
        return None
    if mask.mode != "L" or mask.size != (upload.width, upload.height):
        raise SubmitRefused(
            f"The mask must be greyscale and the source's size ({upload.width}×{upload.height}); "
            f"got {mask.mode} {mask.width}×{mask.height}."
        )
    try:
        check_mask(mask)
    except PipelineInputError as exc:
        raise SubmitRefused(str(exc)) from exc
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


def _asset(
    user: User, kind: AssetKind, png: bytes, width: int, height: int, now: datetime, original_name: str | None = None
) -> Asset:
    return Asset(
        user_id=user.id,
        kind=kind,
        sha256=sha256_hex(png),
        width=width,
        height=height,
        size_bytes=len(png),
        original_name=original_name,
        created_at=now,
    )


def _jobs_for_key(session: Session, key: str, user: User) -> list[Job]:
    """The jobs an earlier submit with this idempotency key created (a sweep's cells, or one job)."""
    job = session.exec(select(Job).where(Job.idempotency_key == key)).first()
    if job is None:
        return []
    if job.user_id != user.id:
        raise SubmitRefused("That idempotency key belongs to another user's job.")
    if job.sweep_id is not None:
        return list(session.exec(select(Job).where(Job.sweep_id == job.sweep_id).order_by(col(Job.id))).all())
    if job.batch_id is not None:
        return list(session.exec(select(Job).where(Job.batch_id == job.batch_id).order_by(col(Job.id))).all())
    return [job]


def _queue_order():
    return (col(Job.priority).desc(), col(Job.id).asc())


def queue_position(*, session: Session, job: Job) -> int | None:
    """1 for the next job a worker will claim; None unless the job is queued."""
    if job.status is not JobStatus.queued:
        return None
    ahead = session.exec(
        select(func.count())
        .select_from(Job)
        .where(
            Job.status == JobStatus.queued,
            or_(Job.priority > job.priority, (Job.priority == job.priority) & (col(Job.id) < job.id)),
        )
    ).one()
    return int(ahead) + 1


def claim_next(
    *, session: Session, worker: str, lease_seconds: float = LEASE_SECONDS, now: datetime | None = None
) -> Job | None:
    """Take the next job (highest priority, then oldest) and lease it to `worker` (with its sweep's other cells)."""
    now = now or utcnow()
    job = session.exec(
        select(Job)
        .where(Job.status == JobStatus.queued)
        .order_by(*_queue_order())
        .limit(1)
        .with_for_update(skip_locked=True)
    ).first()
    if job is None:
        session.commit()
        return None
    claimed = [job]
    if job.sweep_id is not None:
        # A sweep's cells run together in one pass: whoever claims one claims every queued cell.
        claimed += session.exec(
            select(Job)
            .where(Job.sweep_id == job.sweep_id, Job.status == JobStatus.queued, Job.id != job.id)
            .with_for_update(skip_locked=True)
        ).all()
    for member in claimed:
        member.status = JobStatus.processing
        member.worker = worker
        member.attempt += 1
        member.lease_until = now + timedelta(seconds=lease_seconds)
        member.started_at = now
        member.progress_step = member.progress_total = 0
    session.commit()
    return job


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


def heartbeat(
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
        raise LookupError(f"You have no job #{job_id}.")
    if job.status is JobStatus.queued:
        _finish(job, JobStatus.cancelled, now, "Cancelled by its owner.")
        settle(session=session, job_id=job.id, outcome=CreditKind.refund, now=now)
    elif job.status is JobStatus.processing:
        job.cancel_requested = True
    session.commit()
    return job


def reap_expired(*, session: Session, now: datetime | None = None, max_attempts: int = MAX_ATTEMPTS) -> list[Job]:
    """Deal with processing jobs whose lease ran out: requeue, or fail/cancel and refund."""
    now = now or utcnow()
    expired = session.exec(
        select(Job)
        .where(Job.status == JobStatus.processing, col(Job.lease_until) < now)
        .with_for_update(skip_locked=True)
    ).all()
    for job in expired:
        if job.cancel_requested:
            _finish(job, JobStatus.cancelled, now, "Cancelled by its owner.")
            settle(session=session, job_id=job.id, outcome=CreditKind.refund, now=now)
        elif job.attempt >= max_attempts:
            _finish(job, JobStatus.failed, now, f"The worker stopped responding {job.attempt} times; giving up.")
            settle(session=session, job_id=job.id, outcome=CreditKind.refund, now=now)
        else:
            job.status = JobStatus.queued
            job.worker = job.lease_until = None
            job.progress_step = job.progress_total = 0
    session.commit()
    return list(expired)

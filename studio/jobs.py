"""Jobs: submit a transformation (validated, recorded, source stored) and run it.

`submit_img2img` only writes rows and the source image; `run_job` executes a recorded job and is
what a worker calls, so moving execution from the page to a queue worker changes no code here.
Torch is imported only inside `run_job`, through `pipelines`.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import asdict

from PIL import Image
from sqlalchemy import func
from sqlmodel import Session, col, select

from pipelines.errors import ModelUnavailableError, PipelineInputError
from pipelines.params import Img2ImgParams
from studio.config import Settings
from studio.models import Asset, AssetKind, Job, JobStatus, User, utcnow
from studio.recipes import RECIPE_VERSION, png_with_recipe
from studio.storage import AssetStore
from studio.validation import ValidatedImage

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]


class JobInputError(ValueError):
    """A request was refused before anything was stored; the message says why."""


def submit_img2img(
    *,
    session: Session,
    store: AssetStore,
    user: User,
    upload: ValidatedImage,
    original_name: str | None,
    params: Img2ImgParams,
    model: str,
) -> Job:
    """Record a queued img2img job and its source image. Bad parameters store nothing."""
    try:
        params.check()
    except PipelineInputError as exc:
        raise JobInputError(str(exc)) from exc

    sha = store.put(upload.png_bytes)
    source = Asset(
        user_id=user.id,
        kind=AssetKind.source,
        sha256=sha,
        width=upload.width,
        height=upload.height,
        size_bytes=len(upload.png_bytes),
        original_name=original_name,
    )
    session.add(source)
    session.flush()
    job = Job(
        task="img2img",
        model=model,
        params=asdict(params),
        user_id=user.id,
        team_id=user.team_id,
        source_asset_id=source.id,
    )
    session.add(job)
    session.commit()
    session.refresh(job)
    return job


def run_job(
    job_id: int,
    *,
    session: Session,
    store: AssetStore,
    settings: Settings,
    on_progress: ProgressCallback | None = None,
) -> Job:
    """Run a queued job to completion or failure; returns the job in its final state."""
    from pipelines.img2img import Img2ImgRequest, library_versions, run_img2img
    from pipelines.registry import resolve_model

    job = session.get(Job, job_id)
    if job is None:
        raise LookupError(f"No job {job_id}")
    if job.status is not JobStatus.queued:
        raise ValueError(f"Job {job_id} is {job.status.value}, not queued")
    job.status = JobStatus.processing
    job.started_at = utcnow()
    job.attempt += 1
    session.commit()

    def report_progress(step: int, total: int) -> None:
        job.progress_step, job.progress_total = step, total
        session.commit()
        if on_progress is not None:
            on_progress(step, total)

    try:
        source_asset = session.get(Asset, job.source_asset_id)
        source = Image.open(io.BytesIO(store.read(source_asset.sha256))).convert("RGB")
        params = Img2ImgParams(**job.params)
        ref = resolve_model(job.model, models_dir=settings.models_dir)
        result = run_img2img(
            ref,
            Img2ImgRequest(image=source, params=params, max_side=settings.max_output_side),
            on_step=report_progress,
        )
        recipe = {
            "recipe_version": RECIPE_VERSION,
            "task": job.task,
            "model": job.model,
            **asdict(params),
            "scheduler": result.scheduler,
            "width": result.width,
            "height": result.height,
            "denoising_steps": result.denoising_steps,
            "source_sha256": source_asset.sha256,
            "device": result.device,
            "dtype": result.dtype,
            "versions": library_versions(),
        }
        png = png_with_recipe(result.image, recipe)
        result_asset = Asset(
            user_id=job.user_id,
            kind=AssetKind.result,
            sha256=store.put(png),
            width=result.width,
            height=result.height,
            size_bytes=len(png),
        )
        session.add(result_asset)
        session.flush()
        job.result_asset_id = result_asset.id
        job.recipe = recipe
        job.status = JobStatus.complete
    except (ModelUnavailableError, PipelineInputError) as exc:
        job.status, job.error = JobStatus.failed, str(exc)
    except Exception as exc:  # any other failure must still end the job, never leave it processing
        log.exception("Job %s failed", job_id)
        job.status, job.error = JobStatus.failed, f"Internal error ({type(exc).__name__}): {exc}"[:2000]
    job.finished_at = utcnow()
    session.commit()
    session.refresh(job)
    return job


def transform_now(
    *,
    session: Session,
    store: AssetStore,
    settings: Settings,
    user: User,
    upload: ValidatedImage,
    original_name: str | None,
    params: Img2ImgParams,
    on_progress: ProgressCallback | None = None,
) -> Job:
    """Submit an img2img job with the configured model and run it in this thread."""
    job = submit_img2img(
        session=session,
        store=store,
        user=user,
        upload=upload,
        original_name=original_name,
        params=params,
        model=settings.model,
    )
    return run_job(job.id, session=session, store=store, settings=settings, on_progress=on_progress)


def get_user_job(*, session: Session, user_id: int, job_id: int) -> Job | None:
    """A job, only if it belongs to the user."""
    job = session.get(Job, job_id)
    return job if job is not None and job.user_id == user_id else None


def list_user_jobs(
    *, session: Session, user_id: int, limit: int = 24, offset: int = 0
) -> list[tuple[Job, Asset, Asset | None]]:
    """The user's jobs, newest first, with their source and result assets."""
    jobs = session.exec(
        select(Job)
        .where(Job.user_id == user_id)
        .order_by(col(Job.created_at).desc(), col(Job.id).desc())
        .offset(offset)
        .limit(limit)
    ).all()
    asset_ids = {job.source_asset_id for job in jobs} | {
        job.result_asset_id for job in jobs if job.result_asset_id is not None
    }
    assets = {a.id: a for a in session.exec(select(Asset).where(col(Asset.id).in_(asset_ids)))}
    return [(job, assets[job.source_asset_id], assets.get(job.result_asset_id)) for job in jobs]


def count_user_jobs(*, session: Session, user_id: int) -> int:
    return session.exec(select(func.count()).select_from(Job).where(Job.user_id == user_id)).one()

"""The Batch page's parts: reading the uploads once, submitting a batch, and its live progress and download."""

from __future__ import annotations

import threading
import time

import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from studio.batches.results import Batch, batch_zip, download_name, get_user_batch
from studio.batches.uploads import BatchUploads, read_uploads
from studio.catalogue.requests import JobRequest
from studio.db.tables import JobStatus, User
from studio.jobs.submit import submit_batch
from studio.media.staging import StagedImage, purge_staged
from studio.web import app, jobs, refusals, widgets
from studio.web.live import live_panel, poll_backoff
from studio.web.text import plain

UPLOADS_KEY = "batch.uploads"  # (the uploaded files' ids, what reading them gave)
PURGE_EVERY_S = 3600.0
_purge_lock = threading.Lock()
_next_purge = 0.0  # monotonic time of the next purge of stale staged uploads, in this process


def batch_uploads(files: list[UploadedFile]) -> BatchUploads:
    """The uploads read, validated and staged once per set of files: reruns of the page reuse the result."""
    ids = tuple(file.file_id for file in files)
    cached = st.session_state.get(UPLOADS_KEY)
    if cached is not None and cached[0] == ids and all(image.path.is_file() for image in cached[1].images):
        return cached[1]
    st.session_state.pop(UPLOADS_KEY, None)  # let the previous set go before reading the next
    _purge_stale_staging()
    with st.spinner(f"Checking {len(files)} file(s), one image at a time…"):
        uploads = read_uploads(
            [(file.name, file) for file in files],
            staging=app.staging_store(),
            max_pixels=app.settings().max_batch_pixels,
        )
    st.session_state[UPLOADS_KEY] = (ids, uploads)
    return uploads


def _purge_stale_staging() -> None:
    """Delete staged uploads nobody submitted (older than a day), about once an hour per process."""
    global _next_purge
    with _purge_lock:
        if time.monotonic() < _next_purge:
            return
        _next_purge = time.monotonic() + PURGE_EVERY_S
    purge_staged(app.staging_store())


def submit(
    config, user: User, images: list[StagedImage], requests: list[JobRequest], *, masks: list[StagedImage], key: str
):
    """Queue the batch (`masks`: none, or one per image), then shown under `key`; or show why it was refused."""
    submitted = refusals.attempt(
        lambda: jobs.submit_or_resubmit(lambda: _submit_once(config, user, images, requests, masks))
    )
    if submitted is not None:
        st.session_state[key] = submitted[0].batch_id


def _submit_once(
    config, user: User, images: list[StagedImage], requests: list[JobRequest], masks: list[StagedImage]
) -> list:
    with app.db_write_session() as session:
        return submit_batch(
            session=session,
            store=app.asset_store(),
            settings=config,
            user=user,
            images=images,
            requests=requests,
            masks=masks or None,
            idempotency_key=jobs.submit_key(
                user_id=user.id,
                source_png="".join(image.sha256 for image in [*images, *masks]).encode(),
                recipe={"batch": [r.job_params() for r in requests], "model": requests[0].model},
            ),
        )


def batch_panel(*, batch_id: str, user_id: int, label: str) -> None:
    with app.db_session() as session:
        batch = get_user_batch(session=session, user_id=user_id, batch_id=batch_id)
    if batch is None:
        return
    live = not batch.finished
    live_panel(f"poll.batch.{batch_id}", _panel_body, batch_id, user_id, label, live, live=live)


def _panel_body(batch_id: str, user_id: int, label: str, was_live: bool) -> None:
    with app.db_session() as session:
        batch: Batch = get_user_batch(session=session, user_id=user_id, batch_id=batch_id)
    if batch.finished and was_live:
        st.rerun()  # once, so the fragment stops polling
    if was_live:
        poll_backoff(
            f"poll.batch.{batch_id}",
            tuple((i.job.status, i.job.progress_step, i.job.cancel_requested) for i in batch.items),
        )
    total = len(batch.items)
    st.progress(batch.done / total, text=f"{batch.done} of {total} images done")
    complete, failed = batch.count(JobStatus.complete), batch.count(JobStatus.failed)
    cancelled = batch.count(JobStatus.cancelled)
    spent = sum(item.job.cost for item in batch.items if item.job.status is JobStatus.complete)
    refunded = sum(item.job.cost for item in batch.items if item.job.status in (JobStatus.failed, JobStatus.cancelled))
    st.caption(
        f"{complete} complete · {failed} failed · {cancelled} cancelled · {spent} credits spent · {refunded} refunded"
    )
    for item in batch.items:
        if item.job.status is JobStatus.failed:
            name = item.source.original_name if item.source else f"job {item.job.id}"
            st.warning(f"{plain(name)}: {plain(item.job.error)} ({item.job.cost} credits refunded)")
    if batch.finished:
        st.download_button(
            "Download all (ZIP)",
            batch_zip(batch, app.asset_store()),
            download_name(batch, label),
            "application/zip",
            help="Every result named after its source, and manifest.csv: source, job, status, credits, recipe.",
        )
    thumbnails = [item for item in batch.items if item.result is not None][:12]
    for column, item in zip(st.columns(6), thumbnails, strict=False):
        column.image(widgets.thumbnail(item.result.sha256, str(app.asset_store().root)))

"""A job on a page: submitting it once per click (idempotency keys), its live panel while it runs (queue
position, progress, cancel), and its outcome.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable

import streamlit as st
from PIL import Image
from sqlmodel import Session

from pipelines.outpaint import format_label
from pipelines.params import RunSpec, Task
from studio.catalogue.requests import denoising_steps
from studio.config import Settings
from studio.db.tables import Asset, Job, JobStatus, User
from studio.jobs.leases import cancel_job, queue_position
from studio.jobs.queries import get_user_job
from studio.web import library
from studio.web.app import asset_store, db_session, db_write_session
from studio.web.live import live_panel, poll_backoff
from studio.web.sources import Source
from studio.web.text import plain


def submit_key(*, user_id: int, source_png: bytes, recipe: dict) -> str:
    """An idempotency key for a Transform click: the same inputs in this browser session give the
    same key, so a double click (or a rerun) cannot queue and charge a job twice."""
    nonce = st.session_state.setdefault("submit_nonce", uuid.uuid4().hex)
    material = json.dumps({"user": user_id, "recipe": recipe, "nonce": nonce}, sort_keys=True).encode()
    return hashlib.sha256(hashlib.sha256(source_png).digest() + material).hexdigest()


def allow_resubmit() -> None:
    """After a failed or cancelled job, the same inputs may be submitted again as a new job."""
    st.session_state["submit_nonce"] = uuid.uuid4().hex


def submit_or_resubmit(submit_once: Callable[[], list[Job]]) -> list[Job]:
    """Submit with this session's idempotency key: a second click while the jobs are queued or running
    returns them (no second charge); once they have all ended, the same inputs make new jobs."""
    jobs = submit_once()
    if all(job.status.is_final for job in jobs):
        allow_resubmit()
        jobs = submit_once()
    return jobs


def submit_from_page(
    submit: Callable[..., Job | list[Job]],
    *,
    config: Settings,
    user: User,
    source: Source,
    mask: Image.Image | None,
    key_recipe: dict,
    **request: object,
) -> list[Job]:
    """Submit what a page built (`submit` is studio.jobs.submit's submit_job or submit_sweep, `request`
    its request or requests) with this session's idempotency key for those inputs; Refused propagates."""

    def submit_once() -> list[Job]:
        with db_write_session() as session:
            submitted = submit(
                session=session,
                store=asset_store(),
                settings=config,
                user=user,
                upload=source.upload,
                original_name=source.name,
                mask=mask,
                idempotency_key=submit_key(
                    user_id=user.id,
                    source_png=source.upload.png_bytes,
                    recipe=key_recipe
                    | {"mask": hashlib.sha256(mask.tobytes()).hexdigest() if mask is not None else None},
                ),
                **request,
            )
        return submitted if isinstance(submitted, list) else [submitted]

    return submit_or_resubmit(submit_once)


def job_panel(*, job_id: int, user_id: int) -> None:
    """A job's live status: queue position, progress and cancel while it runs; then the outcome.

    While the job is not final the panel is a fragment that polls the job (studio.web.live); when the job ends,
    it reruns the page once so the fragment stops polling.
    """
    with db_session() as session:
        job = get_user_job(session=session, user_id=user_id, job_id=job_id)
    if job is None:
        return
    live = not job.status.is_final
    live_panel(f"poll.job.{job_id}", _job_panel_body, job_id, user_id, live, live=live)


def _job_panel_body(job_id: int, user_id: int, was_live: bool) -> None:
    with db_session() as session:
        job = get_user_job(session=session, user_id=user_id, job_id=job_id)
        if job.status.is_final:
            if was_live:
                if job.status is not JobStatus.complete:
                    allow_resubmit()
                st.rerun()
            show_job_result(session=session, job=job)
            return
        position = queue_position(session=session, job=job)
    poll_backoff(f"poll.job.{job_id}", (job.status, job.progress_step, job.cancel_requested, position))
    if job.status is JobStatus.queued:
        st.info(f"Job #{job.id} is queued · position {position} · {job.cost} credits reserved.")
        st.progress(0.0, text="Waiting for a worker…")
    elif job.cancel_requested:
        st.progress(_fraction(job), text="Cancelling at the next step…")
    else:
        st.progress(_fraction(job), text=f"Job #{job.id} · step {job.progress_step}/{job.progress_total or '…'}")
    if not job.cancel_requested and st.button("Cancel", key=f"cancel-{job.id}"):
        with db_write_session() as session:
            cancel_job(session=session, job_id=job.id, user_id=user_id)
        st.rerun(scope="fragment")


def _fraction(job: Job) -> float:
    return job.progress_step / job.progress_total if job.progress_total else 0.0


def job_summary(job: Job) -> str:
    """One line: what ran (task or style), what the user wrote, and the settings that matter for it."""
    params = job.params
    spec = RunSpec.from_dict(params)
    parts = [job.style.replace("-", " ").capitalize() if job.style else spec.task.label]
    if spec.outpaint is not None:  # expanded: to which format, the source where
        parts.append(f"expanded to {format_label(spec.outpaint)}, source {spec.outpaint.placement.value}")
    if prompt := params.get("user_prompt", params.get("prompt", "")):
        parts.append(f"“{prompt[:80]}”")
    # The denoising steps that ran (a finished job's recipe says), not the schedule's length.
    ran = (job.recipe or {}).get("denoising_steps", denoising_steps(spec, params.get("family")))
    if spec.task == Task.edit:
        parts.append(f"guidance {spec.params.guidance:g}, {ran} steps")
    elif spec.task.upscale_factor is None:
        parts += [f"strength {spec.params.strength:.2f}", f"{ran} of {spec.params.steps} steps"]
    else:
        parts.append(f"{ran} steps")
    parts.append(f"seed {spec.params.seed}")
    if loras := params.get("loras"):
        parts.append("LoRA " + ", ".join(f"{lora['name']} × {lora['weight']:g}" for lora in loras))
    if reference := params.get("reference"):
        parts.append(f"reference image × {reference['scale']:g}")
    return " · ".join(parts)


def show_job_result(*, session: Session, job: Job) -> None:
    """A job's outcome: the image with its download and recipe, or why it failed."""
    if job.status is JobStatus.complete:
        result = session.get(Asset, job.result_asset_id) if job.result_asset_id is not None else None
        if result is None or not asset_store().exists(result.sha256):
            st.info(
                f"Job #{job.id} completed; its images have since been deleted (from History, or by retention). "
                "Its recipe is below.",
                icon=":material/hide_image:",
            )
        else:
            png = asset_store().read(result.sha256)
            st.image(png, caption=f"Job #{job.id} · {result.width}×{result.height} · seed {job.params['seed']}")
            st.download_button(
                "Download PNG",
                data=png,
                file_name=f"img2img-{job.id}.png",
                mime="image/png",
                key=f"download-{job.id}",
                help="The recipe that made it is stored inside the PNG.",
            )
            library.open_in(user_id=job.user_id, job_id=job.id, key=f"job-{job.id}")
        with st.expander("Recipe"):
            st.json(job.recipe)
    elif job.status is JobStatus.failed:
        st.error(f"Job #{job.id} failed: {plain(job.error)}")
        st.caption(f"{job.cost} credits refunded.")
    elif job.status is JobStatus.cancelled:
        st.warning(f"Job #{job.id} was cancelled; {job.cost} credits refunded.")
    else:
        st.info(f"Job #{job.id} is {job.status.value}.")

"""The one studio module that imports streamlit: per-process resources, the logged-in user,
role checks and small widgets that several pages share. Pages stay descriptions of the UI."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import streamlit as st
import streamlit_authenticator as stauth
from PIL import Image
from sqlmodel import Session
from streamlit_authenticator.utilities import LoginError

from pipelines import import_model_stack
from pipelines.params import RunSpec
from studio.bootstrap import BootstrapReport, ConfigError, bootstrap
from studio.config import Settings, get_settings
from studio.db import session_for, write_session
from studio.jobs import get_user_job
from studio.models import Asset, Job, JobStatus, Role, User, utcnow
from studio.plans import allocate_monthly
from studio.queue import cancel_job, queue_position
from studio.storage import AssetStore
from studio.users import authenticator_credentials, get_active_user
from studio.validation import ValidatedImage, validate_image_bytes

log = logging.getLogger(__name__)

COOKIE_EXPIRY_DAYS = 7
THUMBNAIL_SIDE = 256


def settings() -> Settings:
    return get_settings()


@st.cache_resource(show_spinner=False)
def _bootstrap_once(config: Settings) -> BootstrapReport:
    return bootstrap(config)


def bootstrap_studio() -> BootstrapReport:
    """Schema, cookie key and first admin, once per process; a bad configuration stops the app."""
    try:
        return _bootstrap_once(settings())
    except ConfigError as exc:
        st.error(f"The studio cannot start: {exc}")
        st.stop()


@st.cache_resource(show_spinner=False)
def start_model_warmup(config: Settings) -> threading.Thread:
    """Build (preview) and load the configured model in the background, so the first job is fast."""

    def warm() -> None:
        try:
            import_model_stack()
            from pipelines.cache import get_base_pipeline
            from pipelines.registry import resolve_model

            get_base_pipeline(resolve_model(config.model, models_dir=config.models_dir))
        except Exception:  # the job that needs the model reports the error to its user
            log.exception("Model warm-up failed for %r", config.model)

    thread = threading.Thread(target=warm, name="model-warmup", daemon=True)
    thread.start()
    return thread


@st.cache_resource(show_spinner=False)
def start_background_worker(config: Settings) -> threading.Thread:
    """One queue worker inside the Streamlit server process (more can run as separate processes)."""
    from studio.worker import Worker

    worker = Worker(config, name=f"streamlit:{os.getpid()}")
    thread = threading.Thread(target=worker.run_forever, args=(threading.Event(),), name="queue-worker", daemon=True)
    thread.start()
    return thread


@contextmanager
def db_session() -> Iterator[Session]:
    with session_for(settings().database_url) as session:
        yield session


@contextmanager
def db_write_session() -> Iterator[Session]:
    with write_session(settings().database_url) as session:
        yield session


def asset_store() -> AssetStore:
    return AssetStore(settings().assets_dir)


def authenticator(report: BootstrapReport) -> stauth.Authenticate:
    """streamlit-authenticator over the users table; created once per script run."""
    with db_session() as session:
        credentials = authenticator_credentials(session=session)
    return stauth.Authenticate(
        credentials,
        settings().cookie_name,
        report.cookie_key,
        COOKIE_EXPIRY_DAYS,
        auto_hash=False,
        login_sleep_time=0,
    )


def login_form(authenticator: stauth.Authenticate) -> None:
    """The login form, with the first-run hint and a clear message for a wrong password."""
    if st.session_state.get("authentication_status"):
        # Logged in by cookie or session, but the account is gone or deactivated since.
        authenticator.logout(location="unrendered")
    st.title("Img2Img Studio")
    try:
        authenticator.login(location="main", key="studio_login")
    except LoginError:
        # The browser holds a login cookie of an account that is gone or deactivated: forget it (`logout`
        # makes the authenticator ignore the cookie for this session) and offer the form.
        st.session_state["logout"] = True
        authenticator.cookie_controller.delete_cookie()
        authenticator.login(location="main", key="studio_login")
    st.caption(
        "First run? The admin password was printed once in the console that started the studio "
        "(or set it beforehand with STUDIO_ADMIN_PASSWORD)."
    )
    if st.session_state.get("authentication_status") is False:
        st.error("Username or password is incorrect.")


def log_out(authenticator: stauth.Authenticate) -> None:
    """Sign out and start over at the login form, leaving nothing of this user's forms behind."""
    authenticator.logout(location="unrendered")
    forget_other_users_state(None)
    st.rerun()


# What streamlit-authenticator keeps in the session (its login state and cookie component); everything
# else in a browser session's state belongs to whoever is signed in.
_AUTHENTICATOR_STATE = frozenset(
    {"authentication_status", "username", "name", "email", "roles", "logout", "password_hint", "init"}
)
_STATE_OWNER = "studio.state_owner"


def forget_other_users_state(user: User | None) -> None:
    """Clear the forms, uploads and jobs shown in this browser session when they belong to someone else:
    after a logout (`user` None), the next person at this browser sees empty forms."""
    owner = user.username if user is not None else None
    if st.session_state.get(_STATE_OWNER, owner) != owner:
        for key in list(st.session_state):
            if key not in _AUTHENTICATOR_STATE:
                del st.session_state[key]
    st.session_state[_STATE_OWNER] = owner


def current_user() -> User | None:
    """The logged-in, still active user, read from the database (roles come from there)."""
    if not st.session_state.get("authentication_status"):
        return None
    with db_session() as session:
        return get_active_user(session=session, username=st.session_state.get("username"))


def refresh_plan_credits(user: User) -> None:
    """Give a Pro user this month's credits at their first page view of a session (once a month)."""
    if st.session_state.get("plan_credits_checked") == user.id:
        return
    with db_write_session() as session:
        allocate_monthly(session=session, user=user, now=utcnow())
        session.commit()
    st.session_state["plan_credits_checked"] = user.id


def require_user(role: Role | None = None) -> User:
    """Stop the page unless someone is logged in (and has `role`, when given)."""
    user = current_user()
    if user is None:
        st.warning("Please log in.")
        st.stop()
    if role is not None and user.role is not role:
        st.error("This page is for administrators only.")
        st.stop()
    return user


def model_notice(config: Settings) -> None:
    if config.uses_preview_model:
        st.info(
            "**Preview model.** This studio runs a tiny, randomly initialised diffusion model that it "
            "built itself: it proves the whole pipeline works offline, but it makes no art — results "
            "look like coloured noise. To make real images, point the studio at a real checkpoint: set "
            "`STUDIO_MODEL` (or `model` under `[studio]` in `.streamlit/secrets.toml`) to a Hugging Face "
            "id such as `stable-diffusion-v1-5/stable-diffusion-v1-5` or to a local diffusers folder, "
            "then restart. See README → Real models.",
            icon=":material/science:",
        )


STRENGTH_HELP = (
    "How far the result may move away from the source. 0.2–0.3: subtle touch-up, "
    "0.4–0.6: restyle while keeping the composition, 0.7–0.9: heavy reimagining, 1.0: ignore the source."
)


def strength_hint(strength: float) -> str:
    if strength < 0.2:
        return "Barely changes the source."
    if strength < 0.4:
        return "Subtle: keeps the photo, nudges colours and texture."
    if strength < 0.7:
        return "Restyle: new look, same composition."
    if strength < 0.95:
        return "Heavy: the prompt dominates, the layout is a loose guide."
    return "Full: the source barely matters."


@st.cache_data(max_entries=512, show_spinner=False)
def thumbnail(sha256: str, _store_root: str) -> bytes:
    """A small JPEG of a stored image (cached by content hash, which never changes)."""
    with Image.open(AssetStore(_store_root).path(sha256)) as image:
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


@st.cache_data(max_entries=8, show_spinner=False)
def validated_upload(data: bytes) -> ValidatedImage:
    """Validate uploaded bytes once per distinct file (reruns reuse the result; rejections re-raise)."""
    return validate_image_bytes(data)


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


def job_panel(*, job_id: int, user_id: int) -> None:
    """A job's live status: queue position, progress and cancel while it runs; then the outcome.

    While the job is not final the panel is a fragment that reruns itself every second; when
    the job ends, it reruns the page once so the fragment stops polling.
    """
    with db_session() as session:
        job = get_user_job(session=session, user_id=user_id, job_id=job_id)
    if job is None:
        return
    live = not job.status.is_final
    st.fragment(_job_panel_body, run_every=JOB_POLL_SECONDS if live else None)(job_id, user_id, live)


JOB_POLL_SECONDS = 1.0


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
    if prompt := params.get("user_prompt", params.get("prompt", "")):
        parts.append(f"“{prompt[:80]}”")
    # The denoising steps that ran (a finished job's recipe says), not the schedule's length.
    ran = (job.recipe or {}).get("denoising_steps", spec.denoising_steps)
    if spec.task.upscale_factor is None:
        parts += [f"strength {spec.params.strength:.2f}", f"{ran} of {spec.params.steps} steps"]
    else:
        parts.append(f"{ran} steps")
    parts.append(f"seed {spec.params.seed}")
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
        with st.expander("Recipe"):
            st.json(job.recipe)
    elif job.status is JobStatus.failed:
        st.error(f"Job #{job.id} failed: {job.error}")
        st.caption(f"{job.cost} credits refunded.")
    elif job.status is JobStatus.cancelled:
        st.warning(f"Job #{job.id} was cancelled; {job.cost} credits refunded.")
    else:
        st.info(f"Job #{job.id} is {job.status.value}.")

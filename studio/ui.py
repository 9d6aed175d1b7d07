"""The one studio module that imports streamlit: per-process resources, the logged-in user,
role checks and small widgets that several pages share. Pages stay descriptions of the UI."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st
import streamlit_authenticator as stauth
from PIL import Image
from sqlmodel import Session

from studio.bootstrap import BootstrapReport, ConfigError, bootstrap
from studio.config import Settings, get_settings
from studio.db import session_for
from studio.models import Asset, Job, JobStatus, Role, User
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
            from pipelines.cache import get_base_pipeline
            from pipelines.registry import resolve_model

            get_base_pipeline(resolve_model(config.model, models_dir=config.models_dir))
        except Exception:  # the job that needs the model reports the error to its user
            log.exception("Model warm-up failed for %r", config.model)

    thread = threading.Thread(target=warm, name="model-warmup", daemon=True)
    thread.start()
    return thread


@contextmanager
def db_session() -> Iterator[Session]:
    with session_for(settings().database_url) as session:
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


def current_user() -> User | None:
    """The logged-in, still active user, read from the database (roles come from there)."""
    if not st.session_state.get("authentication_status"):
        return None
    with db_session() as session:
        return get_active_user(session=session, username=st.session_state.get("username"))


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


def show_job_result(*, session: Session, job: Job) -> None:
    """A job's outcome: the image with its download and recipe, or why it failed."""
    if job.status is JobStatus.complete:
        result = session.get(Asset, job.result_asset_id)
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
    else:
        st.info(f"Job #{job.id} is {job.status.value}.")

"""Per-process resources of the web app: settings, first-run set-up, the model warm-up and in-process worker,
database sessions, the asset store and the staging store.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st
from sqlmodel import Session

from pipelines import import_model_stack
from studio.accounts.bootstrap import BootstrapReport, ConfigError, bootstrap
from studio.config import Settings, get_settings
from studio.db.engine import session_for, write_session
from studio.media.storage import AssetStore

log = logging.getLogger(__name__)


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
    from studio.jobs.worker import Worker

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


def staging_store() -> AssetStore:
    """Batch uploads validated but not submitted yet (studio.media.staging)."""
    return AssetStore(settings().staging_dir)

"""Per-process resources of the web app: settings, first-run set-up, database sessions, the asset store and the
staging store (the model warm-up and in-process worker: studio.web.serving).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st
from sqlmodel import Session

from studio.accounts.bootstrap import BootstrapReport, ConfigError, bootstrap
from studio.config import Settings, get_settings
from studio.db.engine import session_for, write_session
from studio.media.storage import AssetStore


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

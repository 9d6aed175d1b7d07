"""Shared fixtures: every test gets its own data folder; the tiny preview model is built once per run."""

from __future__ import annotations

import io
import os
import secrets
from pathlib import Path

import pytest
from PIL import Image

from studio import config
from studio.bootstrap import BootstrapReport, bootstrap
from studio.config import Settings, get_settings

ADMIN_PASSWORD = "admin-password-for-tests"


@pytest.fixture(scope="session")
def shared_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One models folder for the whole run, so the preview model is built once, not per test."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def studio_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_models_dir: Path) -> Settings:
    """Settings for an isolated studio under tmp_path (the process env is what the app reads)."""
    for name in list(os.environ):
        if name.startswith("STUDIO_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(config, "SECRETS_PATH", tmp_path / "no-secrets.toml")
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STUDIO_MODELS_DIR", str(shared_models_dir))
    monkeypatch.setenv("STUDIO_COOKIE_KEY", secrets.token_urlsafe(48))
    monkeypatch.setenv("STUDIO_ADMIN_PASSWORD", ADMIN_PASSWORD)
    monkeypatch.setenv("STUDIO_WARMUP", "0")
    # Tests run the queue worker themselves (Worker.run_once), so results are deterministic.
    monkeypatch.setenv("STUDIO_IN_PROCESS_WORKER", "0")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def studio(studio_settings: Settings) -> BootstrapReport:
    """A bootstrapped studio: schema, cookie key and the admin account exist."""
    return bootstrap(studio_settings)


def png_bytes(width: int = 256, height: int = 256, color: tuple[int, int, int] = (200, 80, 40)) -> bytes:
    """A small test photo: a colour gradient, so img2img has structure to keep."""
    image = Image.new("RGB", (width, height), color)
    for x in range(width):
        for y in range(0, height, 4):
            image.putpixel((x, y), (x % 256, (y * 2) % 256, 128))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()

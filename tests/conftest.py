"""Shared fixtures: every test gets its own data folder; the tiny preview model is built once per run."""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import numpy as np
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


@pytest.fixture(scope="session")
def preview(shared_models_dir: Path):
    """The tiny SD model (pipelines.registry.ModelRef), built once per run."""
    from pipelines.registry import PREVIEW_MODEL, ensure_preview_model, resolve_model

    ensure_preview_model(shared_models_dir)
    return resolve_model(PREVIEW_MODEL, models_dir=shared_models_dir)


@pytest.fixture(scope="session")
def preview_controlnet(shared_models_dir: Path):
    """The tiny ControlNet for the tiny SD model."""
    from pipelines.registry import ensure_preview_model, resolve_model

    ensure_preview_model(shared_models_dir, "preview-controlnet")
    return resolve_model("preview-controlnet", models_dir=shared_models_dir)


@pytest.fixture
def unet_calls(preview) -> Iterator[list[int]]:
    """Counts forward calls of the base pipeline's UNet (per-request pipelines share it)."""
    from pipelines.cache import get_base_pipeline

    calls: list[int] = []
    handle = get_base_pipeline(preview).unet.register_forward_hook(lambda *_: calls.append(1))
    yield calls
    handle.remove()


def gradient(width: int, height: int) -> Image.Image:
    """A deterministic RGB source with structure in both directions."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    rgb = np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def png_bytes(width: int = 256, height: int = 256, color: tuple[int, int, int] = (200, 80, 40)) -> bytes:
    """A small test photo: a colour gradient, so img2img has structure to keep."""
    image = Image.new("RGB", (width, height), color)
    for x in range(width):
        for y in range(0, height, 4):
            image.putpixel((x, y), (x % 256, (y * 2) % 256, 128))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()

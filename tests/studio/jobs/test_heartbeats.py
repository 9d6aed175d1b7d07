"""Worker heartbeats (the admin Models page): a running worker's row, its job in hand, and a graceful stop."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from studio.db.engine import session_for
from studio.db.tables import utcnow
from studio.jobs.heartbeats import STALE_AFTER_SECONDS, beat, workers
from studio.jobs.worker import Worker

pytestmark = pytest.mark.both_databases


def test_a_running_worker_is_listed_alive_and_stopped_after_a_graceful_stop(studio, studio_settings) -> None:
    worker = Worker(studio_settings, name="gpu-0")
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop, 0.05), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            with session_for(studio_settings.database_url) as session:
                states = workers(session=session)
            if states or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        [state] = states
        assert (state.row.name, state.status, state.row.current_job_id) == ("gpu-0", "alive", None)
        assert state.row.device in ("cpu", "not loaded yet")  # "cpu" once a test has loaded a model
    finally:
        stop.set()
        thread.join(30)
    with session_for(studio_settings.database_url) as session:
        [state] = workers(session=session)
    assert state.status == "stopped" and state.row.stopped_at is not None


def test_a_worker_that_stops_beating_is_silent(studio, studio_settings) -> None:
    then = utcnow() - timedelta(seconds=STALE_AFTER_SECONDS + 1)
    with session_for(studio_settings.database_url) as session:
        beat(
            session=session,
            name="gpu-1",
            device="cuda:1",
            current_job_id=7,
            loaded_models=["preview (cuda:1, float16)"],
            started_at=then,
            now=then,
        )
        [state] = workers(session=session)
    assert (state.status, state.row.current_job_id, state.row.loaded_models) == (
        "silent",
        7,
        ["preview (cuda:1, float16)"],
    )


def test_a_worker_keeps_to_studio_model_memory_and_reports_what_it_loaded(studio, studio_settings, monkeypatch):
    """The budget comes from STUDIO_MODEL_MEMORY, and the heartbeat reports each loaded model's size against it."""
    from dataclasses import replace

    from pipelines import cache
    from pipelines.params import Img2ImgParams, MemoryBudget
    from studio.accounts.users import get_user
    from studio.catalogue.requests import custom_request
    from studio.db.engine import write_session
    from studio.jobs.submit import submit_job
    from studio.media.storage import AssetStore
    from studio.media.validation import validate_image_bytes
    from tests.support import png_bytes

    settings = replace(studio_settings, model_memory=MemoryBudget.parse("3GiB"))
    with write_session(settings.database_url) as session:
        admin = get_user(session=session, username="admin")
        submit_job(
            session=session,
            store=AssetStore(settings.assets_dir),
            settings=settings,
            user=admin,
            upload=validate_image_bytes(png_bytes(256, 256)),
            original_name="a.png",
            request=custom_request(settings=settings, params=Img2ImgParams(prompt="x", strength=0.5, steps=2)),
        )
    worker = Worker(settings, name="budgeted")
    try:
        worker.run_once()
        worker.beat()
        with session_for(settings.database_url) as session:
            [state] = workers(session=session)
        memory = state.row.memory
        assert memory["budget_bytes"] == 3 * 2**30 == cache.memory_report().budget_bytes
        loaded = {model["name"]: model for model in memory["models"]}
        assert loaded["preview"]["bytes"] > 0 and loaded["preview"]["family"] == "sd15"
        assert memory["used_bytes"] == sum(model["device_bytes"] for model in memory["models"])
    finally:
        cache.set_memory_budget(None)  # the cache is per process: leave the default to the tests that follow


@pytest.mark.parametrize(
    ("text", "limit", "fraction"),
    [("", None, 0.9), ("12GiB", 12 * 2**30, 0.9), ("512 MB", 512 * 10**6, 0.9), ("75%", None, 0.75)],
)
def test_studio_model_memory_is_read_as_bytes_or_a_share_of_the_device(tmp_path, text, limit, fraction) -> None:
    from studio.config import load_settings

    settings = load_settings({"STUDIO_MODEL_MEMORY": text}, secrets_path=tmp_path / "none.toml")
    assert (settings.model_memory.limit, settings.model_memory.fraction) == (limit, fraction)


@pytest.mark.parametrize("text", ["lots", "0GB", "150%", "-3GiB"])
def test_a_malformed_studio_model_memory_stops_the_studio_with_the_setting_named(tmp_path, text) -> None:
    from studio.config import load_settings
    from studio.errors import ConfigError

    with pytest.raises(ConfigError, match="STUDIO_MODEL_MEMORY"):
        load_settings({"STUDIO_MODEL_MEMORY": text}, secrets_path=tmp_path / "none.toml")

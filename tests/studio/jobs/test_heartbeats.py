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

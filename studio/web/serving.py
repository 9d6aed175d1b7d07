"""What runs beside the pages in the Streamlit server process: the model warm-up and the in-process queue worker.

README's `python -m studio serve` serves studio/web/server.py, whose `st.App` starts both with the server through
`lifespan`, so a job queued from the command line or another host runs without anyone opening a page. A plain
`streamlit run streamlit_app.py` (and AppTest) has no start-up hook: there the first page view starts them
(`start`). Either way once per process.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from pipelines import import_model_stack
from studio.accounts.bootstrap import ConfigError, bootstrap
from studio.config import Settings, get_settings

log = logging.getLogger(__name__)

# How long shutting down waits for the in-process worker to finish the job in hand; a longer job goes back to the
# queue once its lease expires.
STOP_TIMEOUT_SECONDS = 30.0
WORKER_THREAD = "queue-worker"
WARMUP_THREAD = "model-warmup"

_lock = threading.Lock()
_running: dict[str, tuple[threading.Thread, threading.Event]] = {}  # thread name → (thread, its stop event)


def start(settings: Settings) -> None:
    """Start the warm-up and the worker that `settings` ask for, unless this process already has."""
    if settings.warmup:
        _start_once(WARMUP_THREAD, lambda stop: _warm_up(settings))
    if settings.in_process_worker:
        _start_once(WORKER_THREAD, lambda stop: _run_worker(settings, stop))


def stop(timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """Let the in-process worker finish the job in hand and stop (the server is shutting down)."""
    with _lock:
        running = list(_running.values())
        _running.clear()
    for thread, stop_event in running:
        stop_event.set()
        if thread.name == WORKER_THREAD:  # the warm-up cannot be stopped and need not be waited for
            thread.join(timeout)


def worker_threads(settings: Settings) -> int | None:
    """Torch CPU threads of the in-process worker: the configured number, or one core fewer than the process may use,
    so the server (pages, polling) keeps a core; None leaves torch's choice (STUDIO_WORKER_THREADS=0)."""
    if settings.worker_threads is not None:
        return settings.worker_threads or None
    return max(1, len(os.sched_getaffinity(0)) - 1)


@asynccontextmanager
async def lifespan(_app: Any) -> AsyncIterator[None]:
    """st.App's start-up and shutdown hook (studio/web/server.py): schema, first admin, warm-up and worker before
    any page; at shutdown the worker finishes the job in hand."""
    settings = get_settings()
    try:
        bootstrap(settings)
    except ConfigError as exc:  # the pages say why; nothing runs until the configuration is fixed
        log.error("The studio cannot start: %s", exc)
    else:
        start(settings)
    yield
    stop()


def _start_once(name: str, target: Callable[[threading.Event], None]) -> None:
    with _lock:
        if name in _running:
            return
        stop_event = threading.Event()
        thread = threading.Thread(target=target, args=(stop_event,), name=name, daemon=True)
        _running[name] = thread, stop_event
        thread.start()


def _warm_up(settings: Settings) -> None:
    """Build (preview) and load the configured model, so the first job is fast."""
    try:
        import_model_stack()
        from pipelines.cache import get_base_pipeline
        from pipelines.registry import resolve_model

        get_base_pipeline(resolve_model(settings.model, models_dir=settings.models_dir))
    except Exception:  # the job that needs the model reports the error to its user
        log.exception("Model warm-up failed for %r", settings.model)


def _run_worker(settings: Settings, stop_event: threading.Event) -> None:
    from studio.jobs.worker import Worker

    Worker(settings, name=f"streamlit:{os.getpid()}", threads=worker_threads(settings)).run_forever(stop_event)

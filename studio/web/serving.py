"""What runs beside the pages in the Streamlit server process: the model warm-up and the in-process queue worker.

The first page view starts them (`start`, from streamlit_app.py), once per process. (Starting them with the server
through `st.App`'s start-up hook waits for a Streamlit where the first session keeps its form values: studio.cli.serve.)
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from pipelines import import_model_stack
from studio.config import Settings

log = logging.getLogger(__name__)

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


def worker_threads(settings: Settings) -> int | None:
    """Torch CPU threads of the in-process worker: the configured number, or one core fewer than the process may use,
    so the server (pages, polling) keeps a core; None leaves torch's choice (STUDIO_WORKER_THREADS=0)."""
    if settings.worker_threads is not None:
        return settings.worker_threads or None
    return max(1, len(os.sched_getaffinity(0)) - 1)


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

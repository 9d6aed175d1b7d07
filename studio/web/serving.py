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
_running: dict[str, threading.Thread] = {}  # thread name → the thread (they run for the process's life)


def start(settings: Settings) -> None:
    """Start the warm-up and the worker that `settings` ask for, unless this process already has."""
    if settings.warmup:
        _start_once(WARMUP_THREAD, lambda: _warm_up(settings))
    if settings.in_process_worker:
        _start_once(WORKER_THREAD, lambda: _run_worker(settings))


def worker_threads(settings: Settings) -> int | None:
    """Torch CPU threads of the in-process worker: the configured number, or one core fewer than the process may use,
    so the server (pages, polling) keeps a core; None leaves torch's choice (STUDIO_WORKER_THREADS=0)."""
    if settings.worker_threads is not None:
        return settings.worker_threads or None
    return max(1, len(os.sched_getaffinity(0)) - 1)


def _start_once(name: str, target: Callable[[], None]) -> None:
    with _lock:
        if name in _running:
            return
        _running[name] = threading.Thread(target=target, name=name, daemon=True)
        _running[name].start()


def _warm_up(settings: Settings) -> None:
    """Build (preview) and load the configured model, so the first job is fast."""
    try:
        import_model_stack()
        from pipelines.cache import get_base_pipeline
        from pipelines.registry import resolve_model

        get_base_pipeline(resolve_model(settings.model, models_dir=settings.models_dir))
    except Exception:  # the job that needs the model reports the error to its user
        log.exception("Model warm-up failed for %r", settings.model)


def _run_worker(settings: Settings) -> None:
    from studio.jobs.worker import Worker

    worker = Worker(settings, name=f"streamlit:{os.getpid()}", threads=worker_threads(settings))
    worker.run_forever(threading.Event())  # never set: the worker runs as long as the server

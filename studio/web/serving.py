"""The queue worker inside the Streamlit server process, for `python -m studio serve --worker thread` and plain
`streamlit run streamlit_app.py`: the first page view starts it (`start`, from streamlit_app.py), once per process.
README's `python -m studio serve` runs the worker as a process of its own instead, started with the server
(studio.cli.serve), and the server then runs no model at all.
"""

from __future__ import annotations

import os
import threading

from studio.config import Settings

WORKER_THREAD = "queue-worker"

_lock = threading.Lock()
_worker: threading.Thread | None = None  # runs for the process's life


def start(settings: Settings) -> None:
    """Start the in-process worker if `settings` ask for one, unless this process already has."""
    global _worker
    with _lock:
        if settings.in_process_worker and _worker is None:
            _worker = threading.Thread(target=_run_worker, args=(settings,), name=WORKER_THREAD, daemon=True)
            _worker.start()


def _run_worker(settings: Settings) -> None:
    from studio.jobs.worker import Worker, studio_worker_threads

    worker = Worker(settings, name=f"streamlit:{os.getpid()}", threads=studio_worker_threads(settings))
    if settings.warmup:
        worker.warm_up()
    worker.run_forever(threading.Event())  # never set: the worker runs as long as the server

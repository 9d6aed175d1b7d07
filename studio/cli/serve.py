"""`python -m studio serve`: the web studio as README serves it, with its queue worker started at the same time.

It runs `python -m streamlit run streamlit_app.py` from the project folder, so `.streamlit/config.toml` applies (no
file watcher, no garbage collection after every script run: README → Configuration says why, with figures), and
beside it one `python -m studio worker` process, so a job submitted before anyone opens a page (from the command
line, say) runs at once. A worker in a process of its own never shares the server's interpreter lock with the
pages it serves. `--worker thread` keeps the worker in the server process instead (started at the first page view,
as plain `streamlit run streamlit_app.py` does); `--worker none` (or STUDIO_IN_PROCESS_WORKER=0) serves the pages
only, for hosts whose jobs run on worker machines.

This process supervises the two: SIGTERM or Ctrl-C stops both (the worker finishes the job in hand); if the server
exits the worker is stopped; a worker that dies is started again after a pause (its job went back to the queue
when its lease expired).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import threading
from enum import StrEnum

from studio.config import PROJECT_ROOT, get_settings
from studio.jobs.worker import studio_worker_threads

SERVER_SCRIPT = "streamlit_app.py"
# Development mode: Streamlit's file watcher back on, so saving a file offers to rerun the page with the new code.
DEV_OPTIONS = ("--server.fileWatcherType", "auto")
# How long a worker that died waits before it is started again (a worker that cannot start at all retries slowly).
WORKER_RESTART_SECONDS = 5.0
# How long each process may take to stop after SIGTERM (the worker finishes the step in hand and records the stop).
STOP_SECONDS = 30.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class WorkerMode(StrEnum):
    process = "process"  # a `python -m studio worker` beside the server (the default)
    thread = "thread"  # inside the server process, started at the first page view
    none = "none"  # no worker: jobs run on worker processes elsewhere


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve",
        help="serve the web studio (http://localhost:8501) and start its queue worker",
        description="Serve the web studio and start its queue worker with it. Other Streamlit options: "
        ".streamlit/config.toml or STREAMLIT_* environment variables.",
    )
    parser.add_argument("--port", type=int, help="port to listen on (default 8501)")
    parser.add_argument("--address", help="address to listen on (default: every interface)")
    parser.add_argument(
        "--worker",
        choices=[mode.value for mode in WorkerMode],
        help="where the queue worker runs: a process beside the server (default), a thread inside it (started at "
        "the first page view), or none (STUDIO_IN_PROCESS_WORKER=0 means none too)",
    )
    parser.add_argument(
        "--dev",
        action="store_true",
        help="development mode: watch the code and offer to rerun a page when a file is saved (costs the worker "
        "CPU; the worker keeps the code it started with)",
    )
    parser.set_defaults(run=run)


def worker_mode(args: argparse.Namespace, *, studio_runs_a_worker: bool) -> WorkerMode:
    """The --worker given, else a worker process unless the settings say the studio runs none."""
    if args.worker is not None:
        return WorkerMode(args.worker)
    return WorkerMode.process if studio_runs_a_worker else WorkerMode.none


def streamlit_command(args: argparse.Namespace) -> list[str]:
    """The server's command."""
    command = [sys.executable, "-m", "streamlit", "run", SERVER_SCRIPT]
    if args.port is not None:
        command += ["--server.port", str(args.port)]
    if args.address is not None:
        command += ["--server.address", args.address]
    if args.dev:
        command += DEV_OPTIONS
    return command


def worker_command(threads: int | None) -> list[str]:
    """The worker process's command; its torch threads leave the server a core (studio_worker_threads)."""
    command = [sys.executable, "-m", "studio", "worker", "--name", f"serve:{os.getpid()}"]
    return command if threads is None else [*command, "--threads", str(threads)]


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    mode = worker_mode(args, studio_runs_a_worker=settings.in_process_worker)
    # The project folder: `python -m` puts it on the import path and Streamlit reads .streamlit/config.toml there.
    os.chdir(PROJECT_ROOT)
    server_env = os.environ | {"STUDIO_IN_PROCESS_WORKER": "1" if mode is WorkerMode.thread else "0"}
    if mode is not WorkerMode.process:
        sys.stdout.flush()
        os.execve(sys.executable, streamlit_command(args), server_env)  # the same process: signals reach the server
    return Supervisor(streamlit_command(args), worker_command(studio_worker_threads(settings)), server_env).run()


class Supervisor:
    """The server and its worker process: started together, stopped together, the worker restarted if it dies."""

    def __init__(self, server_command: list[str], worker_command: list[str], server_env: dict[str, str]) -> None:
        self.server_command, self.worker_command, self.server_env = server_command, worker_command, server_env
        self.stopping = threading.Event()

    def run(self) -> int:
        previous = {signum: signal.signal(signum, lambda *_: self.stopping.set()) for signum in STOP_SIGNALS}
        # The worker first, so a job already queued starts while the server is still coming up.
        worker = _start(self.worker_command, os.environ)
        server = _start(self.server_command, self.server_env)
        try:
            while not self.stopping.wait(0.5):
                if server.poll() is not None:
                    return server.returncode
                if worker.poll() is not None:
                    print(
                        f"The queue worker exited ({worker.returncode}); starting it again in "
                        f"{WORKER_RESTART_SECONDS:g} s.",
                        file=sys.stderr,
                        flush=True,
                    )
                    if self.stopping.wait(WORKER_RESTART_SECONDS):
                        break
                    worker = _start(self.worker_command, os.environ)
            return 0
        finally:
            _stop(server, worker)
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(command, env=env, preexec_fn=die_with_parent)


def _stop(*processes: subprocess.Popen) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def die_with_parent() -> None:
    """In a child process: receive SIGTERM when the parent dies, however it dies (Linux; elsewhere a no-op), so a
    killed supervisor leaves no server or worker behind."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

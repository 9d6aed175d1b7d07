"""`python -m studio serve`: the web studio as README serves it.

It runs `python -m streamlit run streamlit_app.py` from the project folder, so `.streamlit/config.toml` applies:
no file watcher and no garbage collection after every script run (README → Configuration says why, with figures).
The in-process worker starts at the first page view (studio.web.serving). Serving through `st.App` with a start-up
hook would start it with the server, but in Streamlit 1.67 the first session's forms then lost their slider values
(strength 0.00 in the browser tests), so that waits.
"""

from __future__ import annotations

import argparse
import os
import sys

from studio.config import PROJECT_ROOT

SERVER_SCRIPT = "streamlit_app.py"
# Development mode: Streamlit's file watcher back on, so saving a file offers to rerun the page with the new code.
DEV_OPTIONS = ("--server.fileWatcherType", "auto")


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve",
        help="serve the web studio (http://localhost:8501) with its queue worker",
        description="Serve the web studio with its in-process queue worker, started at the first page view "
        "(STUDIO_IN_PROCESS_WORKER=0: no worker inside). Other Streamlit options: .streamlit/config.toml or "
        "STREAMLIT_* environment variables.",
    )
    parser.add_argument("--port", type=int, help="port to listen on (default 8501)")
    parser.add_argument("--address", help="address to listen on (default: every interface)")
    parser.add_argument(
        "--dev",
        action="store_true",
        help="development mode: watch the code and offer to rerun a page when a file is saved (costs the worker "
        "CPU; the worker keeps the code it started with)",
    )
    parser.set_defaults(run=run)


def streamlit_command(args: argparse.Namespace) -> list[str]:
    """The command `run` replaces this process with."""
    command = [sys.executable, "-m", "streamlit", "run", SERVER_SCRIPT]
    if args.port is not None:
        command += ["--server.port", str(args.port)]
    if args.address is not None:
        command += ["--server.address", args.address]
    if args.dev:
        command += DEV_OPTIONS
    return command


def run(args: argparse.Namespace) -> int:
    command = streamlit_command(args)
    # The project folder: `python -m` puts it on the import path and Streamlit reads .streamlit/config.toml there.
    os.chdir(PROJECT_ROOT)
    sys.stdout.flush()
    os.execv(command[0], command)  # the same process: a signal sent to it reaches the server

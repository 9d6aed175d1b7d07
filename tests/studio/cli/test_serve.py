"""`python -m studio serve`: README's command to serve the studio, its development flag, the worker it starts with
the server, and the places that start the studio the way README says (the browser tests, bench/served.py)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from studio.cli import serve
from studio.cli.main import build_parser
from studio.cli.serve import SERVER_SCRIPT, Supervisor, WorkerMode, streamlit_command, worker_mode
from tests.e2e.support import free_port, serve_command, wait_healthy
from tests.support import ROOT

README = (ROOT / "README.md").read_text()


def command(*argv: str) -> list[str]:
    return streamlit_command(build_parser().parse_args(["serve", *argv]))


@pytest.mark.parametrize(
    ("argv", "studio_runs_a_worker", "expected"),
    [
        ((), True, WorkerMode.process),
        ((), False, WorkerMode.none),  # STUDIO_IN_PROCESS_WORKER=0: the app host of a worker fleet
        (("--worker", "thread"), True, WorkerMode.thread),
        (("--worker", "process"), False, WorkerMode.process),
        (("--worker", "none"), True, WorkerMode.none),
    ],
)
def test_the_worker_runs_beside_the_server_unless_told_otherwise(argv, studio_runs_a_worker, expected):
    args = build_parser().parse_args(["serve", *argv])
    assert worker_mode(args, studio_runs_a_worker=studio_runs_a_worker) is expected


def test_serve_runs_the_server_entry_with_streamlit_and_only_the_options_given():
    assert command() == [sys.executable, "-m", "streamlit", "run", SERVER_SCRIPT]
    assert (ROOT / SERVER_SCRIPT).is_file()
    assert command("--port", "8600", "--address", "127.0.0.1")[5:] == [
        "--server.port",
        "8600",
        "--server.address",
        "127.0.0.1",
    ]


def test_dev_turns_the_file_watcher_back_on():
    assert command("--dev")[5:] == ["--server.fileWatcherType", "auto"]


def test_readme_serves_the_studio_with_serve_and_documents_the_development_flag():
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"^python -m studio serve\s", quick_start, re.MULTILINE)
    assert "python -m studio serve --dev" in README
    assert "streamlit run streamlit_app.py " not in quick_start


def test_the_browser_tests_and_the_benchmark_serve_the_studio_as_readme_says():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import served
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert " ".join(served.SERVE_COMMAND) == "python -m studio serve"
    assert serve_command(8600)[1:] == ["-m", "studio", "serve", "--port", "8600", "--address", "127.0.0.1"]


def test_the_supervisor_starts_a_dead_worker_again_and_stops_both_with_the_server(tmp_path, monkeypatch):
    monkeypatch.setattr(serve, "WORKER_RESTART_SECONDS", 0.1)
    starts = tmp_path / "worker-starts"
    # A worker that dies at once (it records each start), and a server that exits after the worker's third start.
    worker = [sys.executable, "-c", f"open({str(starts)!r}, 'a').write('x')"]
    server = [
        sys.executable,
        "-c",
        f"import pathlib, time\nwhile len(pathlib.Path({str(starts)!r}).read_text() if pathlib.Path({str(starts)!r})"
        ".exists() else '') < 3: time.sleep(0.05)\nraise SystemExit(7)",
    ]
    assert Supervisor(server, worker, dict(os.environ)).run() == 7  # the server's exit status
    assert len(starts.read_text()) >= 3


@pytest.mark.slow
def test_a_job_queued_from_the_command_line_runs_before_anyone_opens_a_page(tmp_path):
    """README's serve on a fresh data folder; no browser, no page view: the worker started with the server runs a job
    the command line queues (`transform --no-worker` only waits). SIGTERM then stops the server and the worker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")} | {
        "STUDIO_DATA_DIR": str(tmp_path / "data"),
        "STUDIO_ADMIN_PASSWORD": "serve-admin-password",
        "STUDIO_WARMUP": "0",
        "OMP_NUM_THREADS": "1",
    }
    source = tmp_path / "source.png"
    Image.new("RGB", (256, 256), (200, 120, 40)).save(source)
    bootstrap = "from studio.accounts.bootstrap import bootstrap; from studio.config import get_settings; "
    subprocess.run([sys.executable, "-c", bootstrap + "bootstrap(get_settings())"], cwd=ROOT, env=env, check=True)
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(serve_command(port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_healthy(f"http://127.0.0.1:{port}", server), (tmp_path / "serve.log").read_text()[-3000:]
        transform = [
            *("-m", "studio", "transform", "--user", "admin", "--prompt", "a lighthouse", "--steps", "4"),
            *("--no-worker", "--output", str(tmp_path / "out"), str(source)),
        ]
        done = subprocess.run([sys.executable, *transform], cwd=ROOT, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "1 complete" in done.stdout
        assert (tmp_path / "out" / "source-img2img.png").is_file()
        children = _children(server.pid)
        assert len(children) == 2  # the server and the worker
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
    for child in children:  # each stops (SIGTERM, then its own shutdown) before the supervisor returns
        assert not Path(f"/proc/{child}").exists() or _state(child) == "Z"
    assert server.returncode == 0


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"

"""The studio as README serves it: what the server runs beside the pages, and the settings that keep the pages from
slowing the in-process worker down (the speed itself is measured by bench/served.py, not here)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

from pipelines.params import Img2ImgParams
from studio.accounts.users import get_user
from studio.config import load_settings
from studio.db.engine import session_for
from studio.db.tables import Job, JobStatus
from studio.errors import ConfigError
from studio.web import serving
from tests.e2e.support import free_port, serve_command, wait_healthy
from tests.studio.jobs.test_worker_processes import submit as submit_as
from tests.support import ADMIN_PASSWORD, ROOT, png_bytes

PARAMS = Img2ImgParams(prompt="served", strength=0.5, steps=4, seed=3)
NO_SECRETS = Path("/nonexistent/secrets.toml")


def test_the_served_config_turns_off_the_file_watcher_and_the_garbage_collection_after_every_run():
    with (ROOT / ".streamlit" / "config.toml").open("rb") as fh:
        config = tomllib.load(fh)
    assert config["server"]["fileWatcherType"] == "none"
    assert config["runner"]["postScriptGC"] is False


def test_the_server_entry_serves_the_studio_with_the_start_up_hook():
    from streamlit.web.server.app_discovery import discover_asgi_app

    assert discover_asgi_app(ROOT / "studio" / "web" / "server.py").is_asgi_app
    # Imported as `streamlit run` does (its folder on the path, a module of its own): the App and its hook.
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import server; print(server.app.script_path); print(server.app._user_lifespan.__module__)",
        ],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": f"{ROOT / 'studio' / 'web'}{os.pathsep}{ROOT}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(ROOT / "streamlit_app.py"), "studio.web.serving"]


@pytest.mark.parametrize(
    ("value", "cores", "expected"),
    [(None, 2, 1), (None, 1, 1), (None, 16, 15), ("0", 2, None), ("3", 2, 3)],
)
def test_the_in_process_worker_leaves_the_server_a_core_unless_told_otherwise(monkeypatch, value, cores, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    env = {} if value is None else {"STUDIO_WORKER_THREADS": value}
    assert serving.worker_threads(load_settings(env, secrets_path=NO_SECRETS)) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STUDIO_WORKER_THREADS", "many"),
        ("STUDIO_WORKER_THREADS", "-1"),
        ("STUDIO_POLL_MAX_SECONDS", "0.5"),
        ("STUDIO_POLL_MAX_SECONDS", "61"),
        ("STUDIO_POLL_MAX_SECONDS", "soon"),
    ],
)
def test_a_bad_worker_thread_count_or_poll_interval_is_refused_by_name(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value}, secrets_path=NO_SECRETS)


def submit(settings) -> Job:
    with session_for(settings.database_url) as session:
        admin = get_user(session=session, username="admin")
    return submit_as(settings, admin, PARAMS)


def wait_until_final(settings, job_id: int, timeout: float) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        with session_for(settings.database_url) as session:
            job = session.get(Job, job_id)
        if job.status.is_final or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def test_the_lifespan_runs_a_queued_job_before_any_page_and_stops_its_worker(studio, studio_settings, monkeypatch):
    job = submit(studio_settings)
    monkeypatch.setenv("STUDIO_IN_PROCESS_WORKER", "1")
    monkeypatch.setenv("STUDIO_WORKER_THREADS", "0")  # torch's choice: leave this test process's threads alone
    serving.get_settings.cache_clear()

    async def serve_until_done() -> Job:
        async with serving.lifespan(None):
            return await asyncio.to_thread(wait_until_final, studio_settings, job.id, 300)

    assert asyncio.run(serve_until_done()).status is JobStatus.complete
    assert not any(thread.name == serving.WORKER_THREAD for thread in threading.enumerate())


@pytest.mark.slow
def test_a_job_submitted_from_the_command_line_runs_with_no_page_ever_opened(tmp_path, shared_models_dir):
    """README's command, then a command-line job that waits for the studio's own worker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")} | {
        "STUDIO_DATA_DIR": str(tmp_path / "data"),
        "STUDIO_MODELS_DIR": str(shared_models_dir),
        "STUDIO_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    source = tmp_path / "in.png"
    source.write_bytes(png_bytes())
    port = free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    server = subprocess.Popen(serve_command(port), cwd=ROOT, env=env, **quiet)
    try:
        # Up means the lifespan has made the schema and the admin.
        assert wait_healthy(f"http://127.0.0.1:{port}", server), f"the studio did not start ({server.poll()})"
        cli = [sys.executable, "-m", "studio", "transform", "--user", "admin", str(source), "--no-worker"]
        done = subprocess.run(
            [*cli, "--output", str(tmp_path / "out"), "--prompt", "no page open", "--steps", "4"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        server.terminate()
        server.wait(60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "out" / "in-img2img.png").is_file()

"""Jobs through the queue and a worker, on the tiny preview model (nothing on the diffusers path patched)."""

import io
import os
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from PIL import Image

import studio.jobs.worker
from pipelines.params import Img2ImgParams
from studio.accounts.users import create_user, get_user
from studio.billing.credits import Account, balance
from studio.billing.pricing import Quality
from studio.catalogue.recipes import read_recipe
from studio.catalogue.requests import custom_request
from studio.config import load_settings
from studio.db.engine import session_for, write_session
from studio.db.tables import Asset, CreditKind, Job, JobStatus, utcnow
from studio.jobs.leases import cancel_job, claim_next
from studio.jobs.queries import get_user_job, list_user_jobs
from studio.jobs.submit import submit_job
from studio.jobs.worker import Worker, studio_worker_threads
from studio.media.storage import AssetStore
from studio.media.validation import validate_image_bytes
from tests.support import job_ledger, png_bytes, reload_job

NO_SECRETS = Path("/nonexistent/secrets.toml")  # settings from the environment given only

DEADLINE_S = 120.0  # what a waiting test allows before it calls a wait lost
PARAMS = Img2ImgParams(prompt="a watercolor shoe", negative_prompt="blurry", strength=0.5, steps=4, seed=7)


@pytest.fixture
def env(studio, studio_settings):
    with session_for(studio_settings.database_url) as session:
        user = get_user(session=session, username="admin")
    return {
        "settings": studio_settings,
        "store": AssetStore(studio_settings.assets_dir),
        "user": user,
        "worker": Worker(studio_settings, name="test-worker", heartbeat_seconds=0.02),
    }


def submit(env, params=PARAMS, quality=Quality.standard, **kwargs):
    with write_session(env["settings"].database_url) as session:
        return submit_job(
            session=session,
            store=env["store"],
            settings=env["settings"],
            user=env["user"],
            upload=validate_image_bytes(png_bytes(256, 384)),
            original_name="shoe.png",
            request=custom_request(settings=env["settings"], params=params, quality=quality),
            **kwargs,
        )


def run(env, params=PARAMS) -> Job:
    job = submit(env, params)
    assert env["worker"].run_once().id == job.id
    return reload(env, job)


def reload(env, job) -> Job:
    return reload_job(env["settings"], job)


def ledger(env, job) -> dict[CreditKind, int]:
    return job_ledger(env["settings"], job)


def user_balance(env) -> int:
    with session_for(env["settings"].database_url) as session:
        return balance(session=session, account=Account(user_id=env["user"].id), now=utcnow())


def test_a_worker_runs_the_job_records_the_result_and_commits_the_charge(env):
    job = run(env)
    assert job.status is JobStatus.complete, job.error
    assert (job.progress_step, job.progress_total) == (2, 2)  # int(4 steps × 0.5)
    assert job.worker == "test-worker" and job.attempt == 1
    with session_for(env["settings"].database_url) as session:
        result = session.get(Asset, job.result_asset_id)
        source = session.get(Asset, job.source_asset_id)
    png = env["store"].read(result.sha256)
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == (256, 384) == (result.width, result.height)
    recipe = read_recipe(png)
    assert recipe == job.recipe
    assert recipe["prompt"] == "a watercolor shoe" and recipe["seed"] == 7 and recipe["quality"] == "standard"
    assert recipe["source_sha256"] == source.sha256 and source.original_name == "shoe.png"
    assert ledger(env, job) == {CreditKind.reserve: -1, CreditKind.commit: 0}
    assert user_balance(env) == 9


def test_same_inputs_and_seed_give_the_same_pixels_and_another_seed_does_not(env):
    first, again = run(env), run(env)
    other = run(env, Img2ImgParams(**{**PARAMS.__dict__, "seed": 8}))
    with session_for(env["settings"].database_url) as session:
        sha = {job.id: session.get(Asset, job.result_asset_id).sha256 for job in (first, again, other)}
    assert sha[first.id] == sha[again.id]  # content-addressed: identical bytes, identical hash
    assert sha[other.id] != sha[first.id]


def test_an_unavailable_model_fails_the_job_and_refunds_it(env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from dataclasses import replace

    env["settings"] = replace(env["settings"], model="nobody/no-such-model")
    env["worker"] = Worker(env["settings"], name="test-worker")
    job = run(env)
    assert job.status is JobStatus.failed
    assert "nobody/no-such-model" in job.error and "not available" in job.error
    assert job.result_asset_id is None and job.finished_at is not None
    assert ledger(env, job) == {CreditKind.reserve: -2, CreditKind.refund: 2}
    assert user_balance(env) == 10


@pytest.mark.parametrize(
    "error",
    [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), RuntimeError("boom")],
    ids=["out-of-memory", "runtime-error"],
)
def test_a_pipeline_error_fails_and_refunds_the_job(env, monkeypatch, error):
    import pipelines.img2img

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(pipelines.img2img, "run_img2img", broken)
    job = run(env)
    assert job.status is JobStatus.failed
    assert ("Ran out of memory" in job.error) if isinstance(error, torch.OutOfMemoryError) else ("boom" in job.error)
    assert ledger(env, job) == {CreditKind.reserve: -1, CreditKind.refund: 1}
    assert user_balance(env) == 10


def test_cancelling_a_running_job_stops_it_at_the_next_step_and_refunds(env):
    params = Img2ImgParams(prompt="slow", strength=1.0, steps=60, seed=1)
    job = submit(env, params, quality=Quality.ultra)
    runner = threading.Thread(target=env["worker"].run_once)
    runner.start()
    deadline = time.monotonic() + 60
    while reload(env, job).progress_step < 1:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.01)
    with write_session(env["settings"].database_url) as session:
        cancel_job(session=session, job_id=job.id, user_id=env["user"].id)
    runner.join(60)
    job = reload(env, job)
    assert job.status is JobStatus.cancelled
    assert job.progress_step < 60
    assert ledger(env, job) == {CreditKind.reserve: -2, CreditKind.refund: 2}


def test_history_lists_only_the_users_own_jobs_newest_first(env):
    with session_for(env["settings"].database_url) as session:
        other = create_user(session=session, username="other", password="other-password", email="o@example.com")
    first, second = run(env), run(env)
    with session_for(env["settings"].database_url) as session:
        rows = list_user_jobs(session=session, user_id=env["user"].id)
        assert [job.id for job, _, _ in rows] == [second.id, first.id]
        assert all(result is not None for _, _, result in rows)
        assert list_user_jobs(session=session, user_id=other.id) == []
        assert get_user_job(session=session, user_id=other.id, job_id=first.id) is None


def test_a_busy_worker_reaps_a_hung_workers_job_on_its_timer(env, monkeypatch):
    """Reaping is not left to the moments between jobs: while this worker is in the middle of a job, the job a
    hung worker holds is put back in the queue as soon as its lease has run out."""
    hung_job, busy_job = submit(env), submit(env)
    with write_session(env["settings"].database_url) as session:
        assert claim_next(session=session, worker="hung").id == hung_job.id
    rendering, release = threading.Event(), threading.Event()

    def long_job(job, **kwargs):
        rendering.set()
        assert release.wait(DEADLINE_S), "the test never released the job"
        raise RuntimeError("released by the test")

    monkeypatch.setattr(studio.jobs.worker, "render_job", long_job)
    worker, stop = Worker(env["settings"], name="busy", reap_seconds=0.01), threading.Event()
    serving = threading.Thread(target=worker.run_forever, args=(stop,), kwargs={"poll_seconds": 0.01}, daemon=True)
    serving.start()
    try:
        assert rendering.wait(DEADLINE_S), "the busy worker never started its job"
        assert reload(env, busy_job).worker == "busy"
        with write_session(env["settings"].database_url) as session:  # the hung worker's lease runs out
            hung = session.get(Job, hung_job.id)
            hung.lease_until = utcnow() - timedelta(seconds=1)
            session.add(hung)
            session.commit()
        deadline = time.monotonic() + DEADLINE_S  # a bound for a broken timer, not a speed requirement
        while reload(env, hung_job).status is not JobStatus.queued:
            assert time.monotonic() < deadline, "nobody reaped the hung worker's job while the other was busy"
            time.sleep(0.01)
        assert reload(env, busy_job).status is JobStatus.processing  # reaped mid-job, not between jobs
        assert (reload(env, hung_job).worker, reload(env, hung_job).attempt) == (None, 1)
    finally:
        stop.set()
        release.set()
        serving.join(DEADLINE_S)
    assert not serving.is_alive()


def test_a_worker_runs_its_jobs_with_the_torch_threads_it_was_given(env, monkeypatch):
    """The in-process worker runs in a thread of the server: the count must hold in that thread."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # set_cpu_threads sets them: restored after the test
        monkeypatch.delenv(name, raising=False)
    job = submit(env)
    before = torch.get_num_threads()
    wanted = before + 1  # not what a new thread would get anyway
    seen: list[int] = []

    def work() -> None:
        Worker(env["settings"], name="threads", threads=wanted).run_once()
        seen.append(torch.get_num_threads())
        torch.set_num_threads(before)  # threads started later take the last count set: give the others theirs

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(300)
    assert seen == [wanted]
    assert reload(env, job).status is JobStatus.complete


@pytest.mark.parametrize(
    ("value", "cores", "expected"),
    [(None, 2, 1), (None, 1, 1), (None, 16, 15), ("0", 2, None), ("3", 2, 3)],
)
def test_the_studios_own_worker_leaves_the_server_a_core_unless_told_otherwise(monkeypatch, value, cores, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    env = {} if value is None else {"STUDIO_WORKER_THREADS": value}
    assert studio_worker_threads(load_settings(env, secrets_path=NO_SECRETS)) == expected

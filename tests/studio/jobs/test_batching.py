"""Compatible jobs of any users claimed together (STUDIO_BATCH_MAX) and run in one batched loop on the tiny preview
model; each job keeps its own lease, cancel, charge or refund, and result."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

import studio.jobs.worker
from pipelines.params import Img2ImgParams
from studio.accounts.users import create_user, get_user
from studio.billing.credits import Account, adjust
from studio.billing.pricing import Quality
from studio.catalogue.recipes import read_recipe
from studio.catalogue.requests import custom_request
from studio.config import load_settings
from studio.db.engine import session_for, write_session
from studio.db.tables import Asset, CreditKind, Job, JobStatus, utcnow
from studio.errors import ConfigError
from studio.jobs.batching import claim_key
from studio.jobs.heartbeats import current_batches, workers
from studio.jobs.leases import cancel_job, claim_batch, reap_expired, renew_lease
from studio.jobs.submit import submit_job
from studio.jobs.worker import Worker
from studio.media.storage import AssetStore
from studio.media.validation import validate_image_bytes
from tests.support import job_ledger, png_bytes, reload_job, result_pixels

PARAMS = Img2ImgParams(prompt="a watercolor shoe", negative_prompt="blurry", strength=0.5, steps=4, seed=7)
DEADLINE_S = 120.0  # what a waiting test allows before it calls a wait lost


@pytest.fixture
def env(studio, studio_settings):
    settings = replace(studio_settings, batch_max=4)
    with session_for(settings.database_url) as session:
        admin = get_user(session=session, username="admin")
        users = []
        for name in ("ann", "bob"):
            user = create_user(session=session, username=name, password="password-123", email=f"{name}@x.org")
            adjust(
                session=session,
                account=Account(user_id=user.id),
                amount=100,
                reason="tests",
                actor_id=admin.id,
                now=utcnow(),
            )
            users.append(user)
        session.commit()
        for user in users:
            session.refresh(user)
    return {"settings": settings, "store": AssetStore(settings.assets_dir), "users": users}


def submit(env, user, params=PARAMS, size=(256, 384), color=(200, 80, 40)) -> Job:
    with write_session(env["settings"].database_url) as session:
        return submit_job(
            session=session,
            store=env["store"],
            settings=env["settings"],
            user=user,
            upload=validate_image_bytes(png_bytes(*size, color=color)),
            original_name="shoe.png",
            request=custom_request(settings=env["settings"], params=params, quality=Quality.standard),
        )


def claim(env, worker="w", batch_max=4) -> list[int]:
    with write_session(env["settings"].database_url) as session:
        key = claim_key(session=session, settings=env["settings"])
        return [job.id for job in claim_batch(session=session, worker=worker, batch_max=batch_max, batch_key=key)]


def reload(env, job) -> Job:
    return reload_job(env["settings"], job)


def ledger(env, job) -> dict[CreditKind, int]:
    return job_ledger(env["settings"], job)


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("4", 4), ("16", 16)])
def test_batch_max_is_read_and_unset_means_chosen_by_the_device(tmp_path, value, expected):
    environ = {"STUDIO_DATA_DIR": str(tmp_path)} | ({"STUDIO_BATCH_MAX": value} if value else {})
    assert load_settings(environ, secrets_path=Path("/nonexistent")).batch_max == expected


@pytest.mark.parametrize("value", ["0", "17", "four", "-1"])
def test_a_bad_batch_max_is_refused_by_name(tmp_path, value):
    environ = {"STUDIO_DATA_DIR": str(tmp_path), "STUDIO_BATCH_MAX": value}
    with pytest.raises(ConfigError, match="STUDIO_BATCH_MAX must be a whole number 1–16"):
        load_settings(environ, secrets_path=Path("/nonexistent"))


@pytest.mark.both_databases
def test_the_models_page_batch_is_the_jobs_a_worker_holds_with_its_limit(env, monkeypatch):
    """While a batch runs, its worker's heartbeat carries its STUDIO_BATCH_MAX and the leases name its jobs and their
    owners; once the batch ends the worker holds none."""
    ann, bob = env["users"]
    jobs = [submit(env, ann), submit(env, bob, replace(PARAMS, prompt="a cat"))]
    worker = Worker(env["settings"], name="gpu-0", heartbeat_seconds=0.02)
    real = studio.jobs.worker.render_batch
    seen: list = []

    def look_while_running(batch, **kwargs):
        worker.beat()
        with session_for(env["settings"].database_url) as session:
            [state] = workers(session=session)
            seen.append((state.row.batch_max, state.row.batch_basis, current_batches(session=session, names=["gpu-0"])))
        return real(batch, **kwargs)

    monkeypatch.setattr(studio.jobs.worker, "render_batch", look_while_running)
    worker.run_once()
    [(batch_max, basis, batches)] = seen
    assert (batch_max, basis) == (4, "STUDIO_BATCH_MAX")
    assert [(row["job"], row["user"], row["style"], row["model"]) for row in batches["gpu-0"]] == [
        (jobs[0].id, "ann", "own settings", "preview"),
        (jobs[1].id, "bob", "own settings", "preview"),
    ]
    with session_for(env["settings"].database_url) as session:
        assert current_batches(session=session, names=["gpu-0", "idle"]) == {"gpu-0": [], "idle": []}


def test_unset_on_a_cpu_a_worker_runs_one_job_at_a_time_and_says_why(env):
    ann, bob = env["users"]
    first, second = submit(env, ann), submit(env, bob)
    worker = Worker(replace(env["settings"], batch_max=None), name="cpu-0", heartbeat_seconds=0.02)
    assert worker.run_once().id == first.id
    assert (reload(env, first).status, reload(env, second).status) == (JobStatus.complete, JobStatus.queued)
    worker.beat()
    with session_for(env["settings"].database_url) as session:
        [state] = workers(session=session)
    assert state.row.batch_max == 1
    assert state.row.batch_basis.startswith(("cpu: one at a time", "one at a time until a run"))


@pytest.mark.both_databases
def test_compatible_jobs_of_any_users_are_claimed_together_and_never_past_an_incompatible_one(env):
    ann, bob = env["users"]
    first = submit(env, ann)
    second = submit(env, bob, replace(PARAMS, prompt="a cat", strength=1.0, seed=3), color=(10, 200, 30))
    other_size = submit(env, ann, size=(512, 768))
    other_steps = submit(env, bob, replace(PARAMS, steps=5))
    behind = submit(env, ann)  # compatible with the first two, but behind jobs that are not: it waits its turn
    assert claim(env, worker="w1") == [first.id, second.id]
    assert claim(env, worker="w2") == [other_size.id]
    assert claim(env, worker="w3") == [other_steps.id]
    assert claim(env, worker="w4") == [behind.id]
    jobs = [reload(env, job) for job in (first, second, other_size, other_steps, behind)]
    assert [(job.status, job.worker, job.attempt) for job in jobs] == [
        (JobStatus.processing, worker, 1) for worker in ("w1", "w1", "w2", "w3", "w4")
    ]


def test_a_job_with_loras_runs_alone(env):
    """Its LoRAs would be switched on for every member of a shared loop."""
    ann, bob = env["users"]
    first, with_lora, third = submit(env, ann), submit(env, bob), submit(env, ann)
    with write_session(env["settings"].database_url) as session:
        job = session.get(Job, with_lora.id)
        job.params = {**job.params, "loras": [{"name": "brand", "sha256": "0" * 64, "weight": 0.8}]}
        session.commit()
    assert claim(env, worker="w1") == [first.id]
    assert claim(env, worker="w2") == [with_lora.id]
    assert claim(env, worker="w3") == [third.id]


def test_with_batch_max_one_each_claim_takes_one_job(env):
    ann, bob = env["users"]
    jobs = [submit(env, ann), submit(env, bob)]
    assert [claim(env, batch_max=1), claim(env, batch_max=1)] == [[jobs[0].id], [jobs[1].id]]


def test_a_batch_runs_in_one_loop_each_job_charged_once_and_within_1_of_255_of_its_run_alone(env):
    ann, bob = env["users"]
    jobs = [
        submit(env, ann),
        submit(env, bob, replace(PARAMS, prompt="a cat", strength=1.0, guidance=1.0, seed=3), color=(10, 200, 30)),
        submit(env, ann, replace(PARAMS, negative_prompt="", strength=0.75, seed=9), color=(90, 90, 200)),
    ]
    worker = Worker(env["settings"], name="batcher", heartbeat_seconds=0.02)
    assert worker.run_once().id == jobs[0].id
    batched = [reload(env, job) for job in jobs]
    # The same jobs one at a time, for their pixels.
    alone_worker = Worker(replace(env["settings"], batch_max=1), name="alone", heartbeat_seconds=0.02)
    again = [
        submit(env, ann),
        submit(env, bob, replace(PARAMS, prompt="a cat", strength=1.0, guidance=1.0, seed=3), color=(10, 200, 30)),
        submit(env, ann, replace(PARAMS, negative_prompt="", strength=0.75, seed=9), color=(90, 90, 200)),
    ]
    for _ in again:
        assert alone_worker.run_once() is not None
    for job, single in zip(batched, [reload(env, job) for job in again], strict=True):
        assert job.status is JobStatus.complete and job.attempt == 1, job.error
        assert job.progress_step == job.progress_total == single.progress_total > 0
        assert ledger(env, job) == {CreditKind.reserve: -job.cost, CreditKind.commit: 0}
        assert job.recipe["batch"] == {"jobs": 3, "mode": "one-pass"} and "batch" not in single.recipe
        with session_for(env["settings"].database_url) as session:
            png = env["store"].read(session.get(Asset, job.result_asset_id).sha256)
        assert read_recipe(png) == job.recipe
        difference = np.abs(result_pixels(env["settings"], job).astype(int) - result_pixels(env["settings"], single))
        assert difference.max() <= 1


def test_a_member_cancelled_mid_batch_is_refunded_once_and_the_others_complete(env, monkeypatch):
    ann, bob = env["users"]
    jobs = [submit(env, ann), submit(env, bob, replace(PARAMS, strength=1.0)), submit(env, ann)]
    real = studio.jobs.worker.render_batch
    done: list[int] = []

    def cancel_after_first_step(batch, *, on_step, should_stop, **kwargs):
        def progress(member, step, total):
            on_step(member, step, total)
            if member == 1:
                done.append(step)

        def stop(member):
            if member == 1 and done == [1]:
                # Bob cancels after his job's first step; wait for its lease keeper to hear of it.
                done.append(-1)
                with write_session(env["settings"].database_url) as session:
                    cancel_job(session=session, job_id=batch[1].id, user_id=bob.id)
                deadline = time.monotonic() + DEADLINE_S
                while not should_stop(1):
                    assert time.monotonic() < deadline, "the cancel never reached the worker"
                    time.sleep(0.01)
            return should_stop(member)

        return real(batch, on_step=progress, should_stop=stop, **kwargs)

    monkeypatch.setattr(studio.jobs.worker, "render_batch", cancel_after_first_step)
    Worker(env["settings"], name="batcher", heartbeat_seconds=0.02).run_once()
    first, cancelled, third = (reload(env, job) for job in jobs)
    assert cancelled.status is JobStatus.cancelled and cancelled.progress_step == 1
    assert ledger(env, cancelled) == {CreditKind.reserve: -cancelled.cost, CreditKind.refund: cancelled.cost}
    for job in (first, third):
        assert job.status is JobStatus.complete, job.error
        assert ledger(env, job) == {CreditKind.reserve: -job.cost, CreditKind.commit: 0}


@pytest.mark.both_databases
def test_a_worker_killed_mid_batch_has_every_job_rerun_once_and_charged_once(env):
    ann, bob = env["users"]
    jobs = [submit(env, ann), submit(env, bob), submit(env, ann)]
    assert claim(env, worker="dies") == [job.id for job in jobs]
    with write_session(env["settings"].database_url) as session:
        renew_lease(session=session, job_id=jobs[0].id, worker="dies", attempt=1, step=1, total=2)
    # Its leases run out: every job goes back to the queue.
    with write_session(env["settings"].database_url) as session:
        reaped = reap_expired(session=session, now=utcnow() + timedelta(minutes=5))
    assert sorted(job.id for job in reaped) == [job.id for job in jobs]
    Worker(env["settings"], name="survivor", heartbeat_seconds=0.02).run_once()
    for job in (reload(env, job) for job in jobs):
        assert (job.status, job.worker, job.attempt) == (JobStatus.complete, "survivor", 2), job.error
        assert ledger(env, job) == {CreditKind.reserve: -job.cost, CreditKind.commit: 0}
    # The dead worker's late report changes nothing (fenced by its attempt).
    with write_session(env["settings"].database_url) as session:
        assert not renew_lease(session=session, job_id=jobs[0].id, worker="dies", attempt=1, step=2, total=2).held


def test_a_batch_that_fails_as_a_whole_runs_its_jobs_one_at_a_time(env, monkeypatch):
    import pipelines.batch

    def broken(*args, **kwargs):
        raise RuntimeError("out of something")

    monkeypatch.setattr(pipelines.batch, "run_batch", broken)
    ann, bob = env["users"]
    jobs = [submit(env, ann), submit(env, bob)]
    Worker(env["settings"], name="batcher", heartbeat_seconds=0.02).run_once()
    for job in (reload(env, job) for job in jobs):
        assert job.status is JobStatus.complete and "batch" not in job.recipe, job.error
        assert ledger(env, job) == {CreditKind.reserve: -job.cost, CreditKind.commit: 0}

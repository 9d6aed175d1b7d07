"""Scale-out on PostgreSQL: four `python -m studio worker` processes, 200 jobs on the tiny model, one worker
SIGKILLed mid-job and one SIGSTOPped past its lease and resumed. No job completes twice, none is lost, and
every credit is accounted for in the ledger. Skips (with the reason) where PostgreSQL is unavailable.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import select

from pipelines.params import Img2ImgParams
from studio.accounts.users import create_user
from studio.billing.credits import Account, adjust, balance, ledger_sum
from studio.billing.pricing import Quality
from studio.catalogue.requests import custom_request
from studio.config import Settings
from studio.db.engine import session_for, write_session
from studio.db.tables import Asset, AssetKind, CreditEntry, CreditKind, Job, JobStatus, User, utcnow
from studio.jobs.submit import submit_job
from studio.media.storage import AssetStore
from studio.media.validation import validate_image_bytes
from tests.studio.jobs.test_worker_processes import Workers
from tests.support import png_bytes

JOBS = 200
WORKERS = ("w1", "w2", "w3", "w4")
# Long enough that a worker starved of CPU on a busy machine still renews its lease (a lost lease is correct, but
# three in a row fail the job); the frozen worker's job is waited for, not timed, so a longer lease costs only
# its own length.
LEASE_S = 20.0
# How long any wait here may take before the test calls it a bug (a queue that never drains, a job never reaped),
# not a speed requirement: 200 tiny jobs take ~2 min on 2 idle cores, and many times that on a busy machine.
WAIT_S = 1800
# The smallest real job: a 256×256 source (the upload minimum), 2 denoising steps on the tiny model.
PARAMS = Img2ImgParams(prompt="a quick sketch", strength=0.5, steps=4, seed=0)


@pytest.fixture
def db_backend() -> str:
    return "postgresql"


@pytest.fixture
def workers(studio, studio_settings: Settings, tmp_path: Path, preview) -> Iterator[Workers]:
    started = Workers(studio_settings, tmp_path)
    try:
        yield started
    finally:
        for proc in started.procs.values():  # a stopped worker cannot die until it is continued
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
        started.kill_all()


def fill_queue(settings: Settings) -> tuple[int, int, list[int]]:
    """Queue JOBS jobs for a new user given enough credits; (user id, their credits before, job ids)."""
    store = AssetStore(settings.assets_dir)
    upload = validate_image_bytes(png_bytes(256, 256))
    with session_for(settings.database_url) as session:
        user = create_user(session=session, username="painter", password="painter-password", email="p@example.com")
        admin = session.exec(select(User).where(User.username == "admin")).one()
        adjust(
            session=session,
            account=Account(user_id=user.id),
            amount=JOBS,
            reason="scale test",
            actor_id=admin.id,
            now=utcnow(),
        )
        session.commit()
        initial = ledger_sum(session=session, account=Account(user_id=user.id))
    ids = []
    for seed in range(JOBS):
        with write_session(settings.database_url) as session:
            params = Img2ImgParams(**{**PARAMS.__dict__, "seed": seed})
            request = custom_request(settings=settings, params=params, quality=Quality.standard)
            job = submit_job(
                session=session,
                store=store,
                settings=settings,
                user=session.get(User, user.id),
                upload=upload,
                original_name="photo.png",
                request=request,
            )
            ids.append(job.id)
    return user.id, initial, ids


def held_by(settings: Settings, worker: str) -> Job | None:
    with session_for(settings.database_url) as session:
        return session.exec(select(Job).where(Job.status == JobStatus.processing, Job.worker == worker)).first()


def freeze_holding_a_job(workers: Workers, settings: Settings, name: str) -> Job:
    """SIGSTOP the worker while it holds a job (it may end one between a look and the signal: then it is continued
    and the next one is waited for); the job it holds, frozen."""
    proc = workers.procs[name]
    while True:
        workers.wait_until(lambda: held_by(settings, name) is not None, f"{name} to hold a job", timeout=WAIT_S)
        workers.stopped.add(name)
        proc.send_signal(signal.SIGSTOP)
        workers.wait_until(lambda: process_state(proc.pid) == "T", f"{name} to stop", timeout=WAIT_S)
        if (frozen := held_by(settings, name)) is not None:
            return frozen
        proc.send_signal(signal.SIGCONT)
        workers.stopped.discard(name)


def process_state(pid: int) -> str:
    """The state letter of a Linux process (T: stopped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def reaped(settings: Settings, job: Job) -> bool:
    """Whether `job`'s lease was taken from the worker that held it (it is queued again, or rerun, or ended)."""
    with session_for(settings.database_url) as session:
        now = session.get(Job, job.id)
        return now.attempt > job.attempt or now.status is not JobStatus.processing


def unfinished(settings: Settings) -> int:
    with session_for(settings.database_url) as session:
        return session.exec(
            select(func.count()).select_from(Job).where(Job.status.in_([JobStatus.queued, JobStatus.processing]))
        ).one()


@pytest.mark.slow
def test_four_workers_200_jobs_one_killed_one_stopped_past_its_lease(workers: Workers, studio_settings) -> None:
    settings = studio_settings
    assert settings.database_url.startswith("postgresql")
    user_id, initial, job_ids = fill_queue(settings)
    with session_for(settings.database_url) as session:
        costs = {job.id: job.cost for job in session.exec(select(Job)).all()}
    started = time.monotonic()
    for name in WORKERS:
        workers.start(name, "--lease", str(LEASE_S), "--poll", "0.1")

    # SIGKILL w1 while it holds a job: the job must be reaped after the lease and rerun elsewhere.
    workers.wait_until(lambda: held_by(settings, "w1") is not None, "w1 to hold a job", timeout=WAIT_S)
    assert workers.stop("w1", signal.SIGKILL) == -signal.SIGKILL
    killed = held_by(settings, "w1")

    # SIGSTOP w2 while it holds a job, until another worker has reaped the job (their reaper timers run while
    # they are busy, so this does not wait for one of them to finish a job); then SIGCONT: whatever w2 reports
    # for it now is discarded (its lease is lost). Waiting for the reap, not for a time, keeps this exact on a
    # busy machine.
    frozen = freeze_holding_a_job(workers, settings, "w2")
    workers.wait_until(
        lambda: reaped(settings, frozen), f"another worker to reap w2's job #{frozen.id}", timeout=WAIT_S
    )
    workers.procs["w2"].send_signal(signal.SIGCONT)
    workers.stopped.discard("w2")

    workers.wait_until(lambda: unfinished(settings) == 0, f"all {JOBS} jobs to end", timeout=WAIT_S)
    elapsed = time.monotonic() - started
    for name in WORKERS[1:]:
        assert workers.stop(name, signal.SIGTERM) == 0, workers.logs()

    with session_for(settings.database_url) as session:
        jobs = {job.id: job for job in session.exec(select(Job)).all()}
        entries = session.exec(select(CreditEntry).where(CreditEntry.user_id == user_id)).all()
        results = session.exec(select(Asset).where(Asset.kind == AssetKind.result)).all()
        account = Account(user_id=user_id)
        final_sum = ledger_sum(session=session, account=account)
        final_balance = balance(session=session, account=account, now=utcnow())

    # None lost, none completed twice: every job complete, with exactly one result row and one commit.
    assert sorted(jobs) == sorted(job_ids)
    assert Counter(job.status for job in jobs.values()) == {JobStatus.complete: JOBS}, workers.logs()
    assert len(results) == JOBS and {a.id for a in results} == {job.result_asset_id for job in jobs.values()}
    per_job = Counter((entry.job_id, entry.kind) for entry in entries if entry.job_id is not None)
    for job_id in job_ids:
        assert per_job[(job_id, CreditKind.reserve)] == 1 and per_job[(job_id, CreditKind.commit)] == 1
        assert per_job[(job_id, CreditKind.refund)] == 0
    # Every credit accounted for: the user paid exactly the prices of the 200 jobs, once.
    assert final_sum == final_balance == initial - sum(costs.values())
    assert sum(e.amount for e in entries if e.kind is CreditKind.reserve) == -sum(costs.values())

    # The killed and the frozen workers' jobs were rerun by someone else, not completed by them.
    if killed is not None:
        assert jobs[killed.id].attempt >= 2 and jobs[killed.id].worker != "w1"
    rerun = jobs[frozen.id]
    assert rerun.attempt >= 2, workers.logs()
    assert "lease lost" in workers.log("w2") or rerun.worker == "w2", workers.logs()
    done_by = Counter(job.worker for job in jobs.values())
    assert set(done_by) >= {"w3", "w4"}
    print(f"\n{JOBS} jobs, 4 workers on PostgreSQL: {elapsed:.1f} s; completed by {dict(done_by)}")

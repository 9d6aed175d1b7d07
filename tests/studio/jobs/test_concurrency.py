"""Concurrent submits and claims against one database (SQLite file and PostgreSQL), from threads and processes.

A user with exactly 10 credits (the trial) and jobs costing 1 credit each can get exactly 10 jobs,
however many writers race for them; every other submit is refused with Refused, never with
"database is locked" (write_session takes the write lock up front and waits up to 30 s for it).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import sys
import threading
import types
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func
from sqlmodel import select

from pipelines.params import Img2ImgParams
from studio.accounts.users import create_user
from studio.billing.credits import Account, adjust, balance, ledger_sum
from studio.billing.plans import TRIAL_CREDITS
from studio.billing.pricing import Quality
from studio.catalogue.requests import custom_request
from studio.config import Settings
from studio.db.engine import session_for, write_session
from studio.db.tables import CreditEntry, CreditKind, Job, JobStatus, Plan, Team, User, utcnow
from studio.errors import Refused
from studio.jobs.leases import claim_next
from studio.jobs.submit import submit_job
from studio.media.storage import AssetStore
from studio.media.validation import ValidatedImage, validate_image_bytes
from tests.studio.jobs._concurrency_child import submit_many
from tests.support import png_bytes

pytestmark = pytest.mark.both_databases

PARAMS = Img2ImgParams(prompt="a watercolor shoe", strength=0.5, steps=4)
PNG = png_bytes(256, 256)  # 256×256 on the preview model at standard quality: 1 credit


@pytest.fixture
def upload() -> ValidatedImage:
    return validate_image_bytes(PNG)


def make_user(settings: Settings, username: str, plan: Plan = Plan.free) -> int:
    with session_for(settings.database_url) as session:
        user = create_user(session=session, username=username, password="password-123", email=f"{username}@x.org")
        if plan is not Plan.free:
            user.plan = plan
            session.add(user)
            session.commit()
        return user.id


def submit(settings: Settings, user_id: int, upload: ValidatedImage) -> Job:
    """One submit in its own write transaction, the way one page run does it."""
    with write_session(settings.database_url) as session:
        user = session.get(User, user_id)
        return submit_job(
            session=session,
            store=AssetStore(settings.assets_dir),
            settings=settings,
            user=user,
            upload=upload,
            original_name="shoe.png",
            request=custom_request(settings=settings, params=PARAMS, quality=Quality.standard),
        )


def assert_spent_exactly_the_trial(settings: Settings, user_id: int, job_ids: list[int]) -> None:
    assert len(job_ids) == len(set(job_ids)) == TRIAL_CREDITS
    account = Account(user_id=user_id)
    with session_for(settings.database_url) as session:
        jobs = session.exec(select(Job).where(Job.user_id == user_id)).all()
        assert sorted(job.id for job in jobs) == sorted(job_ids)
        assert all(job.status is JobStatus.queued and job.cost == 1 for job in jobs)
        assert balance(session=session, account=account, now=utcnow()) == 0
        assert ledger_sum(session=session, account=account) == 0
        reserved = session.exec(
            select(CreditEntry.job_id, func.sum(CreditEntry.amount))
            .where(CreditEntry.user_id == user_id, CreditEntry.kind == CreditKind.reserve)
            .group_by(CreditEntry.job_id)
        ).all()
        assert dict(reserved) == {job_id: -1 for job_id in job_ids}  # one credit from each job, no more
        # The only rows: the trial grant and one reserve per job.
        assert session.exec(select(func.count()).select_from(CreditEntry).where(*account.where())).one() == 11


def test_threads_racing_to_submit_get_exactly_the_credits_there_are(studio, studio_settings, upload):
    threads, attempts = 8, 5
    user_id = make_user(studio_settings, "racer")
    start = threading.Barrier(threads)

    def run() -> tuple[list[int], list[str], list[str]]:
        ok, refused, errors = [], [], []
        start.wait()
        for _ in range(attempts):
            try:
                ok.append(submit(studio_settings, user_id, upload).id)
            except Refused as exc:
                refused.append(str(exc))
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
        return ok, refused, errors

    with ThreadPoolExecutor(threads) as pool:
        outcomes = [future.result(timeout=120) for future in [pool.submit(run) for _ in range(threads)]]

    errors = [error for _, _, errs in outcomes for error in errs]
    assert not errors, errors
    job_ids = [job_id for ok, _, _ in outcomes for job_id in ok]
    refused = [message for _, refs, _ in outcomes for message in refs]
    assert len(job_ids) + len(refused) == threads * attempts
    assert all("Not enough credits" in message for message in refused)
    assert_spent_exactly_the_trial(studio_settings, user_id, job_ids)


def test_team_members_racing_to_submit_never_take_the_team_over_its_budget(studio, studio_settings, upload):
    # Two members with 10 credits each, a team budget of 5: without the team row lock (PostgreSQL),
    # concurrent submits each see the same spend and several squeeze in past the limit.
    threads, attempts, budget = 8, 3, 5
    with session_for(studio_settings.database_url) as session:
        team = Team(name="racers", monthly_budget=budget)
        session.add(team)
        session.commit()
        team_id = team.id
    members = []
    for name in ("racer-a", "racer-b"):
        user_id = make_user(studio_settings, name)
        with session_for(studio_settings.database_url) as session:
            user = session.get(User, user_id)
            user.team_id = team_id
            session.add(user)
            session.commit()
        members.append(user_id)
    start = threading.Barrier(threads)

    def run(user_id: int) -> tuple[list[int], list[str]]:
        ok, errors = [], []
        start.wait()
        for _ in range(attempts):
            try:
                ok.append(submit(studio_settings, user_id, upload).id)
            except Refused as exc:
                if "budget" not in str(exc):
                    errors.append(str(exc))
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
        return ok, errors

    with ThreadPoolExecutor(threads) as pool:
        outcomes = [f.result(timeout=120) for f in [pool.submit(run, members[n % 2]) for n in range(threads)]]
    assert not [error for _, errors in outcomes for error in errors]
    job_ids = [job_id for ok, _ in outcomes for job_id in ok]
    assert len(job_ids) == len(set(job_ids)) == budget
    with session_for(studio_settings.database_url) as session:
        spent = session.exec(select(func.sum(Job.cost)).where(Job.team_id == team_id)).one()
    assert spent == budget


def test_processes_racing_to_submit_get_exactly_the_credits_there_are(studio, studio_settings, tmp_path, monkeypatch):
    processes, attempts = 4, 6
    user_id = make_user(studio_settings, "racer")
    broke_id = make_user(studio_settings, "broke")
    with write_session(studio_settings.database_url) as session:
        admin = session.exec(select(User).where(User.username == "admin")).one()
        adjust(
            session=session,
            account=Account(user_id=broke_id),
            amount=-10,
            reason="test",
            actor_id=admin.id,
            now=utcnow(),
        )
        session.commit()
    env = {name: value for name, value in os.environ.items() if name.startswith("STUDIO_")}
    # "spawn" re-runs the parent's __main__ file in each child; after an AppTest in the same pytest
    # process that is streamlit_app.py. Children need only tests.studio.jobs._concurrency_child.
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    context = multiprocessing.get_context("spawn")
    ready, results, start = context.Queue(), context.Queue(), context.Event()
    children = [
        context.Process(
            target=submit_many,
            args=(env, str(tmp_path / "no-secrets.toml"), user_id, broke_id, attempts, PNG, ready, start, results),
        )
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    try:
        for _ in children:  # all imported and connected: now they race
            ready.get(timeout=60)
        start.set()
        outcomes = [results.get(timeout=120) for _ in children]
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
    assert [child.exitcode for child in children] == [0] * processes
    assert {outcome["database_url"] for outcome in outcomes} == {studio_settings.database_url}
    errors = [error for outcome in outcomes for error in outcome["errors"]]
    assert not errors, errors
    job_ids = [job_id for outcome in outcomes for job_id in outcome["ok"]]
    refused = [message for outcome in outcomes for message in outcome["refused"]]
    assert len(job_ids) + len(refused) == processes * attempts
    assert all("Not enough credits" in message for message in refused)
    assert_spent_exactly_the_trial(studio_settings, user_id, job_ids)


def queue_key(job: Job) -> tuple[int, int]:
    return (-job.priority, job.id)  # what claim_next takes first: highest priority, then oldest


def test_concurrent_claims_take_every_job_once_in_queue_order(studio, studio_settings, upload):
    free_id = make_user(studio_settings, "free-user")
    pro_id = make_user(studio_settings, "pro-user", Plan.pro_monthly)
    for _ in range(10):  # interleaved, so FIFO and priority disagree on every other job
        submit(studio_settings, free_id, upload)
        submit(studio_settings, pro_id, upload)
    with session_for(studio_settings.database_url) as session:
        queued = session.exec(select(Job).where(Job.status == JobStatus.queued)).all()
    assert len(queued) == 20 and {job.priority for job in queued} == {0, 1}

    threads = 4
    start = threading.Barrier(threads)
    overtaken: queue.Queue[str] = queue.Queue()

    def run(worker: str) -> list[Job]:
        claimed: list[Job] = []
        start.wait()
        while True:
            with write_session(studio_settings.database_url) as session:
                job = claim_next(session=session, worker=worker)
            if job is None:
                return claimed
            claimed.append(job)
            # The queue only shrinks, so once this claim committed no job it should have come
            # after can still be queued — except one another worker is claiming right now: on
            # PostgreSQL a claim skips rows locked by a concurrent claim (SKIP LOCKED), so skip them too.
            with write_session(studio_settings.database_url) as session:
                ahead = session.exec(
                    select(Job)
                    .where(
                        Job.status == JobStatus.queued,
                        (Job.priority > job.priority) | ((Job.priority == job.priority) & (Job.id < job.id)),
                    )
                    .with_for_update(skip_locked=True)
                ).all()
                session.rollback()
            if ahead:
                overtaken.put(f"{worker} claimed #{job.id} while #{[j.id for j in ahead]} were ahead of it")

    with ThreadPoolExecutor(threads) as pool:
        futures = {f"worker-{n}": pool.submit(run, f"worker-{n}") for n in range(threads)}
        claims = {worker: future.result(timeout=120) for worker, future in futures.items()}

    assert overtaken.empty(), list(overtaken.queue)
    claimed_ids = [job.id for jobs in claims.values() for job in jobs]
    assert sorted(claimed_ids) == sorted(job.id for job in queued)  # each exactly once, none left behind
    for worker, jobs in claims.items():
        keys = [queue_key(job) for job in jobs]
        assert keys == sorted(keys), f"{worker} claimed out of queue order: {keys}"
        assert all(job.worker == worker and job.attempt == 1 for job in jobs)
    with session_for(studio_settings.database_url) as session:
        rows = session.exec(select(Job)).all()
        assert all(row.status is JobStatus.processing and row.attempt == 1 for row in rows)
        owner = {job.id: worker for worker, jobs in claims.items() for job in jobs}
        assert {row.id: row.worker for row in rows} == owner

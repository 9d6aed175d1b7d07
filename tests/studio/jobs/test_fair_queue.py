"""The fair queue (studio.jobs.fair_queue) on SQLite and PostgreSQL: lanes, rounds between users, the per-user
limit, truthful queue positions, and claims and submits that walk indexes. No diffusion: jobs are claimed only.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, insert, text
from sqlmodel import func, select

from pipelines.params import Img2ImgParams
from studio.accounts.users import create_user, get_user
from studio.billing.credits import Account, adjust, balance
from studio.billing.pricing import Quality
from studio.catalogue.requests import custom_request
from studio.config import Settings
from studio.db.engine import get_engine, session_for, write_session
from studio.db.tables import Asset, CreditEntry, Job, JobStatus, Plan, User
from studio.errors import Refused
from studio.jobs.leases import claim_next, claimed_sweep, queue_position, reap_expired
from studio.jobs.submit import submit_batch, submit_job, submit_sweep
from studio.media.staging import StagedImage, stage
from studio.media.storage import AssetStore
from studio.media.validation import validate_image_bytes
from tests.support import png_bytes

pytestmark = pytest.mark.both_databases

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
WORKERS = 4
UPLOAD = validate_image_bytes(png_bytes(256, 256))
PARAMS = Img2ImgParams(prompt="x", strength=0.5, steps=4)


class Queue:
    """Users, submits and claims against the test's database (the way pages, the CLI and workers call them)."""

    def __init__(self, settings: Settings, staging: Path) -> None:
        self.settings, self.url = settings, settings.database_url
        self.store, self.staging = AssetStore(settings.assets_dir), AssetStore(staging)
        self.request = custom_request(settings=settings, params=PARAMS, quality=Quality.standard)
        self.claims = 0

    def user(self, name: str, plan: Plan = Plan.pro_monthly) -> User:
        with session_for(self.url) as session:
            user = create_user(session=session, username=name, password="password-123", email=f"{name}@x.org")
            user.plan = plan
            session.add(user)
            admin = get_user(session=session, username="admin")
            account = Account(user_id=user.id)
            adjust(session=session, account=account, amount=5000, reason="tests", actor_id=admin.id, now=T0)
            session.commit()
            session.refresh(user)
            return user

    def transform(self, user: User, settings: Settings | None = None) -> Job:
        return self._submit(submit_job, user, settings, upload=UPLOAD, original_name="a.png", request=self.request)

    def sweep(self, user: User, cells: int, settings: Settings | None = None) -> list[Job]:
        requests = [self.request] * cells
        return self._submit(submit_sweep, user, settings, upload=UPLOAD, original_name="a.png", requests=requests)

    def batch(self, user: User, images: int, settings: Settings | None = None) -> list[Job]:
        staged = [self.staged(f"item-{n}.png") for n in range(images)]
        return self._submit(submit_batch, user, settings, images=staged, requests=[self.request] * images)

    def _submit(self, submit, user: User, settings: Settings | None, **what):
        """A submit in its own write transaction, as pages make them."""
        with write_session(self.url) as session:
            return submit(
                session=session, store=self.store, settings=settings or self.settings, user=user, now=T0, **what
            )

    def staged(self, name: str) -> StagedImage:
        return stage(self.staging, name=name, png=UPLOAD.png_bytes, width=UPLOAD.width, height=UPLOAD.height)

    def claim(self) -> list[Job]:
        """One claim by a new worker: the job it took and, for a sweep, the cells it took with it."""
        self.claims += 1
        worker = f"w{self.claims}"
        with write_session(self.url) as session:
            job = claim_next(session=session, worker=worker, now=T0)
            if job is None:
                return []
            return claimed_sweep(session=session, job=job, worker=worker) if job.sweep_id else [job]

    def position(self, job: Job) -> int | None:
        with session_for(self.url) as session:
            return queue_position(session=session, job=session.get(Job, job.id))

    def count(self, model) -> int:
        with session_for(self.url) as session:
            return session.exec(select(func.count()).select_from(model)).one()

    def balance(self, user: User) -> int:
        with session_for(self.url) as session:
            return balance(session=session, account=Account(user_id=user.id), now=T0)


@pytest.fixture
def q(studio, studio_settings, tmp_path) -> Queue:
    return Queue(studio_settings, tmp_path / "staging")


def ids(claims: list[list[Job]]) -> list[int]:
    return [job.id for claim in claims for job in claim]


# What a person sees


def test_another_users_200_batch_items_do_not_hold_up_a_transform(q):
    """A queues 200 batch images and workers take the first few; B's Transform is among the next claims."""
    a, b = q.user("avery"), q.user("blake")
    backlog = q.batch(a, 200)
    busy = [q.claim() for _ in range(WORKERS)]  # every worker holds one of A's images
    assert ids(busy) == [job.id for job in backlog[:WORKERS]]
    transform = q.transform(b)
    assert q.position(transform) == 1
    assert transform.id in ids([q.claim() for _ in range(WORKERS)])
    assert q.position(backlog[-1]) == 200 - WORKERS - (WORKERS - 1)  # behind its own backlog only


@pytest.mark.parametrize("kind", ["batch", "transform"])
def test_another_users_backlog_in_the_same_lane_does_not_hold_up_the_next_job(q, kind):
    """The same within one lane: A's 200-image batch, then B's one-image batch; or A's 200 Transforms (as
    `python -m studio transform` submits them), then B's Transform."""
    a, b = q.user("avery"), q.user("blake")
    backlog = q.batch(a, 200) if kind == "batch" else [q.transform(a) for _ in range(200)]
    [q.claim() for _ in range(WORKERS)]
    [job] = q.batch(b, 1) if kind == "batch" else [q.transform(b)]
    assert job.lane == backlog[0].lane
    assert q.position(job) <= 2  # at most the rest of the round being served first
    assert job.id in ids([q.claim() for _ in range(WORKERS)])


def test_users_in_one_lane_take_turns_however_long_a_backlog(q):
    """Rounds: one claim per user per round, then first come first served."""
    a, b, c = q.user("avery"), q.user("blake"), q.user("casey")
    a_jobs = [q.transform(a) for _ in range(6)]
    b_jobs = [q.transform(b) for _ in range(2)]
    c_job = q.transform(c)
    expected = [a_jobs[0], b_jobs[0], c_job, a_jobs[1], b_jobs[1], *a_jobs[2:]]
    assert [q.position(job) for job in expected] == list(range(1, 10))
    assert ids([q.claim() for _ in range(9)]) == [job.id for job in expected]
    assert q.claim() == []


def test_a_user_served_this_round_waits_for_the_next_one(q):
    """Having just been served, a user's new job joins the next round: the others' jobs in this round go first."""
    a, b, c = q.user("avery"), q.user("blake"), q.user("casey")
    a_first, b_first, c_first = q.transform(a), q.transform(b), q.transform(c)
    assert ids([q.claim()]) == [a_first.id]
    a_again = q.transform(a)  # A's previous job is running: the new one is a round later
    late = q.user("dana")
    d_first = q.transform(late)  # a newcomer joins the round being served
    assert ids([q.claim() for _ in range(4)]) == [b_first.id, c_first.id, d_first.id, a_again.id]


def test_lanes_pro_before_free_and_interactive_before_batch_items(q):
    pro, other_pro, free = q.user("pro"), q.user("pro2"), q.user("free", Plan.free)
    free_job = q.transform(free)
    batch = q.batch(pro, 3)
    sweep = q.sweep(other_pro, 2)
    transform = q.transform(pro)
    order = [q.claim() for _ in range(5)]
    assert [[job.id for job in claim] for claim in order] == [
        [sweep[0].id, sweep[1].id],  # Pro interactive, first come first served
        [transform.id],
        *[[job.id] for job in batch],  # Pro batch items
    ]
    assert ids([q.claim()]) == [free_job.id] and q.claim() == []


def test_a_sweep_is_one_claim_in_one_round(q):
    a, b = q.user("avery"), q.user("blake")
    sweep = q.sweep(a, 3)
    b_job = q.transform(b)
    after = q.transform(a)
    assert {job.fair_tag for job in sweep} == {sweep[0].fair_tag} and after.fair_tag == sweep[0].fair_tag + 1
    assert [q.position(job) for job in [*sweep, b_job, after]] == [1, 1, 1, 2, 3]
    assert ids([q.claim()]) == [job.id for job in sweep]
    assert [q.position(b_job), q.position(after)] == [1, 2]


def test_a_job_whose_worker_died_is_rerun_first_in_its_lane(q):
    a, b = q.user("avery"), q.user("blake")
    a_jobs = [q.transform(a) for _ in range(3)]
    [lost] = q.claim()
    b_job = q.transform(b)
    with write_session(q.url) as session:
        assert [job.id for job in reap_expired(session=session, now=T0 + timedelta(minutes=5))] == [lost.id]
    assert q.position(lost) == 1
    # It rejoins the round being served (A's second job's, which B's joined), not its old one: the round never
    # moves back, so nobody who joined meanwhile is overtaken by a newcomer.
    assert ids([q.claim() for _ in range(4)]) == [lost.id, a_jobs[1].id, b_job.id, a_jobs[2].id]


# The per-user limit


def test_the_per_user_limit_refuses_a_submit_whole_with_the_limit_and_charges_nothing(q):
    limited = dataclasses.replace(q.settings, max_jobs_per_user=4)
    a, b = q.user("avery"), q.user("blake")
    [q.transform(a, limited) for _ in range(2)]
    q.claim()  # running jobs count too
    before = (q.balance(a), q.count(Job), q.count(Asset), q.count(CreditEntry))
    staged_files = sorted(p.name for p in q.settings.assets_dir.rglob("*") if p.is_file())
    with pytest.raises(Refused, match=r"You have 2 jobs queued or running.*at most 4.*would make 5.*Nothing was"):
        q.sweep(a, 3, limited)
    with pytest.raises(Refused, match=r"at most 4 at a time; these 3 jobs would make 5"):
        q.batch(a, 3, limited)
    assert (q.balance(a), q.count(Job), q.count(Asset), q.count(CreditEntry)) == before
    assert sorted(p.name for p in q.settings.assets_dir.rglob("*") if p.is_file()) == staged_files
    assert len(q.sweep(a, 2, limited)) == 2  # exactly up to the limit
    with pytest.raises(Refused, match="at most 4 at a time; this job would make 5"):
        q.transform(a, limited)
    q.transform(b, limited)  # the limit is per person


# Claims and submits are index-driven


def fill_queue(url: str, *, waiting: list[int], finished: list[int], jobs: int) -> None:
    """Many rows (no images, no credits): half queued, of the `waiting` users, half finished, of the `finished`
    ones; so a planner picks indexes only where they help."""
    statuses = [JobStatus.complete, JobStatus.failed]
    rows = [
        {
            "task": "img2img",
            "model": "preview",
            "params": {},
            "quality": "standard",
            "user_id": (waiting if n % 2 else finished)[n % 5 % len(waiting if n % 2 else finished)],
            "status": JobStatus.queued if n % 2 else statuses[n % 4 // 2],
            "priority": 1,
            "lane": -2 + n % 3 // 2,
            "fair_tag": n // 10,
            "cost": 1,
            "cancel_requested": False,
            "attempt": 0,
            "progress_step": 0,
            "progress_total": 0,
            "created_at": T0,
        }
        for n in range(jobs)
    ]
    with write_session(url) as session:
        session.execute(insert(Job), rows)
        session.commit()
        session.execute(text("ANALYZE"))
        session.commit()


def explained(url: str, statement: str, parameters) -> str:
    with get_engine(url).connect() as connection:
        if connection.dialect.name == "sqlite":
            rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
            return "\n".join(row[-1] for row in rows)
        return "\n".join(row[0] for row in connection.exec_driver_sql(f"EXPLAIN {statement}", parameters).all())


def test_every_query_of_a_claim_and_a_submit_on_the_job_table_walks_an_index(q):
    users = [q.user(f"user{n}") for n in range(3)]
    others = [q.user(f"other{n}") for n in range(5)]
    fill_queue(q.url, waiting=[user.id for user in others], finished=[user.id for user in users], jobs=20_000)
    statements: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and " job" in statement.lower().split("where")[0]:
            statements.append((statement, parameters))

    engine = get_engine(q.url)
    event.listen(engine, "before_cursor_execute", record)
    try:
        q.transform(users[0])
        q.batch(users[1], 3)
        q.sweep(users[2], 2)
        q.claim()
        with session_for(q.url) as session:
            batch_item = session.exec(select(Job).where(Job.user_id == users[1].id, Job.status == JobStatus.queued))
            assert queue_position(session=session, job=batch_item.first()) > 1000
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(statements) >= 8
    for statement, parameters in statements:
        plan = explained(q.url, statement, parameters)
        if engine.dialect.name == "sqlite":
            sorted_by_hand = "ORDER BY" in plan  # "USE TEMP B-TREE FOR (RIGHT PART OF) ORDER BY"
            assert "SCAN job" not in plan and not sorted_by_hand, (statement, plan)  # SEARCH: an index range
        else:
            assert "Seq Scan on job" not in plan and "Sort" not in plan, (statement, plan)


# Properties over random submits, on both databases


SUBMIT = st.one_of(
    st.tuples(st.just("transform"), st.integers(0, 4), st.just(1)),
    st.tuples(st.just("sweep"), st.integers(0, 4), st.integers(2, 3)),
    st.tuples(st.just("batch"), st.integers(0, 2), st.integers(1, 12)),  # Pro users only
    st.tuples(st.just("claim"), st.just(0), st.integers(1, 3)),
)


@dataclasses.dataclass
class Unit:
    """One claim's worth of a submit: a job, a sweep's cells, or one batch image."""

    user: int
    lane: int
    job_ids: list[int]
    submitted_after: int  # claims made before it was submitted
    own_ahead: int  # its user's units queued in its lane when it was submitted
    claimed_at: int | None = None  # 1-based claim number


@pytest.mark.slow
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(SUBMIT, min_size=1, max_size=30))
def test_rounds_bound_every_delay_and_positions_tell_the_truth(q, steps):
    """For any submits and claims by five users on two plans:
    - no claim comes from a later lane while a job waits in an earlier one;
    - before a job is claimed, each other user gets at most k + 2 claims from its lane, where k is how many of
      its user's own claims were queued ahead of it when it was submitted (so at most 2 for a user's next job);
    - the positions shown for every queued job are exactly the claims that take them.
    """
    users = _property_users(q)
    units: list[Unit] = []
    claims: list[Unit] = []
    by_job: dict[int, Unit] = {}

    def claim() -> bool:
        taken = q.claim()
        if not taken:
            return False
        unit = by_job[taken[0].id]
        assert sorted(job.id for job in taken) == sorted(unit.job_ids)
        claims.append(unit)
        unit.claimed_at = len(claims)
        return True

    for kind, who, size in steps:
        if kind == "claim":
            for _ in range(size):
                claim()
            continue
        if kind == "transform":
            groups = [[q.transform(users[who])]]
        elif kind == "sweep":
            groups = [q.sweep(users[who], size)]
        else:
            groups = [[job] for job in q.batch(users[who], size)]
        for group in groups:
            lane = group[0].lane
            ahead = sum(u.user == who and u.lane == lane and u.claimed_at is None for u in units)
            unit = Unit(who, lane, [job.id for job in group], len(claims), ahead)
            units.append(unit)
            by_job.update({job_id: unit for job_id in unit.job_ids})

    # Positions now, then every claim takes the jobs that showed its number.
    with session_for(q.url) as session:
        positions = {
            job.id: queue_position(session=session, job=job)
            for job in session.exec(select(Job).where(Job.status == JobStatus.queued)).all()
        }
    drained_from = len(claims)
    while claim():
        pass
    assert all(unit.claimed_at is not None for unit in units)
    for job_id, position in positions.items():
        assert by_job[job_id].claimed_at == drained_from + position, (job_id, position)

    for unit in units:
        between = claims[unit.submitted_after : unit.claimed_at - 1]
        assert all(other.lane <= unit.lane for other in between), "a later lane was served first"
        per_user = Counter(other.user for other in between if other.lane == unit.lane and other.user != unit.user)
        assert max(per_user.values(), default=0) <= unit.own_ahead + 2, (unit, per_user)


def _property_users(q: Queue) -> list[User]:
    """Five users (three Pro, two Free), made once per test; every example starts from an empty queue."""
    with session_for(q.url) as session:
        existing = {user.username: user for user in session.exec(select(User)).all()}
    names = [("pro0", Plan.pro_monthly), ("pro1", Plan.pro_monthly), ("pro2", Plan.pro_annual)]
    names += [("free0", Plan.free), ("free1", Plan.free)]
    users = [existing.get(name) or q.user(name, plan) for name, plan in names]
    with write_session(q.url) as session:
        for statement in ("DELETE FROM creditentry WHERE job_id IS NOT NULL", "DELETE FROM job", "DELETE FROM asset"):
            session.execute(text(statement))
        session.commit()
    return users

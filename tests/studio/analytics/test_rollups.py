"""The daily usage rollups and duration histograms (studio.db.rollups) stay exact whatever the services do to jobs.

A Hypothesis state machine drives the real services — submits (single jobs and sweeps, by users of a team with a
small budget, of a team without one and of no team), claims, completions, failures, cancels (queued and
running), the reaper, and an admin's SQL that moves a job's day, team or price — on a clock that crosses
midnights and month ends. After every step each rollup table must hold exactly what a GROUP BY over the job
rows (done here in Python) gives, and rules compare every rollup-backed figure of studio.analytics (the
percentiles too, read from the histograms or walked for a team or a user) and the team budgets, on a drawn
filter and range (whole days, or partial first and last days), with the same figure computed from the raw job
rows. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import ClassVar
from unittest import mock

import bcrypt
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import text
from sqlmodel import select

from pipelines.params import Img2ImgParams
from studio.accounts import users as users_module
from studio.analytics.usage import (
    REFUNDED_STATUSES,
    Breakdown,
    Bucket,
    UsageFilter,
    credits_spent,
    filter_choices,
    jobs_by_status,
    processing_times,
    queue_waits,
    spent_by_team,
    top_spenders,
    waits_by_priority,
)
from studio.billing.budgets import team_spend
from studio.billing.credits import Account, add_credits
from studio.billing.pricing import Quality
from studio.catalogue.requests import custom_request, style_request
from studio.catalogue.styles import load_catalogue
from studio.cli.main import main
from studio.config import Settings
from studio.db.engine import get_engine, session_for, write_session
from studio.db.rollups import HISTOGRAMS, bucket_of, rebuild
from studio.db.tables import (
    DURATION_HISTOGRAMS,
    USAGE_ROLLUPS,
    Asset,
    AssetKind,
    CreditKind,
    Job,
    JobStatus,
    Team,
    User,
)
from studio.errors import Refused
from studio.jobs.leases import (
    cancel_job,
    claim_next,
    complete_job,
    fail_job,
    finish_cancelled,
    reap_expired,
)
from studio.jobs.submit import submit_job, submit_sweep
from studio.media.storage import AssetStore
from studio.media.validation import validate_image_bytes
from tests.support import png_bytes

pytestmark = pytest.mark.both_databases

START = datetime(2026, 1, 30, 21, 0, tzinfo=UTC)  # a Friday evening, two days before a month ends
UPLOAD = validate_image_bytes(png_bytes(256, 256))
PARAMS = Img2ImgParams(prompt="x", strength=0.5, steps=4)
STYLES = (None, "artistic", "photorealistic", "anime")  # None: the user's own settings
USERS = ("ann", "bob", "cat", "dan")  # ann and bob: team Small (a budget); cat: team Big; dan: no team
WORKERS = ("A", "B")
# Seconds the clock moves: within an hour, past a lease, to the next day, across weeks and months.
CLOCK_STEPS = (1, 45, 3 * 3600, 86_400 - 1, 86_400, 5 * 86_400, 31 * 86_400)


def _fast_hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def _day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


class RollupMachine(RuleBasedStateMachine):
    """One database for every example, emptied of jobs when an example starts."""

    # Set by the fixture for the whole run of examples.
    url: ClassVar[str]
    studio_settings: ClassVar[Settings]
    user_ids: ClassVar[dict[str, int]]
    team_ids: ClassVar[dict[str, int]]
    clock: ClassVar[datetime] = START

    def __init__(self) -> None:
        super().__init__()
        self.store = AssetStore(self.studio_settings.assets_dir)
        self.catalogue = load_catalogue(self.studio_settings.catalogue_path)
        self.held: list[tuple[int, str, int]] = []  # (job, worker, attempt) of the claims handed out
        RollupMachine.clock = START
        # Every example starts from no jobs: deleting them must empty the rollups (the AFTER DELETE trigger).
        with get_engine(self.url).begin() as connection:
            connection.execute(text("DELETE FROM creditentry WHERE job_id IS NOT NULL"))
            connection.execute(text("DELETE FROM job"))
            connection.execute(text("DELETE FROM asset"))
            for table in USAGE_ROLLUPS:
                assert connection.execute(text(f"SELECT count(*) FROM {table.name}")).scalar_one() == 0

    @property
    def now(self) -> datetime:
        return RollupMachine.clock

    def _advance(self, seconds: int) -> None:
        RollupMachine.clock += timedelta(seconds=seconds)

    def _submit(self, session, submit, user: User, **request) -> None:
        try:
            submit(
                session=session,
                store=self.store,
                settings=self.studio_settings,
                user=user,
                upload=UPLOAD,
                original_name="x.png",
                now=self.now,
                **request,
            )
        except Refused:  # over team Small's budget (read from the rollups); the invariant sees nothing moved
            session.rollback()
            event("submit refused: over the team budget")

    # ------------------------------------------------------------------- rules

    @rule(who=st.sampled_from(USERS), style=st.sampled_from(STYLES), quality=st.sampled_from(list(Quality)))
    def submit(self, who, style, quality):
        with write_session(self.url) as session:
            user = session.get(User, self.user_ids[who])
            if style is None:
                request = custom_request(settings=self.studio_settings, params=PARAMS, quality=quality)
            else:
                request = style_request(
                    settings=self.studio_settings,
                    catalogue=self.catalogue,
                    style_id=style,
                    params=PARAMS,
                    quality=quality,
                )
            self._submit(session, submit_job, user, request=request)

    @rule(who=st.sampled_from(USERS), cells=st.integers(2, 3))
    def sweep(self, who, cells):
        requests = [
            custom_request(settings=self.studio_settings, params=dataclasses.replace(PARAMS, strength=0.3 + i / 10))
            for i in range(cells)
        ]
        with write_session(self.url) as session:
            self._submit(session, submit_sweep, session.get(User, self.user_ids[who]), requests=requests)

    @rule(worker=st.sampled_from(WORKERS))
    def claim(self, worker):
        with write_session(self.url) as session:
            job = claim_next(session=session, worker=worker, now=self.now)
            if job is None:
                return
            claimed = session.exec(
                select(Job).where(Job.worker == worker, Job.status == JobStatus.processing, Job.started_at == self.now)
            ).all()
            self.held += [(m.id, worker, m.attempt) for m in claimed if (m.id, worker, m.attempt) not in self.held]

    @rule(data=st.data(), outcome=st.sampled_from(["complete", "fail", "cancelled"]))
    def finish(self, data, outcome):
        if not self.held:
            return
        job_id, worker, attempt = data.draw(st.sampled_from(self.held))
        with write_session(self.url) as session:
            if outcome == "complete":
                result = Asset(
                    user_id=session.get(Job, job_id).user_id,
                    kind=AssetKind.result,
                    sha256="0" * 64,
                    width=64,
                    height=64,
                    size_bytes=1,
                )
                done = complete_job(
                    session=session,
                    job_id=job_id,
                    worker=worker,
                    attempt=attempt,
                    result=result,
                    recipe={},
                    now=self.now,
                )
            elif outcome == "fail":
                done = fail_job(session=session, job_id=job_id, worker=worker, attempt=attempt, error="x", now=self.now)
            else:
                done = finish_cancelled(session=session, job_id=job_id, worker=worker, attempt=attempt, now=self.now)
        if done:
            self.held.remove((job_id, worker, attempt))

    @rule(data=st.data())
    def cancel(self, data):
        with session_for(self.url) as session:
            open_jobs = session.exec(
                select(Job.id, Job.user_id).where(Job.status.in_([JobStatus.queued, JobStatus.processing]))
            ).all()
        if not open_jobs:
            return
        job_id, user_id = data.draw(st.sampled_from(sorted(open_jobs)))
        with write_session(self.url) as session:
            cancel_job(session=session, job_id=job_id, user_id=user_id, now=self.now)

    @rule(seconds=st.sampled_from(CLOCK_STEPS), reap=st.booleans())
    def tick(self, seconds, reap):
        """Time passes (workers may have died: their leases run out); then maybe the reaper runs."""
        self._advance(seconds)
        if reap:
            with write_session(self.url) as session:
                reap_expired(session=session, now=self.now, max_attempts=2)

    @rule(data=st.data(), change=st.sampled_from(["day", "team", "cost", "style", "model"]))
    def admin_sql(self, data, change):
        """An admin's correction straight in SQL: the triggers follow any UPDATE, not only the services'."""
        with session_for(self.url) as session:
            ids = session.exec(select(Job.id).order_by(Job.id)).all()
        if not ids:
            return
        job_id = data.draw(st.sampled_from(ids))
        with write_session(self.url) as session:
            job = session.get(Job, job_id)
            if change == "day":
                job.created_at -= timedelta(hours=data.draw(st.sampled_from([1, 20, 24 * 40])))
            elif change == "team":
                job.team_id = data.draw(st.sampled_from([None, *self.team_ids.values()]))
            elif change == "cost":
                job.cost = data.draw(st.integers(0, 9))
            elif change == "style":
                job.style = data.draw(st.sampled_from(STYLES))
            else:
                job.model = data.draw(st.sampled_from(["m-one", "m-two"]))
            session.commit()

    @rule(data=st.data(), partial=st.booleans(), bucket=st.sampled_from(list(Bucket)))
    def figures_equal_the_raw_jobs(self, data, partial, bucket):
        with session_for(self.url) as session:
            jobs = session.exec(select(Job)).all()
            if not jobs:
                return
            first = min(_day(job.created_at) for job in jobs)
            last = max(_day(job.created_at) for job in jobs)
            start = datetime(first.year, first.month, first.day, tzinfo=UTC)
            end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
            if partial:  # from mid-morning of the first day to the late afternoon of the last
                start += timedelta(hours=data.draw(st.integers(0, 23)), minutes=data.draw(st.integers(0, 59)))
                end -= timedelta(hours=data.draw(st.integers(1, 23)))
                end = max(end, start)
            narrowed = data.draw(st.sampled_from([None, "team_id", "user_id", "model"]))
            values = sorted({value for job in jobs if (value := getattr(job, narrowed or "id")) is not None})
            if narrowed is not None and values:
                value = data.draw(st.sampled_from(values))
            else:
                narrowed = None
            usage = UsageFilter(start=start, end=end, **({narrowed: value} if narrowed else {}))
            chosen = [job for job in jobs if _matches(job, usage)]
            names = {
                Breakdown.team: dict(session.exec(select(Team.id, Team.name)).all()),
                Breakdown.user: dict(session.exec(select(User.id, User.username)).all()),
            }

            for by in Breakdown:
                expected: dict[tuple[date, str], int] = defaultdict(int)
                for job in chosen:
                    if job.status not in REFUNDED_STATUSES:
                        expected[_period(job, bucket), _label(job, by, names)] += job.cost
                got = credits_spent(session=session, usage=usage, bucket=bucket, by=by)
                assert {(row.period, row.group): row.credits for row in got} == dict(expected), by
                got = credits_spent(session=session, usage=usage, bucket=bucket, by=by, keep=2)
                assert {(row.period, row.group): row.credits for row in got} == _folded(expected, 2), by

            statuses: dict[tuple[date, JobStatus], list[int]] = defaultdict(lambda: [0, 0])
            for job in chosen:
                statuses[_period(job, bucket), job.status][0] += 1
                statuses[_period(job, bucket), job.status][1] += job.cost
            got = jobs_by_status(session=session, usage=usage, bucket=bucket)
            assert {(row.period, row.status): [row.jobs, row.credits] for row in got} == dict(statuses)

            spenders: dict[int, list[int]] = defaultdict(lambda: [0, 0])
            teams: dict[int | None, int] = defaultdict(int)
            for job in chosen:
                if job.status not in REFUNDED_STATUSES:
                    spenders[job.user_id][0] += 1
                    spenders[job.user_id][1] += job.cost
                    teams[job.team_id] += job.cost
            ranked = sorted(spenders.items(), key=lambda item: (-item[1][1], item[0]))[:3]
            got = top_spenders(session=session, usage=usage, limit=3)
            assert [(row.user_id, row.jobs, row.credits) for row in got] == [(u, n, c) for u, (n, c) in ranked]
            assert spent_by_team(session=session, usage=usage) == dict(teams)

            month = self.now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            small = self.team_ids["Small"]
            in_month = [
                job
                for job in jobs
                if job.team_id == small and month <= job.created_at < _next_month(month)
                if job.status not in REFUNDED_STATUSES
            ]
            assert team_spend(session=session, team_id=small, now=self.now) == sum(job.cost for job in in_month)
            assert filter_choices(session=session).models == sorted({job.model for job in jobs})

            assert _stats(processing_times(session=session, usage=usage)) == _percentiles(
                chosen, lambda job: (job.model, job.quality), _processing_seconds
            )
            assert _stats(queue_waits(session=session, usage=usage)) == _percentiles(
                chosen, lambda job: (job.model, job.quality), _wait_seconds
            )
            assert _stats(waits_by_priority(session=session, usage=usage)) == _percentiles(
                chosen, lambda job: ("Pro" if job.priority > 0 else "Free",), _wait_seconds
            )

    # -------------------------------------------------------------- invariants

    @invariant()
    def every_rollup_row_is_the_group_by_of_its_jobs(self):
        with session_for(self.url) as session:
            jobs = session.exec(select(Job)).all()
            for table in USAGE_ROLLUPS:
                keys = [column.name for column in table.primary_key.columns]
                expected: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
                for job in jobs:
                    row = expected[tuple(_rollup_key(job, key) for key in keys)]
                    row[0] += 1
                    row[1] += job.cost
                stored = session.execute(text(f"SELECT {', '.join(keys)}, jobs, credits FROM {table.name}")).all()
                got = {
                    tuple(_normalised(value) for value in row[: len(keys)]): list(row[len(keys) :]) for row in stored
                }
                assert got == dict(expected), table.name

    @invariant()
    def every_histogram_row_counts_its_jobs_durations(self):
        with session_for(self.url) as session:
            jobs = session.exec(select(Job)).all()
            for rollup, seconds in zip(HISTOGRAMS, (_processing_seconds, _wait_seconds, _wait_seconds), strict=True):
                table = rollup.table
                keys = [column.name for column in table.primary_key.columns]
                expected: dict[tuple, int] = defaultdict(int)
                for job in jobs:
                    if (duration := seconds(job)) is not None:
                        expected[tuple(_rollup_key(job, key, duration) for key in keys)] += 1
                stored = session.execute(text(f"SELECT {', '.join(keys)}, jobs FROM {table.name}")).all()
                got = {tuple(_normalised(value) for value in row[: len(keys)]): row[len(keys)] for row in stored}
                assert got == dict(expected), table.name


def _rollup_key(job: Job, key: str, seconds: float | None = None):
    return {
        "day": _day(job.created_at),
        "status": job.status.value,
        "team_id": job.team_id or 0,
        "user_id": job.user_id,
        "style": job.style or "",
        "model": job.model,
        "quality": job.quality,
        "priority": job.priority,
        "bucket": None if seconds is None else bucket_of(seconds),
    }[key]


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return None if start is None or end is None else round((end - start).total_seconds(), 3)


def _processing_seconds(job: Job) -> float | None:
    return _seconds(job.started_at, job.finished_at) if job.status is JobStatus.complete else None


def _wait_seconds(job: Job) -> float | None:
    return _seconds(job.created_at, job.started_at)


def _percentiles(jobs: list[Job], group, seconds) -> dict[tuple, tuple[int, float, float]]:
    """Nearest-rank p50/p95 per group of the jobs' durations, two significant figures rounded down."""
    durations: dict[tuple, list[float]] = defaultdict(list)
    for job in jobs:
        if (duration := seconds(job)) is not None:
            durations[tuple(str(value) for value in group(job))].append(duration)
    found = {}
    for key, values in durations.items():
        values.sort()
        n = len(values)
        found[key] = (n, *(bucket_of(values[(p * n + 99) // 100 - 1]) / 10 for p in (50, 95)))
    return found


def _stats(rows) -> dict[tuple, tuple[int, float, float]]:
    return {row.group: (row.jobs, row.p50_s, row.p95_s) for row in rows}


def _normalised(value):
    return date.fromisoformat(value) if isinstance(value, str) and len(value) == 10 and value[4] == "-" else value


def _matches(job: Job, usage: UsageFilter) -> bool:
    return (
        usage.start <= job.created_at < usage.end
        and (usage.team_id is None or job.team_id == usage.team_id)
        and (usage.user_id is None or job.user_id == usage.user_id)
        and (usage.model is None or job.model == usage.model)
    )


def _period(job: Job, bucket: Bucket) -> date:
    day = _day(job.created_at)
    return day - timedelta(days=day.weekday()) if bucket is Bucket.week else day


def _label(job: Job, by: Breakdown, names: dict) -> str:
    if by is Breakdown.team:
        return names[by][job.team_id] if job.team_id is not None else "No team"
    if by is Breakdown.user:
        return names[by][job.user_id]
    if by is Breakdown.style:
        return job.style or "Own settings"
    return job.model


def _folded(spent: dict[tuple[date, str], int], keep: int) -> dict[tuple[date, str], int]:
    """The `keep` groups with the most credits over all periods (ties by name), the rest per period as Others."""
    totals: dict[str, int] = defaultdict(int)
    for (_, group), credits in spent.items():
        totals[group] += credits
    kept = set(sorted(totals, key=lambda group: (-totals[group], group))[:keep])
    folded: dict[tuple[date, str], int] = defaultdict(int)
    for (period, group), credits in spent.items():
        folded[period, group if group in kept else "Others"] += credits
    return dict(folded)


def _next_month(month: datetime) -> datetime:
    return (month + timedelta(days=32)).replace(day=1)


@pytest.fixture
def machine_studio(studio, studio_settings):
    """Teams Small (a monthly budget a few jobs reach) and Big (none), four users with plenty of credits."""
    url = studio_settings.database_url
    with mock.patch.object(users_module, "hash_password", _fast_hash), write_session(url) as session:
        small, big = Team(name="Small", monthly_budget=12), Team(name="Big")
        session.add_all([small, big])
        session.flush()
        teams = {"ann": small.id, "bob": small.id, "cat": big.id, "dan": None}
        user_ids = {}
        for name, team_id in teams.items():
            user = users_module.create_user(
                session=session, username=name, password="password-1", email=f"{name}@x", team_id=team_id
            )
            add_credits(
                session=session,
                account=Account(user_id=user.id),
                amount=100_000,
                kind=CreditKind.grant,
                now=START - timedelta(days=1),
                reason="test",
            )
            user_ids[name] = user.id
        session.commit()
    RollupMachine.url = url
    RollupMachine.studio_settings = studio_settings
    RollupMachine.user_ids = user_ids
    RollupMachine.team_ids = {"Small": small.id, "Big": big.id}
    RollupMachine.clock = START
    yield url
    get_engine(url).dispose()


def test_the_rollups_follow_every_service_and_equal_the_raw_figures(machine_studio):
    run_state_machine_as_test(
        RollupMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


def test_rebuild_recomputes_what_the_triggers_keep_and_a_deleted_job_leaves_its_rows(machine_studio):
    """Jobs written behind the triggers' back (a restore of the job table alone) come back with a rebuild; a
    deleted job takes its count and price out of its rows, and a row left with no job is deleted."""
    engine = get_engine(machine_studio)
    user_id = RollupMachine.user_ids["cat"]
    with engine.begin() as connection:
        for table in USAGE_ROLLUPS:
            connection.execute(text(f"DELETE FROM {table.name}"))
    with write_session(machine_studio) as session:
        for hours, cost in ((1, 3), (2, 4), (30, 5)):
            session.add(
                Job(
                    model="m",
                    user_id=user_id,
                    team_id=RollupMachine.team_ids["Big"],
                    cost=cost,
                    created_at=START + timedelta(hours=hours),
                )
            )
        session.commit()
    with engine.begin() as connection:
        for table in USAGE_ROLLUPS:
            connection.execute(text(f"DELETE FROM {table.name}"))  # as if restored without them
    wanted = UsageFilter(start=START - timedelta(hours=21), end=START + timedelta(days=3))
    with session_for(machine_studio) as session:
        assert spent_by_team(session=session, usage=wanted) == {}

    with engine.begin() as connection:
        counts = rebuild(connection)
    # Two days of team Big, user cat, own settings; no job started, so no duration.
    assert counts == {table.name: 2 for table in USAGE_ROLLUPS} | {table.name: 0 for table in DURATION_HISTOGRAMS}
    with session_for(machine_studio) as session:
        assert spent_by_team(session=session, usage=wanted) == {RollupMachine.team_ids["Big"]: 12}
        session.execute(text("DELETE FROM job WHERE cost = 5"))
        session.commit()
        assert spent_by_team(session=session, usage=wanted) == {RollupMachine.team_ids["Big"]: 7}
        for table in USAGE_ROLLUPS:
            assert session.execute(text(f"SELECT count(*) FROM {table.name}")).scalar_one() == 1


def test_the_rebuild_command_restores_rollups_emptied_by_hand(machine_studio, capsys):
    with write_session(machine_studio) as session:
        session.add(Job(model="m", user_id=RollupMachine.user_ids["dan"], cost=6, created_at=START))
        session.commit()
    with get_engine(machine_studio).begin() as connection:
        for table in USAGE_ROLLUPS:
            connection.execute(text(f"DELETE FROM {table.name}"))

    assert main(["analytics", "rebuild", "--database-url", machine_studio]) == 0

    assert "usage_by_team 1 rows" in capsys.readouterr().out
    with session_for(machine_studio) as session:
        whole_day = UsageFilter(start=START.replace(hour=0), end=START.replace(hour=0) + timedelta(days=1))
        assert spent_by_team(session=session, usage=whole_day) == {None: 6}

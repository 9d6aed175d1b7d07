"""Analytics against hand-computed figures on a small fixture of jobs with chosen times, costs and outcomes."""

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import event
from sqlmodel import Session

from studio.analytics.usage import (
    Breakdown,
    Bucket,
    PeriodCredits,
    UsageFilter,
    credits_spent,
    filter_choices,
    jobs_by_status,
    outcome_rates,
    periods,
    processing_times,
    queue_waits,
    top_spenders,
    waits_by_priority,
)
from studio.db.engine import get_engine
from studio.db.tables import Job, JobStatus, Team, User

MONDAY = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
WEEK = UsageFilter(start=datetime(2026, 3, 1, tzinfo=UTC), end=datetime(2026, 3, 16, tzinfo=UTC))


def add_job(
    session,
    user,
    created,
    *,
    wait=None,
    run=None,
    status=JobStatus.complete,
    cost=1,
    model="m1",
    quality="standard",
    style=None,
):
    """A job submitted at `created` that waited `wait` s for a worker and ran `run` s (None: never started)."""
    started = created + timedelta(seconds=wait) if wait is not None else None
    finished = started + timedelta(seconds=run) if run is not None else None
    session.add(
        Job(
            model=model,
            quality=quality,
            style=style,
            user_id=user.id,
            team_id=user.team_id,
            priority=1 if user.plan != "free" else 0,
            status=status,
            cost=cost,
            created_at=created,
            started_at=started,
            finished_at=finished,
        )
    )


@pytest.fixture
def session(studio, studio_settings):
    with Session(get_engine(studio_settings.database_url), expire_on_commit=False) as session:
        yield session


@pytest.fixture
def fixture(session):
    """Two teams, four users (ann is Pro), eight jobs over two weeks; see each test for the arithmetic."""
    design, video = Team(name="Design"), Team(name="Video")
    session.add_all([design, video])
    session.flush()
    ann = User(
        username="ann", email="a@x", display_name="Ann", password_hash="-", team_id=design.id, plan="pro_monthly"
    )
    bob = User(username="bob", email="b@x", display_name="Bob", password_hash="-", team_id=design.id)
    cat = User(username="cat", email="c@x", display_name="Cat", password_hash="-", team_id=video.id)
    dan = User(username="dan", email="d@x", display_name="Dan", password_hash="-")
    session.add_all([ann, bob, cat, dan])
    session.flush()
    tuesday, next_monday = MONDAY + timedelta(days=1), MONDAY + timedelta(days=7)
    add_job(session, ann, MONDAY, wait=1, run=10, cost=2, style="anime")
    add_job(session, bob, MONDAY + timedelta(hours=1), wait=3, run=20, cost=3, status=JobStatus.failed)
    add_job(session, cat, MONDAY + timedelta(hours=2), wait=5, run=30, cost=4, model="m2", quality="high")
    add_job(session, ann, tuesday, wait=2, run=40, cost=2)
    add_job(session, dan, tuesday + timedelta(hours=1), cost=1, status=JobStatus.cancelled)  # cancelled while queued
    add_job(session, cat, tuesday + timedelta(hours=2), wait=7, run=50, cost=4, model="m2", quality="high")
    add_job(session, bob, next_monday, wait=4, run=60, cost=5)
    add_job(session, ann, next_monday + timedelta(hours=1), cost=2, status=JobStatus.queued)  # reserved, in flight
    session.commit()
    return {"design": design, "video": video, "ann": ann, "bob": bob, "cat": cat, "dan": dan}


def spent(rows):
    return {(row.period.isoformat(), row.group): row.credits for row in rows}


def test_credits_spent_per_day_by_team_leave_out_refunded_jobs_and_keep_queued_ones(session, fixture):
    assert spent(credits_spent(session=session, usage=WEEK, bucket=Bucket.day, by=Breakdown.team)) == {
        ("2026-03-02", "Design"): 2,  # ann's 2; bob's failed 3 was refunded
        ("2026-03-02", "Video"): 4,
        ("2026-03-03", "Design"): 2,  # dan's cancelled job (no team) spent nothing: no row at all
        ("2026-03-03", "Video"): 4,
        ("2026-03-09", "Design"): 7,  # bob's 5 and ann's queued 2
    }


def test_credits_spent_per_week_start_on_monday_and_split_by_user_style_and_model(session, fixture):
    assert spent(credits_spent(session=session, usage=WEEK, bucket=Bucket.week, by=Breakdown.team)) == {
        ("2026-03-02", "Design"): 4,
        ("2026-03-02", "Video"): 8,
        ("2026-03-09", "Design"): 7,
    }
    assert spent(credits_spent(session=session, usage=WEEK, bucket=Bucket.week, by=Breakdown.user)) == {
        ("2026-03-02", "ann"): 4,
        ("2026-03-02", "cat"): 8,
        ("2026-03-09", "ann"): 2,
        ("2026-03-09", "bob"): 5,
    }
    assert spent(credits_spent(session=session, usage=WEEK, bucket=Bucket.week, by=Breakdown.style)) == {
        ("2026-03-02", "anime"): 2,
        ("2026-03-02", "Own settings"): 10,
        ("2026-03-09", "Own settings"): 7,
    }
    assert spent(credits_spent(session=session, usage=WEEK, bucket=Bucket.week, by=Breakdown.model)) == {
        ("2026-03-02", "m1"): 4,
        ("2026-03-02", "m2"): 8,
        ("2026-03-09", "m1"): 7,
    }


def test_jobs_without_a_team_are_labelled_and_filters_narrow_every_figure(session, fixture):
    everyone = UsageFilter(start=WEEK.start, end=WEEK.end)
    dan_charged = credits_spent(session=session, usage=everyone, by=Breakdown.team)
    assert "No team" not in {row.group for row in dan_charged}  # dan's only job was refunded
    by_team = UsageFilter(start=WEEK.start, end=WEEK.end, team_id=fixture["video"].id)
    assert spent(credits_spent(session=session, usage=by_team)) == {
        ("2026-03-02", "Video"): 4,
        ("2026-03-03", "Video"): 4,
    }
    by_user = UsageFilter(start=WEEK.start, end=WEEK.end, user_id=fixture["bob"].id)
    assert [(row.status, row.jobs) for row in jobs_by_status(session=session, usage=by_user, bucket=Bucket.week)] == [
        (JobStatus.failed, 1),
        (JobStatus.complete, 1),
    ]
    by_model = UsageFilter(start=WEEK.start, end=WEEK.end, model="m2")
    assert [(s.username, s.credits) for s in top_spenders(session=session, usage=by_model)] == [("cat", 8)]
    tuesday_only = UsageFilter(start=datetime(2026, 3, 3, tzinfo=UTC), end=datetime(2026, 3, 4, tzinfo=UTC))
    assert sum(row.jobs for row in jobs_by_status(session=session, usage=tuesday_only)) == 3


def test_jobs_by_status_and_the_failure_and_refund_rates(session, fixture):
    rows = jobs_by_status(session=session, usage=WEEK, bucket=Bucket.day)
    assert {(row.period.isoformat(), row.status.value): (row.jobs, row.credits) for row in rows} == {
        ("2026-03-02", "complete"): (2, 6),
        ("2026-03-02", "failed"): (1, 3),
        ("2026-03-03", "complete"): (2, 6),
        ("2026-03-03", "cancelled"): (1, 1),
        ("2026-03-09", "complete"): (1, 5),
        ("2026-03-09", "queued"): (1, 2),
    }
    *per_day, overall = outcome_rates(rows)
    assert [(r.period, r.failure_rate, r.refund_rate) for r in per_day] == [
        (date(2026, 3, 2), 1 / 3, 3 / 9),
        (date(2026, 3, 3), 0.0, 1 / 7),
        (date(2026, 3, 9), 0.0, 0.0),
    ]
    assert overall.period is None
    assert (overall.jobs, overall.ended, overall.failed, overall.cancelled) == (8, 7, 1, 1)
    assert overall.failure_rate == pytest.approx(1 / 7)
    assert (overall.credits_reserved, overall.credits_refunded) == (23, 4)
    assert overall.refund_rate == pytest.approx(4 / 23)


def test_processing_time_and_queue_wait_percentiles_per_model_and_quality(session, fixture):
    processing = {row.group: (row.jobs, row.p50_s, row.p95_s) for row in processing_times(session=session, usage=WEEK)}
    # Complete jobs only. m1: 10, 40, 60 → p50 = rank ⌈1.5⌉ = 2 → 40, p95 = rank ⌈2.85⌉ = 3 → 60.
    assert processing == {("m1", "standard"): (3, 40.0, 60.0), ("m2", "high"): (2, 30.0, 50.0)}
    waits = {row.group: (row.jobs, row.p50_s, row.p95_s) for row in queue_waits(session=session, usage=WEEK)}
    # Every started job, the failed one too; never-started jobs have no wait. m1: 1, 2, 3, 4.
    assert waits == {("m1", "standard"): (4, 2.0, 4.0), ("m2", "high"): (2, 5.0, 7.0)}


def test_pro_and_free_queue_waits(session, fixture):
    by_class = {row.group: (row.jobs, row.p50_s, row.p95_s) for row in waits_by_priority(session=session, usage=WEEK)}
    assert by_class == {("Free",): (4, 4.0, 7.0), ("Pro",): (2, 1.0, 2.0)}  # free: 3, 4, 5, 7; pro: 1, 2


@pytest.mark.parametrize("narrowed", ["model", "user"])  # the histograms, and the index walk they do not cover
def test_percentiles_use_nearest_rank_to_two_significant_figures_however_they_are_read(session, fixture, narrowed):
    eve = User(username="eve", email="e@x", display_name="Eve", password_hash="-")
    session.add(eve)
    session.flush()
    for i in range(20):  # run times 1.001 … 20.020 s, inserted in shuffled order
        k = (i * 7) % 20 + 1
        add_job(session, eve, MONDAY + timedelta(minutes=i), wait=0.5, run=k + k / 1000, model="m3")
    session.commit()
    usage = UsageFilter(start=WEEK.start, end=WEEK.end, **({"model": "m3"} if narrowed == "model" else {}))
    if narrowed == "user":
        usage = replace(usage, user_id=eve.id)
    [row] = processing_times(session=session, usage=usage)
    # Ranks 10 (from below) and 19 (from above): 10.010 and 19.019 s, shown rounded down to 10 and 19 s.
    assert (row.jobs, row.p50_s, row.p95_s) == (20, 10.0, 19.0)


def test_top_spenders_rank_users_by_credits_spent(session, fixture):
    assert [(s.username, s.team, s.jobs, s.credits) for s in top_spenders(session=session, usage=WEEK)] == [
        ("cat", "Video", 2, 8),
        ("ann", "Design", 3, 6),
        ("bob", "Design", 1, 5),  # the failed job is not spending
    ]
    assert len(top_spenders(session=session, usage=WEEK, limit=1)) == 1


def test_filter_choices_list_teams_users_and_the_models_jobs_ran_on(session, fixture):
    choices = filter_choices(session=session)
    assert list(choices.teams.values()) == ["Design", "Video"]
    assert {"ann", "bob", "cat", "dan", "admin"} <= set(choices.users.values())
    assert choices.models == ["m1", "m2"]


def test_periods_clip_to_the_range_and_weeks_start_on_monday():
    usage = UsageFilter(start=datetime(2026, 3, 4, 12, tzinfo=UTC), end=datetime(2026, 3, 10, tzinfo=UTC))
    assert [(label.isoformat(), start.day, end.day) for label, start, end in periods(usage, Bucket.week)] == [
        ("2026-03-02", 4, 9),
        ("2026-03-09", 9, 10),
    ]
    assert [label.day for label, _, _ in periods(usage, Bucket.day)] == [4, 5, 6, 7, 8, 9]


def test_credits_spent_can_keep_the_top_groups_and_fold_the_rest_into_others_per_period(session, fixture):
    # Over both weeks: cat 8, ann 4 + 2, bob 5 (his failed job spent nothing).
    assert credits_spent(session=session, usage=WEEK, bucket=Bucket.week, by=Breakdown.user, keep=1) == [
        PeriodCredits(date(2026, 3, 2), "cat", 8),
        PeriodCredits(date(2026, 3, 2), "Others", 4),
        PeriodCredits(date(2026, 3, 9), "Others", 7),
    ]
    assert credits_spent(session=session, usage=WEEK, bucket=Bucket.week, by=Breakdown.user, keep=2) == [
        PeriodCredits(date(2026, 3, 2), "ann", 4),
        PeriodCredits(date(2026, 3, 2), "cat", 8),
        PeriodCredits(date(2026, 3, 9), "ann", 2),
        PeriodCredits(date(2026, 3, 9), "Others", 5),
    ]
    everyone = credits_spent(session=session, usage=WEEK, by=Breakdown.team)
    assert credits_spent(session=session, usage=WEEK, by=Breakdown.team, keep=5) == everyone  # nothing to fold


def plans(session, run, table: str = "job") -> list[str]:
    """The query plans of the statements on `table` that `run` executes."""
    statements = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if f"FROM {table}" in statement:
            statements.append((statement, parameters))

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", capture)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return [
        " ".join(row[3] for row in session.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + sql, parameters))
        for sql, parameters in statements
    ]


@pytest.mark.parametrize("narrowed_by", [None, "team_id", "user_id", "model"])
def test_the_query_plans_that_keep_millions_of_jobs_under_a_second(session, fixture, narrowed_by):
    """SQLite plans without statistics, so these plans are the ones it picks at any size (bench/analytics_queries.py
    measures them): over whole days the aggregates read only a day range of a rollup, never the job table; the
    partial first and last day of a range read a date range of a job index; percentiles walk a duration index."""
    value = {None: None, "team_id": fixture["design"].id, "user_id": fixture["ann"].id, "model": "m1"}[narrowed_by]
    whole_days = UsageFilter(start=WEEK.start, end=WEEK.end, **({narrowed_by: value} if narrowed_by else {}))
    partial_days = replace(whole_days, start=WEEK.start + timedelta(hours=9), end=WEEK.end - timedelta(hours=2))

    def aggregates(usage):
        for breakdown in Breakdown:
            credits_spent(session=session, usage=usage, by=breakdown)
        jobs_by_status(session=session, usage=usage)
        top_spenders(session=session, usage=usage)

    def percentiles():
        processing_times(session=session, usage=whole_days)
        queue_waits(session=session, usage=whole_days)
        waits_by_priority(session=session, usage=whole_days)

    assert plans(session, lambda: aggregates(whole_days)) == []
    rollup_plans = plans(session, lambda: aggregates(whole_days), table="usage_")
    assert len(rollup_plans) == len(Breakdown) + 2
    for plan in rollup_plans:
        assert plan.startswith("SEARCH usage_") and "day>? AND day<?" in plan, plan
    edge_plans = plans(session, lambda: aggregates(partial_days))
    assert len(edge_plans) == 2 * (len(Breakdown) + 2)  # the first and the last day, for each figure
    for plan in edge_plans:
        assert "INDEX" in plan and "created_at>? AND created_at<?" in plan, plan
    duration_indexes = ("ix_job_processing_time", "ix_job_queue_wait", "ix_job_priority_wait")
    for plan in plans(session, percentiles):
        assert any(name in plan for name in duration_indexes) and "TEMP B-TREE" not in plan, plan

"""Analytics at scale: every query behind the Analytics and Teams pages on 1 000 000 jobs in SQLite.

Run from the repository root:

    python bench/analytics_queries.py                          # 1 000 000 jobs in a temporary database
    python bench/analytics_queries.py --db /tmp/analytics.db   # keep it there; a second run reuses it
    python bench/analytics_queries.py --jobs 100000 --repeats 5

Seeds the database with `studio.devtools.seed` (1 000 users, 12 teams, 90 days of jobs and their ledger rows by
default) and prints how long that took, then runs each query `--repeats` times, each in a new session,
and prints per query the rows it returned, the first run's time (statement compiled, SQLite's page
cache cold), the best, and whether the slower of the two meets the ≤ 1 s target. Queries run over the
whole seeded range (the worst case: every job in range), unfiltered and then with the page's filters
(a team, the busiest user, one model, the last 7 days). Exits 1 if any query misses the target.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 1.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--teams", type=int, default=12)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeats", type=int, default=3, help="runs per query (default 3)")
    parser.add_argument("--db", type=Path, help="SQLite file to use (seeded if it has no jobs); default: a temp file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT))
    from sqlmodel import Session, func, select

    from studio.config import load_settings
    from studio.db.engine import init_db
    from studio.db.tables import Job, utcnow
    from studio.devtools.seed import SeedOptions, seed

    workdir = tempfile.TemporaryDirectory(prefix="analytics-bench-") if args.db is None else None
    path = args.db or Path(workdir.name) / "studio.db"
    engine = init_db(f"sqlite:///{path}")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, SQLite {sqlite3.sqlite_version}")
    with Session(engine) as session:
        existing = session.exec(select(func.count()).select_from(Job)).one()
    if existing:
        print(f"Reusing {path}: {existing:,} jobs.")
    else:
        settings = load_settings(environ={})
        options = SeedOptions(users=args.users, teams=args.teams, jobs=args.jobs, days=args.days, end=utcnow())
        report = seed(engine=engine, settings=settings, options=options)
        rows = report.jobs + report.ledger_rows
        print(
            f"Seeded {report.jobs:,} jobs and {report.ledger_rows:,} ledger rows ({report.users:,} users, "
            f"{report.teams} teams, {args.days} days) in {report.seconds:.1f} s: {rows / report.seconds:,.0f} rows/s."
        )
    print(f"Database: {path.stat().st_size / 2**20:,.0f} MiB\n")
    misses = run_queries(engine, args.repeats)
    if workdir is not None:
        engine.dispose()
        workdir.cleanup()
    return 1 if misses else 0


def run_queries(engine, repeats: int) -> int:
    from sqlmodel import Session, func, select

    from studio.analytics import usage as a
    from studio.billing.budgets import all_budget_statuses, team_spend
    from studio.db.tables import Job, Team

    with Session(engine) as session:
        first, last = session.exec(select(func.min(Job.created_at), func.max(Job.created_at))).one()
        [team_id] = session.exec(select(Team.id).order_by(Team.id).limit(1)).all()
        busiest_user = session.exec(
            select(Job.user_id).group_by(Job.user_id).order_by(func.count().desc()).limit(1)
        ).one()
        busiest_model = session.exec(select(Job.model).group_by(Job.model).order_by(func.count().desc()).limit(1)).one()
    everything = a.UsageFilter(start=first, end=last + timedelta(seconds=1))
    now = last
    queries: list[tuple[str, Callable]] = [
        (f"credits per day by {by.value}", lambda s, by=by: a.credits_spent(session=s, usage=everything, by=by))
        for by in a.Breakdown
    ]
    queries += [
        ("credits per week by team", lambda s: a.credits_spent(session=s, usage=everything, bucket=a.Bucket.week)),
        ("jobs per day by status", lambda s: a.jobs_by_status(session=s, usage=everything)),
        ("processing p50/p95 by model, quality", lambda s: a.processing_times(session=s, usage=everything)),
        ("queue wait p50/p95 by model, quality", lambda s: a.queue_waits(session=s, usage=everything)),
        ("queue wait p50/p95 Pro vs Free", lambda s: a.waits_by_priority(session=s, usage=everything)),
        ("top 10 spenders", lambda s: a.top_spenders(session=s, usage=everything)),
        ("filter choices (teams, users, models)", lambda s: choice_list(a.filter_choices(session=s))),
        ("team budgets this month (Teams page)", lambda s: all_budget_statuses(session=s, now=now)),
        ("one team's spend (every submit)", lambda s: [team_spend(session=s, team_id=team_id, now=now)]),
    ]
    filtered = {
        "team": a.UsageFilter(start=everything.start, end=everything.end, team_id=team_id),
        "busiest user": a.UsageFilter(start=everything.start, end=everything.end, user_id=busiest_user),
        "one model": a.UsageFilter(start=everything.start, end=everything.end, model=busiest_model),
        "last 7 days": a.UsageFilter(start=everything.end - timedelta(days=7), end=everything.end),
    }
    for label, usage in filtered.items():
        queries += [
            (
                f"[{label}] credits per day by user",
                lambda s, u=usage: a.credits_spent(session=s, usage=u, by=a.Breakdown.user),
            ),
            (f"[{label}] jobs per day by status", lambda s, u=usage: a.jobs_by_status(session=s, usage=u)),
            (f"[{label}] processing p50/p95", lambda s, u=usage: a.processing_times(session=s, usage=u)),
            (f"[{label}] queue wait p50/p95", lambda s, u=usage: a.queue_waits(session=s, usage=u)),
            (f"[{label}] Pro vs Free wait", lambda s, u=usage: a.waits_by_priority(session=s, usage=u)),
            (f"[{label}] top 10 spenders", lambda s, u=usage: a.top_spenders(session=s, usage=u)),
        ]
    days = (everything.end - everything.start).days + 1
    print(f"Range: {everything.start:%Y-%m-%d} to {last:%Y-%m-%d} ({days} days), target ≤ {TARGET_SECONDS:.0f} s")
    print(f"{'query':<46} {'rows':>7} {'first s':>8} {'best s':>7}  target")
    misses = 0
    page_total = 0.0
    for name, query in queries:
        times = []
        for _ in range(repeats):
            with Session(engine) as session:
                started = time.perf_counter()
                rows = query(session)
                times.append(time.perf_counter() - started)
        worst = max(times[0], min(times))
        ok = worst <= TARGET_SECONDS
        misses += not ok
        if not name.startswith("["):
            page_total += min(times)
        print(f"{name:<46} {len(rows):>7} {times[0]:>8.3f} {min(times):>7.3f}  {'ok' if ok else 'MISS'}")
    print(f"\nUnfiltered queries together (a page load before its 60 s cache): {page_total:.2f} s")
    print(f"{misses} of {len(queries)} queries missed the target." if misses else "Every query met the target.")
    return misses


def choice_list(choices) -> list:
    return [*choices.teams.values(), *choices.users.values(), *choices.models]


if __name__ == "__main__":
    sys.exit(main())

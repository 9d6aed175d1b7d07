"""`python -m studio seed`: demo or benchmark history (studio.devtools.seed)."""

from __future__ import annotations

import argparse

from studio.config import get_settings
from studio.db.engine import init_db
from studio.devtools.seed import SeedError, SeedOptions, seed


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "seed",
        help="add demo or benchmark history (teams, users, finished jobs and their ledger)",
        description="Seed teams, users and finished jobs with the ledger rows studio.billing would have written.",
    )
    parser.add_argument("--users", type=int, default=SeedOptions.users)
    parser.add_argument("--teams", type=int, default=SeedOptions.teams)
    parser.add_argument("--jobs", type=int, default=SeedOptions.jobs)
    parser.add_argument("--days", type=int, default=SeedOptions.days)
    parser.add_argument("--seed", type=int, default=SeedOptions.seed, help="the same seed gives the same history")
    parser.add_argument("--database-url", help="default: the studio's own database (STUDIO_DATABASE_URL)")
    parser.set_defaults(run=run, parser=parser)


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    engine = init_db(args.database_url or settings.database_url)
    options = SeedOptions(users=args.users, teams=args.teams, jobs=args.jobs, days=args.days, seed=args.seed)
    try:
        report = seed(engine=engine, settings=settings, options=options)
    except SeedError as exc:
        args.parser.exit(1, f"{exc}\n")
    print(
        f"Seeded {report.teams} teams, {report.users} users, {report.jobs} jobs and "
        f"{report.ledger_rows} ledger rows in {report.seconds:.1f} s."
    )
    return 0

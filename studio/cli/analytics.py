"""`python -m studio analytics rebuild`: recompute the daily usage rollups from the job table (studio.db.rollups).

Triggers keep the rollups exact, so this is for a database whose rollups were changed by hand or restored
apart from its jobs; the migration that added them ran it once already."""

from __future__ import annotations

import argparse
import time

from studio.config import get_settings
from studio.db.engine import get_engine, init_db
from studio.db.rollups import rebuild


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "analytics",
        help="maintain the usage rollups behind the Analytics page",
        description="Maintain the daily usage rollups behind the Analytics page and team budgets.",
    )
    actions = parser.add_subparsers(dest="action", required=True)
    rebuild_parser = actions.add_parser(
        "rebuild",
        help="recompute the rollups from the job table",
        description="Recompute every daily usage rollup from the job table, in one transaction.",
    )
    rebuild_parser.add_argument("--database-url", help="default: the studio's own database (STUDIO_DATABASE_URL)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    url = args.database_url or get_settings().database_url
    init_db(url)
    started = time.perf_counter()
    # The write lock (SQLite) for the whole rebuild, so no job changes between emptying a rollup and refilling it.
    with get_engine(url).execution_options(sqlite_begin="IMMEDIATE").begin() as connection:
        rows = rebuild(connection)
    summary = ", ".join(f"{table} {count:,} rows" for table, count in rows.items())
    print(f"Rebuilt the usage rollups from the job table in {time.perf_counter() - started:.1f} s: {summary}.")
    return 0

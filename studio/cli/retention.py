"""`python -m studio retention`: apply the retention period now (workers do it about once an hour)."""

from __future__ import annotations

import argparse

from studio.config import get_settings
from studio.db.engine import init_db, write_session
from studio.jobs.retention import purge_expired
from studio.media.storage import AssetStore


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "retention",
        help="delete uploads and results older than the retention period",
        description="Delete uploads and results older than the retention period (jobs and ledger stay).",
    )
    parser.add_argument("--days", type=int, help="override STUDIO_RETENTION_DAYS for this run")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    init_db(settings.database_url)
    days = settings.retention_days if args.days is None else args.days
    with write_session(settings.database_url) as session:
        purged = purge_expired(session=session, store=AssetStore(settings.assets_dir), days=days)
    print(f"Deleted {purged.assets} image rows and {purged.files} files older than {days} days.")
    return 0

"""Running scripted work to the end with a progress bar and a summary (`python -m studio batch|transform`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from studio.cli.runs import EXIT_REFUSED, RunSummary
from studio.config import Settings, get_settings
from studio.db.engine import init_db
from studio.errors import Refused

Progress = Callable[[int, int], None]  # (images done, images in all)


def run_with_progress(args: argparse.Namespace, work: Callable[[Settings, Progress], RunSummary]) -> int:
    """`work(settings, on_progress)` on the configured studio, under a progress bar on stderr; then the summary
    (or why nothing was submitted)."""
    from tqdm import tqdm

    settings = get_settings()
    init_db(settings.database_url)
    progress = tqdm(total=0, unit="image", desc=args.command, file=sys.stderr)

    def on_progress(done: int, total: int) -> None:
        progress.total = total
        progress.n = done
        progress.refresh()

    try:
        summary = work(settings, on_progress)
    except Refused as exc:
        progress.close()
        print(f"Nothing submitted: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    progress.close()
    print(summary.describe())
    print(f"results in {args.output}")
    return summary.exit_code

"""`python -m studio <command>`: every command of the studio, one parser; each command is a module of studio.cli
with `add_command(commands)` (its arguments) and `run(args)` (its exit status)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from studio.accounts.bootstrap import bootstrap
from studio.cli import admin, analytics, batch, retention, seed, serve, transform, worker
from studio.config import get_settings
from studio.errors import ConfigError

COMMANDS = (serve, transform, batch, worker, retention, seed, analytics, admin)
EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m studio",
        description="Img2Img Studio from the command line: the same queue, credits and history as the web app "
        "(STUDIO_* settings choose the database and data folder).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, do the web app's first-run set-up (schema, cookie key, the first admin with its plan and credits) on
    the database the command works on, then run the command."""
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
        if getattr(args, "database_url", None):
            settings = dataclasses.replace(settings, database_url=args.database_url)
        bootstrap(settings)
    except ConfigError as exc:
        print(f"The studio cannot start: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return args.run(args)

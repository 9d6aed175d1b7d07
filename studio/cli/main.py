"""`python -m studio <command>`: every command of the studio, one parser; each command is a module of studio.cli
with `add_command(commands)` (its arguments) and `run(args)` (its exit status)."""

from __future__ import annotations

import argparse

from studio.cli import analytics, batch, retention, seed, serve, transform, worker

COMMANDS = (serve, transform, batch, worker, retention, seed, analytics)


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
    args = build_parser().parse_args(argv)
    return args.run(args)

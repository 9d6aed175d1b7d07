"""`python -m studio batch`: a saved preset over every image in a folder, as one batch (Pro plans)."""

from __future__ import annotations

import argparse
from pathlib import Path

from studio.catalogue.presets import SeedPolicy
from studio.cli.progress import run_with_progress
from studio.cli.runs import run_batch


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "batch",
        help="apply a preset to every image in a folder (Pro plans)",
        description="Apply a saved preset to every JPG/PNG/WebP (and ZIP of them) in --input, as one batch; each "
        "image is its own job (a failure refunds only that image). Results go to --output as <name>-img2img.png.",
    )
    parser.add_argument("--user", required=True, help="whose credits, presets and history (username)")
    parser.add_argument("--preset", required=True, help="a preset the user owns or that is shared with their team")
    parser.add_argument("--input", required=True, type=Path, help="folder of images and/or ZIPs")
    parser.add_argument("--output", required=True, type=Path, help="folder for the results (created if missing)")
    parser.add_argument("--seed-policy", choices=[p.value for p in SeedPolicy], help="override the preset's")
    parser.add_argument("--no-worker", action="store_true", help="wait for the studio's workers instead of running one")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return run_with_progress(
        args,
        lambda settings, on_progress: run_batch(
            settings=settings,
            username=args.user,
            preset_name=args.preset,
            input_dir=args.input,
            output_dir=args.output,
            seed_policy=SeedPolicy(args.seed_policy) if args.seed_policy else None,
            run_worker=not args.no_worker,
            on_progress=on_progress,
        ),
    )

"""`python -m studio transform`: one job per input image, with a style or your own settings."""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from pipelines.params import MAX_SEED, Img2ImgParams
from studio.billing.pricing import Quality
from studio.catalogue.requests import JobRequest, custom_request, style_request
from studio.catalogue.styles import load_catalogue, starting_steps
from studio.cli.progress import run_with_progress
from studio.cli.runs import refusals, run_transform
from studio.config import Settings


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "transform",
        help="transform one or more images with a style or your own settings",
        description="Submit one job per input image and write the results to --output.",
    )
    parser.add_argument("--user", required=True, help="whose credits and history (username)")
    parser.add_argument("inputs", nargs="+", type=Path, help="image files")
    parser.add_argument("--output", required=True, type=Path, help="folder for the results")
    parser.add_argument("--style", help="a catalogue style id (default: your own settings on STUDIO_MODEL)")
    parser.add_argument("--prompt", default="", help="what the result should look like")
    parser.add_argument("--negative", default="", help="negative prompt")
    parser.add_argument("--strength", type=float, default=0.6, help="0–1 (default 0.6)")
    parser.add_argument(
        "--steps", type=int, help="schedule length (default: the quality tier's, 20/30/50, or a distilled model's own)"
    )
    parser.add_argument("--guidance", type=float, default=7.5, help="guidance scale (default 7.5)")
    parser.add_argument("--seed", type=int, help="noise seed (default: random)")
    parser.add_argument("--quality", choices=[q.value for q in Quality], default=Quality.standard.value)
    parser.add_argument("--no-worker", action="store_true", help="wait for the studio's workers instead")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return run_with_progress(
        args,
        lambda settings, on_progress: run_transform(
            settings=settings,
            username=args.user,
            inputs=args.inputs,
            output_dir=args.output,
            request=_request(settings, args),
            run_worker=not args.no_worker,
            on_progress=on_progress,
        ),
    )


def _request(settings: Settings, args: argparse.Namespace) -> JobRequest:
    quality = Quality(args.quality)
    with refusals():
        catalogue = load_catalogue(settings.catalogue_path) if args.style is not None else None
        style = catalogue.styles.get(args.style) if catalogue is not None else None  # unknown: style_request says so
        steps = args.steps if args.steps is not None else starting_steps(style, quality)
        params = Img2ImgParams(
            prompt=args.prompt,
            negative_prompt=args.negative,
            strength=args.strength,
            steps=steps,
            guidance=args.guidance,
            seed=args.seed if args.seed is not None else random.randint(0, MAX_SEED),
        )
        if style is None:
            return custom_request(settings=settings, params=params, quality=quality)
        return style_request(
            settings=settings, catalogue=catalogue, style_id=args.style, params=params, quality=quality
        )

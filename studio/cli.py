"""The command line (`python -m studio …`) and the Python API behind it, for scripted work.

Everything goes through the same queue, credits and history as the web app: jobs are submitted as the
named user, charged, run by a worker (one started here unless --no-worker, then the studio's own
workers run them), and appear in that user's History. Exit status: 0 when every image succeeded,
1 when some failed or were cancelled (their credits are refunded), 2 when nothing was submitted.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sqlmodel import col, select

from pipelines.params import MAX_SEED, Img2ImgParams
from studio.batches import IMAGE_SUFFIXES, read_uploads
from studio.catalogue import CatalogueError, load_catalogue
from studio.config import Settings, get_settings
from studio.db import init_db, session_for, write_session
from studio.job_requests import JobRequest, SubmitRefused, custom_request, style_request
from studio.models import Asset, Job, JobStatus, User
from studio.presets import PresetError, PresetSettings, SeedPolicy, find_preset, preset_request
from studio.pricing import Quality
from studio.queue import submit_batch, submit_job
from studio.storage import AssetStore
from studio.users import get_active_user
from studio.worker import Worker

EXIT_OK, EXIT_FAILURES, EXIT_REFUSED = 0, 1, 2


class CommandRefused(RuntimeError):
    """Nothing was submitted; the message says why."""


@dataclass(frozen=True)
class RunSummary:
    jobs: list[Job]
    written: list[Path]  # result files
    rejected: list[tuple[str, str]]  # input files that were not images the studio accepts

    def count(self, status: JobStatus) -> int:
        return sum(job.status is status for job in self.jobs)

    @property
    def credits_spent(self) -> int:
        return sum(job.cost for job in self.jobs if job.status is JobStatus.complete)

    @property
    def credits_refunded(self) -> int:
        return sum(job.cost for job in self.jobs if job.status in (JobStatus.failed, JobStatus.cancelled))

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.count(JobStatus.complete) == len(self.jobs) else EXIT_FAILURES

    def describe(self) -> str:
        lines = [
            f"{len(self.jobs)} image(s): {self.count(JobStatus.complete)} complete, {self.count(JobStatus.failed)} "
            f"failed, {self.count(JobStatus.cancelled)} cancelled · {self.credits_spent} credits spent, "
            f"{self.credits_refunded} refunded"
        ]
        lines += [f"  failed: job #{job.id}: {job.error}" for job in self.jobs if job.status is JobStatus.failed]
        lines += [f"  skipped {name}: {why}" for name, why in self.rejected]
        return "\n".join(lines)


def run_batch(
    *,
    settings: Settings,
    username: str,
    preset_name: str,
    input_dir: Path,
    output_dir: Path,
    seed_policy: SeedPolicy | None = None,
    run_worker: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> RunSummary:
    """Apply a preset to every image (and ZIP of images) in `input_dir`, as one batch; results to `output_dir`."""
    user = _user(settings, username)
    uploads = read_uploads(_input_files(input_dir))
    if not uploads.images:
        raise CommandRefused(f"No usable images in {input_dir} ({len(uploads.rejected)} file(s) refused).")
    with _refusals(), write_session(settings.database_url) as session:
        preset = PresetSettings.from_dict(find_preset(session=session, user=user, name=preset_name).settings)
        policy = seed_policy or preset.seed_policy
        catalogue, rng = load_catalogue(settings.catalogue_path), random.Random()
        requests = [
            preset_request(
                preset,
                settings=settings,
                catalogue=catalogue,
                seed=rng.randint(0, MAX_SEED) if policy is SeedPolicy.random else None,
            )
            for _ in uploads.images
        ]
        jobs = submit_batch(
            session=session,
            store=AssetStore(settings.assets_dir),
            settings=settings,
            user=user,
            images=uploads.images,
            requests=requests,
        )
    return _finish(settings, [job.id for job in jobs], output_dir, uploads.rejected, run_worker, on_progress)


def run_transform(
    *,
    settings: Settings,
    username: str,
    inputs: list[Path],
    output_dir: Path,
    request: JobRequest,
    run_worker: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> RunSummary:
    """One job per input image with `request` (any plan: these are single jobs, not a batch)."""
    user = _user(settings, username)
    uploads = read_uploads([(path.name, path.read_bytes()) for path in inputs])
    if not uploads.images:
        raise CommandRefused("None of the inputs is an image the studio accepts.")
    job_ids = []
    for name, upload in uploads.images:
        with _refusals(), write_session(settings.database_url) as session:
            job = submit_job(
                session=session,
                store=AssetStore(settings.assets_dir),
                settings=settings,
                user=user,
                upload=upload,
                original_name=name,
                request=request,
            )
        job_ids.append(job.id)
    return _finish(settings, job_ids, output_dir, uploads.rejected, run_worker, on_progress)


def _finish(
    settings: Settings,
    job_ids: list[int],
    output_dir: Path,
    rejected: list[tuple[str, str]],
    run_worker: bool,
    on_progress: Callable[[int, int], None] | None,
) -> RunSummary:
    """Run (or wait for) the jobs, then write each result next to its source's name."""
    worker = Worker(settings, name=f"cli:{time.time():.0f}") if run_worker else None
    while True:
        jobs = _jobs(settings, job_ids)
        done = sum(job.status.is_final for job in jobs)
        if on_progress is not None:
            on_progress(done, len(jobs))
        if done == len(jobs):
            break
        if worker is None or worker.run_once() is None:
            time.sleep(0.5)  # the studio's workers are on it (or another worker holds the rest)
    store, written, used = AssetStore(settings.assets_dir), [], set()
    output_dir.mkdir(parents=True, exist_ok=True)
    with session_for(settings.database_url) as session:
        for job in jobs:
            if job.result_asset_id is None:
                continue
            source, result = session.get(Asset, job.source_asset_id), session.get(Asset, job.result_asset_id)
            stem = PurePosixPath(source.original_name or f"job-{job.id}").stem
            name = f"{stem}-img2img.png" if stem not in used else f"{stem}-{job.id}-img2img.png"
            used.add(stem)
            (output_dir / name).write_bytes(store.read(result.sha256))
            written.append(output_dir / name)
    return RunSummary(jobs=jobs, written=written, rejected=rejected)


def _jobs(settings: Settings, job_ids: list[int]) -> list[Job]:
    with session_for(settings.database_url) as session:
        return list(session.exec(select(Job).where(col(Job.id).in_(job_ids)).order_by(col(Job.id))).all())


def _user(settings: Settings, username: str) -> User:
    with session_for(settings.database_url) as session:
        user = get_active_user(session=session, username=username)
    if user is None:
        raise CommandRefused(f"There is no active user {username!r}.")
    return user


@contextmanager
def _refusals() -> Iterator[None]:
    """A refusal from the studio (bad request, preset, catalogue, credits) means nothing was submitted."""
    try:
        yield
    except (SubmitRefused, PresetError, CatalogueError) as exc:
        raise CommandRefused(str(exc)) from exc


def _input_files(folder: Path) -> list[tuple[str, bytes]]:
    if not folder.is_dir():
        raise CommandRefused(f"{folder} is not a folder.")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | {".zip"})
    return [(path.name, path.read_bytes()) for path in paths]


# The command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m studio",
        description="Img2Img Studio from the command line: the same queue, credits and history as the web app "
        "(STUDIO_* settings choose the database and data folder).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    batch = commands.add_parser(
        "batch",
        help="apply a preset to every image in a folder (Pro plans)",
        description="Apply a saved preset to every JPG/PNG/WebP (and ZIP of them) in --input, as one batch; each "
        "image is its own job (a failure refunds only that image). Results go to --output as <name>-img2img.png.",
    )
    batch.add_argument("--user", required=True, help="whose credits, presets and history (username)")
    batch.add_argument("--preset", required=True, help="a preset the user owns or that is shared with their team")
    batch.add_argument("--input", required=True, type=Path, help="folder of images and/or ZIPs")
    batch.add_argument("--output", required=True, type=Path, help="folder for the results (created if missing)")
    batch.add_argument("--seed-policy", choices=[p.value for p in SeedPolicy], help="override the preset's")
    batch.add_argument("--no-worker", action="store_true", help="wait for the studio's workers instead of running one")

    transform = commands.add_parser(
        "transform",
        help="transform one or more images with a style or your own settings",
        description="Submit one job per input image and write the results to --output.",
    )
    transform.add_argument("--user", required=True, help="whose credits and history (username)")
    transform.add_argument("inputs", nargs="+", type=Path, help="image files")
    transform.add_argument("--output", required=True, type=Path, help="folder for the results")
    transform.add_argument("--style", help="a catalogue style id (default: your own settings on STUDIO_MODEL)")
    transform.add_argument("--prompt", default="", help="what the result should look like")
    transform.add_argument("--negative", default="", help="negative prompt")
    transform.add_argument("--strength", type=float, default=0.6, help="0–1 (default 0.6)")
    transform.add_argument("--steps", type=int, default=20, help="schedule length (default 20)")
    transform.add_argument("--guidance", type=float, default=7.5, help="guidance scale (default 7.5)")
    transform.add_argument("--seed", type=int, help="noise seed (default: random)")
    transform.add_argument("--quality", choices=[q.value for q in Quality], default=Quality.standard.value)
    transform.add_argument("--no-worker", action="store_true", help="wait for the studio's workers instead")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    init_db(settings.database_url)
    from tqdm import tqdm

    progress = tqdm(total=0, unit="image", desc=args.command, file=sys.stderr)

    def on_progress(done: int, total: int) -> None:
        progress.total = total
        progress.n = done
        progress.refresh()

    try:
        if args.command == "batch":
            summary = run_batch(
                settings=settings,
                username=args.user,
                preset_name=args.preset,
                input_dir=args.input,
                output_dir=args.output,
                seed_policy=SeedPolicy(args.seed_policy) if args.seed_policy else None,
                run_worker=not args.no_worker,
                on_progress=on_progress,
            )
        else:
            summary = run_transform(
                settings=settings,
                username=args.user,
                inputs=args.inputs,
                output_dir=args.output,
                request=_transform_request(settings, args),
                run_worker=not args.no_worker,
                on_progress=on_progress,
            )
    except CommandRefused as exc:
        progress.close()
        print(f"Nothing submitted: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    progress.close()
    print(summary.describe())
    print(f"results in {args.output}")
    return summary.exit_code


def _transform_request(settings: Settings, args: argparse.Namespace) -> JobRequest:
    params = Img2ImgParams(
        prompt=args.prompt,
        negative_prompt=args.negative,
        strength=args.strength,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed if args.seed is not None else random.randint(0, MAX_SEED),
    )
    quality = Quality(args.quality)
    with _refusals():
        if args.style is None:
            return custom_request(settings=settings, params=params, quality=quality)
        catalogue = load_catalogue(settings.catalogue_path)
        return style_request(
            settings=settings, catalogue=catalogue, style_id=args.style, params=params, quality=quality
        )

"""Scripted work, the Python API behind `python -m studio batch|transform`.

Everything goes through the same queue, credits and history as the web app: jobs are submitted as the
named user, charged, run by a worker (one started here unless told not to, then the studio's own workers
run them), and appear in that user's History. Exit status: 0 when every image succeeded, 1 when some failed
or were cancelled (their credits are refunded), 2 when nothing was submitted.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sqlmodel import col, select

from pipelines.params import MAX_SEED
from studio.accounts.users import get_active_user
from studio.batches.uploads import IMAGE_SUFFIXES, read_uploads
from studio.catalogue.presets import PresetSettings, SeedPolicy, find_preset, preset_request
from studio.catalogue.requests import JobRequest
from studio.catalogue.styles import CatalogueError, load_catalogue
from studio.config import Settings
from studio.db.engine import session_for, write_session
from studio.db.tables import Asset, Job, JobStatus, User
from studio.errors import Refused
from studio.jobs.submit import submit_batch, submit_job
from studio.jobs.worker import Worker
from studio.media.storage import AssetStore
from studio.media.validation import validate_image_bytes

EXIT_OK, EXIT_FAILURES, EXIT_REFUSED = 0, 1, 2


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
    with _staging(settings) as staging:
        uploads = read_uploads(_input_files(input_dir), staging=staging, max_pixels=settings.max_batch_pixels)
        if not uploads.images:
            raise Refused(f"No usable images in {input_dir} ({len(uploads.rejected)} file(s) refused).")
        with refusals(), write_session(settings.database_url) as session:
            preset = PresetSettings.from_dict(find_preset(session=session, user=user, name=preset_name).settings)
            policy = seed_policy or preset.seed_policy
            catalogue, rng = load_catalogue(settings.catalogue_path), random.Random()
            requests = [
                preset_request(
                    preset,
                    session=session,
                    user=user,
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
                masks=uploads.masks or None,  # name.mask.png beside name.png: an inpainting preset's masks
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
    job_ids = []
    with _staging(settings) as staging:
        uploads = read_uploads(
            [(path.name, path) for path in inputs], staging=staging, max_pixels=None, max_images=None
        )
        if not uploads.images:
            raise Refused("None of the inputs is an image the studio accepts.")
        for image in uploads.images:  # one at a time: a staged image is validated (decoded) again to submit it
            with refusals(), write_session(settings.database_url) as session:
                job = submit_job(
                    session=session,
                    store=AssetStore(settings.assets_dir),
                    settings=settings,
                    user=user,
                    upload=validate_image_bytes(image.read(), filename=image.name),
                    original_name=image.name,
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
        raise Refused(f"There is no active user {username!r}.")
    return user


@contextmanager
def refusals() -> Iterator[None]:
    """A broken style catalogue refuses the command like any other refusal: nothing was submitted."""
    try:
        yield
    except CatalogueError as exc:
        raise Refused(str(exc)) from exc


def _input_files(folder: Path) -> list[tuple[str, Path]]:
    if not folder.is_dir():
        raise Refused(f"{folder} is not a folder.")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | {".zip"})
    return [(path.name, path) for path in paths]


@contextmanager
def _staging(settings: Settings) -> Iterator[AssetStore]:
    """A private staging folder for this command's uploads (under the data folder, which has room), removed after."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="staging-cli-", dir=settings.data_dir) as folder:
        yield AssetStore(Path(folder))


# The command line

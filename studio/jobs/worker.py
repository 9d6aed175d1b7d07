"""Queue workers: claim a job, run it, record the outcome. Run any number, in any process.

`python -m studio worker` runs one as its own process (one per GPU; `python -m studio serve` starts one beside the
server); the Streamlit server can run one in a background thread (studio.web.serving), against the same database.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Sequence

from pipelines import model_stack_ready, set_cpu_threads
from pipelines.errors import ModelUnavailableError, PipelineInputError, RunCancelled
from pipelines.params import RunSpec
from studio.catalogue.requests import denoising_steps
from studio.config import Settings
from studio.db.engine import session_for, write_session
from studio.db.tables import Asset, Job, utcnow
from studio.jobs.batching import BatchKey, batch_limit, claim_key
from studio.jobs.heartbeats import HEARTBEAT_SECONDS, beat, mark_stopped
from studio.jobs.leases import (
    LEASE_SECONDS,
    claim_batch,
    claimed_sweep,
    complete_job,
    fail_job,
    finish_cancelled,
    reap_expired,
    renew_lease,
)
from studio.jobs.render import Rendered, load_model_stack, render_batch, render_job, render_sweep
from studio.jobs.retention import purge_expired
from studio.media.storage import AssetStore

log = logging.getLogger(__name__)

RETENTION_INTERVAL_SECONDS = 3600.0


def failure_message(exc: BaseException) -> str:
    """What the job's owner reads; a traceback goes to the worker's log instead."""
    if isinstance(exc, ModelUnavailableError | PipelineInputError):
        return str(exc)
    if "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError":
        return "Ran out of memory on the worker. Try a smaller image or a lower quality tier. Credits refunded."
    return f"Internal error ({type(exc).__name__}): {exc}"


class _LeaseKeeper(threading.Thread):
    """Renews a running job's lease and writes its progress, until told to stop.

    A separate thread, because a job may spend longer than a lease before its first step
    (loading a real model, waiting for the GPU); the step callback only records progress here.
    """

    def __init__(self, settings: Settings, job: Job, worker: str, lease_seconds: float, interval: float) -> None:
        super().__init__(name=f"lease-{job.id}", daemon=True)
        self.settings, self.job, self.worker = settings, job, worker
        self.lease_seconds, self.interval = lease_seconds, interval
        self.step = self.total = 0
        self.held = True
        self.cancel_requested = False
        self.done = threading.Event()
        self.progressed = threading.Event()

    def record(self, step: int, total: int) -> None:
        self.step, self.total = step, total
        self.progressed.set()

    def should_stop(self) -> bool:
        return not self.held or self.cancel_requested

    def finish(self) -> None:
        """Stop renewing the lease (the outcome is written next)."""
        self.done.set()
        self.progressed.set()
        self.join()

    def beat(self) -> None:
        with write_session(self.settings.database_url) as session:
            lease = renew_lease(
                session=session,
                job_id=self.job.id,
                worker=self.worker,
                attempt=self.job.attempt,
                step=self.step,
                total=self.total,
                lease_seconds=self.lease_seconds,
            )
        self.held, self.cancel_requested = lease.held, lease.cancel_requested

    def run(self) -> None:
        while not self.done.is_set():
            # Wake on the interval, or sooner when a step finished, so the UI sees each step.
            self.progressed.wait(self.interval)
            self.progressed.clear()
            if self.done.is_set():
                break
            try:
                self.beat()
            except Exception:  # a busy database must not kill the job; the next beat retries
                log.exception("Heartbeat for job %s failed", self.job.id)


def studio_worker_threads(settings: Settings) -> int | None:
    """Torch CPU threads of the studio's own worker (in the server or beside it): the configured number, or one core
    fewer than the process may use, so the server (pages, polling) keeps a core; None leaves torch's choice
    (STUDIO_WORKER_THREADS=0)."""
    if settings.worker_threads is not None:
        return settings.worker_threads or None
    return max(1, len(os.sched_getaffinity(0)) - 1)


class Worker:
    def __init__(
        self,
        settings: Settings,
        *,
        name: str | None = None,
        lease_seconds: float = LEASE_SECONDS,
        heartbeat_seconds: float | None = None,
        reap_seconds: float | None = None,
        threads: int | None = None,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError(f"The lease must be positive, got {lease_seconds}")
        self.settings = settings
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = heartbeat_seconds or min(1.0, lease_seconds / 3)
        # How often the reaper timer looks for expired leases: a lost job waits at most a lease and this long.
        self.reap_seconds = reap_seconds or lease_seconds / 2
        self.store = AssetStore(settings.assets_dir)
        self.next_purge = 0.0  # monotonic time of the next retention run
        self.current_job_id: int | None = None  # for the heartbeat (the admin Models page)
        # The most jobs one loop takes, as last decided, and why (the heartbeat; batching.batch_limit).
        self.batch_max: int | None = settings.batch_max
        self.batch_basis: str | None = "STUDIO_BATCH_MAX" if settings.batch_max is not None else None
        self.started_at = utcnow()
        self.threads = threads  # torch CPU threads for this worker's runs; None: torch's choice

    def warm_up(self) -> None:
        """Load the configured model (STUDIO_MODEL; built, in preview mode) before the first job needs it."""
        if self.threads is not None:
            set_cpu_threads(self.threads)
        try:
            load_model_stack(self.settings)
            from pipelines.cache import get_base_pipeline
            from pipelines.registry import resolve_model

            get_base_pipeline(resolve_model(self.settings.model, models_dir=self.settings.models_dir))
        except Exception:  # the job that needs the model reports the error to its user
            log.exception("Worker %s: model warm-up failed for %r", self.name, self.settings.model)

    def run_once(self) -> Job | None:
        """Reap expired leases, then claim and run one job, one sweep, or up to STUDIO_BATCH_MAX compatible jobs in
        one loop (studio.jobs.batching); None when the queue is empty. Returns the head job."""
        url = self.settings.database_url
        self.reap()
        with write_session(url) as session:
            jobs = claim_batch(
                session=session,
                worker=self.name,
                lease_seconds=self.lease_seconds,
                batch_max=self._batch_limit,
                batch_key=claim_key(session=session, settings=self.settings),
            )
            job = jobs[0] if jobs else None
            cells = claimed_sweep(session=session, job=job, worker=self.name) if job and job.sweep_id else None
        if job is None:
            return None
        if self.threads is not None:
            # Here, in the thread that runs the models: once torch is loaded, each thread keeps its own count (the
            # server's model warm-up may have loaded it with torch's default).
            set_cpu_threads(self.threads)
        self.current_job_id = job.id
        try:
            if cells:
                self.process_sweep(cells)
            elif len(jobs) > 1:
                self.process_batch(jobs)
            else:
                self.process(job)
        finally:
            self.current_job_id = None
        return job

    def _batch_limit(self, key: BatchKey) -> int:
        """The claim's batch size for jobs of `key`'s kind, remembered for the heartbeat."""
        self.batch_max, self.batch_basis = batch_limit(self.settings, key)
        return self.batch_max

    def process(self, job: Job, keeper: _LeaseKeeper | None = None) -> None:
        """Run one job (`keeper`: its lease keeper, already running, when a failed batch hands it over)."""
        url = self.settings.database_url
        keeper = keeper or self._keeper(job)
        rendered = error = None
        try:
            with session_for(url) as session:
                source = session.get(Asset, job.source_asset_id)
                mask = session.get(Asset, job.mask_asset_id) if job.mask_asset_id is not None else None
            # An IP-Adapter's reference image, by its hash (studio.catalogue.references).
            reference = job.params.get("reference")
            rendered = render_job(
                job,
                source_png=self.store.read(source.sha256),
                source_sha256=source.sha256,
                mask_png=self.store.read(mask.sha256) if mask is not None else None,
                mask_sha256=mask.sha256 if mask is not None else None,
                references_png=[self.store.read(sha256) for sha256 in job.params.get("references", [])],
                reference_png=self.store.read(reference["sha256"]) if reference else None,
                settings=self.settings,
                on_step=keeper.record,
                should_stop=keeper.should_stop,
            )
        except RunCancelled:
            pass
        except Exception as exc:
            log.exception("Job %s failed", job.id)
            error = failure_message(exc)
        finally:
            keeper.finish()
        self._record(job, keeper, rendered, error)

    def process_sweep(self, cells: list[Job]) -> None:
        """Run a sweep's cells in one pass; each cell ends (and is charged or refunded) on its own.

        The pass stops early only when no cell still wants its result (all cancelled or leases lost);
        a cell cancelled mid-pass is finished as cancelled and refunded when the pass ends.
        """
        keepers = [self._keeper(cell) for cell in cells]
        steps = [denoising_steps(RunSpec.from_dict(cell.params), cell.params.get("family")) for cell in cells]

        def on_step(step: int, total: int, indices: Sequence[int]) -> None:
            # The cells of the running pass: each ends on its last step; one of d steps starts d steps before the end.
            for index in indices:
                keepers[index].record(max(0, step - (total - steps[index])), steps[index])

        rendered, error = [None] * len(cells), None
        try:
            with session_for(self.settings.database_url) as session:
                source = session.get(Asset, cells[0].source_asset_id)
                mask = session.get(Asset, cells[0].mask_asset_id) if cells[0].mask_asset_id is not None else None
            rendered = render_sweep(
                cells,
                source_png=self.store.read(source.sha256),
                source_sha256=source.sha256,
                mask_png=self.store.read(mask.sha256) if mask is not None else None,
                mask_sha256=mask.sha256 if mask is not None else None,
                settings=self.settings,
                on_step=on_step,
                should_stop=lambda: all(keeper.should_stop() for keeper in keepers),
            )
        except RunCancelled:
            pass
        except Exception as exc:
            log.exception("Sweep %s failed", cells[0].sweep_id)
            error = failure_message(exc)
        finally:
            for keeper in keepers:
                keeper.finish()
        for cell, keeper, result in zip(cells, keepers, rendered, strict=True):
            self._record(cell, keeper, result, error)

    def process_batch(self, jobs: list[Job]) -> None:
        """Run compatible jobs in one batched loop (pipelines.batch); each keeps its own lease, progress, cancel and
        outcome. A cancelled job (or one whose lease was lost) leaves the loop at its next step and the others go on.
        If the batch as a whole fails (a bad input, out of memory), each job reruns on its own, so each gets its own
        outcome and message."""
        keepers = [self._keeper(job) for job in jobs]
        rendered: list[Rendered | None] = [None] * len(jobs)
        failed = False
        try:
            with session_for(self.settings.database_url) as session:
                sources = [session.get(Asset, job.source_asset_id) for job in jobs]
            rendered = render_batch(
                jobs,
                sources_png=[self.store.read(source.sha256) for source in sources],
                sources_sha256=[source.sha256 for source in sources],
                settings=self.settings,
                on_step=lambda member, step, total: keepers[member].record(step, total),
                should_stop=lambda member: keepers[member].should_stop(),
            )
        except RunCancelled:
            pass
        except Exception:
            log.exception("Batch of jobs %s failed; running them one at a time", [job.id for job in jobs])
            failed = True
        for job, keeper, result in zip(jobs, keepers, rendered, strict=True):
            if failed and not keeper.should_stop():
                self.process(job, keeper)  # its keeper has renewed its lease while the others ran
            else:
                keeper.finish()
                self._record(job, keeper, result, None)

    def _keeper(self, job: Job) -> _LeaseKeeper:
        keeper = _LeaseKeeper(self.settings, job, self.name, self.lease_seconds, self.heartbeat_seconds)
        keeper.start()
        return keeper

    def _record(self, job: Job, keeper: _LeaseKeeper, rendered: Rendered | None, error: str | None) -> None:
        """Write a job's outcome, fenced by its lease: its result, its failure, or its cancellation."""
        lease = dict(job_id=job.id, worker=self.name, attempt=job.attempt)
        with write_session(self.settings.database_url) as session:
            if not keeper.held:
                recorded, outcome = False, "lost its lease"
            elif keeper.cancel_requested:
                recorded, outcome = finish_cancelled(session=session, **lease), "cancelled"
            elif error is not None or rendered is None:
                outcome = "failed"
                recorded = fail_job(session=session, **lease, error=error or "The run stopped without a result.")
            else:
                # The file first: a result whose row is missing is harmless, a row without its file is not.
                self.store.put(rendered.png)
                outcome = "complete"
                recorded = complete_job(session=session, **lease, result=rendered.asset, recipe=rendered.recipe)
        if not recorded:
            log.warning("Job %s attempt %s: lease lost, outcome %s discarded", job.id, job.attempt, outcome)

    def reap(self) -> list[Job]:
        """Put jobs whose lease ran out back in the queue (or end them: studio.jobs.leases.reap_expired)."""
        with write_session(self.settings.database_url) as session:
            reaped = reap_expired(session=session)
        if reaped:
            log.info("Worker %s reaped expired leases of jobs %s", self.name, [job.id for job in reaped])
        return reaped

    def _reap_until(self, stop: threading.Event, interval: float) -> None:
        """Reap on a timer while this worker is busy, too: a hung worker's job is rerun even when every other
        worker is in the middle of a long job (reaping only between jobs left it waiting for one to end)."""
        while not stop.wait(interval):
            try:
                self.reap()
            except Exception:  # a busy database must not stop the timer; the next round retries
                log.exception("Worker %s: reaping failed", self.name)

    def purge_if_due(self) -> None:
        """Apply the retention period about once an hour (any worker may; it is idempotent)."""
        if time.monotonic() < self.next_purge or self.settings.retention_days <= 0:
            return
        self.next_purge = time.monotonic() + RETENTION_INTERVAL_SECONDS
        with write_session(self.settings.database_url) as session:
            purged = purge_expired(session=session, store=self.store, days=self.settings.retention_days)
        if purged.assets:
            log.info("Retention: deleted %s image rows and %s files", purged.assets, purged.files)

    def beat(self) -> None:
        """Write this worker's heartbeat row: device, current job, loaded models with their memory and the budget
        (the admin Models page).

        Reads the model cache only once a job has imported it: importing torch and diffusers just for a
        heartbeat would hold up an idle worker's start and its SIGTERM by seconds.
        """
        cache = sys.modules["pipelines.cache"] if model_stack_ready() else None
        with write_session(self.settings.database_url) as session:
            beat(
                session=session,
                name=self.name,
                device=cache.pick_device() if cache is not None else "not loaded yet",
                current_job_id=self.current_job_id,
                loaded_models=cache.loaded_models() if cache is not None else [],
                memory=cache.memory_report().to_dict() if cache is not None else None,
                batch_max=self.batch_max,
                batch_basis=self.batch_basis,
                started_at=self.started_at,
            )

    def _beat_until(self, stop: threading.Event, interval: float) -> None:
        while True:
            try:
                self.beat()
            except Exception:  # a busy database must not stop the worker; the next beat retries
                log.exception("Worker %s: heartbeat failed", self.name)
            if stop.wait(interval):
                return

    def run_forever(self, stop: threading.Event, poll_seconds: float = 0.5) -> None:
        log.info("Worker %s started", self.name)
        timers_done = threading.Event()
        timers = [
            threading.Thread(
                target=self._beat_until, args=(timers_done, HEARTBEAT_SECONDS), name="heartbeat", daemon=True
            ),
            threading.Thread(
                target=self._reap_until, args=(timers_done, self.reap_seconds), name="reaper", daemon=True
            ),
        ]
        for timer in timers:
            timer.start()
        try:
            self._serve(stop, poll_seconds)
        finally:
            timers_done.set()
            for timer in timers:
                timer.join(HEARTBEAT_SECONDS)
            try:
                with write_session(self.settings.database_url) as session:
                    mark_stopped(session=session, name=self.name)
            except Exception:
                log.exception("Worker %s: could not record its stop", self.name)
        log.info("Worker %s stopped", self.name)

    def _serve(self, stop: threading.Event, poll_seconds: float) -> None:
        while not stop.is_set():
            try:
                self.purge_if_due()
            except Exception:  # retention retries next hour; the queue must go on
                log.exception("Worker %s: retention failed", self.name)
            try:
                job = self.run_once()
            except Exception:  # e.g. the database is briefly unavailable: wait and go on
                log.exception("Worker %s: queue error", self.name)
                job = None
            if job is None:
                stop.wait(poll_seconds)

"""Queue workers as real processes (`python -m studio worker`): crashes, concurrency and signals.

Each test runs workers as subprocesses against the temporary studio of the `studio` fixture; they
inherit its STUDIO_* environment (plus the database URL, model and size cap spelled out, so a local
secrets.toml cannot point them elsewhere). Worker output goes to a log file per worker, quoted when
an assertion fails. Every worker a test starts is killed at the end, whatever happened.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from pipelines.params import Img2ImgParams
from studio.accounts.users import create_user
from studio.billing.credits import Account, balance, ledger_sum
from studio.billing.pricing import Quality
from studio.catalogue.requests import custom_request
from studio.config import PROJECT_ROOT, Settings
from studio.db.engine import session_for, write_session
from studio.db.tables import Asset, AssetKind, CreditEntry, CreditKind, Job, JobStatus, User, utcnow
from studio.jobs.submit import submit_job
from studio.media.storage import AssetStore
from studio.media.validation import validate_image_bytes
from tests.support import png_bytes

# 20 full denoising steps on a 256×256 source: several seconds on the tiny model on a CPU, so
# there is time to kill the worker between its first and its last step.
LONG_PARAMS = Img2ImgParams(prompt="a slow watercolor", strength=1.0, steps=20, seed=11)
SHORT_PARAMS = Img2ImgParams(prompt="a quick sketch", strength=0.5, steps=4, seed=0)  # 2 denoising steps
# Generous: only reached when something is wrong, and the machine may be busy with other test runs.
DEADLINE_S = 120.0


class Workers:
    """Starts `python -m studio worker` processes for one studio and cleans up after them."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        self.stopped: set[str] = set()  # stopped on purpose: their exit is no failure
        self.env = os.environ.copy()  # the studio fixture's STUDIO_* settings
        self.env.update(
            STUDIO_DATABASE_URL=settings.database_url,
            STUDIO_MODEL=settings.model,
            STUDIO_MAX_OUTPUT_SIDE=str(settings.max_output_side),
            # One torch thread per worker: two workers (or a worker beside another test run) with a thread
            # per core each oversubscribe a small CPU machine and run many times slower than one at a time.
            OMP_NUM_THREADS="1",
        )

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = (self.log_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "studio", "worker", "--name", name, *args],
            cwd=PROJECT_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()  # the child holds its own copy
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"----- {name} -----\n{self.log(name)[-4000:]}" for name in self.procs)

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
        """Poll `condition`; fail (with the workers' logs) on timeout or if a worker exited meanwhile."""
        deadline = time.monotonic() + timeout
        while not condition():
            exited = {
                name: proc.returncode
                for name, proc in self.procs.items()
                if name not in self.stopped and proc.poll() is not None
            }
            assert not exited, f"worker(s) exited {exited} while waiting for {what}\n{self.logs()}"
            assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}\n{self.logs()}"
            time.sleep(0.05)

    def stop(self, name: str, sig: signal.Signals = signal.SIGTERM, timeout: float = DEADLINE_S) -> int:
        proc = self.procs[name]
        self.stopped.add(name)
        os.kill(proc.pid, sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {name} did not exit within {timeout:.0f} s of {sig.name}\n{self.logs()}")

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)


@pytest.fixture
def workers(studio, studio_settings: Settings, tmp_path: Path) -> Iterator[Workers]:
    started = Workers(studio_settings, tmp_path)
    try:
        yield started
    finally:
        started.kill_all()


@pytest.fixture
def painter(studio, studio_settings: Settings) -> User:
    """A member with the 10 trial credits every new account gets."""
    with session_for(studio_settings.database_url) as session:
        return create_user(session=session, username="painter", password="painter-password", email="p@example.com")


def submit(settings: Settings, user: User, params: Img2ImgParams, quality: Quality = Quality.standard) -> Job:
    with write_session(settings.database_url) as session:
        return submit_job(
            session=session,
            store=AssetStore(settings.assets_dir),
            settings=settings,
            user=user,
            upload=validate_image_bytes(png_bytes(256, 256)),
            original_name="photo.png",
            request=custom_request(settings=settings, params=params, quality=quality),
        )


def load(settings: Settings, job_id: int) -> Job:
    with session_for(settings.database_url) as session:
        return session.get(Job, job_id)


def ledger(settings: Settings, job_id: int) -> list[tuple[CreditKind, int]]:
    """The job's credit rows as (kind, amount), in the order they were written."""
    with session_for(settings.database_url) as session:
        rows = session.exec(select(CreditEntry).where(CreditEntry.job_id == job_id).order_by(CreditEntry.id)).all()
    return [(row.kind, row.amount) for row in rows]


def user_balance(settings: Settings, user: User) -> tuple[int, int]:
    """(spendable balance, plain ledger sum) of the user's own account."""
    account = Account(user_id=user.id)
    with session_for(settings.database_url) as session:
        return balance(session=session, account=account, now=utcnow()), ledger_sum(session=session, account=account)


def result_assets(settings: Settings, user: User) -> list[Asset]:
    with session_for(settings.database_url) as session:
        return list(session.exec(select(Asset).where(Asset.user_id == user.id, Asset.kind == AssetKind.result)).all())


@pytest.mark.slow
def test_a_job_whose_worker_is_killed_mid_run_is_rerun_by_another_and_charged_once(
    workers: Workers, studio_settings: Settings, painter: User
) -> None:
    settings = studio_settings
    initial, _ = user_balance(settings, painter)
    job = submit(settings, painter, LONG_PARAMS, Quality.high)
    assert job.cost == 2  # 1 (preview model) × 1.5 (high), rounded up: distinguishes "charged once" from twice

    workers.start("w1", "--lease", "2", "--poll", "0.1")

    def running_on_w1() -> bool:
        row = load(settings, job.id)
        return row.status is JobStatus.processing and row.worker == "w1" and row.progress_step >= 1

    workers.wait_until(running_on_w1, "w1 to run the first denoising step")
    assert workers.stop("w1", signal.SIGKILL) == -signal.SIGKILL
    killed = load(settings, job.id)
    assert killed.status is JobStatus.processing and killed.attempt == 1, "w1 finished before it was killed"
    assert killed.progress_step < killed.progress_total == LONG_PARAMS.denoising_steps
    assert ledger(settings, job.id) == [(CreditKind.reserve, -2)]  # nothing settled by the dead worker

    # w2 reaps the job once w1's lease (2 s after its last heartbeat) has run out, then runs it again.
    workers.start("w2", "--lease", "2", "--poll", "0.1")
    # Wait for an end state: once reaped, the job is briefly `queued` again before w2 claims it.
    workers.wait_until(
        lambda: load(settings, job.id).status in (JobStatus.complete, JobStatus.failed, JobStatus.cancelled),
        "w2 to rerun the job to its end",
    )

    done = load(settings, job.id)
    assert done.status is JobStatus.complete, f"{done.status}: {done.error}\n{workers.logs()}"
    assert (done.attempt, done.worker) == (2, "w2")
    assert done.progress_step == done.progress_total == LONG_PARAMS.denoising_steps
    kinds = [kind for kind, _ in ledger(settings, job.id)]
    assert kinds.count(CreditKind.reserve) == 1 and kinds.count(CreditKind.commit) == 1
    assert CreditKind.refund not in kinds
    assert ledger(settings, job.id) == [(CreditKind.reserve, -2), (CreditKind.commit, 0)]
    assert user_balance(settings, painter) == (initial - done.cost, initial - done.cost)
    results = result_assets(settings, painter)
    assert [asset.id for asset in results] == [done.result_asset_id]
    assert AssetStore(settings.assets_dir).exists(results[0].sha256)
    assert workers.procs["w2"].poll() is None  # still serving the queue


@pytest.mark.slow
def test_two_worker_processes_run_each_queued_job_exactly_once(
    workers: Workers, studio_settings: Settings, painter: User
) -> None:
    settings = studio_settings
    initial, _ = user_balance(settings, painter)
    # Different seeds, so every result is a different image (and a different stored file).
    jobs = [submit(settings, painter, Img2ImgParams(**{**SHORT_PARAMS.__dict__, "seed": seed})) for seed in range(6)]
    assert user_balance(settings, painter)[0] == initial - sum(job.cost for job in jobs)

    # The default lease (30 s): a worker slowed down by a busy machine must not be presumed dead here.
    for name in ("w1", "w2"):
        workers.start(name, "--poll", "0.1")

    def all_ended() -> bool:
        return all(load(settings, job.id).status not in (JobStatus.queued, JobStatus.processing) for job in jobs)

    workers.wait_until(all_ended, "all six jobs to end")
    for name in ("w1", "w2"):
        assert workers.stop(name, signal.SIGTERM) == 0, workers.logs()

    done = [load(settings, job.id) for job in jobs]
    for job in done:
        assert job.status is JobStatus.complete, f"job {job.id}: {job.status} {job.error}\n{workers.logs()}"
        assert job.attempt == 1, f"job {job.id} ran {job.attempt} times\n{workers.logs()}"
        assert job.worker in ("w1", "w2")
        assert ledger(settings, job.id) == [(CreditKind.reserve, -job.cost), (CreditKind.commit, 0)]
    # Both processes took jobs from the queue: it was worked concurrently, not by one of them alone.
    assert {job.worker for job in done} == {"w1", "w2"}, workers.logs()

    results = result_assets(settings, painter)
    assert sorted(asset.id for asset in results) == sorted(job.result_asset_id for job in done)
    assert len({asset.id for asset in results}) == len({asset.sha256 for asset in results}) == len(jobs)
    store = AssetStore(settings.assets_dir)
    assert all(store.exists(asset.sha256) for asset in results)
    spent = sum(job.cost for job in done)
    assert user_balance(settings, painter) == (initial - spent, initial - spent)


@pytest.mark.slow
def test_sigterm_lets_a_busy_worker_finish_its_job_before_it_exits(
    workers: Workers, studio_settings: Settings, painter: User
) -> None:
    settings = studio_settings
    job = submit(settings, painter, LONG_PARAMS, Quality.high)
    workers.start("w1", "--poll", "0.1")
    workers.wait_until(lambda: load(settings, job.id).progress_step >= 1, "w1 to run the first denoising step")

    signalled_at = utcnow()
    assert workers.stop("w1", signal.SIGTERM) == 0, workers.logs()
    done = load(settings, job.id)
    assert done.status is JobStatus.complete, f"{done.status}: {done.error}\n{workers.logs()}"
    assert (done.attempt, done.worker) == (1, "w1")
    assert done.finished_at > signalled_at, "the job ended before the signal: nothing was tested"
    assert ledger(settings, job.id) == [(CreditKind.reserve, -2), (CreditKind.commit, 0)]
    assert "Worker w1 stopped" in workers.log("w1")


def test_sigterm_stops_an_idle_worker_promptly(workers: Workers) -> None:
    workers.start("idle", "--poll", "0.5")
    # Logged after the signal handlers are installed, so the SIGTERM below is the worker's to handle.
    workers.wait_until(lambda: "Worker idle started" in workers.log("idle"), "the worker to start", timeout=60)

    sent = time.monotonic()
    assert workers.stop("idle", signal.SIGTERM, timeout=5) == 0, workers.logs()
    assert time.monotonic() - sent < 5
    assert "Worker idle stopped" in workers.log("idle")


def test_worker_help_documents_the_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "studio", "worker", "--help"],
        cwd=PROJECT_ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "python -m studio worker" in done.stdout
    for option in ("--once", "--lease", "--poll", "--name", "--device"):
        assert option in done.stdout


def test_worker_refuses_a_device_it_does_not_have() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "studio", "worker", "--device", "no-such-device:0"],
        cwd=PROJECT_ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--device no-such-device:0" in done.stderr


@pytest.mark.parametrize("option", ["--lease", "--poll"])
def test_worker_refuses_a_zero_lease_or_poll(option: str) -> None:
    # A zero lease would expire as it is written: another worker would reap and rerun the job at once.
    done = subprocess.run(
        [sys.executable, "-m", "studio", "worker", option, "0"],
        cwd=PROJECT_ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "must be more than 0 seconds" in done.stderr

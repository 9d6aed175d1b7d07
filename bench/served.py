"""Served studio: jobs run by the studio as README serves it, watched by a real browser, vs the raw pipeline call.

Run from the repository root:

    python bench/served.py                              # 3 rounds, as README serves the studio
    python bench/served.py --rounds 5 --variant 'gc-on: STREAMLIT_RUNNER_POST_SCRIPT_GC=true single'
    python bench/served.py --watchers 0 1 5 20          # server CPU per second of pages watching queued jobs

Starts the studio with README's command (`python -m studio serve`, with `--port`/`--address` for a free loopback
port: tests.e2e.support.serve_command) in the repository, against a temporary data folder made under `data/`
(where README's studio keeps its data, so the file watcher, if on, sees its writes), and drives Debian's chromium
through Playwright as a person does: log in, upload a 512×512 source, keep the Transform page's defaults (your own
settings, strength 0.6, Standard = 20 steps, guidance 7.5: 12 denoising steps), click *Transform*, wait for the
result.

Each round, interleaved so drift of a shared machine hits every side alike:
  raw      `run_img2img` in this process on the same inputs (model loaded, no studio around it), once with
           torch's default thread count and once with the in-process worker's, when they differ;
  1 page   one job from one page;
  3 pages  three jobs clicked at once from three pages (one worker: they queue behind each other).
Reported per variant: the in-app job run (started_at → finished_at in the database), queue wait, click →
result in the browser, CPU seconds per job of the studio's processes (server and worker, however started) and
of the browser, against the raw call's time and CPU. Medians; the ratio is in-app run ÷ raw.

--variant 'NAME: TOKENS' adds a studio started differently, alternated with README's in every round. Tokens:
`--dev` goes to `python -m studio serve`; `NAME=VALUE` sets an environment variable of the server (Streamlit reads
its options from STREAMLIT_SECTION_OPTION variables too, over .streamlit/config.toml); `worker` (or
`worker:--threads 1`) also starts `python -m studio worker` beside it (with STUDIO_IN_PROCESS_WORKER=0 unless
given); `single` measures it from one page only (no concurrent pages); `watchers<=N` (with --watchers) measures
it with up to N pages only. --no-readme drops README's own studio.

--watchers N … measures the live job panel's polling instead: a studio with no worker (so jobs stay queued),
N logged-in pages each watching its own queued job; server CPU per second over --watch-seconds.
"""

from __future__ import annotations

import argparse
import ctypes
import io
import os
import platform
import re
import resource
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# What README tells a user to type to serve the studio (tests/studio/cli/test_serve.py keeps the two in step).
SERVE_COMMAND = ["python", "-m", "studio", "serve"]
PROMPT = "a watercolor painting of a lighthouse"
PASSWORD = "bench-password"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 240
RESULT_TIMEOUT_S = 600
STEP_TIMEOUT_S = 120  # any one browser step (log in, upload, click); a page stuck longer is saved as a screenshot
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "bench-served"
POLL_S = 0.05  # how often the browser is asked whether a result is on screen
# The Transform page's defaults (strength 0.6 of 20 steps) as its button says them.
TRANSFORM_BUTTON = re.compile(r"^Transform · 12 denoising steps$")
FORM_ATTEMPTS = 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (default 3), after one warm-up")
    parser.add_argument("--size", type=int, default=512, help="source side in px (default 512)")
    parser.add_argument("--variant", action="append", default=[], help="'NAME: TOKENS', see above; repeatable")
    parser.add_argument("--no-readme", action="store_true", help="measure only the --variant studios")
    parser.add_argument("--concurrent", type=int, default=3, help="pages clicking at once (default 3; 0: skip)")
    parser.add_argument("--watchers", type=int, nargs="+", help="measure polling with these numbers of pages")
    parser.add_argument("--watch-seconds", type=float, default=20.0, help="seconds per polling measurement")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folders and server logs")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


# ---------------------------------------------------------------- processes and their CPU


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process (all its threads), from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15 of stat(5)


def descendants(root: int) -> set[int]:
    """Every live process below `root` (chromium's, under Playwright's driver)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _die_with_parent() -> None:
    """In a started studio process: get SIGTERM when this benchmark dies, however it dies (Linux prctl)."""
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Variant:
    name: str
    flags: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    worker_args: list[str] | None = None  # None: no worker process
    concurrent: bool = True  # False: measured from one page only
    max_watchers: int | None = None  # --watchers: measured up to this many pages only

    @classmethod
    def parse(cls, spec: str) -> Variant:
        name, _, rest = spec.partition(":")
        variant = cls(name.strip())
        for token in shlex.split(rest):
            if token == "single":
                variant.concurrent = False
            elif token.startswith("watchers<="):
                variant.max_watchers = int(token.removeprefix("watchers<="))
            elif token == "worker" or token.startswith("worker:"):
                variant.worker_args = shlex.split(token.partition(":")[2])
                variant.env.setdefault("STUDIO_IN_PROCESS_WORKER", "0")
            elif "=" in token and not token.startswith("--"):
                key, _, value = token.partition("=")
                variant.env[key] = value
            else:
                variant.flags.append(token)
        return variant


class Studio:
    """One served studio: README's command on a free loopback port, its own temporary data folder."""

    def __init__(self, variant: Variant, keep: bool) -> None:
        self.variant, self.keep = variant, keep
        (REPO_ROOT / "data").mkdir(exist_ok=True)
        self.data = Path(tempfile.mkdtemp(prefix=f"bench-served-{variant.name}-", dir=REPO_ROOT / "data"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")} | {
            "STUDIO_DATA_DIR": str(self.data),
            "STUDIO_ADMIN_PASSWORD": secrets.token_urlsafe(16),
            **variant.env,
        }
        from tests.e2e.support import free_port, serve_command

        self.port = free_port()
        self.serve_command = serve_command(self.port)
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen] = []
        self.users: list[str] = []

    @property
    def command(self) -> list[str]:
        return [*self.serve_command, *self.variant.flags]

    def settings(self):
        from studio.config import load_settings

        return load_settings(self.env)

    def start(self, users: int) -> None:
        self._add_users(users)
        self.processes.append(self._spawn(self.command, "streamlit.log"))
        if self.variant.worker_args is not None:
            worker = [sys.executable, "-m", "studio", "worker", *self.variant.worker_args]
            self.processes.append(self._spawn(worker, "worker.log"))
        from tests.e2e.support import wait_healthy

        if not wait_healthy(self.url, self.processes[0], START_TIMEOUT_S):
            raise SystemExit(f"{self.variant.name}: streamlit did not start:\n{self.log()[-3000:]}")

    def _spawn(self, command: list[str], log_name: str) -> subprocess.Popen:
        log = (self.data / log_name).open("w")
        return subprocess.Popen(
            command, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )

    def _add_users(self, count: int) -> None:
        """Bench users with credits to spare (before the server starts, as tests/e2e does)."""
        from studio.accounts.bootstrap import bootstrap
        from studio.accounts.users import create_user
        from studio.billing.credits import Account, add_credits
        from studio.db.engine import write_session
        from studio.db.tables import CreditKind, utcnow

        settings = self.settings()
        bootstrap(settings)
        with write_session(settings.database_url) as session:
            for n in range(count):
                user = create_user(
                    session=session, username=f"bench{n}", password=PASSWORD, email=f"bench{n}@example.com"
                )
                account = Account(user_id=user.id)
                add_credits(
                    session=session, account=account, amount=1000, kind=CreditKind.grant, now=utcnow(), reason="bench"
                )
                self.users.append(user.username)
            session.commit()

    def log(self) -> str:
        return (self.data / "streamlit.log").read_text()

    def cpu(self) -> float:
        """CPU seconds so far of the studio's processes: `serve` and what it started (the server, its worker process),
        and a worker process the variant started beside it."""
        return sum(cpu_seconds(pid) for pid in self.pids())

    def pids(self) -> set[int]:
        started = {process.pid for process in self.processes}
        return started.union(*(descendants(pid) for pid in started))

    def job(self, user: str, after_id: int):
        """The user's newest job with an id above `after_id`, or None."""
        from sqlmodel import select

        from studio.db.engine import session_for
        from studio.db.tables import Job, User

        with session_for(self.settings().database_url) as session:
            user_id = session.exec(select(User.id).where(User.username == user)).one()
            query = select(Job).where(Job.user_id == user_id, Job.id > after_id).order_by(Job.id.desc())
            return session.exec(query).first()

    def last_job_id(self) -> int:
        from sqlalchemy import func
        from sqlmodel import select

        from studio.db.engine import session_for
        from studio.db.tables import Job

        with session_for(self.settings().database_url) as session:
            return session.exec(select(func.max(Job.id))).one() or 0

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        if not self.keep:
            shutil.rmtree(self.data, ignore_errors=True)


# ---------------------------------------------------------------- the browser side


def source_file(folder: Path, side: int, variant: int) -> Path:
    """A gradient photo stand-in; `variant` changes one pixel, so every job stores its own source and result."""
    from PIL import Image

    image = Image.new("RGB", (side, side), (200, 80, 40))
    for x in range(side):
        for y in range(0, side, 4):
            image.putpixel((x, y), (x % 256, (y * 2) % 256, 128))
    image.putpixel((side // 2, side // 2 + 1), (variant % 256, variant // 256 % 256, 0))
    path = folder / f"source-{variant}.png"
    image.save(path)
    return path


class StudioPage:
    """A logged-in browser page on the Transform page, submitting one job at a time."""

    def __init__(self, browser, studio: Studio, user: str) -> None:
        from tests.e2e.support import log_in

        self.studio, self.user = studio, user
        self.context = browser.new_context(viewport={"width": 1400, "height": 1200})
        self.page = self.context.new_page()
        self.page.set_default_timeout(STEP_TIMEOUT_S * 1000)
        log_in(self.page, studio.url, username=user, password=PASSWORD)
        self.prompted = False
        self.job_id = 0
        self.clicked_at = 0.0

    def prepare(self, source: Path, size: int) -> None:
        from playwright.sync_api import Error as PlaywrightError

        try:
            self._prepare(source, size)
        except PlaywrightError:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shot = SCREENSHOTS / f"{self.studio.variant.name}-{self.user}-{source.stem}.png"
            self.page.screenshot(path=str(shot), full_page=True)
            note(f"{self.studio.variant.name} {self.user}: stuck preparing {source.name}; screenshot {shot}")
            raise

    def _prepare(self, source: Path, size: int) -> None:
        from tests.e2e.support import wait_for_idle

        for _attempt in range(FORM_ATTEMPTS):
            self.page.locator("input[type=file]").first.set_input_files(str(source))
            self.page.wait_for_selector(f"text={source.name} · {size}×{size}")
            if not self.prompted:
                self.page.get_by_label("Prompt", exact=True).fill(PROMPT)
                self.page.keyboard.press("Tab")
                self.prompted = True
            wait_for_idle(self.page)
            if self.page.get_by_role("button", name=TRANSFORM_BUTTON).count():
                return
            # On a slow server the form has come up with its strength slider at 0 (see README → served studio);
            # a person would notice and reload, and so does this.
            note(f"{self.studio.variant.name} {self.user}: the form is not at its defaults; reloading the page")
            self.page.reload()
            wait_for_idle(self.page)
            self.prompted = False
        raise RuntimeError(f"the form stayed off its defaults after {FORM_ATTEMPTS} reloads")

    def click(self) -> None:
        self.job_id = self.studio.last_job_id()
        self.clicked_at = time.monotonic()
        self.page.get_by_role("button", name=TRANSFORM_BUTTON).click()

    def result_shown(self) -> bool:
        """True once this click's job shows its result (its Download button, keyed by the job's id)."""
        job = self.studio.job(self.user, self.job_id)
        if job is None or not job.status.is_final:
            return False
        return self.page.locator(f".st-key-download-{job.id}").count() > 0

    def close(self) -> None:
        self.context.close()


@dataclass
class JobFigures:
    run: float  # started_at → finished_at in the database
    wait: float  # created_at → started_at
    click_to_result: float


def run_jobs(pages: list[StudioPage], sources: list[Path], size: int) -> tuple[list[JobFigures], float]:
    """One job per page, clicked at once; their figures and the studio's CPU seconds meanwhile."""
    for page, source in zip(pages, sources, strict=True):
        page.prepare(source, size)
    studio = pages[0].studio
    cpu_before = studio.cpu()
    for page in pages:
        page.click()
    shown: dict[int, float] = {}
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    while len(shown) < len(pages):
        for index, page in enumerate(pages):
            if index not in shown and page.result_shown():
                shown[index] = time.monotonic()
        if time.monotonic() > deadline:
            raise SystemExit(f"{studio.variant.name}: no result after {RESULT_TIMEOUT_S} s:\n{studio.log()[-3000:]}")
        pages[0].page.wait_for_timeout(POLL_S * 1000)
    cpu = studio.cpu() - cpu_before
    figures = []
    for index, page in enumerate(pages):
        job = studio.job(page.user, page.job_id)
        if job.status.value != "complete":
            raise SystemExit(f"{studio.variant.name}: job {job.id} ended {job.status.value}: {job.error}")
        figures.append(
            JobFigures(
                run=(job.finished_at - job.started_at).total_seconds(),
                wait=(job.started_at - job.created_at).total_seconds(),
                click_to_result=shown[index] - page.clicked_at,
            )
        )
    return figures, cpu


# ---------------------------------------------------------------- the raw call


class RawCall:
    """`run_img2img` on the Transform page's defaults, in this process, with the model loaded."""

    def __init__(self, studio: Studio, size: int) -> None:
        from pipelines.params import Img2ImgParams
        from pipelines.registry import resolve_model
        from studio.media.validation import validate_image_bytes

        settings = studio.settings()
        self.ref = resolve_model(settings.model, models_dir=settings.models_dir)
        self.max_side = settings.max_output_side
        buffer = io.BytesIO(source_file(studio.data, size, 0).read_bytes())
        self.image = validate_image_bytes(buffer.getvalue(), filename="raw.png").image
        self.params = Img2ImgParams(prompt=PROMPT, strength=0.6, steps=20, guidance=7.5, seed=1234)

    def __call__(self, threads: int) -> tuple[float, float]:
        """Wall and CPU seconds of one call with `threads` torch threads."""
        import torch

        from pipelines.img2img import Img2ImgRequest, run_img2img

        torch.set_num_threads(threads)
        request = Img2ImgRequest(image=self.image, params=self.params, max_side=self.max_side)
        cpu_before = _own_cpu()
        started = time.perf_counter()
        run_img2img(self.ref, request)
        return time.perf_counter() - started, _own_cpu() - cpu_before


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------- the job benchmark


@dataclass
class Side:
    """What one studio measured over the rounds."""

    single: list[JobFigures] = field(default_factory=list)
    concurrent: list[JobFigures] = field(default_factory=list)
    single_cpu: list[float] = field(default_factory=list)  # studio CPU seconds per job
    concurrent_cpu: list[float] = field(default_factory=list)
    browser_cpu: list[float] = field(default_factory=list)


def variants(args: argparse.Namespace) -> list[Variant]:
    chosen = [] if args.no_readme else [Variant("readme")]
    return chosen + [Variant.parse(spec) for spec in args.variant]


def bench_jobs(args: argparse.Namespace, browser, folder: Path) -> None:
    studios = [Studio(variant, args.keep) for variant in variants(args)]
    pages_per_studio = max(1, args.concurrent) + (1 if args.concurrent else 0)
    try:
        for studio in studios:
            studio.start(users=pages_per_studio)
            note(f"{studio.variant.name}: serving at {studio.url}, data in {studio.data}")
        pages = {
            studio.variant.name: [StudioPage(browser, studio, user) for user in studio.users] for studio in studios
        }
        raw = RawCall(studios[0], args.size)
        # torch's default (a thread per core) and one core fewer (what a worker leaving the server a core uses).
        thread_counts = sorted({os.cpu_count() or 1, max(1, (os.cpu_count() or 1) - 1)})
        sides = {studio.variant.name: Side() for studio in studios}
        raws: dict[int, list[tuple[float, float]]] = {t: [] for t in thread_counts}
        counter = iter(range(1, 10**6))
        me = os.getpid()
        for round_index in range(args.rounds + 1):  # round 0 warms everything up and is not counted
            note(f"round {round_index}" + (" (warm-up)" if round_index == 0 else ""))
            order = studios if round_index % 2 == 0 else studios[::-1]
            if round_index % 2 == 1:
                _raw_round(raw, raws, thread_counts, counted=round_index > 0)
            for studio in order:
                side, studio_pages = sides[studio.variant.name], pages[studio.variant.name]
                concurrent = args.concurrent and studio.variant.concurrent
                groups = [studio_pages[:1]] + ([studio_pages[1:]] if concurrent else [])
                for group in groups:
                    browser_before = _browser_cpu(me, studio)
                    sources = [source_file(folder, args.size, next(counter)) for _ in group]
                    figures, cpu = run_jobs(group, sources, args.size)
                    if round_index == 0:
                        continue
                    browser = (_browser_cpu(me, studio) - browser_before) / len(group)
                    if len(group) == 1:
                        side.single += figures
                        side.single_cpu.append(cpu)
                    else:
                        side.concurrent += figures
                        side.concurrent_cpu.append(cpu / len(group))
                    side.browser_cpu.append(browser)
            if round_index % 2 == 0:
                _raw_round(raw, raws, thread_counts, counted=round_index > 0)
        report_jobs(args, studios, sides, raws)
    finally:
        for studio in studios:
            studio.stop()


def _raw_round(raw: RawCall, raws: dict, thread_counts: list[int], counted: bool) -> None:
    for threads in thread_counts:
        figures = raw(threads)
        if counted:
            raws[threads].append(figures)


def _browser_cpu(me: int, studio: Studio) -> float:
    """CPU seconds of this process's descendants that are not a studio: the browser and Playwright's driver."""
    return sum(cpu_seconds(pid) for pid in descendants(me) - studio.pids())


def note(message: str) -> None:
    """Progress, on stderr (the figures go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine_line() -> str:
    load = os.getloadavg()
    return (
        f"machine   {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPU cores, "
        f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min)"
    )


def report_jobs(args: argparse.Namespace, studios: list[Studio], sides: dict[str, Side], raws: dict) -> None:
    print("Served studio: in-app jobs watched by a real browser vs the raw pipeline call")
    print("=" * 100)
    print(machine_line())
    print(
        f"workload  preview model, {args.size}×{args.size} source, Transform defaults: strength 0.6, 20 steps "
        f"(12 denoising steps), guidance 7.5; {args.rounds} rounds after a warm-up round"
    )
    for studio in studios:
        print(f"studio    {studio.variant.name}: {shlex.join(SERVE_COMMAND + studio.variant.flags)}", end="")
        env = " ".join(f"{k}={v}" for k, v in studio.variant.env.items())
        worker = studio.variant.worker_args
        print(
            (f"  env {env}" if env else "")
            + ("" if worker is None else f"  + python -m studio worker {shlex.join(worker)}")
        )
    print()
    for threads, figures in raws.items():
        wall, cpu = [f[0] for f in figures], [f[1] for f in figures]
        print(
            f"raw run_img2img, {threads} torch thread(s): median {median(wall):.3f} s (min {min(wall):.3f}, "
            f"max {max(wall):.3f}), CPU {median(cpu):.2f} s per call"
        )
    raw_best = min(median([f[0] for f in figures]) for figures in raws.values())
    print()
    header = f"{'studio':<16}{'pages':>6}{'jobs':>6}{'run s':>8}{'÷ raw':>7}{'wait s':>8}{'click→result':>14}"
    print(header + f"{'studio CPU/job':>16}{'browser CPU/job':>17}")
    for studio in studios:
        side = sides[studio.variant.name]
        rows = [(1, side.single, side.single_cpu)]
        if args.concurrent and studio.variant.concurrent:
            rows.append((args.concurrent, side.concurrent, side.concurrent_cpu))
        for pages, figures, cpu in rows:
            run = median([f.run for f in figures])
            print(
                f"{studio.variant.name:<16}{pages:>6}{len(figures):>6}{run:>8.3f}{run / raw_best:>7.2f}"
                f"{median([f.wait for f in figures]):>8.2f}{median([f.click_to_result for f in figures]):>14.2f}"
                f"{median(cpu):>16.2f}{median(side.browser_cpu):>17.2f}"
            )
    print()
    print(
        "run: the job's started_at → finished_at in the database; ÷ raw: over the fastest raw median above; "
        "wait: created_at → started_at;\nclick→result: from the click to its Download button on screen (polled "
        f"every {POLL_S * 1000:.0f} ms); studio CPU: server (+ worker process) CPU seconds per job, to compare "
        "with the raw call's CPU."
    )
    print(machine_line().replace("machine  ", "after    "))


# ---------------------------------------------------------------- the polling benchmark


def bench_watchers(args: argparse.Namespace, browser, folder: Path) -> None:
    """Server CPU per second while N pages watch their own queued job (no worker runs, so nothing changes).

    Every variant's studio runs at once; for each N, each studio gets N watching pages and is measured in turn
    (order alternating), so the variants share the machine's state.
    """
    studios = []
    for variant in variants(args):
        variant.env["STUDIO_IN_PROCESS_WORKER"] = "0"  # jobs stay queued: the panels poll for as long as we watch
        variant.worker_args = None
        studios.append(Studio(variant, args.keep))
    pages: dict[str, list[StudioPage]] = {studio.variant.name: [] for studio in studios}
    results: dict[tuple[str, int], float] = {}
    try:
        for studio in studios:
            studio.start(users=max(args.watchers))
        for count in sorted(args.watchers):
            measured = [s for s in studios if s.variant.max_watchers is None or count <= s.variant.max_watchers]
            for studio in measured:
                _open_watchers(browser, studio, pages[studio.variant.name], count, folder, args.size)
            time.sleep(10)  # let the last logins' reruns settle, and the panels back off (1 + 2 + 4 s) if they do
            order = measured if count % 2 == 0 else measured[::-1]
            for studio in order:
                note(f"{studio.variant.name}: {count} watching page(s)")
                before, started = studio.cpu(), time.monotonic()
                time.sleep(args.watch_seconds)
                results[studio.variant.name, count] = (studio.cpu() - before) / (time.monotonic() - started)
                note(f"{studio.variant.name}: {count} page(s): {results[studio.variant.name, count] * 1000:.1f} ms/s")
        report_watchers(args, studios, results)
    finally:
        for studio_pages in pages.values():
            for page in studio_pages:
                page.close()
        for studio in studios:
            studio.stop()


def _open_watchers(browser, studio: Studio, pages: list[StudioPage], count: int, folder: Path, size: int) -> None:
    """Log in pages until `count` of them watch a queued job of their own."""
    while len(pages) < count:
        page = StudioPage(browser, studio, studio.users[len(pages)])
        page.prepare(source_file(folder, size, len(pages) + 1), size)
        page.click()
        page.page.wait_for_selector("text=Waiting for a worker")
        pages.append(page)


def report_watchers(args: argparse.Namespace, studios: list[Studio], results: dict[tuple[str, int], float]) -> None:
    print("Live job panel polling: server CPU per second while N pages watch a queued job of their own")
    print("=" * 100)
    print(machine_line())
    for studio in studios:
        env = " ".join(f"{k}={v}" for k, v in studio.variant.env.items())
        print(f"studio    {studio.variant.name}: {shlex.join(SERVE_COMMAND + studio.variant.flags)}  env {env}")
    print(f"{'pages':>6}" + "".join(f"{studio.variant.name:>26}" for studio in studios))
    for count in sorted(args.watchers):
        cells = []
        for studio in studios:
            if (studio.variant.name, count) not in results:  # beyond its watchers<=N
                cells.append("—")
                continue
            per_second = results[studio.variant.name, count] * 1000
            cells.append(f"{per_second:8.1f} ms/s" + (f" ({per_second / count:5.1f}/page)" if count else " " * 13))
        print(f"{count:>6}" + "".join(f"{cell:>26}" for cell in cells))
    print(
        f"server CPU milliseconds per second, each over {args.watch_seconds:g} s; jobs stay queued (no worker), so "
        "every poll finds nothing new."
    )
    print(machine_line().replace("machine  ", "after    "))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT))
    from playwright.sync_api import sync_playwright

    from tests.e2e.support import CHROMIUM, CHROMIUM_ARGS

    folder = Path(tempfile.mkdtemp(prefix="bench-served-sources-"))
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                if args.watchers:
                    bench_watchers(args, browser, folder)
                else:
                    bench_jobs(args, browser, folder)
            finally:
                browser.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

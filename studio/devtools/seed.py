"""Synthetic studio history for demos and benchmarks.

    python -m studio seed --users 200 --teams 8 --jobs 50000 --days 90 [--seed 7] [--database-url URL]

Adds teams (with monthly budgets), users (plans, teams) and finished jobs — complete, failed or
cancelled, across the catalogue's styles, models and qualities, priced by `studio.billing.pricing`, with
queue waits (shorter for Pro) and processing times (by model, steps and size) drawn from log-normal
distributions — and the ledger rows `studio.billing.credits` would have written for them, in the order it
would have written them: the trial grant when a user is created; at each submit the month's Pro
allocation, an expiry row for what is left of every lot that expired meanwhile, a Starter pack when
the user runs short, and the reserve (expiring lots first, soonest expiry first); at the job's end a
commit (complete) or a refund to the same lots (failed, cancelled), a refunded expired lot expiring
again at once. Every job is final, so no worker ever picks a seeded job up.

The same options and --seed give the same rows. Rows go in with executemany in large transactions and
their ids are assigned here: run it while the studio is idle. The daily usage rollups (studio.db.rollups) are
rebuilt from the job table at the end, their triggers off during the load. Seeded users share one
random password nobody knows: reset one on the Users page to log in as them.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
import secrets
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, DateTime, Table, func, select, update
from sqlalchemy.engine import Engine

from studio.accounts.users import hash_password
from studio.billing.plans import PLANS, STARTER_PACK_CREDITS, TRIAL_CREDITS, allocation_key, month_start
from studio.billing.pricing import QUALITY_TIERS, Quality, base_cost, price
from studio.catalogue.styles import Catalogue, load_catalogue
from studio.config import Settings
from studio.db import rollups
from studio.db.tables import CreditEntry, CreditKind, Job, JobStatus, Plan, Role, Team, User
from studio.errors import StudioError
from studio.jobs.fair_queue import queue_lane

DAY_S = 86_400.0
INSERT_BATCH = 100_000
HISTORY_STARTS = datetime(2025, 1, 1, tzinfo=UTC)  # teams exist and users join from here on

# fmt: off
TEAM_NAMES = (
    "Marketing", "Design", "Product", "Sales", "Support", "Research", "Brand", "Social", "E-commerce", "Video",
)
FIRST_NAMES = (
    "ava", "ben", "chloe", "david", "emma", "felix", "grace", "hugo", "isla", "jack", "kai", "lena", "max",
    "nora", "oscar", "paula", "quinn", "rosa", "sam", "tara", "umar", "vera", "will", "xena", "yusuf", "zoe",
)
# fmt: on
PROMPTS = (
    "a red sneaker on a white table",
    "portrait of a woman in a garden",
    "city street at night",
    "a bowl of fruit",
    "mountain lake at dawn",
    "product shot of a watch",
    "a cat on a sofa",
    "an old bicycle against a brick wall",
    "a coffee cup with latte art",
    "a living room interior",
)
FAILURES = (
    "Out of GPU memory; try a smaller source or a lower quality.",
    "The worker stopped responding 3 times; giving up.",
    "The model is not available on this machine.",
)
SOURCE_SIZES = ((512, 512), (768, 768), (1024, 768), (768, 1024), (1024, 1024), (1536, 1024), (2048, 1536))
QUALITY_WEIGHTS = {Quality.standard: 0.62, Quality.high: 0.28, Quality.ultra: 0.10}
PLAN_WEIGHTS = {Plan.free: 0.6, Plan.pro_monthly: 0.25, Plan.pro_annual: 0.15}
# Seconds per denoising step of a 512×512 image on the studio's GPU, by catalogue model kind.
STEP_SECONDS = {"sd": 0.32, "upscaler_x2": 0.45, "upscaler_x4": 0.9}
TURBO_STEP_SECONDS = 0.12
# Median queue wait: Pro jobs run before free ones.
MEDIAN_WAIT_S = {0: 18.0, 1: 3.0}
# Outcome shares: most jobs complete; a cancelled job is usually cancelled while still queued.
FAILED_SHARE, CANCELLED_SHARE, CANCELLED_WHILE_QUEUED = 0.045, 0.05, 0.6

# fmt: off
JOB_COLUMNS = (
    "id", "task", "model", "style", "params", "user_id", "team_id", "status", "priority", "quality", "cost",
    "cancel_requested", "progress_step", "progress_total", "attempt", "worker", "error", "created_at",
    "started_at", "finished_at", "lane", "fair_tag",
)
LEDGER_COLUMNS = (
    "id", "user_id", "kind", "amount", "lot_id", "expires_at", "job_id", "idempotency_key", "reason",
    "created_at",
)
# fmt: on


class SeedError(StudioError):
    """The database cannot take this seed; the message says why."""


@dataclass(frozen=True)
class SeedOptions:
    users: int = 50
    teams: int = 5
    jobs: int = 20_000
    days: int = 90
    seed: int = 7
    end: datetime | None = None  # the history ends here (default: now); every job finished before it


@dataclass(frozen=True)
class SeedReport:
    teams: int
    users: int
    jobs: int
    ledger_rows: int
    seconds: float


@dataclass(frozen=True)
class JobKind:
    """One way a job is made: a catalogue style (None: the user's own settings) in one quality."""

    style: str | None
    task: str
    model: str
    quality: Quality
    base_credits: int
    step_seconds: float
    strength: float
    guidance: float
    max_source_side: int | None  # the upscalers take small sources only

    @property
    def upscale_factor(self) -> int | None:
        return {"upscale_2x": 2, "upscale_4x": 4}.get(self.task)


@dataclass
class SeedLot:
    id: int
    remaining: int
    expires_at: float | None  # epoch seconds

    def spending_order(self) -> tuple:
        return (self.expires_at is None, self.expires_at or 0.0, self.id)


@dataclass
class SeedUser:
    id: int
    plan: Plan
    team_id: int | None
    lots: list[SeedLot] = field(default_factory=list)  # the lots with credits left, in spending order
    allocated: set[str] = field(default_factory=set)  # allocation keys already given
    packs: int = 0


class Ledger:
    """The rows `studio.billing.credits` writes, for seeded users' own accounts, as LEDGER_COLUMNS tuples."""

    def __init__(self, first_id: int) -> None:
        self.next_id = first_id
        self.rows: list[tuple] = []  # written since the last take_rows

    def take_rows(self) -> list[tuple]:
        rows, self.rows = self.rows, []
        return rows

    def _row(
        self,
        user: SeedUser,
        kind: CreditKind,
        amount: int,
        at: float,
        *,
        lot_id=None,
        job_id=None,
        expires_at=None,
        key=None,
        reason=None,
    ) -> int:
        entry_id = self.next_id
        self.next_id += 1
        self.rows.append((entry_id, user.id, kind, amount, lot_id, expires_at, job_id, key, reason, at))
        return entry_id

    def open_lot(
        self,
        user: SeedUser,
        kind: CreditKind,
        amount: int,
        at: float,
        *,
        reason: str,
        key: str,
        expires_at: float | None = None,
    ) -> None:
        lot_id = self._row(user, kind, amount, at, expires_at=expires_at, key=key, reason=reason)
        bisect.insort(user.lots, SeedLot(lot_id, amount, expires_at), key=SeedLot.spending_order)

    def expire(self, user: SeedUser, at: float) -> None:
        """`credits.expire_lots`: an expiry row for what is left of each lot past its expiry."""
        while user.lots and user.lots[0].expires_at is not None and user.lots[0].expires_at <= at:
            lot = user.lots.pop(0)
            self._row(user, CreditKind.expiry, -lot.remaining, at, lot_id=lot.id)
            lot.remaining = 0

    def reserve(self, user: SeedUser, job_id: int, cost: int, at: float) -> list[tuple[SeedLot, int]]:
        draws = []
        while cost:
            lot = user.lots[0]
            take = min(lot.remaining, cost)
            lot.remaining -= take
            cost -= take
            if lot.remaining == 0:
                user.lots.pop(0)
            self._row(user, CreditKind.reserve, -take, at, lot_id=lot.id, job_id=job_id)
            draws.append((lot, take))
        return draws

    def settle(self, user: SeedUser, job_id: int, draws: list[tuple[SeedLot, int]], refund: bool, at: float) -> None:
        """`credits.settle`: per reserve row, a commit of 0 or a refund to the same lot."""
        for lot, take in draws:
            self._row(
                user,
                CreditKind.refund if refund else CreditKind.commit,
                take if refund else 0,
                at,
                lot_id=lot.id,
                job_id=job_id,
            )
            if refund:
                if lot.remaining == 0:
                    bisect.insort(user.lots, lot, key=SeedLot.spending_order)
                lot.remaining += take
        if refund:
            self.expire(user, at)


def seed(*, engine: Engine, settings: Settings, options: SeedOptions) -> SeedReport:
    """Generate the history and insert it; refuses a database that already has these users or teams.

    Jobs are generated, charged and inserted INSERT_BATCH at a time, so memory stays flat at any size (10 M
    jobs held at once took ~12 GB); the rows are the same as generating them all first."""
    started = time.perf_counter()
    rng = random.Random(options.seed)
    end = (options.end or datetime.now(UTC)).timestamp()
    kinds = job_kinds(load_catalogue(settings.catalogue_path), settings)
    with engine.connect() as conn:
        teams = _teams(options.teams, _next_id(conn, Team))
        users = _users(rng, options.users, teams, _next_id(conn, User))
        first_job, first_entry = _next_id(conn, Job), _next_id(conn, CreditEntry)
        clash = conn.execute(select(User.id).where(User.username.in_([row["username"] for row in users]))).first()
        if clash or conn.execute(select(Team.id).where(Team.name.in_([row["name"] for row in teams]))).first():
            raise SeedError("This database already has the seed's users or teams; seed a fresh database.")
    seed_users = [SeedUser(row["id"], row["plan"], row["team_id"]) for row in users]
    ledger = Ledger(first_entry)
    for user, row in zip(seed_users, users, strict=True):
        ledger.open_lot(
            user,
            CreditKind.grant,
            TRIAL_CREDITS,
            row["created_at"].timestamp(),
            reason="Free trial credits",
            key=f"trial:{user.id}",
        )
    with engine.begin() as conn:
        _insert(conn, Team.__table__, list(teams[0]) if teams else [], [tuple(row.values()) for row in teams])
        _insert(conn, User.__table__, list(users[0]) if users else [], [tuple(row.values()) for row in users])
    jobs = _jobs(rng, options.jobs, seed_users, kinds, end - options.days * DAY_S, end, settings, first_job)
    replay = Replay(seed_users, ledger)
    spent: dict[tuple[int, str], int] = {}  # complete jobs' credits by (team, month), for the budgets
    job_count = ledger_count = 0
    with _rollups_rebuilt_after(engine), _indexes_built_after(engine, [Job.__table__, CreditEntry.__table__]):
        for chunk in _chunks(jobs, INSERT_BATCH):
            for job in chunk:
                replay.submit(job)
                _count_spend(spent, job)
            # The jobs first: this chunk's ledger rows name them.
            with engine.begin() as conn:
                _insert(conn, Job.__table__, JOB_COLUMNS, chunk)
                _insert(conn, CreditEntry.__table__, LEDGER_COLUMNS, ledger.take_rows())
            job_count += len(chunk)
        replay.settle_all()
        with engine.begin() as conn:
            ledger_count = ledger.next_id - first_entry
            _insert(conn, CreditEntry.__table__, LEDGER_COLUMNS, ledger.take_rows())
    with engine.begin() as conn:
        for team, budget in zip(teams, _budgets(teams, spent), strict=True):
            if budget is not None:
                conn.execute(update(Team).where(Team.id == team["id"]).values(monthly_budget=budget))
        _advance_id_sequences(conn, [Team.__table__, User.__table__, Job.__table__, CreditEntry.__table__])
    return SeedReport(len(teams), len(users), job_count, ledger_count, time.perf_counter() - started)


def _chunks(rows: Iterable[tuple], size: int) -> Iterator[list[tuple]]:
    batch = list(itertools.islice(rows, size))
    while batch:
        yield batch
        batch = list(itertools.islice(rows, size))


def job_kinds(catalogue: Catalogue, settings: Settings) -> list[JobKind]:
    """Every (style, quality) the catalogue offers, and own-settings jobs on the configured model's cost."""
    found = []
    for style in catalogue.styles.values():
        entry = catalogue.models[style.model]
        kind = entry.kind.value
        step = TURBO_STEP_SECONDS if "turbo" in entry.location else STEP_SECONDS.get(kind, STEP_SECONDS["sd"])
        max_side = {"upscaler_x2": 1024, "upscaler_x4": 512}.get(kind)
        for quality in style.qualities:
            found.append(
                JobKind(
                    style.id,
                    style.task.value,
                    entry.location,
                    quality,
                    style.credits,
                    step,
                    style.strength,
                    style.guidance,
                    max_side,
                )
            )
    # Own settings run on the configured model; a preview studio's demo shows the SD 1.5 it stands in for.
    own_model = settings.model if not settings.uses_preview_model else catalogue.models["sd15"].location
    own_credits = base_cost(own_model, settings.model_cost)
    for quality in Quality:
        found.append(JobKind(None, "img2img", own_model, quality, own_credits, STEP_SECONDS["sd"], 0.6, 7.5, None))
    return found


def _teams(count: int, first_id: int) -> list[dict]:
    rounds = len(TEAM_NAMES)
    return [
        {
            "id": first_id + i,
            "name": TEAM_NAMES[i % rounds] + (f" {i // rounds + 1}" if i >= rounds else ""),
            "monthly_budget": None,
            "budget_alert_percent": 80,
            "created_at": HISTORY_STARTS,
        }
        for i in range(count)
    ]


def _users(rng: random.Random, count: int, teams: list[dict], first_id: int) -> list[dict]:
    password_hash = hash_password(secrets.token_urlsafe(24))  # one bcrypt hash (~0.25 s each) for all
    rows = []
    for i in range(count):
        name = f"{FIRST_NAMES[i % len(FIRST_NAMES)]}.{i + 1:04d}"
        team = rng.choice(teams) if teams and rng.random() < 0.9 else None
        rows.append(
            {
                "id": first_id + i,
                "username": name,
                "email": f"{name}@example.com",
                "display_name": f"{name.split('.')[0].capitalize()} {i + 1}",
                "role": Role.member,
                "plan": rng.choices(list(PLAN_WEIGHTS), weights=list(PLAN_WEIGHTS.values()))[0],
                "is_active": True,
                "team_id": team["id"] if team else None,
                "can_use_team_pool": False,
                "password_hash": password_hash,
                "created_at": HISTORY_STARTS + timedelta(days=rng.randint(0, 300)),
            }
        )
    return rows


def _jobs(
    rng: random.Random,
    count: int,
    users: list[SeedUser],
    kinds: list[JobKind],
    start: float,
    end: float,
    settings: Settings,
    first_id: int,
) -> Iterator[tuple]:
    """Finished jobs as JOB_COLUMNS tuples in submit order (ids grow with time, as in the real queue);
    times are epoch seconds (`_insert` turns them into datetimes)."""
    # Some users are much busier than others (log-normal weights); own settings are the most common choice.
    chosen_users = rng.choices(users, weights=[rng.lognormvariate(0.0, 1.0) for _ in users], k=count)
    kind_weights = [QUALITY_WEIGHTS[kind.quality] * (4.0 if kind.style is None else 1.0) for kind in kinds]
    chosen_kinds = rng.choices(kinds, weights=kind_weights, k=count)
    submitted = sorted(_submit_time(rng, start, end) for _ in range(count))
    prices: dict[tuple[JobKind, tuple[int, int]], int] = {}
    for i, (user, kind, created) in enumerate(zip(chosen_users, chosen_kinds, submitted, strict=True)):
        size = rng.choice([s for s in SOURCE_SIZES if kind.max_source_side is None or max(s) <= kind.max_source_side])
        cost = prices.get((kind, size))
        if cost is None:
            cost = prices[kind, size] = price(
                base=kind.base_credits,
                quality=kind.quality,
                width=size[0],
                height=size[1],
                max_side=settings.max_output_side,
                upscale_factor=kind.upscale_factor,
            ).credits
        priority = PLANS[user.plan].priority
        steps = QUALITY_TIERS[kind.quality].steps
        wait = rng.lognormvariate(math.log(MEDIAN_WAIT_S[priority]), 0.9)
        megapixels = min(size[0] * size[1], settings.max_output_side**2) / (512 * 512)
        processing = steps * kind.step_seconds * megapixels**0.8 * rng.lognormvariate(0.0, 0.25)
        status, error, started, finished = _outcome(rng, created, wait, processing)
        prompt = rng.choice(PROMPTS)
        params = {
            "task": kind.task,
            "prompt": prompt,
            "negative_prompt": "",
            "strength": round(min(1.0, max(0.1, rng.gauss(kind.strength, 0.08))), 2),
            "steps": steps,
            "guidance": kind.guidance,
            "seed": rng.randrange(2**31),
            "user_prompt": prompt,
        }
        ran = started is not None
        yield (
            first_id + i,
            kind.task,
            kind.model,
            kind.style,
            params,
            user.id,
            user.team_id,
            status,
            priority,
            kind.quality.value,
            cost,
            status is JobStatus.cancelled and ran,
            steps if status is JobStatus.complete else 0,
            steps if ran else 0,
            1 if ran else 0,
            rng.choice(("gpu-1", "gpu-2")) if ran else None,
            error,
            created,
            started,
            finished,
            queue_lane(priority=priority, batch=False),  # every seeded job was submitted on a page
            0,  # finished: out of the queue's rounds
        )


def _submit_time(rng: random.Random, start: float, end: float) -> float:
    """A submit moment: fewer at weekends, most in working hours (UTC), ~30 % busier at the end than the start."""
    first_midnight = math.ceil(start / DAY_S) * DAY_S
    days = int((end - first_midnight) // DAY_S) - 1  # the last day stays free: every job finishes before `end`
    while True:
        day = rng.randrange(days)
        weekend = datetime.fromtimestamp(first_midnight + day * DAY_S, UTC).weekday() >= 5
        if rng.random() < (1.0 + 0.3 * day / days) / 1.3 * (0.35 if weekend else 1.0):
            break
    hour = min(max(rng.gauss(13.5, 3.5), 0.0), 23.99)
    return first_midnight + day * DAY_S + hour * 3600.0


def _outcome(rng: random.Random, created: float, wait: float, processing: float):
    """(status, error, started_at, finished_at) of a job submitted at `created`."""
    started = created + wait
    draw = rng.random()
    if draw < FAILED_SHARE:
        return JobStatus.failed, rng.choice(FAILURES), started, started + processing * rng.random()
    if draw < FAILED_SHARE + CANCELLED_SHARE:
        if rng.random() < CANCELLED_WHILE_QUEUED:
            return JobStatus.cancelled, "Cancelled by its owner.", None, created + wait * rng.random()
        return JobStatus.cancelled, "Cancelled by its owner.", started, started + processing * rng.random()
    return JobStatus.complete, None, started, started + processing


# Positions in a JOB_COLUMNS tuple that the replay reads.
_ID, _USER, _TEAM, _STATUS, _COST = (JOB_COLUMNS.index(name) for name in ("id", "user_id", "team_id", "status", "cost"))
_CREATED, _FINISHED = JOB_COLUMNS.index("created_at"), JOB_COLUMNS.index("finished_at")


class Replay:
    """Every submit and outcome, in time order, through the ledger rules (see the module docstring)."""

    def __init__(self, users: list[SeedUser], ledger: Ledger) -> None:
        self.by_id = {user.id: user for user in users}
        self.ledger = ledger
        self.pending: list[tuple[float, int]] = []  # (finished_at, job id) of the jobs not settled yet
        self.open: dict[int, tuple[tuple, list[tuple[SeedLot, int]]]] = {}  # job id -> (job, its reserve draws)

    def submit(self, job: tuple) -> None:
        """The job's submit: earlier jobs that finished meanwhile settle first, then `submit_job`'s charges."""
        at = job[_CREATED]
        while self.pending and self.pending[0][0] <= at:
            self._settle_next()
        user = self.by_id[job[_USER]]
        moment = datetime.fromtimestamp(at, UTC)
        plan = PLANS[user.plan]
        key = allocation_key(user, moment)  # `plans.allocate_monthly`, which submit_job calls first
        if plan.monthly_credits and key not in user.allocated:
            user.allocated.add(key)
            self.ledger.open_lot(
                user,
                CreditKind.allocation,
                plan.monthly_credits,
                at,
                key=key,
                reason=f"{plan.label} credits for {moment:%B %Y}",
                expires_at=month_start(moment, 1 + plan.rollover_months).timestamp(),
            )
        self.ledger.expire(user, at)
        if sum(lot.remaining for lot in user.lots) < job[_COST]:
            user.packs += 1
            self.ledger.open_lot(
                user,
                CreditKind.allocation,
                STARTER_PACK_CREDITS,
                at,
                reason="Starter pack",
                key=f"starter:{user.id}:seed-{user.packs}",
            )
        self.open[job[_ID]] = (job, self.ledger.reserve(user, job[_ID], job[_COST], at))
        heapq.heappush(self.pending, (job[_FINISHED], job[_ID]))

    def settle_all(self) -> None:
        while self.pending:
            self._settle_next()

    def _settle_next(self) -> None:
        finished, job_id = heapq.heappop(self.pending)
        job, draws = self.open.pop(job_id)
        refund = job[_STATUS] is not JobStatus.complete
        self.ledger.settle(self.by_id[job[_USER]], job_id, draws, refund, finished)


def _count_spend(spent: dict[tuple[int, str], int], job: tuple) -> None:
    team_id = job[_TEAM]
    if team_id is not None and job[_STATUS] is JobStatus.complete:
        month = datetime.fromtimestamp(job[_CREATED], UTC).strftime("%Y-%m")
        spent[team_id, month] = spent.get((team_id, month), 0) + job[_COST]


def _budgets(teams: list[dict], spent: dict[tuple[int, str], int]) -> list[int | None]:
    """Budgets an admin might set: ~30 % above the team's busiest month; every fifth team has none."""
    budgets = []
    for i, team in enumerate(teams):
        busiest = max((credits for (team_id, _), credits in spent.items() if team_id == team["id"]), default=0)
        budgets.append(None if i % 5 == 4 else max(100, math.ceil(busiest * 1.3 / 100) * 100))
    return budgets


def _next_id(conn: Connection, model) -> int:
    return int(conn.execute(select(func.coalesce(func.max(model.id), 0))).scalar_one()) + 1


def _advance_id_sequences(conn: Connection, tables: list[Table]) -> None:
    """The ids were assigned here, not by PostgreSQL's id sequences: move each sequence past the largest id,
    or the studio's next insert into the table would take id 1 again. (SQLite takes max(id) + 1 itself.)"""
    if conn.dialect.name != "postgresql":
        return
    for table in tables:
        name = conn.dialect.identifier_preparer.format_table(table)
        conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), (SELECT max(id) FROM {name}))")


@contextmanager
def _rollups_rebuilt_after(engine: Engine) -> Iterator[None]:
    """Load without the job table's rollup triggers, then put them back and rebuild the rollups from the
    jobs in one transaction: one GROUP BY per rollup costs far less than a trigger per row (seeding 100 000
    jobs took 1.7x as long with the triggers). The rebuild counts every job, seeded or not, so the rollups
    are exact afterwards even if a job changed meanwhile."""
    dialect = engine.dialect.name
    with engine.begin() as conn:
        for statement in rollups.drop_statements(dialect):
            conn.exec_driver_sql(statement)
    try:
        yield
    finally:
        with engine.execution_options(sqlite_begin="IMMEDIATE").begin() as conn:
            for statement in rollups.create_statements(dialect):
                conn.exec_driver_sql(statement)
            rollups.rebuild(conn)


@contextmanager
def _indexes_built_after(engine: Engine, tables: list[Table]) -> Iterator[None]:
    """On SQLite, load without the tables' secondary indexes and build each once at the end: keeping a
    dozen indexes up to date row by row costs more than the load itself at a million jobs."""
    if engine.dialect.name != "sqlite":
        yield
        return
    indexes = [index for table in tables for index in table.indexes]
    with engine.begin() as conn:
        for index in indexes:
            conn.exec_driver_sql(f"DROP INDEX IF EXISTS {engine.dialect.identifier_preparer.quote(index.name)}")
    try:
        yield
    finally:
        with engine.begin() as conn:
            for index in indexes:
                index.create(conn)


def _insert(conn: Connection, table: Table, columns: Iterable[str], rows: list[tuple]) -> None:
    """executemany straight to the driver: each column's own bind processor (datetimes, JSON, enums) turns
    values into what SQLAlchemy would store, without its per-row overhead (3× faster at a million rows).
    Times given as epoch seconds become UTC datetimes first."""
    columns = list(columns)
    if not rows:
        return
    processors = []
    for name in columns:
        column = table.c[name]
        process = column.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
        if isinstance(getattr(column.type, "impl", column.type), DateTime):  # UTCDateTime decorates DateTime
            process = _epoch_to_datetime(process)
        processors.append(process)
    prepare = conn.dialect.identifier_preparer
    placeholder = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = (
        f"INSERT INTO {prepare.format_table(table)} ({', '.join(prepare.quote(name) for name in columns)}) "
        f"VALUES ({', '.join([placeholder] * len(columns))})"
    )
    converted = [
        tuple(
            value if process is None or value is None else process(value)
            for process, value in zip(processors, row, strict=True)
        )
        for row in rows
    ]
    conn.exec_driver_sql(sql, converted)


def _epoch_to_datetime(process):
    def to_datetime(value):
        moment = datetime.fromtimestamp(value, UTC) if isinstance(value, float) else value
        return process(moment) if process is not None else moment

    return to_datetime

"""Database tables (SQLModel). `XBase` holds the fields a caller may set; `X(table=True)` adds the rest.

SQLModel does not validate table models, so a field here says only what the column is (`max_length` is its
VARCHAR size); what a value may be is checked, with a message, by the service that writes it
(studio.accounts, studio.catalogue, studio.jobs).

Times are timezone-aware UTC (`utcnow()`); SQLModel stores them as UTC and returns them aware,
also on SQLite, which has no time zones of its own.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum

from sqlalchemy import DDL, JSON, Column, Index, UniqueConstraint, event, false, func
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class Role(StrEnum):
    admin = "admin"
    member = "member"


class Plan(StrEnum):
    free = "free"
    pro_monthly = "pro_monthly"
    pro_annual = "pro_annual"


# A team's budget alert: the share of its monthly budget spent at which members and admins are warned.
MIN_ALERT_PERCENT, MAX_ALERT_PERCENT, DEFAULT_ALERT_PERCENT = 1, 100, 80


class TeamBase(SQLModel):
    name: str = Field(index=True, unique=True, max_length=80)
    # Credits the team's members may spend per calendar month (None: no limit); see studio.billing.budgets.
    monthly_budget: int | None = Field(default=None)
    # Members and admins see an alert once this share of the monthly budget is spent.
    budget_alert_percent: int = Field(default=DEFAULT_ALERT_PERCENT)


class Team(TeamBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)


class UserBase(SQLModel):
    username: str = Field(index=True, unique=True, max_length=32)
    email: str = Field(max_length=254)
    display_name: str = Field(max_length=80)
    role: Role = Field(default=Role.member)
    plan: Plan = Field(default=Plan.free)
    is_active: bool = Field(default=True)
    team_id: int | None = Field(default=None, foreign_key="team.id", index=True)
    # An admin decides whether the team's pool pays once this user's own credits run out.
    can_use_team_pool: bool = Field(default=False)


class User(UserBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    password_hash: str
    created_at: datetime = Field(default_factory=utcnow)
    # An admin closed the getting-started panel (studio.web.onboarding); it is not shown again.
    # (A server default too: rows written by raw SQL, or before this column, are "not dismissed".)
    getting_started_dismissed: bool = Field(default=False, sa_column_kwargs={"server_default": false()})


class AssetKind(StrEnum):
    source = "source"
    result = "result"
    mask = "mask"


class Asset(SQLModel, table=True):
    """One stored image. The bytes live in the content-addressed store under `sha256`;
    `original_name` is for display only and never touches the file system."""

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    kind: AssetKind
    sha256: str = Field(index=True, max_length=64)
    mime: str = Field(default="image/png", max_length=32)
    width: int
    height: int
    size_bytes: int
    original_name: str | None = Field(default=None, max_length=255)
    created_at: datetime = Field(default_factory=utcnow, index=True)


class JobStatus(StrEnum):
    """queued → processing → complete | failed | cancelled; never backwards."""

    queued = "queued"
    processing = "processing"
    complete = "complete"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.complete, JobStatus.failed, JobStatus.cancelled)


class JobBase(SQLModel):
    task: str = Field(default="img2img", max_length=32)  # a pipelines.params.Task value
    model: str = Field(max_length=300)
    # The catalogue style it was made with (None: the user's own settings), for filters and analytics.
    style: str | None = Field(default=None, max_length=64, index=True)
    # What the user asked for (prompt, strength, steps, inpaint and ControlNet options, …): a
    # pipelines.params.RunSpec as a dict, enough to run the job again.
    params: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class Job(JobBase, table=True):
    """A transformation request. The table is also the queue: workers claim the first `queued` job in
    (lane, fair_tag, id) order (studio.jobs.fair_queue), holding a lease (`worker`, `attempt`, `lease_until`)."""

    __table_args__ = (
        # Claims walk it in order (lowest lane, then round, then oldest); a lane's current round is its first entry,
        # and its highest round of each status the last (studio.jobs.fair_queue).
        Index("ix_job_queue", "status", "lane", "fair_tag", "id"),
        # Submits: how many jobs a user has queued or running (the per-user limit), their highest round in a lane.
        Index("ix_job_user_queue", "user_id", "status", "lane", "fair_tag"),
        # History pages: a user's jobs, newest first, a page at a time (keyset: created_at, id).
        Index("ix_job_user_created", "user_id", "created_at", "id"),
        Index("ix_job_team_created", "team_id", "created_at", "id"),  # an admin's view of the team's history
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    team_id: int | None = Field(default=None, foreign_key="team.id", index=True)
    status: JobStatus = Field(default=JobStatus.queued)
    priority: int = Field(default=0)  # the plan's queue class when submitted (studio.billing.plans)
    # Where it waits (studio.jobs.fair_queue): lower lanes run first — Pro before Free, and within a plan a
    # person's Transform, Inpaint or Sweep before batch items. Within a lane, rounds (fair_tag) take turns
    # between users, so no one's backlog holds up anyone else's next job by more than a round.
    lane: int = Field(default=0)
    fair_tag: int = Field(default=0)
    # The strength sweep this job is one cell of (its members share it and run in one denoising pass).
    sweep_id: str | None = Field(default=None, max_length=32, index=True)
    # The batch this job is one image of (the Batch page and `python -m studio batch`).
    batch_id: str | None = Field(default=None, max_length=32, index=True)
    # Assets can outlive their retention period only as hashes in the recipe: retention deletes the
    # rows and sets these to None, while the job and its ledger rows stay for accounting.
    source_asset_id: int | None = Field(default=None, foreign_key="asset.id")
    mask_asset_id: int | None = Field(default=None, foreign_key="asset.id")
    result_asset_id: int | None = Field(default=None, foreign_key="asset.id")
    # What actually ran (resolved sizes, scheduler, library versions); also embedded in the result PNG.
    recipe: dict | None = Field(default=None, sa_column=Column(JSON))
    error: str | None = Field(default=None, max_length=2000)
    progress_step: int = Field(default=0)
    progress_total: int = Field(default=0)
    quality: str = Field(default="standard", max_length=16)
    cost: int = Field(default=0)
    cancel_requested: bool = Field(default=False)
    idempotency_key: str | None = Field(default=None, unique=True, max_length=64)
    worker: str | None = Field(default=None, max_length=120)
    attempt: int = Field(default=0)
    lease_until: datetime | None = Field(default=None)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    started_at: datetime | None = Field(default=None)
    finished_at: datetime | None = Field(default=None)
    # Deleted from the owner's history: its images are gone, the row stays for the ledger and analytics.
    deleted_at: datetime | None = Field(default=None)


_job = Job.__table__.c
# SQLite: durations as julianday differences (days). An index over the very expression lets a query
# walk the values in order; the query must spell it exactly so (no bound constants in it).
PROCESSING_DAYS = func.julianday(_job.finished_at) - func.julianday(_job.started_at)
QUEUE_WAIT_DAYS = func.julianday(_job.started_at) - func.julianday(_job.created_at)


def _on_job(*columns):
    return [_job[column] if isinstance(column, str) else column for column in columns]


# Indexes for the analytics queries (studio.analytics) and the budget check on every submit (studio.billing):
# defined with the table, so every schema the studio creates has them.
ANALYTICS_INDEXES = (
    # Every per-period aggregate: a date range over a covering index, never the wide job rows.
    Index(
        "ix_job_usage",
        *_on_job("created_at", "status", "team_id", "user_id", "model", "style", "quality", "priority", "cost"),
    ),
    # A team's spend in a month: the budget check on every submit, and the team filter.
    Index("ix_job_team_spend", *_on_job("team_id", "created_at", "status", "cost")),
    # Percentiles on SQLite: per group, durations in order, with the filter columns alongside.
    Index(
        "ix_job_processing_time",
        *_on_job("status", "model", "quality", PROCESSING_DAYS, "created_at", "team_id", "user_id"),
    ).ddl_if(dialect="sqlite"),
    Index(
        "ix_job_queue_wait", *_on_job("model", "quality", QUEUE_WAIT_DAYS, "created_at", "team_id", "user_id")
    ).ddl_if(dialect="sqlite"),
    Index(
        "ix_job_priority_wait", *_on_job("priority", QUEUE_WAIT_DAYS, "created_at", "team_id", "user_id", "model")
    ).ddl_if(dialect="sqlite"),
)


class UsageRollup(SQLModel):
    """Jobs submitted on one UTC day with the same key, and the sum of their prices (studio.db.rollups keeps
    them by triggers on `job`; studio.analytics reads them). No team is team_id 0, own settings style ""."""

    day: date = Field(primary_key=True)
    status: str = Field(primary_key=True, max_length=16)  # a JobStatus value
    jobs: int
    credits: int


class UsageByTeam(UsageRollup, table=True):
    """Per day, team, style, model and status: every figure without a user in its filter or breakdown, and the
    team budgets. Small: a style fixes its model, so a row per (day, team, style, status) that had a job."""

    __tablename__ = "usage_by_team"
    __table_args__ = (Index("ix_usage_by_team_team_day", "team_id", "day"), {"sqlite_with_rowid": False})

    team_id: int = Field(primary_key=True)
    style: str = Field(primary_key=True, max_length=64)
    model: str = Field(primary_key=True, max_length=300)


class UsageByUser(UsageRollup, table=True):
    """Per day, user, team and status: credits by user, top spenders, a user's counts. At most days × users ×
    statuses rows, however many jobs (a user's team rarely changes)."""

    __tablename__ = "usage_by_user"
    __table_args__ = (Index("ix_usage_by_user_user_day", "user_id", "day"), {"sqlite_with_rowid": False})

    user_id: int = Field(primary_key=True)
    team_id: int = Field(primary_key=True)


class UsageByUserStyle(UsageRollup, table=True):
    """Per day, user, team, style, model and status: a user's figures by style or model, and by user for one
    model. Nearly half as many rows as jobs at a million, so read through its (user, day) index."""

    __tablename__ = "usage_by_user_style"
    __table_args__ = (Index("ix_usage_by_user_style_user_day", "user_id", "day"), {"sqlite_with_rowid": False})

    user_id: int = Field(primary_key=True)
    team_id: int = Field(primary_key=True)
    style: str = Field(primary_key=True, max_length=64)
    model: str = Field(primary_key=True, max_length=300)


# Smallest first: a query reads the first rollup that has every column it filters or groups on.
USAGE_ROLLUPS = (UsageByTeam.__table__, UsageByUser.__table__, UsageByUserStyle.__table__)


class DurationHistogram(SQLModel):
    """How many jobs submitted on one UTC day (and with the same key) took a duration in one bucket (studio.db.rollups
    keeps them; studio.analytics reads percentiles from them). A bucket is named by its lower end in tenths of a
    second and holds two significant figures: 0.1 s wide below 10 s, 1 s below 100 s, 10 s below 1000 s, and so
    on (studio.db.rollups.bucket_width). Rows are bounded by days × keys × buckets, whatever the number of jobs."""

    day: date = Field(primary_key=True)
    bucket: int = Field(primary_key=True)  # its lower end, in tenths of a second
    jobs: int


class ProcessingHistogram(DurationHistogram, table=True):
    """Processing time (started → finished) of complete jobs, per model and quality."""

    __tablename__ = "processing_histogram"
    __table_args__ = ({"sqlite_with_rowid": False},)

    model: str = Field(primary_key=True, max_length=300)
    quality: str = Field(primary_key=True, max_length=16)


class QueueWaitHistogram(DurationHistogram, table=True):
    """Queue wait (submitted → started) of jobs a worker started, per model and quality."""

    __tablename__ = "queue_wait_histogram"
    __table_args__ = ({"sqlite_with_rowid": False},)

    model: str = Field(primary_key=True, max_length=300)
    quality: str = Field(primary_key=True, max_length=16)


class PriorityWaitHistogram(DurationHistogram, table=True):
    """Queue wait of jobs a worker started, per queue class (priority): what Pro buys. Apart from the model's, so
    neither figure reads rows split by the other's key."""

    __tablename__ = "priority_wait_histogram"
    __table_args__ = ({"sqlite_with_rowid": False},)

    priority: int = Field(primary_key=True)


DURATION_HISTOGRAMS = (ProcessingHistogram.__table__, QueueWaitHistogram.__table__, PriorityWaitHistogram.__table__)


class PresetBase(SQLModel):
    name: str = Field(max_length=80)
    # Everything that changes pixels (studio.catalogue.presets.PresetSettings as a dict): style, prompts,
    # strength, quality, steps, guidance, seed policy and seed, ControlNet.
    settings: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class Preset(PresetBase, table=True):
    """Saved settings, personal (team_id None) or shared with the owner's team."""

    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_preset_owner_name"),)

    id: int | None = Field(default=None, primary_key=True)
    owner_id: int = Field(foreign_key="user.id", index=True)
    team_id: int | None = Field(default=None, foreign_key="team.id", index=True)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class BrandKit(SQLModel, table=True):
    """A team's brand kit (studio.kits): a model, LoRAs pinned by hash, an optional reference image, a prompt
    template, a negative prompt and defaults. Admins write it; only the team's members see and run it."""

    __table_args__ = (UniqueConstraint("team_id", "name", name="uq_brandkit_team_name"),)

    id: int | None = Field(default=None, primary_key=True)
    team_id: int = Field(foreign_key="team.id", index=True)
    name: str = Field(max_length=80)
    # studio.kits.settings.KitSettings as a dict: model, LoRAs (name, sha256, weight), reference, template, defaults.
    settings: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class CreditKind(StrEnum):
    grant = "grant"  # free credits: the trial, goodwill
    allocation = "allocation"  # bought or included in a plan (starter pack, monthly Pro credits)
    reserve = "reserve"  # taken when a job is submitted
    commit = "commit"  # the job succeeded: the reserve stands (amount 0, a record of the outcome)
    refund = "refund"  # the job failed or was cancelled: the reserve comes back
    adjustment = "adjustment"  # an admin's correction, always with a reason
    expiry = "expiry"  # what was left of an expiring allocation when it expired


class CreditEntry(SQLModel, table=True):
    """One row of the append-only credits ledger; rows are only ever inserted.

    Credits live in lots: a row that adds credits (grant, allocation, positive adjustment) opens
    a lot (`lot_id` is None, `expires_at` optional); every later movement names the lot it draws
    from or returns to. An account's balance is the sum of its rows' `amount`. A reserve that
    draws on several lots writes one row per lot, and its commit or refund mirrors them, so the
    unique (job, kind, lot) constraint makes a second refund of the same job impossible.
    """

    __table_args__ = (UniqueConstraint("job_id", "kind", "lot_id", name="uq_credit_job_kind_lot"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int | None = Field(default=None, foreign_key="user.id", index=True)
    team_id: int | None = Field(default=None, foreign_key="team.id", index=True)
    kind: CreditKind
    amount: int
    lot_id: int | None = Field(default=None, foreign_key="creditentry.id", index=True)
    expires_at: datetime | None = Field(default=None)
    job_id: int | None = Field(default=None, foreign_key="job.id", index=True)
    idempotency_key: str | None = Field(default=None, unique=True, max_length=120)
    reason: str | None = Field(default=None, max_length=500)
    actor_id: int | None = Field(default=None, foreign_key="user.id")
    created_at: datetime = Field(default_factory=utcnow, index=True)


class AuditAction(StrEnum):
    user_create = "user_create"
    user_deactivate = "user_deactivate"
    user_reactivate = "user_reactivate"
    user_role = "user_role"
    user_plan = "user_plan"
    user_team = "user_team"
    user_password_reset = "user_password_reset"
    team_create = "team_create"
    team_rename = "team_rename"
    team_budget = "team_budget"
    credit_grant = "credit_grant"
    credit_adjust = "credit_adjust"
    # Signing in (studio.accounts.signin, studio.accounts.sessions): the actor is who did it, None for a failed
    # sign-in (nobody is signed in); the target is the account named.
    login_failure = "login_failure"
    login_lockout = "login_lockout"
    password_change = "password_change"
    sessions_revoke = "sessions_revoke"
    model_production = "model_production"  # a catalogue model taken out of production, or offered again
    lora_register = "lora_register"  # a LoRA registered on the Models page (RegisteredLora)
    lora_remove = "lora_remove"  # a registered LoRA removed
    # A team's brand kit (studio.kits) created, changed or deleted; the details hold its settings before → after.
    kit_create = "kit_create"
    kit_change = "kit_change"
    kit_delete = "kit_delete"


class AuditEntry(SQLModel, table=True):
    """One admin action, written by `studio.accounts.admin` in the same transaction as the action itself, or a
    sign-in event (a failure, a lockout, a password change, sessions revoked) written by `studio.accounts`.

    Append-only like the credits ledger: no code path updates or deletes a row, the ORM refuses to,
    and triggers (SQLite; a PL/pgSQL function on PostgreSQL) refuse UPDATE and DELETE from any client.
    """

    id: int | None = Field(default=None, primary_key=True)
    actor_id: int | None = Field(default=None, foreign_key="user.id", index=True)  # None: not signed in
    action: AuditAction = Field(index=True)
    target: str = Field(max_length=120)  # who or what it was done to, readable: "user mia", "team Design"
    # The values that changed (before → after), the amount and reason of a grant: never a password.
    details: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, index=True)


def _refuse_audit_change(*_) -> None:
    raise PermissionError("The audit log is append-only: entries are never changed or deleted.")


def _sqlite_refuses(statement: str) -> DDL:
    return DDL(
        f"CREATE TRIGGER auditentry_append_only_{statement.lower()} BEFORE {statement} ON auditentry "
        "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
    ).execute_if(dialect="sqlite")


event.listen(AuditEntry, "before_update", _refuse_audit_change)
event.listen(AuditEntry, "before_delete", _refuse_audit_change)
event.listen(AuditEntry.__table__, "after_create", _sqlite_refuses("UPDATE"))
event.listen(AuditEntry.__table__, "after_create", _sqlite_refuses("DELETE"))
event.listen(
    AuditEntry.__table__,
    "after_create",
    DDL(
        "CREATE OR REPLACE FUNCTION auditentry_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$"
    ).execute_if(dialect="postgresql"),
)
event.listen(
    AuditEntry.__table__,
    "after_create",
    DDL(
        "CREATE TRIGGER auditentry_append_only BEFORE UPDATE OR DELETE ON auditentry "
        "FOR EACH ROW EXECUTE FUNCTION auditentry_append_only()"
    ).execute_if(dialect="postgresql"),
)


class WorkerHeartbeat(SQLModel, table=True):
    """One row per queue worker (a `python -m studio worker` process or the app's thread), rewritten every
    few seconds while it runs (studio.jobs.heartbeats): the admin Models page shows who is alive and doing what."""

    name: str = Field(primary_key=True, max_length=120)
    host: str = Field(max_length=255)
    pid: int
    device: str = Field(max_length=32)  # the torch device its models run on: cuda:0, cpu, …
    current_job_id: int | None = Field(default=None)
    loaded_models: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # pipelines.cache.MemoryReport.to_dict(): device, budget and used bytes, each loaded model with its size;
    # None until the worker has loaded its model stack.
    memory: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    started_at: datetime = Field(default_factory=utcnow)
    last_seen: datetime = Field(default_factory=utcnow, index=True)
    stopped_at: datetime | None = Field(default=None)  # a graceful stop; a crash just stops the beats
    # The most jobs it runs in one batched loop, as it last decided (STUDIO_BATCH_MAX, or chosen by memory on a GPU:
    # studio.jobs.batching.batch_limit), and why; None before its first claim. The jobs it holds are the leases'.
    batch_max: int | None = Field(default=None)
    batch_basis: str | None = Field(default=None, max_length=200)


class HiddenModel(SQLModel, table=True):
    """A catalogue model an admin took out of production (the admin Models page, studio.catalogue.visibility): the
    styles that run it are not offered and a submit naming it is refused. Showing it again deletes the row."""

    name: str = Field(primary_key=True, max_length=120)  # its [models.NAME] in the catalogue
    hidden_by: int | None = Field(default=None, foreign_key="user.id")
    hidden_at: datetime = Field(default_factory=utcnow)


class RegisteredLora(SQLModel, table=True):
    """A LoRA an admin registered on the Models page (studio.catalogue.loras): offered beside the catalogue's
    [loras] for runs of models of its family, and resolved the same way. Its file was checked to be a LoRA of that
    family when registered, and `sha256` pins it: a file that changed since is refused. Removing it deletes the row
    (jobs already queued keep the file and hash they recorded)."""

    name: str = Field(primary_key=True, max_length=120)  # unique beside the catalogue's [loras.NAME]
    location: str = Field(max_length=1000)  # a local file or folder, a hub id, or "owner/repo/file.safetensors"
    family: str = Field(max_length=40)  # the pipelines.families name of the models it was trained on
    sha256: str = Field(max_length=64)
    about: str = Field(default="", max_length=255)
    registered_by: int | None = Field(default=None, foreign_key="user.id")
    registered_at: datetime = Field(default_factory=utcnow)


class LoginSession(SQLModel, table=True):
    """One sign-in on one browser (studio.accounts.sessions). The browser's cookie holds a random token, signed
    with the cookie key; the row is keyed by the token's SHA-256, so the table alone cannot make a cookie.
    Valid while not revoked, before `expires_at` (absolute) and within the idle limit of `last_seen_at`."""

    id: str = Field(primary_key=True, max_length=64)  # sha256(token), hex
    user_id: int = Field(foreign_key="user.id", index=True)
    created_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    # The client hint shown on the Account page: the address and browser it signed in from.
    client_address: str | None = Field(default=None, max_length=64)
    user_agent: str = Field(default="", max_length=255)
    revoked_at: datetime | None = Field(default=None)
    revoked_reason: str | None = Field(default=None, max_length=40)


class LoginAttempt(SQLModel, table=True):
    """One sign-in try, for throttling (studio.accounts.signin): failures per username and per client address in
    the last minutes. Rows older than the throttling window are deleted; the audit log keeps failures for good."""

    __table_args__ = (
        Index("ix_loginattempt_username", "username", "created_at"),
        Index("ix_loginattempt_client", "client_address", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64)  # as typed (normalised), known or not
    client_address: str | None = Field(default=None, max_length=64)
    succeeded: bool = Field(default=False)
    created_at: datetime = Field(default_factory=utcnow, index=True)

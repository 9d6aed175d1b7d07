"""Database tables (SQLModel). `XBase` holds the fields a caller may set; `X(table=True)` adds the rest.

Times are timezone-aware UTC (`utcnow()`); SQLModel stores them as UTC and returns them aware,
also on SQLite, which has no time zones of its own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import JSON, Column, Index, UniqueConstraint
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


class TeamBase(SQLModel):
    name: str = Field(index=True, unique=True, min_length=1, max_length=80)


class Team(TeamBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)


class UserBase(SQLModel):
    username: str = Field(index=True, unique=True, min_length=3, max_length=32)
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
    sha256: str = Field(index=True, min_length=64, max_length=64)
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
    """A transformation request. The table is also the queue: workers claim the oldest
    `queued` job of the highest priority, holding a lease (`worker`, `attempt`, `lease_until`)."""

    __table_args__ = (Index("ix_job_queue", "status", "priority", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    team_id: int | None = Field(default=None, foreign_key="team.id", index=True)
    status: JobStatus = Field(default=JobStatus.queued)
    priority: int = Field(default=0)
    # The strength sweep this job is one cell of (its members share it and run in one denoising pass).
    sweep_id: str | None = Field(default=None, max_length=32, index=True)
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

"""History: a user's jobs (or, for an admin, their team's), filtered, a page at a time.

Pages are keyset-paginated on (created_at, id) — "the 24 jobs before this one" — over the
(user_id, created_at, id) index, so page 400 costs what page 1 does, at 100 000 jobs and beyond.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import or_, tuple_
from sqlmodel import Session, col, select

from pipelines.params import Task
from studio.db.tables import Asset, Job, JobStatus, Role, User
from studio.errors import Forbidden

PAGE_SIZE = 24
OWN_SETTINGS = "own"  # the style filter value for jobs made without a catalogue style


@dataclass(frozen=True)
class HistoryFilter:
    since: date | None = None
    until: date | None = None  # inclusive
    statuses: tuple[JobStatus, ...] = ()  # none: every status
    style: str | None = None  # a style id, OWN_SETTINGS, or None for any
    text: str = ""  # in what the user wrote (prompt or negative prompt)
    task: Task | None = None
    team: bool = False  # an admin's view of their whole team


@dataclass(frozen=True)
class HistoryRow:
    job: Job
    source: Asset | None  # None once retention (or a delete) removed it
    result: Asset | None


@dataclass(frozen=True)
class HistoryPage:
    rows: list[HistoryRow]
    next_cursor: tuple[datetime, int] | None  # pass as `after` for the next page; None on the last page


def history_page(
    *,
    session: Session,
    viewer: User,
    filters: HistoryFilter = HistoryFilter(),
    after: tuple[datetime, int] | None = None,
    limit: int = PAGE_SIZE,
) -> HistoryPage:
    query = select(Job).where(col(Job.deleted_at).is_(None), *_conditions(viewer, filters))
    if after is not None:
        created, job_id = after
        # A row-value comparison, which SQLite and PostgreSQL answer with a range scan of the index.
        query = query.where(tuple_(Job.created_at, Job.id) < tuple_(created, job_id))
    jobs = list(session.exec(query.order_by(col(Job.created_at).desc(), col(Job.id).desc()).limit(limit + 1)).all())
    more = len(jobs) > limit
    jobs = jobs[:limit]
    ids = {i for job in jobs for i in (job.source_asset_id, job.result_asset_id) if i is not None}
    assets = {a.id: a for a in session.exec(select(Asset).where(col(Asset.id).in_(ids)))} if ids else {}
    rows = [HistoryRow(job, assets.get(job.source_asset_id), assets.get(job.result_asset_id)) for job in jobs]
    return HistoryPage(rows, (jobs[-1].created_at, jobs[-1].id) if more else None)


def _conditions(viewer: User, filters: HistoryFilter) -> list:
    if filters.team:
        if viewer.role is not Role.admin or viewer.team_id is None:
            raise Forbidden("Only an admin in a team can see the team's history.")
        conditions = [Job.team_id == viewer.team_id]
    else:
        conditions = [Job.user_id == viewer.id]
    if filters.since is not None:
        conditions.append(Job.created_at >= datetime.combine(filters.since, time.min, UTC))
    if filters.until is not None:
        conditions.append(Job.created_at < datetime.combine(filters.until + timedelta(days=1), time.min, UTC))
    if filters.statuses:
        conditions.append(col(Job.status).in_(filters.statuses))
    if filters.style == OWN_SETTINGS:
        conditions.append(col(Job.style).is_(None))
    elif filters.style is not None:
        conditions.append(Job.style == filters.style)
    if filters.task is not None:
        conditions.append(Job.task == filters.task.value)
    if text := filters.text.strip():
        pattern = f"%{text}%"
        conditions.append(
            or_(
                Job.params["user_prompt"].as_string().ilike(pattern),
                Job.params["prompt"].as_string().ilike(pattern),
                Job.params["user_negative_prompt"].as_string().ilike(pattern),
            )
        )
    return conditions

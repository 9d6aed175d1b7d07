"""Usage analytics behind the Analytics page. Every figure is aggregated in SQL (GROUP BY over the
indexes below); Python only reshapes the few rows that come back.

What the figures mean (all times UTC; a job belongs to the day it was submitted):

- **Credits spent**: a job's price, unless the job was refunded (failed or cancelled). This equals the
  job's ledger rows, reserve plus refund (a commit is 0), attributed to the submit time; queued and
  running jobs count, as their credits are reserved. `studio.billing.budgets` uses the same definition.
- **Failure rate**: failed jobs ÷ jobs that ended (complete, failed or cancelled).
  **Refund rate**: credits refunded (failed and cancelled jobs) ÷ credits reserved (all jobs).
- **Processing time**: finished_at − started_at of complete jobs. **Queue wait**: started_at − created_at
  of every job a worker started (a job the reaper requeued waited until its last start).
- **p50 / p95**: nearest rank, the value at rank ⌈p·n⌉ of the n values in ascending order, to two significant
  figures rounded down (the lower end of its duration bucket: 0.1 s steps below 10 s, 1 s below 100 s, 10 s
  below 1000 s, …), the same whichever way it was read.

Counts and credits (credits spent, jobs by status, the rates, top spenders, team budgets) read the daily
rollups (studio.db.rollups: per UTC day and key, kept by triggers in the transaction that changes a job), so
their cost grows with days × groups, not with jobs: whole UTC days of the range come from the smallest rollup
that keeps every column the figure filters or groups on, and the partial days at either edge of a range that
does not start or end at midnight from the job table (a date range of an index), so the figures are exact
either way. Weeks (from Monday) are summed from days.

Percentiles read the per-day duration histograms (studio.db.rollups: per day, model and quality or queue class, and
bucket) unless the filter names a column the histogram does not keep (a team, a user; a model for the queue
classes): the bucket holding rank ⌈p·n⌉ of the merged counts is exact to its width. Otherwise, on SQLite a
percentile is one `ORDER BY duration LIMIT 1 OFFSET k` per group walking an index whose key holds the duration
itself (p95 walks down from the top), after one GROUP BY for the group sizes, so no query sorts the rows
(`UsageFilter.where` keeps SQLite's planner on these indexes); other databases (PostgreSQL) use `percentile_disc`,
the same nearest-rank definition.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum

from sqlalchemy import ColumnElement, Table, extract, func, literal_column, or_
from sqlmodel import Session, col, select

from studio.db.rollups import HISTOGRAMS, Rollup, bucket_of, job_bucket
from studio.db.tables import PROCESSING_DAYS, QUEUE_WAIT_DAYS, USAGE_ROLLUPS, Job, JobStatus, Team, UsageByTeam, User

REFUNDED_STATUSES = (JobStatus.failed, JobStatus.cancelled)
ENDED_STATUSES = (JobStatus.complete, *REFUNDED_STATUSES)
PERCENTILES = (50, 95)
SECONDS_PER_DAY = 86_400.0
OWN_SETTINGS_LABEL = "Own settings"
NO_TEAM_LABEL = "No team"
OTHERS_LABEL = "Others"
_job = Job.__table__.c


class Bucket(StrEnum):
    day = "day"
    week = "week"  # Monday to Sunday


class Breakdown(StrEnum):
    team = "team"
    user = "user"
    style = "style"
    model = "model"


@dataclass(frozen=True)
class UsageFilter:
    """Jobs submitted in [start, end), optionally of one team, one user, one model."""

    start: datetime
    end: datetime
    team_id: int | None = None
    user_id: int | None = None
    model: str | None = None

    def where(self, *, sqlite: bool = False, walk: bool = False) -> list[ColumnElement[bool]]:
        """The conditions on Job.

        SQLite's planner has no statistics and takes an equality on an indexed column for a needle in a
        haystack. With `sqlite`, likely() tells it that the model filter keeps many rows (a studio has a
        handful of models), so it keeps to the date-range index instead of reading every job of the
        model for each day (8.8 s instead of 0.3 s at a million jobs). With `walk` it says so of every
        condition, for the percentile queries: they walk an ordered duration index that carries the
        filter columns, bounded by the group's size, where a team's or a busy user's index would read
        and sort their rows."""
        conditions = [Job.created_at >= self.start, Job.created_at < self.end]
        if self.team_id is not None:
            conditions.append(Job.team_id == self.team_id)
        if self.user_id is not None:
            conditions.append(Job.user_id == self.user_id)
        if walk:
            conditions = [func.likely(condition) for condition in conditions]
        if self.model is not None:
            conditions.append(func.likely(Job.model == self.model) if sqlite or walk else Job.model == self.model)
        return conditions


@dataclass(frozen=True)
class PeriodCredits:
    period: date
    group: str  # the team, user, style or model (see Breakdown)
    credits: int


@dataclass(frozen=True)
class PeriodStatus:
    period: date
    status: JobStatus
    jobs: int
    credits: int  # their prices, refunded or not


@dataclass(frozen=True)
class OutcomeRates:
    period: date | None  # None: the whole filtered range
    jobs: int
    ended: int
    failed: int
    cancelled: int
    credits_reserved: int
    credits_refunded: int

    @property
    def failure_rate(self) -> float:
        return self.failed / self.ended if self.ended else 0.0

    @property
    def refund_rate(self) -> float:
        return self.credits_refunded / self.credits_reserved if self.credits_reserved else 0.0


@dataclass(frozen=True)
class DurationStats:
    group: tuple[str, ...]  # (model, quality), or (queue class,) for waits by priority
    jobs: int
    p50_s: float  # two significant figures, rounded down (the module's docstring)
    p95_s: float


@dataclass(frozen=True)
class Spender:
    user_id: int
    username: str
    team: str
    jobs: int
    credits: int


@dataclass(frozen=True)
class FilterChoices:
    teams: dict[int, str]
    users: dict[int, str]
    models: list[str]


def credits_spent(
    *,
    session: Session,
    usage: UsageFilter,
    bucket: Bucket = Bucket.day,
    by: Breakdown = Breakdown.team,
    keep: int | None = None,
) -> list[PeriodCredits]:
    """Credits spent per period, split by team, user, style or model.

    With `keep`, only the `keep` groups that spent the most over the whole range (ties by name) are split out
    and the rest are summed per period as "Others" (a chart stacked by a thousand users says nothing; by ten
    and the rest it does). That reads days × (keep + 1) rows instead of days × groups: the totals per group
    over the range, then per day the kept groups' and every group's together."""
    key = _BREAKDOWN_COLUMNS[by]
    kept = None
    if keep is not None:
        overall = _totals(session, usage, (key,), charged_only=True, per_day=False)
        names = _labels(session, by, {value for (value,) in overall})
        kept = {value for (value,) in sorted(overall, key=lambda k: (-overall[k][1], names[k[0]]))[:keep]}
    totals = _totals(session, usage, (key,), charged_only=True, per_day=True, among=kept)
    names = _labels(session, by, {value for _, value in totals})
    spent: dict[tuple[date, str], int] = defaultdict(int)
    for (day, value), (_, credits) in totals.items():
        spent[_period_of(day, bucket), names[value]] += credits
    if kept is not None:
        others: dict[date, list[int]] = defaultdict(lambda: [0, 0])
        for (day,), (jobs, credits) in _totals(session, usage, (), charged_only=True, per_day=True).items():
            others[_period_of(day, bucket)][0] += jobs
            others[_period_of(day, bucket)][1] += credits
        for (day, _), (jobs, credits) in totals.items():
            others[_period_of(day, bucket)][0] -= jobs
            others[_period_of(day, bucket)][1] -= credits
        spent.update({(period, OTHERS_LABEL): credits for period, (jobs, credits) in others.items() if jobs})
    return sorted(
        (PeriodCredits(period, group, credits) for (period, group), credits in spent.items()),
        key=lambda row: (row.period, row.group == OTHERS_LABEL, row.group),
    )


def jobs_by_status(*, session: Session, usage: UsageFilter, bucket: Bucket = Bucket.day) -> list[PeriodStatus]:
    """Jobs and their prices per period and status (the failure and refund rates come from these)."""
    totals: dict[tuple[date, JobStatus], list[int]] = defaultdict(lambda: [0, 0])
    for (day, status), (jobs, credits) in _totals(
        session, usage, ("status",), charged_only=False, per_day=True
    ).items():
        period = totals[_period_of(day, bucket), JobStatus(status)]
        period[0] += jobs
        period[1] += credits
    order = list(JobStatus)
    return [
        PeriodStatus(period, status, jobs, credits)
        for (period, status), (jobs, credits) in sorted(
            totals.items(), key=lambda item: (item[0][0], order.index(item[0][1]))
        )
    ]


def spent_by_team(*, session: Session, usage: UsageFilter) -> dict[int | None, int]:
    """Credits spent per team (None: users without a team) over the range: team budgets read this."""
    totals = _totals(session, usage, ("team_id",), charged_only=True, per_day=False)
    return {team_id: credits for (team_id,), (_, credits) in totals.items()}


def periods(usage: UsageFilter, bucket: Bucket) -> list[tuple[date, datetime, datetime]]:
    """(label, start, end) of each day or week (from Monday) the filter's range touches, clipped to it."""
    first = usage.start.astimezone(UTC).date()
    if bucket is Bucket.week:
        first -= timedelta(days=first.weekday())
    step = timedelta(days=7 if bucket is Bucket.week else 1)
    found = []
    cursor = datetime.combine(first, time(), UTC)
    while cursor < usage.end:
        found.append((cursor.date(), max(cursor, usage.start), min(cursor + step, usage.end)))
        cursor += step
    return found


_BREAKDOWN_COLUMNS = {
    Breakdown.team: "team_id",
    Breakdown.user: "user_id",
    Breakdown.style: "style",
    Breakdown.model: "model",
}


def _period_of(day: date, bucket: Bucket) -> date:
    return day - timedelta(days=day.weekday()) if bucket is Bucket.week else day


def _totals(
    session: Session,
    usage: UsageFilter,
    keys: tuple[str, ...],
    *,
    charged_only: bool,
    per_day: bool,
    among: set | None = None,
) -> dict[tuple, tuple[int, int]]:
    """{(day, *values of `keys`): (jobs, credits)} over the filter's range, or {(*values,): …} without `per_day`.

    `keys` are job columns (team_id, user_id, style, model, status); with `charged_only` refunded jobs are
    left out; with `among`, only the jobs whose first key is one of these values. Whole UTC days come from a
    rollup, the partial first and last day (if any) from the job table."""
    days = periods(usage, Bucket.day)
    whole = [(day, start) for day, start, end in days if end - start == timedelta(days=1)]
    totals: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    sources = []
    if whole:  # only the first and the last day can be partial, so the whole days are one run
        sources.append(
            _rollup_totals(
                session, usage, keys, whole[0][0], whole[-1][0] + timedelta(days=1), charged_only, per_day, among
            )
        )
    for day, start, end in days:
        if end - start < timedelta(days=1):
            edge = replace(usage, start=start, end=end)
            sources.append([(day, *row) for row in _job_totals(session, edge, keys, charged_only, among)])
    for source in sources:
        for day, *values, jobs, credits in source:
            total = totals[(day, *values) if per_day else tuple(values)]
            total[0] += int(jobs)
            total[1] += int(credits or 0)
    return {key: (jobs, credits) for key, (jobs, credits) in totals.items()}


def _rollup_totals(
    session, usage: UsageFilter, keys, first: date, end: date, charged_only: bool, per_day: bool, among: set | None
):
    """(day, *values, jobs, credits) rows of the smallest rollup that has every column needed, days [first, end)."""
    needed = {*keys}
    needed |= {
        name
        for name, value in (("team_id", usage.team_id), ("user_id", usage.user_id), ("model", usage.model))
        if value is not None
    }
    rollup = _rollup_for(needed)
    c = rollup.c
    # The rollups' stand-ins for NULL (no team, own settings) become NULL again, as in the job table.
    columns = {key: c[key] for key in keys}
    if "team_id" in columns:
        columns["team_id"] = func.nullif(c.team_id, 0)
    if "style" in columns:
        columns["style"] = func.nullif(c.style, "")
    conditions = [c.day >= first, c.day < end]
    for name in ("team_id", "user_id", "model"):
        if getattr(usage, name) is not None:
            conditions.append(c[name] == getattr(usage, name))
    if charged_only:
        conditions.append(c.status.not_in([status.value for status in REFUNDED_STATUSES]))
    if among is not None:
        conditions.append(_one_of(columns[keys[0]], among))
    grouped = [columns[key] for key in keys]
    day = c.day if per_day else func.min(c.day)
    query = select(day, *grouped, func.sum(c.jobs), func.sum(c.credits)).where(*conditions)
    if per_day:
        query = query.group_by(c.day, *grouped)
    elif grouped:
        query = query.group_by(*grouped)
    return session.exec(query).all()


def _rollup_for(columns: set[str]) -> Table:
    return next(table for table in USAGE_ROLLUPS if columns <= set(table.c.keys()))


def _one_of(column, values: set) -> ColumnElement[bool]:
    present = column.in_([value for value in values if value is not None])
    return or_(present, column.is_(None)) if None in values else present


def _job_totals(session: Session, usage: UsageFilter, keys, charged_only: bool, among: set | None):
    """(*values, jobs, credits) rows from the job table: the jobs of a partial day."""
    grouped = [_job[key] for key in keys]
    conditions = usage.where(sqlite=_dialect(session) == "sqlite")
    if charged_only:
        conditions.append(col(Job.status).not_in(REFUNDED_STATUSES))
    query = select(*grouped, func.count(), func.sum(Job.cost)).where(*conditions)
    rows = session.exec(query.group_by(*grouped) if grouped else query).all()
    # `among` is applied to the day's few groups here: in SQL, SQLite's planner answers an IN list on the key with
    # its index on that column, reading every job of the kept groups instead of the day (2 s at a million jobs).
    return rows if among is None else [row for row in rows if row[0] in among]


def outcome_rates(rows: list[PeriodStatus]) -> list[OutcomeRates]:
    """Failure and refund rates per period of `jobs_by_status` rows, then one for all of them (period None)."""
    by_period: dict[date | None, list[PeriodStatus]] = defaultdict(list)
    for row in rows:
        by_period[row.period].append(row)
        by_period[None].append(row)
    return [_rates(period, group) for period, group in by_period.items() if period is not None] + [
        _rates(None, by_period[None])
    ]


def _rates(period: date | None, rows: list[PeriodStatus]) -> OutcomeRates:
    def count(*statuses: JobStatus) -> int:
        return sum(row.jobs for row in rows if row.status in statuses)

    return OutcomeRates(
        period=period,
        jobs=sum(row.jobs for row in rows),
        ended=count(*ENDED_STATUSES),
        failed=count(JobStatus.failed),
        cancelled=count(JobStatus.cancelled),
        credits_reserved=sum(row.credits for row in rows),
        credits_refunded=sum(row.credits for row in rows if row.status in REFUNDED_STATUSES),
    )


def processing_times(*, session: Session, usage: UsageFilter) -> list[DurationStats]:
    """p50/p95 of processing time per (model, quality), over complete jobs."""
    if _histogram_answers(_PROCESSING, usage):
        return _histogram_percentiles(session, _PROCESSING, ("model", "quality"), usage, *_complete_with_times())
    if _dialect(session) != "sqlite":
        seconds = extract("epoch", _job.finished_at - _job.started_at)
        return _percentile_disc(session, seconds, (_job.model, _job.quality), [*usage.where(), _complete()])
    return _nearest_ranks(session, PROCESSING_DAYS, (_job.model, _job.quality), usage, _complete())


def queue_waits(*, session: Session, usage: UsageFilter) -> list[DurationStats]:
    """p50/p95 of queue wait per (model, quality), over jobs a worker started."""
    if _histogram_answers(_QUEUE_WAIT, usage):
        return _histogram_percentiles(session, _QUEUE_WAIT, ("model", "quality"), usage, _started())
    if _dialect(session) != "sqlite":
        seconds = extract("epoch", _job.started_at - _job.created_at)
        return _percentile_disc(session, seconds, (_job.model, _job.quality), [*usage.where(), _started()])
    return _nearest_ranks(session, QUEUE_WAIT_DAYS, (_job.model, _job.quality), usage, QUEUE_WAIT_DAYS.is_not(None))


def waits_by_priority(*, session: Session, usage: UsageFilter) -> list[DurationStats]:
    """p50/p95 of queue wait for Pro (priority) and Free jobs: what priority buys."""
    if _histogram_answers(_PRIORITY_WAIT, usage):
        stats = _histogram_percentiles(session, _PRIORITY_WAIT, ("priority",), usage, _started())
    elif _dialect(session) != "sqlite":
        seconds = extract("epoch", _job.started_at - _job.created_at)
        stats = _percentile_disc(session, seconds, (_job.priority,), [*usage.where(), _started()])
    else:
        stats = _nearest_ranks(session, QUEUE_WAIT_DAYS, (_job.priority,), usage, QUEUE_WAIT_DAYS.is_not(None))
    return [DurationStats((_queue_class(int(row.group[0])),), row.jobs, row.p50_s, row.p95_s) for row in stats]


def top_spenders(*, session: Session, usage: UsageFilter, limit: int = 10) -> list[Spender]:
    """The users who spent the most credits, most first."""
    totals = _totals(session, usage, ("user_id",), charged_only=True, per_day=False)
    ranked = sorted(totals.items(), key=lambda item: (-item[1][1], item[0][0]))[:limit]
    ids = [user_id for (user_id,), _ in ranked]
    users = {user.id: user for user in session.exec(select(User).where(col(User.id).in_(ids)))}
    teams = _labels(session, Breakdown.team, {user.team_id for user in users.values()})
    return [
        Spender(user_id, users[user_id].username, teams[users[user_id].team_id], jobs, credits)
        for (user_id,), (jobs, credits) in ranked
    ]


def filter_choices(*, session: Session) -> FilterChoices:
    """What the page's filters offer: teams, users and the models jobs have run on."""
    return FilterChoices(
        teams=dict(session.exec(select(Team.id, Team.name).order_by(Team.name)).all()),
        users=dict(session.exec(select(User.id, User.username).order_by(User.username)).all()),
        models=list(session.exec(select(UsageByTeam.model).distinct().order_by(UsageByTeam.model)).all()),
    )


def _complete() -> ColumnElement[bool]:
    return Job.status == JobStatus.complete


def _complete_with_times() -> list[ColumnElement[bool]]:
    """The jobs the processing histogram counts (studio.db.rollups)."""
    return [_complete(), _started(), col(Job.finished_at).is_not(None)]


def _started() -> ColumnElement[bool]:
    return col(Job.started_at).is_not(None)


def _queue_class(priority: int) -> str:
    return "Pro" if priority > 0 else "Free"


_PROCESSING, _QUEUE_WAIT, _PRIORITY_WAIT = HISTOGRAMS


def _histogram_answers(rollup: Rollup, usage: UsageFilter) -> bool:
    """Whether the duration histogram keeps every column the filter names (none has a team or a user)."""
    named = {name for name in ("team_id", "user_id", "model") if getattr(usage, name) is not None}
    return named <= set(rollup.table.c.keys())


def _histogram_percentiles(session: Session, rollup: Rollup, keys: tuple[str, ...], usage: UsageFilter, *conditions):
    """Nearest-rank p50/p95 per group from bucket counts: whole UTC days from the histogram, the partial first and
    last day (if any) bucketed from the job table (its jobs that meet `conditions`: those the histogram counts)."""
    counts: dict[tuple, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    days = periods(usage, Bucket.day)
    whole = [day for day, start, end in days if end - start == timedelta(days=1)]
    c = rollup.table.c
    dialect = _dialect(session)
    sources = []
    if whole:  # only the first and the last day can be partial, so the whole days are one run
        in_range = [c.day >= whole[0], c.day < whole[-1] + timedelta(days=1)]
        if usage.model is not None:
            in_range.append(c.model == usage.model)
        grouped = [c[key] for key in keys]
        sources.append(
            session.exec(select(*grouped, c.bucket, func.sum(c.jobs)).where(*in_range).group_by(*grouped, c.bucket))
        )
    for _, start, end in days:
        if end - start < timedelta(days=1):
            edge = replace(usage, start=start, end=end)
            bucket = literal_column(job_bucket(rollup, dialect))
            grouped = [_job[key] for key in keys]
            # likely(): most jobs count, so SQLite's planner keeps to the day's date range, not a status index.
            counted = [func.likely(condition) if dialect == "sqlite" else condition for condition in conditions]
            sources.append(
                session.exec(
                    select(*grouped, bucket, func.count())
                    .where(*edge.where(sqlite=dialect == "sqlite"), *counted)
                    .group_by(*grouped, bucket)
                )
            )
    for source in sources:
        for *values, bucket, jobs in source:
            counts[tuple(values)][int(bucket)] += int(jobs)
    found = []
    for values in sorted(counts):
        buckets = sorted(counts[values].items())
        n = sum(jobs for _, jobs in buckets)
        ranked = []
        for percentile in PERCENTILES:
            rank, seen = (percentile * n + 99) // 100, 0  # ⌈p·n/100⌉, 1-based
            for bucket, jobs in buckets:
                seen += jobs
                if seen >= rank:
                    ranked.append(bucket / 10)
                    break
        found.append(DurationStats(tuple(str(value) for value in values), n, *ranked))
    return found


def _shown(seconds: float) -> float:
    """A duration as the figures show it: two significant figures, rounded down (the lower end of its bucket);
    to the millisecond first, so a julianday difference's last-digit error cannot drop a whole step."""
    return bucket_of(round(seconds, 3)) / 10


def _nearest_ranks(session: Session, days, keys: tuple, usage: UsageFilter, *conditions) -> list[DurationStats]:
    """SQLite: count each group, then fetch the value at each rank by walking the index on `days`.

    The index leads with the equality columns (`conditions`, then `keys`) and `days` comes next, so
    each walk is an in-order index range; the filter columns ride in the index, so no row is read."""
    where = [*usage.where(sqlite=True, walk=True), *conditions]
    groups = session.exec(select(*keys, func.count()).where(*where).group_by(*keys).order_by(*keys)).all()
    found = []
    for *values, n in groups:
        in_group = [key == value for key, value in zip(keys, values, strict=True)]
        ranked = []
        for percentile in PERCENTILES:
            rank = (percentile * n + 99) // 100  # ⌈p·n/100⌉, 1-based
            # From the nearer end: p95 walks n − rank entries down from the top, not rank up from the bottom.
            ascending = rank <= n - rank
            order = days.asc() if ascending else days.desc()
            skip = rank - 1 if ascending else n - rank
            value = session.exec(select(days).where(*where, *in_group).order_by(order).limit(1).offset(skip)).one()
            ranked.append(_shown(value * SECONDS_PER_DAY))
        found.append(DurationStats(tuple(str(value) for value in values), int(n), *ranked))
    return found


def _percentile_disc(session: Session, seconds, keys: tuple, where: list) -> list[DurationStats]:
    """PostgreSQL and others: nearest-rank percentiles as ordered-set aggregates."""
    rows = session.exec(
        select(*keys, func.count(), *(func.percentile_disc(p / 100).within_group(seconds) for p in PERCENTILES))
        .where(*where)
        .group_by(*keys)
        .order_by(*keys)
    ).all()
    width = len(keys)
    return [
        DurationStats(
            tuple(str(value) for value in row[:width]),
            int(row[width]),
            _shown(float(row[width + 1])),
            _shown(float(row[width + 2])),
        )
        for row in rows
    ]


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _labels(session: Session, by: Breakdown, values: set) -> dict:
    """Readable names for breakdown keys: team and user names, "Own settings" for jobs without a style."""
    if by is Breakdown.team:
        ids = [value for value in values if value is not None]
        names = dict(session.exec(select(Team.id, Team.name).where(col(Team.id).in_(ids))).all())
        return {value: names.get(value, NO_TEAM_LABEL) for value in values}
    if by is Breakdown.user:
        names = dict(session.exec(select(User.id, User.username).where(col(User.id).in_(values))).all())
        return {value: names[value] for value in values}
    if by is Breakdown.style:
        return {value: value or OWN_SETTINGS_LABEL for value in values}
    return {value: value for value in values}

"""Daily usage rollups and duration histograms, kept by database triggers on the job table.

Each usage rollup (studio.db.tables.USAGE_ROLLUPS) holds one row per UTC day a job was submitted on and per value of
its key columns, with the number of those jobs and the sum of their prices; each duration histogram
(DURATION_HISTOGRAMS) the number of the day's complete (or started) jobs per model and quality, or per queue class,
and duration bucket (two significant figures: `bucket_width`), from which studio.analytics reads percentiles.
Triggers on `job` (AFTER INSERT; AFTER UPDATE of a column a key, the price or a duration reads; AFTER DELETE) move a
job's count and price from its old row to its new one inside the statement that changed the job, so every code path
(submit, claims, completions, failures, cancels, refunds, the reaper, the seed's bulk insert, an admin's SQL) keeps
them exact in its own transaction, and no service code knows they exist. A row whose count drops to 0 is deleted, so
a rollup holds exactly what a GROUP BY over the job table would give.

The key columns cannot be NULL (a primary key, and an upsert's conflict target, treat NULLs as distinct):
no team is team_id 0 and own settings are style "" (studio.analytics.usage maps them back).

SQLite gets three triggers with plain statements (a writer holds the database's write lock, so nothing can
deadlock); PostgreSQL one PL/pgSQL function for all three events, which takes a status change's two rows in
one global order.
`create_statements` is what both `create_all` (the metadata listener below) and the migration run;
`rebuild` recomputes every rollup from the job table (`python -m studio analytics rebuild`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, Table, event, text
from sqlmodel import SQLModel

from studio.db.tables import (
    DURATION_HISTOGRAMS,
    USAGE_ROLLUPS,
    PriorityWaitHistogram,
    ProcessingHistogram,
    QueueWaitHistogram,
)

# The job columns that a rollup's key, its sum or whether it counts a job reads: an UPDATE of any other column
# leaves them alone.
WATCHED_COLUMNS = (
    "status",
    "cost",
    "created_at",
    "team_id",
    "user_id",
    "style",
    "model",
    "quality",
    "priority",
    "started_at",
    "finished_at",
)
POSTGRESQL_FUNCTION = "job_usage_rollups"
# Duration buckets hold two significant figures: below 10 s they are 0.1 s wide, then ten times wider per decade,
# up to this many decades (beyond, the last width: 10⁷ s is 115 days).
BUCKET_DECADES = 7

SqlOfRow = Callable[[str, str], str]  # (a job row: NEW, OLD or job; the dialect) → an SQL expression


@dataclass(frozen=True)
class Rollup:
    """A table the triggers keep: a row per value of its key columns, counting the jobs `counts` admits (every
    job when None); a histogram's bucket is that of the job's `seconds`."""

    table: Table
    counts: SqlOfRow | None = None
    seconds: SqlOfRow | None = None


def _status(row: str, dialect: str) -> str:
    return f"{row}.status" if dialect == "sqlite" else f"{row}.status::text"


def _seconds_between(start: str, end: str) -> SqlOfRow:
    """A duration in seconds; on SQLite from the same julianday difference the percentile indexes hold."""

    def seconds(row: str, dialect: str) -> str:
        # To the millisecond (what the timestamps hold), so a julianday difference's last-digit error cannot move a
        # duration of exactly 45 s into the bucket below.
        if dialect == "sqlite":
            return f"round((julianday({row}.{end}) - julianday({row}.{start})) * 86400.0, 3)"
        return f"round(extract(epoch from {row}.{end} - {row}.{start}), 3)"

    return seconds


def _complete(row: str, dialect: str) -> str:
    return f"({_status(row, dialect)} = 'complete' AND {row}.started_at IS NOT NULL AND {row}.finished_at IS NOT NULL)"


def _started(row: str, dialect: str) -> str:
    return f"({row}.started_at IS NOT NULL)"


ROLLUPS = (
    *(Rollup(table) for table in USAGE_ROLLUPS),
    Rollup(ProcessingHistogram.__table__, counts=_complete, seconds=_seconds_between("started_at", "finished_at")),
    Rollup(QueueWaitHistogram.__table__, counts=_started, seconds=_seconds_between("created_at", "started_at")),
    Rollup(PriorityWaitHistogram.__table__, counts=_started, seconds=_seconds_between("created_at", "started_at")),
)
USAGE = ROLLUPS[: len(USAGE_ROLLUPS)]  # what migration 0005 made, before the histograms
HISTOGRAMS = ROLLUPS[len(USAGE_ROLLUPS) :]
assert tuple(rollup.table for rollup in HISTOGRAMS) == DURATION_HISTOGRAMS


def bucket_width(bucket: int) -> int:
    """The width of the bucket whose lower end is `bucket` (both in tenths of a second)."""
    width = 1
    while bucket >= 100 * width and width < 10**BUCKET_DECADES:
        width *= 10
    return width


def bucket_of(seconds: float) -> int:
    """The bucket a duration falls in (what `_bucket` computes in SQL; for tests and partial days)."""
    seconds = max(seconds, 0.0)
    for decade in range(BUCKET_DECADES):
        if seconds < 10 ** (decade + 1):
            return int(seconds * 10 / 10**decade) * 10**decade
    return int(seconds * 10 / 10**BUCKET_DECADES) * 10**BUCKET_DECADES


def job_bucket(rollup: Rollup, dialect: str) -> str:
    """SQL for the bucket a row of the job table falls in (the histogram's figures for a partial day)."""
    return _values(rollup, "job", dialect)["bucket"]


def _bucket(seconds: str, dialect: str) -> str:
    """SQL for the bucket of a duration: its lower end in tenths of a second, to two significant figures."""
    if dialect == "sqlite":
        clamped = f"max({seconds}, 0)"

        def whole(x: str) -> str:
            return f"CAST({x} AS INTEGER)"  # truncates: the floor of a number ≥ 0
    else:
        clamped = f"greatest({seconds}, 0)"

        def whole(x: str) -> str:
            return f"CAST(floor({x}) AS INTEGER)"

    cases = " ".join(
        f"WHEN {clamped} < {10 ** (decade + 1)} THEN {whole(f'{clamped} * 10 / {10**decade}')} * {10**decade}"
        for decade in range(BUCKET_DECADES)
    )
    last = 10**BUCKET_DECADES
    return f"(CASE {cases} ELSE {whole(f'{clamped} * 10 / {last}')} * {last} END)"


def _key_expressions(row: str, dialect: str) -> dict[str, str]:
    """SQL for each rollup key column of a job row (`NEW`, `OLD` or `job`).

    The day is the UTC date of created_at: SQLite stores it as 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC (a prefix,
    exact where date() would round to the millisecond), PostgreSQL as timestamptz."""
    day = f"substr({row}.created_at, 1, 10)" if dialect == "sqlite" else f"({row}.created_at AT TIME ZONE 'UTC')::date"
    return {
        "day": day,
        "team_id": f"coalesce({row}.team_id, 0)",
        "user_id": f"{row}.user_id",
        "style": f"coalesce({row}.style, '')",
        "model": f"{row}.model",
        "status": _status(row, dialect),
        "quality": f"{row}.quality",
        "priority": f"{row}.priority",
    }


def _values(rollup: Rollup, row: str, dialect: str) -> dict[str, str]:
    values = _key_expressions(row, dialect)
    if rollup.seconds is not None:
        values["bucket"] = _bucket(rollup.seconds(row, dialect), dialect)
    return values


def _keys(table: Table) -> list[str]:
    return [column.name for column in table.primary_key.columns]


def _sums(rollup: Rollup, row: str) -> dict[str, str]:
    """What a job adds to its row: one job, and its price where the rollup sums prices."""
    return {"jobs": "1", **({"credits": f"{row}.cost"} if "credits" in rollup.table.c else {})}


def _add(rollup: Rollup, row: str, dialect: str) -> str:
    """Count the job `row` into its rollup row (an upsert), if the rollup counts it."""
    name, keys, values, sums = rollup.table.name, _keys(rollup.table), _values(rollup, row, dialect), _sums(rollup, row)
    columns = ", ".join([*keys, *sums])
    computed = ", ".join([*(values[key] for key in keys), *sums.values()])
    # INSERT … SELECT … WHERE: the WHERE also keeps SQLite from reading ON CONFLICT as a join's ON.
    source = f"VALUES ({computed})"
    if rollup.counts is not None:
        source = f"SELECT {computed} WHERE {rollup.counts(row, dialect)}"
    update = ", ".join(f"{column} = {name}.{column} + excluded.{column}" for column in sums)
    return f"INSERT INTO {name} ({columns}) {source} ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {update}"


def _remove(rollup: Rollup, row: str, dialect: str) -> list[str]:
    """Take the job `row` out of its rollup row, and delete the row once no job is left in it."""
    name, values = rollup.table.name, _values(rollup, row, dialect)
    match = " AND ".join(f"{key} = {values[key]}" for key in _keys(rollup.table))
    if rollup.counts is not None:
        match = f"{rollup.counts(row, dialect)} AND {match}"
    update = ", ".join(f"{column} = {column} - {value}" for column, value in _sums(rollup, row).items())
    return [f"UPDATE {name} SET {update} WHERE {match}", f"DELETE FROM {name} WHERE {match} AND jobs = 0"]


def create_statements(dialect: str, rollups: tuple[Rollup, ...] = ROLLUPS) -> list[str]:
    """The triggers (and, on PostgreSQL, their function) that keep `rollups` (every one) up to date."""
    changed = " OR ".join(f"OLD.{column} IS NOT NEW.{column}" for column in WATCHED_COLUMNS)
    watched = ", ".join(WATCHED_COLUMNS)
    if dialect == "sqlite":
        insert = [_add(rollup, "NEW", dialect) for rollup in rollups]
        delete = [statement for rollup in rollups for statement in _remove(rollup, "OLD", dialect)]
        return [
            f"CREATE TRIGGER job_usage_insert AFTER INSERT ON job BEGIN {_block(insert)} END",
            f"CREATE TRIGGER job_usage_update AFTER UPDATE OF {watched} ON job WHEN {changed} "
            f"BEGIN {_block(delete + insert)} END",
            f"CREATE TRIGGER job_usage_delete AFTER DELETE ON job BEGIN {_block(delete)} END",
        ]
    unchanged = " AND ".join(f"OLD.{column} IS NOT DISTINCT FROM NEW.{column}" for column in WATCHED_COLUMNS)
    # A status change locks two rows per rollup. Taking them in one order everywhere — table by table, the
    # row of the alphabetically first status first — keeps a claim (queued → processing) and the reaper
    # (processing → queued) from each holding the row the other waits for (a deadlock).
    moves = []
    for rollup in rollups:
        remove, add = _block(_remove(rollup, "OLD", dialect)), _block([_add(rollup, "NEW", dialect)])
        moves.append(f"IF OLD.status::text <= NEW.status::text THEN {remove} {add} ELSE {add} {remove} END IF;")
    remove_all = _block([statement for rollup in rollups for statement in _remove(rollup, "OLD", dialect)])
    add_all = _block([_add(rollup, "NEW", dialect) for rollup in rollups])
    return [
        f"CREATE OR REPLACE FUNCTION {POSTGRESQL_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF TG_OP = 'INSERT' THEN {add_all} "
        f"ELSIF TG_OP = 'DELETE' THEN {remove_all} "
        f"ELSIF NOT ({unchanged}) THEN {' '.join(moves)} "
        "END IF; RETURN NULL; END $$",
        f"CREATE TRIGGER {POSTGRESQL_FUNCTION} AFTER INSERT OR DELETE OR UPDATE OF {watched} ON job "
        f"FOR EACH ROW EXECUTE FUNCTION {POSTGRESQL_FUNCTION}()",
    ]


def drop_statements(dialect: str) -> list[str]:
    if dialect == "sqlite":
        return [f"DROP TRIGGER IF EXISTS job_usage_{event_}" for event_ in ("insert", "update", "delete")]
    return [
        f"DROP TRIGGER IF EXISTS {POSTGRESQL_FUNCTION} ON job",
        f"DROP FUNCTION IF EXISTS {POSTGRESQL_FUNCTION}()",
    ]


def _block(statements: list[str]) -> str:
    return " ".join(f"{statement};" for statement in statements)


def rebuild(connection: Connection, rollups: tuple[Rollup, ...] = ROLLUPS) -> dict[str, int]:
    """Recompute `rollups` (every one) from the job table in the caller's transaction; the rows each now has.

    On SQLite the caller should hold the write lock (BEGIN IMMEDIATE); on PostgreSQL this locks the job
    table against writes until the caller commits; either way no job changes while the rollups are rebuilt."""
    dialect = connection.dialect.name
    counts = {}
    if dialect == "postgresql":
        connection.execute(text("LOCK TABLE job IN SHARE MODE"))  # writers of jobs wait; readers do not
    for rollup in rollups:
        name, keys, values = rollup.table.name, _keys(rollup.table), _values(rollup, "job", dialect)
        computed = ", ".join(values[key] for key in keys)
        sums = {"jobs": "count(*)", **({"credits": "sum(job.cost)"} if "credits" in rollup.table.c else {})}
        where = "" if rollup.counts is None else f" WHERE {rollup.counts('job', dialect)}"
        connection.execute(text(f"DELETE FROM {name}"))
        connection.execute(
            text(
                f"INSERT INTO {name} ({', '.join([*keys, *sums])}) "
                f"SELECT {computed}, {', '.join(sums.values())} FROM job{where} GROUP BY {computed}"
            )
        )
        counts[name] = connection.execute(text(f"SELECT count(*) FROM {name}")).scalar_one()
    return counts


@event.listens_for(SQLModel.metadata, "after_create")
def _triggers_with_the_tables(_metadata, connection: Connection, tables=(), **_) -> None:
    """`create_all` made the rollup tables (a fresh database, or one from before migrations that lacked
    them): add the triggers, and fill the rollups from the jobs already there."""
    if not {rollup.table.name for rollup in ROLLUPS} <= {table.name for table in tables}:
        return
    for statement in create_statements(connection.dialect.name):
        connection.exec_driver_sql(statement)
    rebuild(connection)

"""Daily usage rollups, kept by database triggers on the job table.

Each rollup table (studio.db.tables.USAGE_ROLLUPS) holds one row per UTC day a job was submitted on and per
value of its key columns, with the number of those jobs and the sum of their prices. Triggers on `job`
(AFTER INSERT; AFTER UPDATE of a column a key or the price reads; AFTER DELETE) move a job's count and price
from its old row to its new one inside the statement that changed the job, so every code path (submit,
claims, completions, failures, cancels, refunds, the reaper, the seed's bulk insert, an admin's SQL) keeps
them exact in its own transaction, and no service code knows they exist. A row whose count drops to 0 is
deleted, so a rollup holds exactly what a GROUP BY over the job table would give.

The key columns cannot be NULL (a primary key, and an upsert's conflict target, treat NULLs as distinct):
no team is team_id 0 and own settings are style "" (studio.analytics.usage maps them back).

SQLite gets three triggers with plain statements (a writer holds the database's write lock, so nothing can
deadlock); PostgreSQL one PL/pgSQL function for all three events, which takes a status change's two rows in
one global order.
`create_statements` is what both `create_all` (the metadata listener below) and the migration run;
`rebuild` recomputes every rollup from the job table (`python -m studio analytics rebuild`).
"""

from __future__ import annotations

from sqlalchemy import Connection, Table, event, text
from sqlmodel import SQLModel

from studio.db.tables import USAGE_ROLLUPS

# The job columns that a rollup's key or its sum reads: an UPDATE of any other column leaves them alone.
WATCHED_COLUMNS = ("status", "cost", "created_at", "team_id", "user_id", "style", "model")
POSTGRESQL_FUNCTION = "job_usage_rollups"


def _key_expressions(row: str, dialect: str) -> dict[str, str]:
    """SQL for each rollup key column of a job row (`NEW`, `OLD` or `job`).

    The day is the UTC date of created_at: SQLite stores it as 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC (a prefix,
    exact where date() would round to the millisecond), PostgreSQL as timestamptz."""
    if dialect == "sqlite":
        day, status = f"substr({row}.created_at, 1, 10)", f"{row}.status"
    else:
        day, status = f"({row}.created_at AT TIME ZONE 'UTC')::date", f"{row}.status::text"
    return {
        "day": day,
        "team_id": f"coalesce({row}.team_id, 0)",
        "user_id": f"{row}.user_id",
        "style": f"coalesce({row}.style, '')",
        "model": f"{row}.model",
        "status": status,
    }


def _keys(table: Table) -> list[str]:
    return [column.name for column in table.primary_key.columns]


def _add(table: Table, row: str, dialect: str) -> str:
    """Count the job `row` into its rollup row (an upsert)."""
    keys = _keys(table)
    values = _key_expressions(row, dialect)
    return (
        f"INSERT INTO {table.name} ({', '.join(keys)}, jobs, credits) "
        f"VALUES ({', '.join(values[key] for key in keys)}, 1, {row}.cost) "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET jobs = {table.name}.jobs + 1, "
        f"credits = {table.name}.credits + excluded.credits"
    )


def _remove(table: Table, row: str, dialect: str) -> list[str]:
    """Take the job `row` out of its rollup row, and delete the row once no job is left in it."""
    values = _key_expressions(row, dialect)
    match = " AND ".join(f"{key} = {values[key]}" for key in _keys(table))
    return [
        f"UPDATE {table.name} SET jobs = jobs - 1, credits = credits - {row}.cost WHERE {match}",
        f"DELETE FROM {table.name} WHERE {match} AND jobs = 0",
    ]


def create_statements(dialect: str) -> list[str]:
    """The triggers (and, on PostgreSQL, their function) that keep every rollup up to date."""
    tables = list(USAGE_ROLLUPS)
    changed = " OR ".join(f"OLD.{column} IS NOT NEW.{column}" for column in WATCHED_COLUMNS)
    watched = ", ".join(WATCHED_COLUMNS)
    if dialect == "sqlite":
        insert = [_add(table, "NEW", dialect) for table in tables]
        delete = [statement for table in tables for statement in _remove(table, "OLD", dialect)]
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
    for table in tables:
        remove, add = _block(_remove(table, "OLD", dialect)), _block([_add(table, "NEW", dialect)])
        moves.append(f"IF OLD.status::text <= NEW.status::text THEN {remove} {add} ELSE {add} {remove} END IF;")
    remove_all = _block([statement for table in tables for statement in _remove(table, "OLD", dialect)])
    add_all = _block([_add(table, "NEW", dialect) for table in tables])
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


def rebuild(connection: Connection) -> dict[str, int]:
    """Recompute every rollup from the job table in the caller's transaction; the rows each now has.

    On SQLite the caller should hold the write lock (BEGIN IMMEDIATE); on PostgreSQL this locks the job
    table against writes until the caller commits; either way no job changes while the rollups are rebuilt."""
    dialect = connection.dialect.name
    values = _key_expressions("job", dialect)
    counts = {}
    if dialect == "postgresql":
        connection.execute(text("LOCK TABLE job IN SHARE MODE"))  # writers of jobs wait; readers do not
    for table in USAGE_ROLLUPS:
        keys = _keys(table)
        computed = ", ".join(values[key] for key in keys)
        connection.execute(text(f"DELETE FROM {table.name}"))
        connection.execute(
            text(
                f"INSERT INTO {table.name} ({', '.join(keys)}, jobs, credits) "
                f"SELECT {computed}, count(*), sum(job.cost) FROM job GROUP BY {computed}"
            )
        )
        counts[table.name] = connection.execute(text(f"SELECT count(*) FROM {table.name}")).scalar_one()
    return counts


@event.listens_for(SQLModel.metadata, "after_create")
def _triggers_with_the_tables(_metadata, connection: Connection, tables=(), **_) -> None:
    """`create_all` made the rollup tables (a fresh database, or one from before migrations that lacked
    them): add the triggers, and fill the rollups from the jobs already there."""
    if not {table.name for table in USAGE_ROLLUPS} <= {table.name for table in tables}:
        return
    for statement in create_statements(connection.dialect.name):
        connection.exec_driver_sql(statement)
    rebuild(connection)

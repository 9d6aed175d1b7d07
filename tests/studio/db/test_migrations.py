"""Alembic migrations on SQLite and PostgreSQL: `upgrade head` on an empty database gives exactly the
models' schema; `init_db` creates, upgrades and adopts databases from before migrations."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

from studio.db import rollups
from studio.db.engine import alembic_config, get_engine, init_db, schema_differences

pytestmark = pytest.mark.both_databases


@pytest.fixture
def empty_url(db_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (no tables at all) on the backend under test."""
    if db_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    cluster = request.getfixturevalue("postgresql_cluster")
    name = f"m_{uuid.uuid4().hex[:12]}"
    url = cluster.create_database(name)
    try:
        yield url
    finally:
        get_engine(url).dispose()
        cluster.drop_database(name)


def differences(url: str) -> list:
    with get_engine(url).connect() as connection:
        return schema_differences(connection)


def current_revision(url: str) -> str | None:
    with get_engine(url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def upgrade(url: str, revision: str = "head") -> None:
    with get_engine(url).begin() as connection:
        command.upgrade(alembic_config(connection), revision)


def test_upgrade_head_on_an_empty_database_gives_the_models_schema(empty_url: str) -> None:
    upgrade(empty_url)
    assert current_revision(empty_url) == head()
    assert differences(empty_url) == []


def test_downgrade_to_base_and_up_again(empty_url: str) -> None:
    upgrade(empty_url)
    with get_engine(empty_url).begin() as connection:
        command.downgrade(alembic_config(connection), "base")
    assert set(inspect(get_engine(empty_url)).get_table_names()) <= {"alembic_version"}
    upgrade(empty_url)
    assert differences(empty_url) == []


def test_init_db_creates_a_fresh_database_at_head_and_is_idempotent(empty_url: str) -> None:
    init_db(empty_url)
    assert current_revision(empty_url) == head()
    assert differences(empty_url) == []
    init_db(empty_url)
    assert current_revision(empty_url) == head()


def test_migrations_and_create_all_make_the_same_triggers_and_expression_indexes(empty_url: str) -> None:
    upgrade(empty_url)
    engine = get_engine(empty_url)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO team (name, budget_alert_percent, created_at) VALUES ('t', 80, '2026-01-01')")
        )
        connection.execute(
            text(
                'INSERT INTO "user" (username, email, display_name, role, plan, is_active, can_use_team_pool,'
                " password_hash, created_at) VALUES ('a', 'a@x', 'a', 'admin', 'free', true, false, 'h', '2026-01-01')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO auditentry (actor_id, action, target, details, created_at)"
                " VALUES (1, 'team_create', 'team t', '{}', '2026-01-01')"
            )
        )
    with pytest.raises(Exception, match="append-only"), engine.begin() as connection:
        connection.execute(text("DELETE FROM auditentry"))
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            indexes = set(connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index'").scalars())
        assert {"ix_job_processing_time", "ix_job_queue_wait", "ix_job_priority_wait"} <= indexes


def test_init_db_adopts_a_database_from_before_migrations(empty_url: str) -> None:
    """Tables made by create_all before sweeps, batches, deletes, budgets, presets and the audit log."""
    engine = get_engine(empty_url)
    SQLModel.metadata.create_all(engine)
    with engine.begin() as connection:
        for table in ("auditentry", "preset"):
            connection.execute(text(f"DROP TABLE {table}"))
        for index in ("ix_job_sweep_id", "ix_job_batch_id"):
            connection.execute(text(f"DROP INDEX {index}"))
        for table, column in (
            ("job", "sweep_id"),
            ("job", "batch_id"),
            ("job", "deleted_at"),
            ("team", "monthly_budget"),
            ("team", "budget_alert_percent"),
        ):
            connection.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        connection.execute(text("INSERT INTO team (name, created_at) VALUES ('old team', '2026-01-01')"))
    assert differences(empty_url) != []

    init_db(empty_url)

    assert current_revision(empty_url) == head()
    assert differences(empty_url) == []
    with engine.connect() as connection:
        row = connection.execute(text("SELECT name, monthly_budget, budget_alert_percent FROM team")).one()
    assert tuple(row) == ("old team", None, 80)  # the existing row got the model's default


def test_the_fair_queue_migration_puts_a_queued_backlog_in_lanes_and_rounds(empty_url: str) -> None:
    """0004: a queue from before takes turns too — each user's queued claims (a sweep's cells one claim) numbered
    from 0 per lane in submission order, batch items in the lane after their plan's interactive one."""
    upgrade(empty_url, "0002_worker_heartbeats")
    users = [(1, "pro_monthly"), (2, "pro_monthly"), (3, "free")]
    # (id, user, priority, status, sweep, batch): user 1 has a done job, a 2-cell sweep, a job and two batch items
    jobs = [
        (1, 1, 1, "complete", None, None),
        (2, 1, 1, "queued", "s1", None),
        (3, 1, 1, "queued", "s1", None),
        (4, 1, 1, "queued", None, None),
        (5, 1, 1, "queued", None, "b1"),
        (6, 2, 1, "queued", None, None),
        (7, 1, 1, "queued", None, "b1"),
        (8, 3, 0, "queued", None, None),
    ]
    with get_engine(empty_url).begin() as connection:
        for user_id, plan in users:
            connection.execute(
                text(
                    'INSERT INTO "user" (id, username, email, display_name, role, plan, is_active, can_use_team_pool,'
                    " password_hash, created_at) VALUES (:id, :name, :email, :name, 'member', :plan, true, false,"
                    " 'x', '2026-01-01')"
                ),
                {"id": user_id, "name": f"u{user_id}", "email": f"u{user_id}@x.org", "plan": plan},
            )
        for job_id, user_id, priority, status, sweep, batch in jobs:
            connection.execute(
                text(
                    "INSERT INTO job (id, task, model, params, user_id, status, priority, progress_step,"
                    " progress_total, quality, cost, cancel_requested, attempt, created_at, sweep_id, batch_id)"
                    " VALUES (:id, 'img2img', 'preview', '{}', :user, :status, :priority, 0, 0, 'standard', 1,"
                    " false, 0, '2026-01-01', :sweep, :batch)"
                ),
                {"id": job_id, "user": user_id, "status": status, "priority": priority, "sweep": sweep, "batch": batch},
            )
    upgrade(empty_url)
    with get_engine(empty_url).connect() as connection:
        rows = connection.execute(text("SELECT id, lane, fair_tag FROM job ORDER BY id")).all()
    assert [tuple(row) for row in rows] == [
        (1, -2, 0),  # not queued: its lane, no round
        (2, -2, 0),  # the sweep: user 1's first claim in the Pro interactive lane
        (3, -2, 0),
        (4, -2, 1),
        (5, -1, 0),  # batch items: the Pro batch lane, one round each
        (6, -2, 0),  # user 2's first claim: the same round as user 1's first
        (7, -1, 1),
        (8, 0, 0),  # Free
    ]


def _job_and_rollups(engine) -> tuple[list, list]:
    with engine.connect() as connection:
        by_team = connection.execute(
            text("SELECT day, status, team_id, style, model, jobs, credits FROM usage_by_team")
        )
        by_user = connection.execute(text("SELECT day, status, user_id, team_id, jobs, credits FROM usage_by_user"))
        return sorted(tuple(map(str, row)) for row in by_team), sorted(tuple(map(str, row)) for row in by_user)


def _add_user_and_jobs(connection) -> None:
    """A user and three finished jobs, in the columns every schema since 0002 has (plus the fair queue's, where the
    job table has them: they have no default)."""
    job_columns = {column["name"] for column in inspect(connection).get_columns("job")}
    queue_columns, queue_values = (", lane, fair_tag", ", 0, 0") if "lane" in job_columns else ("", "")
    connection.execute(
        text(
            'INSERT INTO "user" (username, email, display_name, role, plan, is_active, can_use_team_pool,'
            " password_hash, created_at) VALUES ('a', 'a@x', 'a', 'admin', 'free', true, false, 'h', '2026-01-01')"
        )
    )
    for created, status, cost in (
        ("2026-03-02 23:59:59.999900", "complete", 3),
        ("2026-03-03 00:00:00", "failed", 4),
        ("2026-03-03 10:00:00", "failed", 5),
    ):
        connection.execute(
            text(
                "INSERT INTO job (task, model, params, user_id, status, priority, progress_step, progress_total,"
                f" quality, cost, cancel_requested, attempt, created_at{queue_columns}) VALUES ('img2img', 'm', '{{}}',"
                f" 1, :status, 0, 0, 0, 'standard', :cost, false, 0, :created{queue_values})"
            ),
            {"status": status, "cost": cost, "created": created},
        )


ROLLED_UP = (
    [("2026-03-02", "complete", "0", "", "m", "1", "3"), ("2026-03-03", "failed", "0", "", "m", "2", "9")],
    [("2026-03-02", "complete", "1", "0", "1", "3"), ("2026-03-03", "failed", "1", "0", "2", "9")],
)


def test_the_rollup_migration_fills_the_rollups_from_the_jobs_already_there(empty_url: str) -> None:
    """A database at 0002 with jobs: upgrading adds the rollups filled with them (a job 0.1 ms before midnight
    stays on its day), and the triggers keep them from then on."""
    upgrade(empty_url, "0002_worker_heartbeats")
    engine = get_engine(empty_url)
    with engine.begin() as connection:
        _add_user_and_jobs(connection)
    upgrade(empty_url)
    assert _job_and_rollups(engine) == ROLLED_UP
    with engine.begin() as connection:
        connection.execute(text("UPDATE job SET status = 'cancelled' WHERE cost = 3"))
        connection.execute(text("DELETE FROM job WHERE cost = 5"))
    by_team, _ = _job_and_rollups(engine)
    assert by_team == [
        ("2026-03-02", "cancelled", "0", "", "m", "1", "3"),
        ("2026-03-03", "failed", "0", "", "m", "1", "4"),
    ]


def test_init_db_adds_filled_rollups_to_a_database_from_before_migrations(empty_url: str) -> None:
    engine = get_engine(empty_url)
    SQLModel.metadata.create_all(engine)
    with engine.begin() as connection:
        for statement in rollups.drop_statements(engine.dialect.name):
            connection.execute(text(statement))
        for rollup in rollups.ROLLUPS:
            connection.execute(text(f"DROP TABLE {rollup.table.name}"))
        _add_user_and_jobs(connection)

    init_db(empty_url)

    assert differences(empty_url) == []
    assert _job_and_rollups(engine) == ROLLED_UP
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM job"))
    assert _job_and_rollups(engine) == ([], [])

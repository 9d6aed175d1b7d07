"""Database engine and sessions.

SQLite is the embedded default: WAL so readers never block the writer, a busy timeout so
concurrent writers wait instead of failing, foreign keys on, and connections usable from the
Streamlit server's threads. Any other SQLAlchemy URL (PostgreSQL) is used as given.

The schema is Alembic's (alembic.ini, migrations/): `init_db` brings any database to the head
revision — an empty one is created from the models and stamped (Alembic's recipe for a fresh
database), one with a revision is upgraded, and one from before migrations (tables, no revision)
gets its missing tables, columns and indexes added, then stamped.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Column, Connection, Index, event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, SQLModel, create_engine

from studio.config import PROJECT_ROOT
from studio.db import (
    rollups,  # noqa: F401  (create_all also makes the rollups' triggers)
    tables,  # noqa: F401  (registers the tables and their indexes on SQLModel.metadata)
)

SQLITE_BUSY_TIMEOUT_S = 30


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)

    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
    )

    @event.listens_for(engine, "connect")
    def _configure_sqlite(dbapi_connection, _record) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (see _begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:
        # The documented pysqlite recipe: emit BEGIN ourselves so transactions are real.
        # Writers ask for IMMEDIATE (write_session): they take the write lock up front, so two
        # writers never both read a balance and then both spend it.
        conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('sqlite_begin', 'DEFERRED')}")

    return engine


ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"
# Any constant: the key of the PostgreSQL advisory lock that lets one process at a time migrate.
_MIGRATION_LOCK = 8_120_811


def alembic_config(connection: Connection | None = None):
    from alembic.config import Config

    config = Config(str(ALEMBIC_INI))
    config.attributes["configure_logger"] = False  # leave the worker's or app's logging alone
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def init_db(url: str) -> Engine:
    """Bring the database's schema to the head revision (see the module docstring); safe to race."""
    from alembic import command

    engine = get_engine(url)
    # One transaction, holding the write lock (SQLite) or an advisory lock (PostgreSQL), so workers
    # starting together migrate once; DDL is transactional on both.
    with engine.execution_options(sqlite_begin="IMMEDIATE").begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config = alembic_config(connection)
        tables = set(inspect(connection).get_table_names())
        if "alembic_version" in tables:
            command.upgrade(config, "head")
            return engine
        if tables & set(SQLModel.metadata.tables):
            _adopt_unversioned(connection)
        else:
            SQLModel.metadata.create_all(connection)
        command.stamp(config, "head")
    return engine


def _adopt_unversioned(connection: Connection) -> None:
    """A database made by `create_all` before migrations existed: add what the models have and it lacks.

    New tables (with their indexes and triggers), new columns (NOT NULL ones get their Python default
    as the server default, so existing rows are filled) and new indexes. Nothing is dropped or altered.
    """
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    SQLModel.metadata.create_all(connection)  # missing tables only
    operations = Operations(MigrationContext.configure(connection))
    for diff in schema_differences(connection):
        if diff[0] == "add_column":
            _, _, table, column = diff
            default, server_default = _model_default(table, column.name), None
            if not column.nullable and column.server_default is None and isinstance(default, int | str | float):
                literal = (
                    str(int(default))
                    if isinstance(default, int | float)
                    else "'{}'".format(str(default).replace("'", "''"))
                )
                server_default = text(literal)
            # The indexes follow, below. (A new column with a foreign key would need a migration of its own.)
            added = Column(column.name, column.type, nullable=column.nullable, server_default=server_default)
            operations.add_column(table, added)
    inspector = inspect(connection)
    for table in SQLModel.metadata.sorted_tables:
        with warnings.catch_warnings():  # SQLite's expression indexes are read from sqlite_master instead
            warnings.filterwarnings("ignore", message=".*expression-based index")
            present = {index["name"] for index in inspector.get_indexes(table.name)}
        if connection.dialect.name == "sqlite":  # SQLAlchemy does not reflect SQLite's expression indexes
            present |= set(connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index'").scalars())
        for index in table.indexes:
            if index.name not in present and _on_this_dialect(index, connection.dialect.name):
                index.create(connection)


def _model_default(table: str, column: str):
    """The Python default a model declares for a column (SQLModel keeps it on the model, not the Column)."""
    for mapper in SQLModel._sa_registry.mappers:
        if mapper.local_table.name == table and (field := mapper.class_.model_fields.get(column)) is not None:
            return field.default
    return None


def _on_this_dialect(index: Index, dialect: str) -> bool:
    condition = index._ddl_if
    return condition is None or condition.dialect is None or condition.dialect == dialect


def schema_differences(connection: Connection) -> list:
    """What Alembic's autogenerate finds between the database and the models (empty: they agree).

    Expression indexes are left out (Alembic cannot reflect them; tests check them by name), and so
    are indexes the models create only on another dialect.
    """
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    def include(obj, name, type_, reflected, compare_to) -> bool:
        if type_ != "index" or reflected:
            return True
        expression = any(not isinstance(e, Column) for e in obj.expressions)
        return not expression and _on_this_dialect(obj, connection.dialect.name)

    context = MigrationContext.configure(connection, opts={"include_object": include, "compare_type": True})
    with warnings.catch_warnings():  # "cannot reflect expression-based index": left out on purpose, above
        warnings.filterwarnings("ignore", message=".*expression-based index")
        return compare_metadata(context, SQLModel.metadata)


@contextmanager
def session_for(url: str) -> Iterator[Session]:
    with Session(get_engine(url), expire_on_commit=False) as session:
        yield session


@contextmanager
def write_session(url: str) -> Iterator[Session]:
    """A session whose transactions hold the write lock from their first statement.

    On SQLite that is `BEGIN IMMEDIATE`; on PostgreSQL the option is ignored and the queries
    themselves lock rows (`FOR UPDATE SKIP LOCKED`), so callers use the same code on both.
    """
    engine = get_engine(url).execution_options(sqlite_begin="IMMEDIATE")
    with Session(engine, expire_on_commit=False) as session:
        yield session

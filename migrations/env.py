"""Alembic environment: the studio's tables (SQLModel.metadata) on the studio's database.

The URL is, in order: a connection handed over by `studio.db.engine.init_db` (config.attributes["connection"]),
`-x url=…` on the command line, then studio.config (STUDIO_DATABASE_URL or the default SQLite file).
SQLite gets batch mode (`render_as_batch`): it cannot ALTER most things, so Alembic copies the table.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Column
from sqlmodel import SQLModel

import studio.db.tables  # noqa: F401  (registers the tables)
from studio.config import get_settings
from studio.db.engine import _on_this_dialect, get_engine

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name)

target_metadata = SQLModel.metadata


def database_url() -> str:
    return context.get_x_argument(as_dictionary=True).get("url") or get_settings().database_url


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    # Indexes created only on some dialects (Index(...).ddl_if(dialect=...)) are compared only there;
    # expression indexes, which Alembic cannot reflect, are written by hand (see 0001_initial_schema).
    if type_ == "index" and not reflected:
        if any(not isinstance(expression, Column) for expression in obj.expressions):
            return False
        return _on_this_dialect(obj, context.get_context().dialect.name)
    return True


def run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        include_object=include_object,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    url = database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    with get_engine(database_url()).connect() as connection:
        run(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

"""Per-day duration histograms (processing time, queue wait) kept by the usage triggers: the Analytics page's
percentiles read them instead of walking every job's duration.

Revision ID: 0007_duration_histograms
Revises: 0006_model_memory
Create Date: 2026-12-03 16:00:00.000000

The triggers are replaced by ones that keep the usage rollups and the histograms (studio.db.rollups, the same
statements `create_all` runs); the histograms are filled from the existing jobs in this migration's transaction.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

from studio.db import rollups

# revision identifiers, used by Alembic.
revision: str = "0007_duration_histograms"
down_revision: str | Sequence[str] | None = "0006_model_memory"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _histogram(name: str, *keys: sa.Column) -> None:
    op.create_table(
        name,
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("jobs", sa.Integer(), nullable=False),
        *keys,
        sa.PrimaryKeyConstraint("day", "bucket", *(column.name for column in keys)),
        sqlite_with_rowid=False,
    )


def _model_and_quality() -> list[sa.Column]:
    return [
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("quality", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    ]


def upgrade() -> None:
    """Upgrade schema."""
    _histogram("processing_histogram", *_model_and_quality())
    _histogram("queue_wait_histogram", *_model_and_quality())
    _histogram("priority_wait_histogram", sa.Column("priority", sa.Integer(), nullable=False))
    connection = op.get_bind()
    dialect = connection.dialect.name
    for statement in [*rollups.drop_statements(dialect), *rollups.create_statements(dialect)]:
        op.execute(statement)
    rollups.rebuild(connection, rollups.HISTOGRAMS)


def downgrade() -> None:
    """Downgrade schema."""
    dialect = op.get_bind().dialect.name
    for statement in [*rollups.drop_statements(dialect), *rollups.create_statements(dialect, rollups.USAGE)]:
        op.execute(statement)
    for name in ("priority_wait_histogram", "queue_wait_histogram", "processing_histogram"):
        op.drop_table(name)

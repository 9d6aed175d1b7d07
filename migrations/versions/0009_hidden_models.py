"""Admins hide catalogue models from production (the Models page): one row per hidden model, and the audit log's
action for it (PostgreSQL's `auditaction` enum type gets the value; SQLite stores enums as text). The downgrade keeps
the audit entries (the log is append-only) and PostgreSQL the enum value (a type's values cannot be dropped).

Revision ID: 0009_hidden_models
Revises: 0008_getting_started
Create Date: 2026-12-03 16:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0009_hidden_models"
down_revision: str | Sequence[str] | None = "0008_getting_started"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "hiddenmodel",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column("hidden_by", sa.Integer(), nullable=True),
        sa.Column("hidden_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["hidden_by"], ["user.id"]),
        sa.PrimaryKeyConstraint("name"),
    )
    if op.get_bind().dialect.name != "sqlite":
        op.execute("ALTER TYPE auditaction ADD VALUE IF NOT EXISTS 'model_production'")


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("hiddenmodel")

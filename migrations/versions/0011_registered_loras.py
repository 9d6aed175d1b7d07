"""Admins register LoRAs on the Models page: one row per registered LoRA (its location, family and pinned SHA-256),
and the audit log's actions for registering and removing one (PostgreSQL's `auditaction` enum type gets the values;
SQLite stores enums as text). The downgrade keeps the audit entries (the log is append-only) and PostgreSQL the enum
values (a type's values cannot be dropped).

Revision ID: 0011_registered_loras
Revises: 0010_worker_batch
Create Date: 2026-12-03 19:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0011_registered_loras"
down_revision: str | Sequence[str] | None = "0010_worker_batch"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "registeredlora",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column("location", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column("family", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("about", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("registered_by", sa.Integer(), nullable=True),
        sa.Column("registered_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["registered_by"], ["user.id"]),
        sa.PrimaryKeyConstraint("name"),
    )
    if op.get_bind().dialect.name != "sqlite":
        op.execute("ALTER TYPE auditaction ADD VALUE IF NOT EXISTS 'lora_register'")
        op.execute("ALTER TYPE auditaction ADD VALUE IF NOT EXISTS 'lora_remove'")


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("registeredlora")

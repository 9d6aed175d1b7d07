"""Team brand kits (studio.kits): one row per kit, and the audit log's actions for them (PostgreSQL's `auditaction`
enum type gets the values; SQLite stores enums as text). The downgrade keeps the audit entries (the log is
append-only) and PostgreSQL the enum values (a type's values cannot be dropped).

Revision ID: 0012_brand_kits
Revises: 0011_registered_loras
Create Date: 2026-12-03 19:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0012_brand_kits"
down_revision: str | Sequence[str] | None = "0011_registered_loras"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "brandkit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["team_id"], ["team.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("team_id", "name", name="uq_brandkit_team_name"),
    )
    op.create_index(op.f("ix_brandkit_team_id"), "brandkit", ["team_id"], unique=False)
    if op.get_bind().dialect.name != "sqlite":
        for action in ("kit_create", "kit_change", "kit_delete"):
            op.execute(f"ALTER TYPE auditaction ADD VALUE IF NOT EXISTS '{action}'")


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index(op.f("ix_brandkit_team_id"), table_name="brandkit")
    op.drop_table("brandkit")

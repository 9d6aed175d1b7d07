"""Worker heartbeats report their model memory: what each loaded model takes and the budget (the Models page).

Revision ID: 0006_model_memory
Revises: 0005_usage_rollups
Create Date: 2026-12-03 13:10:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006_model_memory"
down_revision: str | Sequence[str] | None = "0005_usage_rollups"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("workerheartbeat", schema=None) as batch_op:
        batch_op.add_column(sa.Column("memory", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("workerheartbeat", schema=None) as batch_op:
        batch_op.drop_column("memory")

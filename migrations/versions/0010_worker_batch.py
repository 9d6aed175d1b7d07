"""Worker heartbeats report the most jobs a worker runs in one batched loop and why (STUDIO_BATCH_MAX, or chosen by
memory on a GPU), for the Models page's current batches; the jobs in a batch are read from the leases.

Revision ID: 0010_worker_batch
Revises: 0009_hidden_models
Create Date: 2026-12-03 18:50:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0010_worker_batch"
down_revision: str | Sequence[str] | None = "0009_hidden_models"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("workerheartbeat", schema=None) as batch_op:
        batch_op.add_column(sa.Column("batch_max", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("batch_basis", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("workerheartbeat", schema=None) as batch_op:
        batch_op.drop_column("batch_basis")
        batch_op.drop_column("batch_max")

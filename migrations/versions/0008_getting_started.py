"""Users remember that they closed the admin's getting-started panel.

Revision ID: 0008_getting_started
Revises: 0007_duration_histograms
Create Date: 2026-12-03 15:45:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0008_getting_started"
down_revision: str | Sequence[str] | None = "0007_duration_histograms"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema: a plain ADD COLUMN (a batch copy of `user` would trip the foreign keys pointing at it)."""
    op.add_column(
        "user", sa.Column("getting_started_dismissed", sa.Boolean(), nullable=False, server_default=sa.false())
    )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.drop_column("getting_started_dismissed")

"""A fair queue: lanes (Pro before Free, interactive before batch items) and rounds that take turns between
users (studio.jobs.fair_queue), with the indexes claims and submits walk.

Existing rows get their lane from their priority and whether they are a batch item; queued jobs get the rounds
a submit would have given them (each user's queued jobs in a lane numbered from 0 in submission order, a
sweep's cells sharing one), so a backlog from before the upgrade takes turns too.

Revision ID: 0004_fair_queue
Revises: 0003_sessions
Create Date: 2026-12-03 10:08:31.012037

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004_fair_queue"
down_revision: str | Sequence[str] | None = "0003_sessions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Each queued job's round: its rank among its user's queued claims in its lane (a sweep is one claim).
QUEUED_ROUNDS = """
WITH units AS (
    SELECT id, user_id, lane,
           CASE WHEN sweep_id IS NULL THEN id ELSE MIN(id) OVER (PARTITION BY sweep_id) END AS unit
    FROM job WHERE status = 'queued'
), rounds AS (
    SELECT id, DENSE_RANK() OVER (PARTITION BY user_id, lane ORDER BY unit) - 1 AS round FROM units
)
UPDATE job SET fair_tag = (SELECT round FROM rounds WHERE rounds.id = job.id) WHERE status = 'queued'
"""


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("job", schema=None) as batch_op:
        # NOT NULL columns on a table with rows need a default for them (the models set the value on insert).
        batch_op.add_column(sa.Column("lane", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("fair_tag", sa.Integer(), nullable=False, server_default="0"))
        batch_op.drop_index("ix_job_queue")
        batch_op.create_index("ix_job_queue", ["status", "lane", "fair_tag", "id"], unique=False)
        batch_op.create_index("ix_job_user_queue", ["user_id", "status", "lane", "fair_tag"], unique=False)
    op.execute("UPDATE job SET lane = -2 * priority + CASE WHEN batch_id IS NULL THEN 0 ELSE 1 END")
    op.execute(QUEUED_ROUNDS)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index("ix_job_user_queue")
        batch_op.drop_index("ix_job_queue")
        batch_op.create_index("ix_job_queue", ["status", "priority", "id"], unique=False)
        batch_op.drop_column("fair_tag")
        batch_op.drop_column("lane")

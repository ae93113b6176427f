"""quotas: an organization's allowed executors, its running tasks per queue

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "organizations",
        sa.Column("allowed_executors", postgresql.ARRAY(sa.Text()), nullable=True),
    )
    op.create_index(
        "ix_tasks_running_org_queue",
        "tasks",
        ["organization_id", "kind", "executor_id"],
        postgresql_where=sa.text("status = 'running'"),
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_running_org_queue", table_name="tasks")
    op.drop_column("organizations", "allowed_executors")

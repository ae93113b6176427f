"""task runs: attempts, timeouts and the worker's lease

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "tasks",
        sa.Column("max_attempts", sa.Integer(), server_default=sa.text("1"), nullable=False),
    )
    op.add_column("tasks", sa.Column("timeout_seconds", sa.Float(), nullable=True))
    op.add_column("tasks", sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("tasks", sa.Column("worker", sa.Text(), nullable=True))
    op.create_check_constraint(op.f("ck_tasks_max_attempts"), "tasks", "max_attempts >= 1")
    op.create_index(
        "ix_tasks_running_lease",
        "tasks",
        ["lease_expires_at"],
        postgresql_where=sa.text("status = 'running'"),
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_running_lease", table_name="tasks")
    op.drop_constraint(op.f("ck_tasks_max_attempts"), "tasks", type_="check")
    op.drop_column("tasks", "worker")
    op.drop_column("tasks", "lease_expires_at")
    op.drop_column("tasks", "timeout_seconds")
    op.drop_column("tasks", "max_attempts")

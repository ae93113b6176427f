"""recovery bounds: the sweeper's failures and republish backoff per task

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WAITING = "status IN ('created', 'queued')"


def upgrade() -> None:
    op.add_column(
        "tasks",
        sa.Column("recovery_failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column(
        "tasks",
        sa.Column("republishes", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("tasks", sa.Column("republish_at", sa.DateTime(timezone=True), nullable=True))
    # The first republish counts from the task's last change; later ones from republish_at.
    op.drop_index("ix_tasks_waiting_updated_at", table_name="tasks")
    op.create_index(
        "ix_tasks_waiting_updated_at",
        "tasks",
        ["updated_at"],
        postgresql_where=sa.text(f"{_WAITING} AND republish_at IS NULL"),
    )
    op.create_index(
        "ix_tasks_waiting_republish_at",
        "tasks",
        ["republish_at"],
        postgresql_where=sa.text(f"{_WAITING} AND republish_at IS NOT NULL"),
    )
    op.create_index(
        "ix_tasks_waiting_kind_executor_id",
        "tasks",
        ["kind", "executor_id"],
        postgresql_where=sa.text(_WAITING),
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_waiting_kind_executor_id", table_name="tasks")
    op.drop_index("ix_tasks_waiting_republish_at", table_name="tasks")
    op.drop_index("ix_tasks_waiting_updated_at", table_name="tasks")
    op.create_index(
        "ix_tasks_waiting_updated_at",
        "tasks",
        ["updated_at"],
        postgresql_where=sa.text(_WAITING),
    )
    op.drop_column("tasks", "republish_at")
    op.drop_column("tasks", "republishes")
    op.drop_column("tasks", "recovery_failures")

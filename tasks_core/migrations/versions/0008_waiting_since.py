"""queue metrics: the index of waiting tasks per queue also holds created_at

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WAITING = "status IN ('created', 'queued')"


def _replace(columns: list[str]) -> None:
    op.drop_index("ix_tasks_waiting_kind_executor_id", table_name="tasks")
    op.create_index(
        "ix_tasks_waiting_kind_executor_id",
        "tasks",
        columns,
        postgresql_where=sa.text(_WAITING),
    )


def upgrade() -> None:
    _replace(["kind", "executor_id", "created_at"])


def downgrade() -> None:
    _replace(["kind", "executor_id"])

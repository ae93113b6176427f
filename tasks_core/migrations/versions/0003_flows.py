"""flows: steps of running Flows, and each child's step id

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("flow_step_id", sa.Text(), nullable=True))
    op.add_column("tasks", sa.Column("open_steps", sa.Integer(), nullable=True))
    op.create_index(
        "ux_tasks_parent_id_flow_step_id",
        "tasks",
        ["parent_id", "flow_step_id"],
        unique=True,
        postgresql_where=sa.text("flow_step_id IS NOT NULL"),
    )
    op.create_table(
        "flow_steps",
        sa.Column("flow_id", sa.Uuid(), nullable=False),
        sa.Column("step_id", sa.Text(), nullable=False),
        sa.Column("spec", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("dependents", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("pending", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["flow_id"], ["tasks.id"], name=op.f("fk_flow_steps_flow_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("flow_id", "step_id", name=op.f("pk_flow_steps")),
    )


def downgrade() -> None:
    op.drop_table("flow_steps")
    op.drop_index("ux_tasks_parent_id_flow_step_id", table_name="tasks")
    op.drop_column("tasks", "open_steps")
    op.drop_column("tasks", "flow_step_id")

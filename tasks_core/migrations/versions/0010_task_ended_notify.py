"""waits: NOTIFY tasks_ended with a task's id when it reaches an end

A row trigger, so that every move that ends a task (a worker's outcome, a
Flow's fan-in, a cancel, the sweeper) says so, delivered by PostgreSQL only
when that move commits. The API's long polls (GET /v1/tasks/{id}?waitSeconds)
listen on one connection per process.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION tasks_notify_ended() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('tasks_ended', NEW.id::text);
            RETURN NULL;
        END
        $$
        """
    )
    # The WHEN clause is evaluated without calling the function: moves that
    # end nothing (claims, renewals, updates of other fields) cost nothing.
    op.execute(
        """
        CREATE TRIGGER tasks_ended AFTER UPDATE OF status ON tasks FOR EACH ROW
        WHEN (NEW.status IN ('completed', 'failed', 'cancelled')
              AND OLD.status IS DISTINCT FROM NEW.status)
        EXECUTE FUNCTION tasks_notify_ended()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER tasks_ended ON tasks")
    op.execute("DROP FUNCTION tasks_notify_ended()")

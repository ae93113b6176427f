"""Actions whose outcome PostgreSQL refuses, for workers of the database
error tests (``TASKS_IMPORTS=...,tests.security.database_error_handlers``)."""

from __future__ import annotations

from typing import Any

from worker.context import TaskContext
from worker.registry import action, flow


@action("test/nul-output")
def nul_output(ctx: TaskContext) -> Any:
    """Returns valid, small JSON that jsonb refuses: a string holding U+0000."""
    return {"text": "before\u0000after", "attempt": ctx.task.attempt}


@flow("test/nul-steps")
def nul_steps(ctx: TaskContext) -> Any:
    """A registered flow whose steps jsonb refuses to store."""
    return [{"id": "a", "kind": "CallAction", "targetId": "builtin/echo", "input": "x\u0000"}]

"""The kinds and actions every worker can run.

Kinds: ``default`` (completes; runs the action named by ``targetId`` when
there is one) and ``CallAction`` (runs the action named by ``targetId``).
Actions: ``builtin/echo``, ``builtin/sleep``, ``builtin/fail``.
"""

from __future__ import annotations

from typing import Any

from worker.context import TaskContext
from worker.errors import ACTION_NOT_FOUND, TaskError
from worker.registry import action, handler, registry


def call_action(ctx: TaskContext, name: str | None) -> Any:
    """Run the registered action ``name`` with the task's input and params."""
    if not name:
        raise TaskError(
            ACTION_NOT_FOUND, "CallAction needs targetId naming an action", retryable=False
        )
    fn = registry.actions.get(name)
    if fn is None:
        known = ", ".join(sorted(registry.actions)) or "none"
        raise TaskError(
            ACTION_NOT_FOUND, f"no action {name!r} is registered (known: {known})", retryable=False
        )
    return fn(ctx)


@handler("default")
def default(ctx: TaskContext) -> Any:
    """Completes at once; with a ``targetId`` naming an action, runs that action."""
    if ctx.task.target_id and ctx.task.target_id in registry.actions:
        return call_action(ctx, ctx.task.target_id)
    return None


@handler("CallAction")
def call_action_kind(ctx: TaskContext) -> Any:
    """One call of the action named by ``targetId``."""
    return call_action(ctx, ctx.task.target_id)


@action("builtin/echo")
def echo(ctx: TaskContext) -> Any:
    """Output = input."""
    return ctx.input


@action("builtin/sleep")
def sleep(ctx: TaskContext) -> Any:
    """Sleep ``input.seconds`` (default 1), stopping early when cancelled."""
    seconds = _number(ctx.input, "seconds", default=1.0)
    ctx.sleep(seconds)
    ctx.check_cancelled()
    return {"slept": seconds}


@action("builtin/fail")
def fail(ctx: TaskContext) -> Any:
    """Fail with ``input.code`` / ``input.message``; ``input.retryable: false`` makes it final."""
    data = ctx.input if isinstance(ctx.input, dict) else {}
    raise TaskError(
        str(data.get("code", "failed")),
        str(data.get("message", "failed on purpose (builtin/fail)")),
        retryable=bool(data.get("retryable", True)),
    )


def _number(data: Any, key: str, *, default: float) -> float:
    value = data.get(key, default) if isinstance(data, dict) else default
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise TaskError(
            "invalid_input", f"input.{key} must be a non-negative number", retryable=False
        )
    return float(value)

"""Handlers and actions that end-to-end tests register in their workers
(``TASKS_IMPORTS=tests.support.handlers``)."""

from __future__ import annotations

import os
import time
from typing import Any

import redis

from worker.context import TaskContext
from worker.errors import TaskError
from worker.registry import action, flow, handler


def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDIS_URL"])


@action("test/count")
def count(ctx: TaskContext) -> Any:
    """Counts its runs in Redis (``runs:<task id>``), to detect double execution."""
    delay = float((ctx.input or {}).get("seconds", 0)) if isinstance(ctx.input, dict) else 0.0
    runs = int(_redis().incr(f"runs:{ctx.task.id}"))
    if delay:
        ctx.sleep(delay)
    return {"runs": runs}


@action("test/flaky")
def flaky(ctx: TaskContext) -> Any:
    """Fails until attempt ``input.succeedOn`` (counting attempts in Redis too)."""
    _redis().incr(f"attempts:{ctx.task.id}")
    succeed_on = int((ctx.input or {}).get("succeedOn", 10**9))
    if ctx.task.attempt < succeed_on:
        raise TaskError("flaky", f"attempt {ctx.task.attempt} fails")
    return {"attempt": ctx.task.attempt}


@action("test/stubborn")
def stubborn(ctx: TaskContext) -> Any:
    """Ignores cancellation: sleeps ``input.seconds`` in small steps without checking."""
    end = time.monotonic() + float((ctx.input or {}).get("seconds", 30))
    while time.monotonic() < end:
        time.sleep(0.05)
    return "finished anyway"


@action("test/not-json")
def not_json(ctx: TaskContext) -> Any:
    """Returns something that is not JSON."""
    return {"when": object()}


@action("test/raise")
def raise_value_error(ctx: TaskContext) -> Any:
    """Raises a plain exception."""
    raise ValueError("bad value in input")


@handler("test.StateCounter")
def state_counter(ctx: TaskContext) -> Any:
    """Adds ``input.times`` to the state variable ``n``, one compare-and-set at a time."""
    assert ctx.state is not None, "needs a stateful task"
    times = int((ctx.input or {}).get("times", 1))
    for _ in range(times):
        ctx.state.update(lambda v: {**v, "n": int(v.get("n", 0)) + 1})
    variables, version = ctx.state.read()
    return {"n": variables["n"], "version": version}


@flow("test/two-steps")
def two_steps(ctx: TaskContext) -> Any:
    """A registered flow: its steps built from the Flow's input."""
    return {
        "mode": "sequential",
        "steps": [
            {"id": "first", "kind": "CallAction", "targetId": "builtin/echo", "input": ctx.input},
            {"id": "second", "kind": "CallAction", "targetId": "builtin/echo",
             "input": {"got": {"$ref": "steps.first.output"}}},
        ],
    }  # fmt: skip


@handler("test.StateReader")
def state_reader(ctx: TaskContext) -> Any:
    """Returns the id of the state object it sees (Flow steps share the Flow's)."""
    return {"state": str(ctx.state.id) if ctx.state else None}


@action("test/work")
def work(ctx: TaskContext) -> Any:
    """A short unit of work that counts its starts and its completions in Redis
    (``started:<id>``, ``finished:<id>``): a run killed midway starts without finishing."""
    client = _redis()
    client.incr(f"started:{ctx.task.id}")
    seconds = float((ctx.input or {}).get("seconds", 0.05)) if isinstance(ctx.input, dict) else 0.05
    ctx.sleep(seconds)
    client.incr(f"finished:{ctx.task.id}")
    return {"attempt": ctx.task.attempt}


@action("test/poison")
def poison(ctx: TaskContext) -> Any:
    """Kills the process that runs it, every time."""
    _redis().incr(f"attempts:{ctx.task.id}")
    os.kill(os.getpid(), 9)
    return None

"""The tasks-core no-op of the benchmarks, registered in the worker with
``TASKS_IMPORTS=tests.bench.noop``: run it as ``{"kind": "default",
"targetId": "bench/start"}`` (a Flow's step too)."""

from __future__ import annotations

from typing import Any

from tests.bench.starts import record_start
from worker.context import TaskContext
from worker.registry import action

NOOP_ACTION = "bench/start"


@action(NOOP_ACTION)
def start(ctx: TaskContext) -> Any:
    record_start(str(ctx.task.id))
    return None

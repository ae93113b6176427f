"""The tasks-core no-op of the benchmarks, registered in the worker with
``TASKS_IMPORTS=tests.bench.noop``: run it as ``{"kind": "default",
"targetId": "bench/start"}`` (a Flow's step too). With ``BENCH_HOPS=1`` the
worker also stamps each task's hops (``tests.bench.hops``)."""

from __future__ import annotations

import os
from typing import Any

from tests.bench.starts import record_start
from worker.context import TaskContext
from worker.registry import action

NOOP_ACTION = "bench/start"

if os.environ.get("BENCH_HOPS") == "1":
    import tests.bench.hop_stamps  # noqa: F401  (it wraps the worker's run and claim)


@action(NOOP_ACTION)
def start(ctx: TaskContext) -> Any:
    record_start(str(ctx.task.id))
    return None

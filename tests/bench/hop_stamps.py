"""Stamps of a task's hops in the worker, for ``tests.bench.hops``.

Imported by ``tests.bench.noop`` in a worker started with ``BENCH_HOPS=1``:
it wraps the worker's run of a message and its claim so that, for each
task, the moment its message reached ``run_set`` and the moments its claim
was sent and answered are written to one Redis hash (``bench:hops``, one
HSET per message, once its run is over: no hop measured waits on it, the
claim's answer to the handler's start included). A measurement harness
only: it patches the worker's code on import, so only the no-op imports it,
in a worker told to.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import worker.batching as batching
import worker.runner as runner
from tests.bench.starts import HOPS, _redis

_reached: dict[str, float] = {}  # task id -> when its message reached run_set
_stamps: dict[str, str] = {}  # task id -> "reached,sent,answered", until its run is over
_run_set = runner.run_set
_claim = batching.RunBatchers._claim


def _stamped_run_set(store: Any, task_ids: Sequence[str], **options: Any) -> Any:
    now = time.time()
    _reached.update(dict.fromkeys(map(str, task_ids), now))
    try:
        return _run_set(store, task_ids, **options)
    finally:
        if _stamps:
            _redis().hset(HOPS, mapping=_stamps)  # type: ignore[arg-type]
            _stamps.clear()


def _stamped_claim(self: batching.RunBatchers, requests: Sequence[Any]) -> Any:
    sent = time.time()
    answer = _claim(self, requests)
    answered = time.time()
    for r in requests:
        _stamps[str(r.task_id)] = f"{_reached.pop(str(r.task_id), 0.0)!r},{sent!r},{answered!r}"
    return answer


runner.run_set = _stamped_run_set  # type: ignore[assignment]
batching.RunBatchers._claim = _stamped_claim  # type: ignore[method-assign]

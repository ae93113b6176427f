"""Messages of a busy queue wait a moment for others, to go as one run set.

A task created alone is published alone, at once: with idle workers, any
wait would only delay its start. But when its queue already holds messages
(its workers are behind), the task would wait there anyway; so its message
waits up to ``PUBLISH_LINGER_SECONDS`` (20 ms) in the publisher for the next
tasks of that queue, and they go as one run-set message, which a worker
claims, runs and records in sets (``worker.runner.run_set``). So a stream of
single creates costs the workers per set, not per task, exactly when they
are the limit.

Whether a queue is behind is what Redis said at the last push to it (the
length of its list after the push), believed for ``BACKLOG_SECONDS``: behind
is at least ``BEHIND_DEPTH`` messages, two waiting beside the one pushed.
One waiting beside it is often only a worker that has not yet come back to
the queue for the message before (a stream of creates a few ms apart sees
it); holding the next message then would delay a start for nothing.

A lingering message is in this process only: the task is committed (stored
`queued`), so a crash before the flush, or a flush that fails, loses no
task: the sweeper republishes a task left waiting without a message after
``REPUBLISH_AFTER_SECONDS``, as it does after a crash between commit and
publish.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

# The default of PUBLISH_LINGER_SECONDS. A held message waits only while its
# queue is behind, where its task would wait anyway; the longer the wait, the
# bigger the sets. In-process one-by-one creates beside raw Celery (same run,
# interleaved rounds): 5 ms 451 tasks/s at 3.80 ms of CPU a task, 10 ms 480
# at 3.52, 20 ms 520 at 3.20.
LINGER_SECONDS = 0.02
BACKLOG_SECONDS = 0.05
BEHIND_DEPTH = 3


M = TypeVar("M")

# Most queues whose last depth is kept (queue names come from executorIds).
MAX_QUEUES = 4096


@dataclass(slots=True)
class _Queue(Generic[M]):
    depth: int = 0  # the list's length after the last push
    seen: float = 0.0  # when
    held: list[M] = field(default_factory=list)
    due: float = 0.0  # when the held messages go


class Linger(Generic[M]):
    """Holds messages of busy queues; ``send(queue, messages)`` pushes them
    as one message and returns the queue's length after the push."""

    def __init__(
        self,
        send: Callable[[str, Sequence[M]], int],
        *,
        set_max: int,
        linger: float = LINGER_SECONDS,
    ) -> None:
        self._send = send
        self._set_max = set_max
        self._linger = linger
        self._cond = threading.Condition()
        self._queues: dict[str, _Queue[M]] = {}
        self._thread: threading.Thread | None = None
        self._pid = 0  # the process that started the thread (a fork has none running)
        self.held_total = 0  # messages that waited (for tests and figures)

    def offer(self, queue: str, message: M) -> bool:
        """Hold ``message`` if its queue is behind (or already holds others,
        which it must not overtake); False: publish it now, then ``observed``."""
        now = time.monotonic()
        with self._cond:
            state = self._queues.get(queue)
            if state is None:
                return False
            busy = state.depth >= BEHIND_DEPTH and now - state.seen < BACKLOG_SECONDS
            if not state.held and not (busy and self._linger > 0):
                return False
            if not state.held:
                state.due = now + self._linger
            state.held.append(message)
            self.held_total += 1
            full = len(state.held) >= self._set_max
            held = self._take(state) if full else None
            if not full:
                self._start()
                # Only a queue's first held message brings a new due time;
                # waking the thread for the others would cost a thread
                # switch per create for nothing.
                if len(state.held) == 1:
                    self._cond.notify()
        if held is not None:
            self._push(queue, held)
        return True

    def observed(self, queue: str, depth: int) -> None:
        """Redis's answer to a push on ``queue``: its length after it."""
        with self._cond:
            state = self._queues.setdefault(queue, _Queue())
            state.depth, state.seen = depth, time.monotonic()
            if len(self._queues) > MAX_QUEUES:
                idle = [n for n, s in self._queues.items() if not s.held]
                for name in idle[: MAX_QUEUES // 2]:
                    del self._queues[name]

    def flush(self) -> None:
        """Push every held message now (at exit, or before a close)."""
        with self._cond:
            ready = [(q, self._take(s)) for q, s in self._queues.items() if s.held]
        for queue, held in ready:
            self._push(queue, held)

    def _take(self, state: _Queue[M]) -> list[M]:
        held, state.held = state.held, []
        return held

    def _push(self, queue: str, held: Sequence[M]) -> None:
        try:
            depth = self._send(queue, held)
        except Exception:
            log.warning(
                "publish of %d held message(s) to %s failed; the sweeper republishes their tasks",
                len(held),
                queue,
                exc_info=True,
            )
            return
        self.observed(queue, depth)

    def _start(self) -> None:
        if self._thread is None or self._pid != os.getpid():
            self._thread = threading.Thread(target=self._loop, name="linger", daemon=True)
            self._pid = os.getpid()
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [s.due for s in self._queues.values() if s.held]
                if not due:
                    self._cond.wait()
                    continue
                if min(due) > now:
                    self._cond.wait(min(due) - now)
                    continue
                ready = [
                    (q, self._take(s)) for q, s in self._queues.items() if s.held and s.due <= now
                ]
            for queue, held in ready:
                self._push(queue, held)

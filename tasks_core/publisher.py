"""Handing tasks to the broker.

The message says only "look at task X": the task id and its routing keys.
Everything else is read from PostgreSQL by the worker, so a stale or
duplicated message can never carry stale data.
"""

from __future__ import annotations

import atexit
import logging
import threading
import uuid
import weakref
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import redis
from celery import Celery
from kombu.entity import Exchange, Queue
from redis.backoff import NoBackoff
from redis.retry import Retry

from tasks_core.celery_wire import envelope
from tasks_core.linger import LINGER_SECONDS, Linger

log = logging.getLogger(__name__)

# The Celery task names every worker registers: a run of one task (its only
# argument is the task id), and a run set (its only argument is a list of the
# ids of tasks of one queue, published together).
RUN_TASK = "tasks_core.run"
RUN_SET = "tasks_core.run_set"

# Most queues whose kombu entity a publisher keeps at hand: queue names come
# from tenants' executorIds, so nothing may be kept for every name ever seen.
QUEUE_CACHE_SIZE = 1024

# A key the broker keeps while it keeps its data: gone, it lost its messages.
MEMORY_KEY = "tasks_core.broker_memory"


@dataclass(frozen=True, slots=True)
class TaskMessage:
    """What is published for one task."""

    task_id: str
    queue: str
    kind: str
    executor_id: str | None


class Publisher(Protocol):
    """The broker, as the services see it."""

    def publish(
        self, message: TaskMessage, *, countdown: float | None = None, coalesce: bool = False
    ) -> None:
        """Put the message on its queue (to run after ``countdown`` seconds, if
        given); raise on failure. ``coalesce``: a new task's message, which
        may wait a moment to go with others of its queue (``tasks_core.linger``)."""

    def ping(self) -> bool:
        """Whether the broker answers."""

    def depths(self, queues: Iterable[str]) -> dict[str, int]:
        """How many messages wait on each queue; raise when the broker is down."""

    def forgot(self) -> bool:
        """Whether the broker lost its data since this was last asked (a Redis
        restarted without persistence); raise when the broker is down."""


@runtime_checkable
class BatchPublisher(Protocol):
    """A broker that takes many messages in one round trip."""

    def publish_many(self, messages: Sequence[TaskMessage], *, set_size: int | None = None) -> None:
        """Put every message on its queue at once, those of one queue named
        by run-set messages of up to ``set_size`` tasks (else the
        publisher's own); raise when the broker did not take them (then
        none, or only some, may be on their queues)."""


@dataclass
class MemoryPublisher:
    """A publisher that keeps messages in a list (unit tests)."""

    messages: list[TaskMessage] = field(default_factory=list)
    fail: bool = False

    def publish(
        self, message: TaskMessage, *, countdown: float | None = None, coalesce: bool = False
    ) -> None:
        if self.fail:
            raise ConnectionError("broker unavailable (MemoryPublisher.fail)")
        self.messages.append(message)

    def publish_many(self, messages: Sequence[TaskMessage], *, set_size: int | None = None) -> None:
        if self.fail:
            raise ConnectionError("broker unavailable (MemoryPublisher.fail)")
        self.messages.extend(messages)

    def ping(self) -> bool:
        return not self.fail

    def depths(self, queues: Iterable[str]) -> dict[str, int]:
        if self.fail:
            raise ConnectionError("broker unavailable (MemoryPublisher.fail)")
        held = Counter(m.queue for m in self.messages)
        return {q: held[q] for q in queues}

    def forgot(self) -> bool:
        return False


def _flush_at_exit(linger: weakref.ref[Linger[TaskMessage]]) -> None:
    """Messages still held at exit go out (else the sweeper publishes them later)."""
    held = linger()
    if held is not None:
        held.flush()


def _by_queue(messages: Sequence[TaskMessage]) -> dict[str, list[TaskMessage]]:
    """The messages of each queue, in the order given."""
    groups: dict[str, list[TaskMessage]] = {}
    for message in messages:
        groups.setdefault(message.queue, []).append(message)
    return groups


def broker_app(redis_url: str) -> Celery:
    """A Celery app used only to send; it registers no tasks."""
    app = Celery("tasks_core", broker=redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        broker_connection_timeout=3,
        broker_transport_options={"socket_timeout": 3, "socket_connect_timeout": 3},
    )
    return app


def _queue_entity(name: str) -> Queue:
    """A queue as Celery makes one for a name it does not know (a direct
    exchange of the same name)."""
    return Queue(name, Exchange(name), routing_key=name)  # type: ignore[no-untyped-call]


class CeleryPublisher:
    """Publishes Celery protocol messages to Redis, readable by any Celery worker."""

    def __init__(
        self, redis_url: str, *, run_set_max: int = 32, linger_seconds: float = LINGER_SECONDS
    ) -> None:
        self._app = broker_app(redis_url)
        self._set_max = run_set_max
        # Single messages of a queue that is behind go together (tasks_core.linger).
        self.linger: Linger[TaskMessage] = Linger(
            self._push_set, set_max=run_set_max, linger=linger_seconds
        )
        atexit.register(_flush_at_exit, weakref.ref(self.linger))
        self._queues: OrderedDict[str, Queue] = OrderedDict()
        self._queues_lock = threading.Lock()
        # A plain client for health checks: kombu's connection retries would
        # make a readiness probe hang for seconds when Redis is down.
        self._probe = redis.Redis.from_url(
            redis_url, socket_connect_timeout=1, socket_timeout=1, single_connection_client=False
        )
        # Messages without a countdown are pushed directly (see celery_wire):
        # one retry on a lost connection, like send_task's policy below.
        self._lists = redis.Redis.from_url(
            redis_url,
            socket_connect_timeout=3,
            socket_timeout=3,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
        self._reply_to = str(uuid.uuid3(uuid.NAMESPACE_OID, "tasks_core.publisher"))

    def publish(
        self, message: TaskMessage, *, countdown: float | None = None, coalesce: bool = False
    ) -> None:
        if countdown:
            self._send(message, countdown=countdown)
        elif not (coalesce and self.linger.offer(message.queue, message)):
            depth = self._lists.lpush(message.queue, self._envelope(message))
            self.linger.observed(message.queue, int(depth))

    def publish_many(self, messages: Sequence[TaskMessage], *, set_size: int | None = None) -> None:
        """Every message in one Redis pipeline: one round trip for a whole
        batch of new tasks. The tasks of one queue go as run sets (one
        message names up to ``set_size`` of them): a worker claims, runs and
        records a set's tasks together (``worker.runner.run_set``)."""
        size = set_size or self._set_max
        pushed: list[str] = []
        with self._lists.pipeline(transaction=False) as pipe:
            for queue, group in _by_queue(messages).items():
                for start in range(0, len(group), size):
                    pipe.lpush(queue, self._set_envelope(group[start : start + size]))
                    pushed.append(queue)
            depths = pipe.execute()
        for queue, depth in zip(pushed, depths, strict=True):
            self.linger.observed(queue, int(depth))

    def _push_set(self, queue: str, messages: Sequence[TaskMessage]) -> int:
        """Push one message for ``messages`` (of ``queue``); the list's length after."""
        return int(self._lists.lpush(queue, self._set_envelope(messages)))

    def _envelope(self, message: TaskMessage) -> str:
        return envelope(
            RUN_TASK,
            [message.task_id],
            queue=message.queue,
            headers={"kind": message.kind, "executor_id": message.executor_id},
            reply_to=self._reply_to,
        )

    def _set_envelope(self, messages: Sequence[TaskMessage]) -> str:
        """One message for tasks of one queue (so of one kind and executorId)."""
        if len(messages) == 1:
            return self._envelope(messages[0])
        first = messages[0]
        return envelope(
            RUN_SET,
            [[m.task_id for m in messages]],
            queue=first.queue,
            headers={"kind": first.kind, "executor_id": first.executor_id},
            reply_to=self._reply_to,
        )

    def _send(self, message: TaskMessage, *, countdown: float) -> None:
        self._app.send_task(
            RUN_TASK,
            args=[message.task_id],
            countdown=countdown or None,
            queue=self._queue(message.queue),
            routing_key=message.queue,
            # Nothing to declare: the message goes to the default exchange,
            # which Redis delivers to the list of the queue's name; workers
            # declare the queues they serve. (A declaration would leave a
            # binding in Redis and an entry in the connection's cache for
            # every queue name ever published to.)
            declare=[],
            headers={"kind": message.kind, "executor_id": message.executor_id},
            # A short retry: when Redis is down the task stays `created` and
            # the sweeper re-publishes it; the API must not hang meanwhile.
            retry=True,
            retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2},
        )

    def _queue(self, name: str) -> Queue:
        """The queue's kombu entity, from a bounded LRU. Given as an entity, not
        a name, it does not enter Celery's table of queues (``app.amqp.queues``),
        which would keep every name for ever."""
        with self._queues_lock:
            queue = self._queues.pop(name, None) or _queue_entity(name)
            self._queues[name] = queue
            if len(self._queues) > QUEUE_CACHE_SIZE:
                self._queues.popitem(last=False)
            return queue

    def depths(self, queues: Iterable[str]) -> dict[str, int]:
        names = list(queues)
        with self._probe.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.llen(name)
            return dict(zip(names, (int(n) for n in pipe.execute()), strict=True))

    def forgot(self) -> bool:
        # Set only when missing: True the first time, and after a data loss.
        return bool(self._probe.set(MEMORY_KEY, "1", nx=True))

    def ping(self) -> bool:
        try:
            return bool(self._probe.ping())
        except redis.RedisError:
            log.debug("broker ping failed", exc_info=True)
            return False

    def close(self) -> None:
        self.linger.flush()
        self._probe.close()
        self._lists.close()
        self._app.close()

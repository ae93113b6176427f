"""Handing tasks to the broker.

The message says only "look at task X": the task id and its routing keys.
Everything else is read from PostgreSQL by the worker, so a stale or
duplicated message can never carry stale data.
"""

from __future__ import annotations

import logging
import threading
import uuid
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

log = logging.getLogger(__name__)

# The Celery task name every worker registers; its only argument is the task id.
RUN_TASK = "tasks_core.run"

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

    def publish(self, message: TaskMessage, *, countdown: float | None = None) -> None:
        """Put the message on its queue (to run after ``countdown`` seconds, if
        given); raise on failure."""

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

    def publish_many(self, messages: Sequence[TaskMessage]) -> None:
        """Put every message on its queue at once; raise when the broker
        did not take them (then none, or only some, may be on their queues)."""


@dataclass
class MemoryPublisher:
    """A publisher that keeps messages in a list (unit tests)."""

    messages: list[TaskMessage] = field(default_factory=list)
    fail: bool = False

    def publish(self, message: TaskMessage, *, countdown: float | None = None) -> None:
        if self.fail:
            raise ConnectionError("broker unavailable (MemoryPublisher.fail)")
        self.messages.append(message)

    def publish_many(self, messages: Sequence[TaskMessage]) -> None:
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

    def __init__(self, redis_url: str) -> None:
        self._app = broker_app(redis_url)
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

    def publish(self, message: TaskMessage, *, countdown: float | None = None) -> None:
        if countdown:
            self._send(message, countdown=countdown)
        else:
            self._lists.lpush(message.queue, self._envelope(message))

    def publish_many(self, messages: Sequence[TaskMessage]) -> None:
        """Every message in one Redis pipeline: one round trip for a whole
        batch of new tasks."""
        with self._lists.pipeline(transaction=False) as pipe:
            for message in messages:
                pipe.lpush(message.queue, self._envelope(message))
            pipe.execute()

    def _envelope(self, message: TaskMessage) -> str:
        return envelope(
            RUN_TASK,
            [message.task_id],
            queue=message.queue,
            headers={"kind": message.kind, "executor_id": message.executor_id},
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
        self._probe.close()
        self._lists.close()
        self._app.close()

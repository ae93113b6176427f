"""Handing tasks to the broker.

The message says only "look at task X": the task id and its routing keys.
Everything else is read from PostgreSQL by the worker, so a stale or
duplicated message can never carry stale data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

import redis
from celery import Celery

log = logging.getLogger(__name__)

# The Celery task name every worker registers; its only argument is the task id.
RUN_TASK = "tasks_core.run"


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


@dataclass
class MemoryPublisher:
    """A publisher that keeps messages in a list (unit tests)."""

    messages: list[TaskMessage] = field(default_factory=list)
    fail: bool = False

    def publish(self, message: TaskMessage, *, countdown: float | None = None) -> None:
        if self.fail:
            raise ConnectionError("broker unavailable (MemoryPublisher.fail)")
        self.messages.append(message)

    def ping(self) -> bool:
        return not self.fail


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


class CeleryPublisher:
    """Publishes Celery protocol messages to Redis, readable by any Celery worker."""

    def __init__(self, redis_url: str) -> None:
        self._app = broker_app(redis_url)
        # A plain client for health checks: kombu's connection retries would
        # make a readiness probe hang for seconds when Redis is down.
        self._probe = redis.Redis.from_url(
            redis_url, socket_connect_timeout=1, socket_timeout=1, single_connection_client=False
        )

    def publish(self, message: TaskMessage, *, countdown: float | None = None) -> None:
        self._app.send_task(
            RUN_TASK,
            args=[message.task_id],
            countdown=countdown or None,
            queue=message.queue,
            routing_key=message.queue,
            headers={"kind": message.kind, "executor_id": message.executor_id},
            # A short retry: when Redis is down the task stays `created` and
            # the sweeper re-publishes it; the API must not hang meanwhile.
            retry=True,
            retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2},
        )

    def ping(self) -> bool:
        try:
            return bool(self._probe.ping())
        except redis.RedisError:
            log.debug("broker ping failed", exc_info=True)
            return False

    def close(self) -> None:
        self._probe.close()
        self._app.close()

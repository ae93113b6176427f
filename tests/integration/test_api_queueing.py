"""Create publishes a Celery message on the real Redis, on the queue of its kind and executorId."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tasks_core.publisher import RUN_TASK
from tasks_core.queues import queue_name
from tests.support.api import OrgClient
from tests.support.wait import wait_until


@pytest.fixture
def broker(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def messages_on(broker: redis.Redis, queue: str) -> list[dict[str, Any]]:
    """Every kombu envelope on ``queue``, oldest first, with the decoded Celery body."""
    envelopes = []
    for raw in reversed(broker.lrange(queue, 0, -1)):  # kombu LPUSHes: newest at the head
        envelope = json.loads(raw)
        assert envelope["properties"]["body_encoding"] == "base64"
        assert envelope["content-type"] == "application/json"
        envelope["decoded"] = json.loads(base64.b64decode(envelope["body"]))
        envelopes.append(envelope)
    return envelopes


def ids_on(broker: redis.Redis, queue: str) -> list[str]:
    """The task ids the messages on ``queue`` name, oldest first: one for a
    run, a list for a run set (tasks published together)."""
    ids: list[str] = []
    for message in messages_on(broker, queue):
        (arg,) = message["decoded"][0]
        ids += arg if isinstance(arg, list) else [arg]
    return ids


def task_lists(broker: redis.Redis) -> list[str]:
    """Redis keys that hold queued messages (kombu's binding sets are not lists)."""
    return sorted(key.decode() for key in broker.keys("*") if broker.type(key) == b"list")


def test_default_task_is_queued_with_a_celery_message_carrying_its_id(
    acme: OrgClient, broker: redis.Redis
) -> None:
    task = acme.create(kind="default")
    assert task["status"] == "queued"
    queue = queue_name("default", None)
    assert queue == "tasks.default"
    [message] = messages_on(broker, queue)
    headers = message["headers"]
    assert headers["task"] == RUN_TASK == "tasks_core.run"
    assert headers["id"]
    args, kwargs, embed = message["decoded"]
    assert args == [task["id"]]
    assert kwargs == {}
    assert isinstance(embed, dict)
    assert message["properties"]["delivery_info"]["routing_key"] == queue


def test_created_tasks_are_named_on_their_queue_in_order(
    acme: OrgClient, broker: redis.Redis
) -> None:
    ids = [acme.create()["id"] for _ in range(3)]
    # The first two go at once; the third finds its queue behind (the two
    # wait there) and may wait PUBLISH_LINGER_SECONDS to go with the next.
    wait_until(
        lambda: ids_on(broker, "tasks.default") == ids,
        timeout=5,
        message="the created tasks were not all published, in order",
    )
    messages = messages_on(broker, "tasks.default")
    assert len({m["headers"]["id"] for m in messages}) == len(messages) == 3


def test_executor_id_routes_to_its_own_queue(acme: OrgClient, broker: redis.Redis) -> None:
    task = acme.create(kind="default", executorId="gpu")
    assert task["status"] == "queued"
    queue = queue_name("default", "gpu")
    assert queue == "tasks.default@gpu"
    [message] = messages_on(broker, queue)
    assert message["decoded"][0] == [task["id"]]
    assert broker.llen("tasks.default") == 0
    assert task_lists(broker) == [queue]


def test_kind_routes_to_its_own_queue(acme: OrgClient, broker: redis.Redis) -> None:
    task = acme.create(kind="CallAction", targetId="billing/charge")
    [message] = messages_on(broker, queue_name("CallAction", None))
    assert message["decoded"][0] == [task["id"]]
    assert task_lists(broker) == ["tasks.CallAction"]


@pytest.mark.parametrize("status", ["completed", "running", "failed", "cancelled", "waiting"])
def test_task_created_with_other_status_publishes_nothing(
    acme: OrgClient, broker: redis.Redis, status: str
) -> None:
    task = acme.create(kind="default", status=status)
    assert task["status"] == status
    assert broker.llen(queue_name("default", None)) == 0
    assert task_lists(broker) == []


def test_record_only_task_is_not_moved_by_the_publisher(acme: OrgClient) -> None:
    task = acme.create(status="completed")
    events = acme.get(f"/v1/tasks/{task['id']}/events").json()["items"]
    assert [e["type"] for e in events] == ["created"]
    assert all(e["actor"] != "system:publisher" for e in events)

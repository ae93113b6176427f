"""Routing and publishing, against fakeredis (the real Redis is in tests/integration)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any
from unittest import mock

import fakeredis
import kombu.transport.redis as kombu_redis
import pytest

from tasks_core.publisher import RUN_SET, RUN_TASK, CeleryPublisher, TaskMessage
from tasks_core.queues import queue_name
from worker.cli import queues_for


@pytest.fixture
def fake_redis() -> Iterator[fakeredis.FakeRedis]:
    server = fakeredis.FakeServer()

    def client(self: Any, asynchronous: bool = False) -> fakeredis.FakeRedis:
        return fakeredis.FakeRedis(server=server)

    def direct(url: str, **_: Any) -> fakeredis.FakeRedis:  # the publisher's own clients
        return fakeredis.FakeRedis(server=server)

    with (
        mock.patch.object(kombu_redis.Channel, "_create_client", client),
        mock.patch("tasks_core.publisher.redis.Redis.from_url", direct),
    ):
        yield fakeredis.FakeRedis(server=server)


def _pop(client: fakeredis.FakeRedis, queue: str) -> dict[str, Any]:
    raw = client.lpop(queue)
    assert raw is not None, f"nothing on {queue}"
    envelope: dict[str, Any] = json.loads(raw)
    envelope["decoded_body"] = json.loads(base64.b64decode(envelope["body"]))
    return envelope


def _without_fresh(envelope: dict[str, Any]) -> dict[str, Any]:
    """An envelope without the fields made anew for each message (ids, origin)."""
    fresh = ("id", "root_id", "origin", "correlation_id", "delivery_tag", "reply_to")
    for part in (envelope["headers"], envelope["properties"]):
        for name in fresh:
            part.pop(name, None)
    return envelope


@pytest.mark.parametrize(
    ("kind", "executor", "queue"),
    [("default", None, "tasks.default"), ("CallAction", "gpu", "tasks.CallAction@gpu")],
)
def test_a_task_is_published_on_the_queue_of_its_kind_and_executor(
    fake_redis: fakeredis.FakeRedis, kind: str, executor: str | None, queue: str
) -> None:
    publisher = CeleryPublisher("redis://127.0.0.1:1/0")
    message = TaskMessage(
        task_id="t-1", queue=queue_name(kind, executor), kind=kind, executor_id=executor
    )
    publisher.publish(message)
    envelope = _pop(fake_redis, queue)
    assert envelope["headers"]["task"] == RUN_TASK
    args, kwargs, _ = envelope["decoded_body"]
    assert (args, kwargs) == (["t-1"], {})  # the id only: PostgreSQL holds the rest
    assert envelope["content-type"] == "application/json"
    assert fake_redis.llen(queue) == 0


def test_a_retry_is_published_with_a_countdown(fake_redis: fakeredis.FakeRedis) -> None:
    CeleryPublisher("redis://127.0.0.1:1/0").publish(
        TaskMessage(task_id="t-2", queue="tasks.default", kind="default", executor_id=None),
        countdown=5,
    )
    assert _pop(fake_redis, "tasks.default")["headers"]["eta"]


def test_a_pool_serves_its_executors_times_its_kinds() -> None:
    known = ["CallAction", "default"]
    assert queues_for([], [], known_kinds=known, prefix="tasks") == [
        "tasks.CallAction",
        "tasks.default",
    ]
    assert queues_for(["default"], ["gpu", "cpu"], known_kinds=known, prefix="tasks") == [
        "tasks.default@gpu",
        "tasks.default@cpu",
    ]
    assert queues_for([], ["gpu"], known_kinds=known, prefix="p") == [
        "p.CallAction@gpu",
        "p.default@gpu",
    ]


def test_a_message_pushed_directly_is_the_envelope_send_task_writes(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    publisher = CeleryPublisher("redis://127.0.0.1:1/0")
    message = TaskMessage(task_id="t-1", queue="tasks.default", kind="default", executor_id=None)
    publisher.publish(message)  # pushed directly
    publisher._send(message, countdown=0)  # through Celery's send_task
    celerys, ours = _pop(fake_redis, "tasks.default"), _pop(fake_redis, "tasks.default")  # LIFO
    assert ours["headers"]["id"] != celerys["headers"]["id"]  # two messages
    assert _without_fresh(ours) == _without_fresh(celerys)


def test_many_messages_go_out_in_one_pipeline_each_queue_s_tasks_as_run_sets(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    publisher = CeleryPublisher("redis://127.0.0.1:1/0", run_set_max=2)
    messages = [
        TaskMessage(task_id=f"t-{i}", queue=queue_name("k", e), kind="k", executor_id=e)
        for i, e in enumerate([None, "gpu", None, None])
    ]
    publisher.publish_many(messages)
    # Workers take the oldest first (BRPOP); LPOP here takes the newest.
    last, first = _pop(fake_redis, "tasks.k"), _pop(fake_redis, "tasks.k")
    assert first["headers"]["task"] == RUN_SET and first["decoded_body"][0] == [["t-0", "t-2"]]
    assert first["headers"]["kind"] == "k" and first["headers"]["executor_id"] is None
    # The rest of the queue's tasks past RUN_SET_MAX; a set of one is a plain run.
    assert last["headers"]["task"] == RUN_TASK and last["decoded_body"][0] == ["t-3"]
    alone = _pop(fake_redis, "tasks.k@gpu")
    assert alone["headers"]["task"] == RUN_TASK and alone["decoded_body"][0] == ["t-1"]
    assert alone["headers"]["executor_id"] == "gpu"


def test_a_run_set_message_is_the_envelope_send_task_writes(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    publisher = CeleryPublisher("redis://127.0.0.1:1/0")
    pair = [TaskMessage(f"t-{i}", "tasks.default", "default", None) for i in range(2)]
    publisher.publish_many(pair)
    publisher._app.send_task(
        RUN_SET,
        args=[["t-0", "t-1"]],
        queue=publisher._queue("tasks.default"),
        routing_key="tasks.default",
        declare=[],
        headers={"kind": "default", "executor_id": None},
    )
    celerys, ours = _pop(fake_redis, "tasks.default"), _pop(fake_redis, "tasks.default")
    assert _without_fresh(ours) == _without_fresh(celerys)

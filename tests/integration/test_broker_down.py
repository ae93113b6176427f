"""Redis unreachable at create time: the task is kept (`created`), never lost."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tasks_core.devservers import free_port
from tests.support.api import OrgClient


@pytest.fixture
def no_broker(client_with: Callable[..., OrgClient]) -> OrgClient:
    """The API with a Redis URL where nothing listens."""
    return client_with(redis_url=f"redis://127.0.0.1:{free_port()}/0")


def test_create_keeps_the_task_created_when_redis_is_down(no_broker: OrgClient) -> None:
    body = no_broker.create(kind="default")
    assert body["status"] == "created"
    stored = no_broker.get(f"/v1/tasks/{body['id']}").json()
    assert stored["status"] == "created"
    events = no_broker.get(f"/v1/tasks/{body['id']}/events").json()["items"]
    # Stored `queued` with its create (one statement), then moved back when
    # the broker refused the message: the log says so.
    assert [e["toStatus"] for e in events] == ["created", "queued", "created"]
    assert events[-1]["actor"] == "system:publisher"
    assert events[-1]["detail"] == {"reason": "publish_failed"}


def test_readyz_names_redis_when_it_is_down(no_broker: OrgClient) -> None:
    response = no_broker.http.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"code": "unavailable", "message": "not reachable: redis"}

"""Redis unreachable at create time: the task is kept (`created`), never lost."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tasks_core.api.app import create_app
from tasks_core.devservers import free_port
from tasks_core.publisher import CeleryPublisher
from tasks_core.services.store import Store
from tasks_core.settings import Settings
from tests.support.api import OrgClient, issue_key


@pytest.fixture
def no_broker(engine: Engine, settings: Settings) -> Iterator[OrgClient]:
    """The API with a Redis URL where nothing listens."""
    dead = Settings(
        database_url=settings.database_url, redis_url=f"redis://127.0.0.1:{free_port()}/0"
    )
    publisher = CeleryPublisher(dead.redis_url)
    store = Store(engine=engine, publisher=publisher, settings=dead)
    with TestClient(create_app(store=store), raise_server_exceptions=False) as http:
        secret, key_id, org_id = issue_key(engine, "acme")
        yield OrgClient(http=http, key=secret, key_id=key_id, organization_id=org_id)
    publisher.close()


def test_create_keeps_the_task_created_when_redis_is_down(no_broker: OrgClient) -> None:
    body = no_broker.create(kind="default")
    assert body["status"] == "created"
    stored = no_broker.get(f"/v1/tasks/{body['id']}").json()
    assert stored["status"] == "created"
    events = no_broker.get(f"/v1/tasks/{body['id']}/events").json()["items"]
    assert [e["toStatus"] for e in events] == ["created"]


def test_readyz_names_redis_when_it_is_down(no_broker: OrgClient) -> None:
    response = no_broker.http.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"code": "unavailable", "message": "not reachable: redis"}

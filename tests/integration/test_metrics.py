"""GET /metrics of the API (tasks_core/api/metrics.py) on the real database and Redis."""

from __future__ import annotations

import uuid

import pytest

from tasks_core.publisher import MemoryPublisher
from tasks_core.queues import queue_name
from tasks_core.records import Caller
from tasks_core.recovery import sweep_once
from tasks_core.store import Store
from tasks_core.task import TaskSpec
from tasks_core.usecases.create import create_task
from tests.support.api import OrgClient, error_of
from tests.support.metrics import Samples, parse, value
from tests.support.wait import wait_until


def scrape(client: OrgClient, **headers: str) -> Samples:
    """Every sample of GET /metrics."""
    response = client.http.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def test_creates_and_requests_are_counted_by_kind_and_route(acme: OrgClient) -> None:
    before = scrape(acme)
    for _ in range(3):
        acme.create(kind="default")
    task = acme.create(kind="CallAction", targetId="builtin/echo")
    assert acme.get(f"/v1/tasks/{task['id']}").status_code == 200
    assert acme.get(f"/v1/tasks/{uuid.uuid4()}").status_code == 404
    after = scrape(acme)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("tasks_created_total", kind="default") == 3
    assert grew("tasks_created_total", kind="CallAction") == 1
    assert grew("http_requests_total", method="POST", route="/v1/tasks", status="201") == 4
    route = "/v1/tasks/{taskId}"
    assert grew("http_requests_total", method="GET", route=route, status="200") == 1
    assert grew("http_requests_total", method="GET", route=route, status="404") == 1
    assert grew("http_request_duration_seconds_count", route="/v1/tasks") == 4


def test_queue_gauges_show_what_waits_on_a_pool_without_workers(
    acme: OrgClient, store: Store
) -> None:
    pool = f"metrics-{uuid.uuid4().hex[:8]}"
    for _ in range(2):
        acme.create(kind="default", executorId=pool)
    samples = scrape(acme)
    queue = queue_name("default", pool, store.settings.queue_prefix)
    assert value(samples, "tasks_queue_depth", queue=queue) == 2
    assert value(samples, "tasks_queue_oldest_waiting_seconds", queue=queue) >= 0
    assert ("tasks_queue_depth", frozenset({("queue", queue)})) in samples


def test_labels_never_name_a_task_or_an_organization(acme: OrgClient) -> None:
    task = acme.create(kind="default")
    text = acme.http.get("/metrics").text
    assert task["id"] not in text and acme.organization_id not in text


@pytest.mark.parametrize("settings", [{"metrics_token": "s3cret-scrape"}], indirect=True)
def test_a_metrics_token_guards_the_scrape(acme: OrgClient) -> None:
    message = error_of(acme.http.get("/metrics"), 401, "unauthorized")
    assert "METRICS_TOKEN" in message
    wrong = acme.http.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert scrape(acme, Authorization="Bearer s3cret-scrape")


@pytest.mark.parametrize("settings", [{"metrics_enabled": False}], indirect=True)
def test_metrics_can_be_turned_off(acme: OrgClient) -> None:
    message = error_of(acme.http.get("/metrics"), 404, "not_found")
    assert "METRICS_ENABLED" in message


@pytest.mark.parametrize("settings", [{"republish_after_seconds": 0.05}], indirect=True)
def test_the_sweeper_counts_what_it_did(acme: OrgClient, store: Store) -> None:
    # A create whose publish is lost: the sweeper publishes it.
    broken = Store(
        engine=store.engine, publisher=MemoryPublisher(fail=True), settings=store.settings
    )
    caller = Caller(uuid.UUID(acme.organization_id), uuid.UUID(acme.key_id))
    create_task(broken, caller, TaskSpec(kind="default"))
    before = value(scrape(acme), "tasks_sweeper_actions_total", action="republished")
    done = wait_until(
        lambda: sweep_once(store).counts.get("republished"), timeout=10, message="not republished"
    )
    after = value(scrape(acme), "tasks_sweeper_actions_total", action="republished")
    assert after - before == done

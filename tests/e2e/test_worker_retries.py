"""Retries: a retryable failure is handed back to its queue while attempts are
left (``maxAttempts``), on a real worker; final failures are not retried."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tasks_core.settings import Settings
from tests.e2e.helpers_worker import redis_int, run, status_events
from tests.support.api import OrgClient
from tests.support.workers import WorkerProcess


@pytest.fixture(scope="module")
def broker(e2e_settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(e2e_settings.redis_url)
    yield client
    client.close()


def retry_handbacks(client: OrgClient, task_id: str) -> list[dict[str, Any]]:
    """The `running -> queued` moves of a retry, as the event log shows them."""
    return [
        e
        for e in status_events(client, task_id, "queued")
        if e["fromStatus"] == "running" and (e["detail"] or {}).get("retry") is True
    ]


def test_flaky_task_fails_after_exactly_max_attempts(
    client: OrgClient, worker: WorkerProcess, broker: redis.Redis
) -> None:
    task = run(client, kind="CallAction", targetId="test/flaky", maxAttempts=3)
    assert task["status"] == "failed", task
    assert task["attempt"] == 3 and task["maxAttempts"] == 3
    assert task["errors"] == [{"code": "flaky", "message": "attempt 3 fails"}]
    assert redis_int(broker, f"attempts:{task['id']}") == 3
    handbacks = retry_handbacks(client, task["id"])
    assert [e["detail"]["attempt"] for e in handbacks] == [1, 2]
    assert all(e["detail"]["error"] == "flaky" for e in handbacks)
    assert len(status_events(client, task["id"], "running")) == 3
    assert len(status_events(client, task["id"], "failed")) == 1


def test_flaky_task_completes_on_the_attempt_it_succeeds_on(
    client: OrgClient, worker: WorkerProcess, broker: redis.Redis
) -> None:
    task = run(
        client, kind="CallAction", targetId="test/flaky", input={"succeedOn": 2}, maxAttempts=3
    )
    assert task["status"] == "completed", task
    assert task["attempt"] == 2
    assert task["output"] == {"attempt": 2}
    assert redis_int(broker, f"attempts:{task['id']}") == 2
    assert len(retry_handbacks(client, task["id"])) == 1
    assert len(status_events(client, task["id"], "running")) == 2


def test_a_failure_marked_not_retryable_is_final(client: OrgClient, worker: WorkerProcess) -> None:
    task = run(
        client,
        kind="CallAction",
        targetId="builtin/fail",
        input={"code": "card_declined", "message": "no", "retryable": False},
        maxAttempts=3,
    )
    assert task["status"] == "failed", task
    assert task["attempt"] == 1
    assert task["errors"] == [{"code": "card_declined", "message": "no"}]
    assert retry_handbacks(client, task["id"]) == []
    assert len(status_events(client, task["id"], "running")) == 1


def test_a_retryable_failure_without_attempts_left_is_final(
    client: OrgClient, worker: WorkerProcess, broker: redis.Redis
) -> None:
    task = run(client, kind="CallAction", targetId="test/flaky")
    assert task["maxAttempts"] == 1
    assert task["status"] == "failed", task
    assert task["attempt"] == 1
    assert redis_int(broker, f"attempts:{task['id']}") == 1
    assert retry_handbacks(client, task["id"]) == []

"""Quotas one organization can not pass: the run time of a task
(MAX_TIMEOUT_SECONDS, DEFAULT_TIMEOUT_SECONDS, enforced by a real worker),
its open tasks (MAX_OPEN_TASKS_PER_ORG) and the executors it may name (an
allow-list set with ``tasks-core orgs executors``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, event

from tasks_core.quotas import run_timeout
from tasks_core.settings import Settings
from tests.support.api import OrgClient, error_of, wait_for_status
from tests.support.figures import report
from tests.support.wait import wait_until
from tests.support.workers import WorkerProcess
from worker.supervisor import lease_margin

FOREVER = 1e9  # seconds: a sleep that only a timeout can end


def sleep_task(**fields: Any) -> dict[str, Any]:
    return {"kind": "CallAction", "targetId": "builtin/sleep", "input": {"seconds": FOREVER}} | (
        fields
    )


# --- Timeouts ----------------------------------------------------------------------------


def test_a_timeout_above_the_cap_is_refused_naming_the_field_and_the_cap(
    client_with: Callable[..., OrgClient], acme: OrgClient
) -> None:
    capped = client_with(max_timeout_seconds=60)
    message = error_of(
        capped.post("/v1/tasks", json=sleep_task(timeoutSeconds=61)), 422, "validation_error"
    )
    assert "timeoutSeconds" in message and "60" in message and "MAX_TIMEOUT_SECONDS" in message
    assert capped.post("/v1/tasks", json=sleep_task(timeoutSeconds=60)).status_code == 201

    step = {"id": "long", "kind": "CallAction", "targetId": "builtin/sleep", "timeoutSeconds": 61}
    flow = capped.post("/v1/tasks", json={"kind": "Flow", "params": {"steps": [step]}})
    assert "step 'long'" in error_of(flow, 422, "validation_error")

    # The default cap is a day: a billion seconds is refused everywhere.
    message = error_of(
        acme.post("/v1/tasks", json=sleep_task(timeoutSeconds=FOREVER)), 422, "validation_error"
    )
    assert "86400" in message
    created = acme.create(**sleep_task(status="running"))
    put = acme.put(f"/v1/tasks/{created['id']}", json={"timeoutSeconds": FOREVER})
    error_of(put, 422, "immutable_field")


def test_a_worker_stops_runs_at_the_default_timeout_and_at_the_cap(
    client: OrgClient, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Two never-ending sleeps would hold both slots of a two-slot worker forever.
    start_worker(
        "--concurrency", "2", env={"DEFAULT_TIMEOUT_SECONDS": "0.5", "MAX_TIMEOUT_SECONDS": "1"}
    )
    no_timeout = [client.create(**sleep_task()) for _ in range(2)]
    above_cap = client.create(**sleep_task(timeoutSeconds=30))  # the API allows a day
    for created in no_timeout:
        task = wait_for_status(client, created["id"], timeout=20)
        assert task["status"] == "failed" and task["errors"][0]["code"] == "timeout", task
        assert "0.5 s" in task["errors"][0]["message"]
        assert task["timeoutSeconds"] is None  # the caller's field is left as sent
    task = wait_for_status(client, above_cap["id"], timeout=20)
    assert task["errors"][0]["code"] == "timeout" and "of 1 s" in task["errors"][0]["message"]
    assert task["timeoutSeconds"] == 30
    # Both slots are free again.
    after = wait_for_status(client, client.create()["id"], timeout=20)
    assert after["status"] == "completed"
    report("timeouts: default_stopped=2 capped_stopped=1 slots_free=2")


# --- Open tasks ----------------------------------------------------------------------------


def test_an_organization_over_its_open_task_limit_is_refused_and_others_are_not(
    client_with: Callable[..., OrgClient], globex: OrgClient
) -> None:
    limited = client_with(max_open_tasks_per_org=3)
    first = [limited.create() for _ in range(3)]  # no worker here: they stay open
    over = limited.post("/v1/tasks", json={"kind": "default"})
    message = error_of(over, 429, "quota_exceeded")
    assert "3" in message and "MAX_OPEN_TASKS_PER_ORG" in message and "cancel" in message
    assert over.headers["Retry-After"] == "1"
    # A record of finished work is not open; another organization has its own count.
    assert limited.create(status="completed")["status"] == "completed"
    other = OrgClient(limited.http, globex.key, globex.key_id, globex.organization_id)
    assert all(other.create()["status"] == "queued" for _ in range(3))

    # Under the limit again (a cancel), creates pass once the count is read again.
    cancelled = limited.post(f"/v1/tasks/{first[0]['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    wait_until(
        lambda: limited.post("/v1/tasks", json={"kind": "default"}).status_code == 201,
        timeout=5,
        message="creates stayed refused after the count went under the limit",
    )
    error_of(limited.post("/v1/tasks", json={"kind": "default"}), 429, "quota_exceeded")


def test_a_retried_create_at_the_open_task_limit_answers_its_first_task(
    client_with: Callable[..., OrgClient],
) -> None:
    limited = client_with(max_open_tasks_per_org=1)
    key = {"Idempotency-Key": "retry-at-the-limit"}
    first = limited.post("/v1/tasks", json={"kind": "default"}, headers=key)
    assert first.status_code == 201, first.text  # the organization is now at its limit
    again = limited.post("/v1/tasks", json={"kind": "default"}, headers=key)
    assert again.status_code == 201, again.text  # a replay answers as the first did
    assert again.json()["id"] == first.json()["id"]
    error_of(limited.post("/v1/tasks", json={"kind": "default"}), 429, "quota_exceeded")
    other_body = limited.post("/v1/tasks", json={"kind": "other"}, headers=key)
    error_of(other_body, 409, "idempotency_conflict")


def test_the_open_task_count_costs_no_query_per_create(
    client_with: Callable[..., OrgClient], engine: Engine
) -> None:
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        statements.append(sql)

    def cost(client: OrgClient, creates: int) -> int:
        statements.clear()
        for _ in range(creates):
            client.create()
        return len(statements)

    plain, limited = client_with(), client_with(max_open_tasks_per_org=1000)
    cost(plain, 1)
    cost(limited, 1)  # the first create reads the count
    event.listen(engine, "before_cursor_execute", seen)
    try:
        without, with_limit = cost(plain, 20), cost(limited, 20)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    # At most one read of the count a second (these 20 creates may straddle one).
    assert with_limit - without <= 2, (without, with_limit)
    report(f"open-task quota: statements_per_20_creates={with_limit} without_limit={without}")


# --- Executors -----------------------------------------------------------------------------


def orgs_executors(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tasks_core.cli", "orgs", "executors", *args],
        env={**os.environ, "DATABASE_URL": settings.database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )


# The list changes below must take effect at once: without the key cache, which
# keeps an organization's list with its key for KEY_CACHE_SECONDS.
@pytest.mark.parametrize("settings", [{"key_cache_seconds": 0}], indirect=True)
def test_an_organization_may_name_only_the_executors_of_its_list(
    acme: OrgClient, globex: OrgClient, settings: Settings
) -> None:
    done = orgs_executors(settings, "--org", "acme", "--allow", "gpu", "--allow", "cpu-small")
    assert done.returncode == 0, done.stderr
    assert "cpu-small, gpu" in done.stdout

    message = error_of(
        acme.post("/v1/tasks", json={"kind": "default", "executorId": "billing"}),
        403,
        "executor_not_allowed",
    )
    assert "'billing'" in message and "cpu-small, gpu" in message
    assert acme.create(executorId="gpu")["executorId"] == "gpu"
    assert acme.create()["executorId"] is None  # the shared pools stay open

    waiting = acme.create(executorId="gpu")
    put = acme.put(f"/v1/tasks/{waiting['id']}", json={"executorId": "billing"})
    error_of(put, 403, "executor_not_allowed")
    assert acme.put(f"/v1/tasks/{waiting['id']}", json={"executorId": "cpu-small"}).is_success

    step = {"id": "pay", "kind": "default", "executorId": "billing"}
    flow = acme.post("/v1/tasks", json={"kind": "Flow", "params": {"steps": [step]}})
    assert "step 'pay'" in error_of(flow, 403, "executor_not_allowed")

    assert globex.create(executorId="billing")["executorId"] == "billing"  # its own rules

    assert orgs_executors(settings, "--org", "acme", "--any").returncode == 0
    assert acme.create(executorId="billing")["executorId"] == "billing"
    unknown = orgs_executors(settings, "--org", "nobody", "--any")
    assert unknown.returncode != 0 and "nobody" in unknown.stderr


# --- The rules themselves (no servers) -------------------------------------------------------


def test_a_run_gets_its_timeout_else_the_default_and_never_more_than_the_cap() -> None:
    settings = Settings(default_timeout_seconds=50, max_timeout_seconds=100)
    assert run_timeout(None, settings) == 50
    assert run_timeout(10, settings) == 10
    assert run_timeout(1e9, settings) == 100  # stored before the cap was lowered
    assert run_timeout(None, Settings(default_timeout_seconds=500, max_timeout_seconds=100)) == 100


def test_a_run_without_renewals_is_stopped_with_time_for_the_hard_stop() -> None:
    default = Settings()  # lease 30, grace 5, heartbeat 1
    assert lease_margin(default) == 24
    assert lease_margin(default) + default.cancel_grace_seconds < default.lease_seconds
    tight = Settings(lease_seconds=2, cancel_grace_seconds=5, heartbeat_seconds=0.5)
    assert lease_margin(tight) == 0.5  # one failed renewal is enough

"""A kind no worker serves, as a new user meets it: a real worker, a real
sweeper, and ``{"kind": "Reprot"}`` over the API. The task fails
``unknown_kind`` once no live node served its queue for
UNSERVED_TIMEOUT_SECONDS, a Flow with such a step fails with it, and tasks
of served kinds are untouched."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from tasks_core.api.app import create_app
from tasks_core.queues import queue_name
from tests.support.api import OrgClient, issue_key, wait_for_status
from tests.support.figures import report
from tests.support.stack import stack
from tests.support.wait import wait_until

HEARTBEAT = 0.5  # WORKER_HEARTBEAT_SECONDS
TIMEOUT = 3.0  # UNSERVED_TIMEOUT_SECONDS


def _queues(client: OrgClient) -> dict[str, dict[str, Any]]:
    response = client.get("/v1/queues")
    assert response.status_code == 200, response.text
    return {q["name"]: q for q in response.json()["items"]}


def test_a_kind_no_worker_serves_fails_unknown_kind_and_fails_its_flow() -> None:
    settings = {
        "worker_heartbeat_seconds": HEARTBEAT,
        "unserved_timeout_seconds": TIMEOUT,
        "sweep_interval_seconds": 0.2,
    }
    with stack(**settings) as system, TestClient(create_app(store=system.store)) as http:
        secret, key_id, org_id = issue_key(system.store.engine, "newcomer")
        client = OrgClient(http=http, key=secret, key_id=key_id, organization_id=org_id)
        prefix = system.settings.queue_prefix
        system.start_worker("--concurrency", "2", env={"WORKER_HEARTBEAT_SECONDS": str(HEARTBEAT)})
        served = queue_name("default", None, prefix)
        wait_until(
            lambda: _queues(client).get(served, {}).get("workers") == 1,
            timeout=20,
            message="the worker never registered its queues",
        )
        system.start_sweeper()

        created = time.monotonic()
        typo = client.create(kind="Reprot")["id"]
        flow = client.create(
            kind="Flow",
            params={"steps": [{"id": "ok", "kind": "default"}, {"id": "bad", "kind": "Reprot"}]},
        )["id"]
        fine = client.create(kind="default")["id"]
        unserved = _queues(client)[queue_name("Reprot", None, prefix)]
        assert unserved["workers"] == 0 and unserved["waiting"] >= 1

        failed = wait_for_status(client, typo, timeout=TIMEOUT + 15)
        took = time.monotonic() - created
        assert failed["status"] == "failed"
        assert [e["code"] for e in failed["errors"]] == ["unknown_kind"]
        assert queue_name("Reprot", None, prefix) in failed["errors"][0]["message"]
        flow_done = wait_for_status(client, flow, timeout=TIMEOUT + 15)
        assert flow_done["status"] == "failed"
        steps = {c["stepId"]: c for c in client.get(f"/v1/tasks/{flow}").json()["children"]}
        assert steps["ok"]["status"] == "completed"
        assert steps["bad"]["errors"][0]["code"] == "unknown_kind"
        assert wait_for_status(client, fine)["status"] == "completed"
        assert took >= TIMEOUT  # not before its queue went unserved that long
        report(f"unserved kind: failed unknown_kind after {took:.1f}s (timeout {TIMEOUT}s)")

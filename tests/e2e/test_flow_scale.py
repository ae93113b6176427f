"""A large Flow on the real stack: 2,000 `builtin/echo` steps through real workers."""

from __future__ import annotations

import time

from tests.support.api import OrgClient, wait_for_status
from tests.support.figures import report
from tests.support.workers import WorkerProcess

STEPS = 2000


def test_a_flow_of_2000_echo_steps_completes(client: OrgClient, worker: WorkerProcess) -> None:
    steps = [
        {"id": f"e{i}", "kind": "CallAction", "targetId": "builtin/echo", "input": i}
        for i in range(STEPS)
    ]
    started = time.perf_counter()
    created = client.create(kind="Flow", params={"steps": steps})
    flow = wait_for_status(client, created["id"], timeout=300)
    elapsed = time.perf_counter() - started
    assert flow["status"] == "completed", flow["errors"]
    assert flow["output"] == {f"e{i}": i for i in range(STEPS)}
    page = client.get("/v1/tasks", params={"parentId": created["id"], "limit": 1}).json()
    assert page["items"][0]["status"] == "completed"
    report(
        f"\nflow of {STEPS} echo steps: seconds={elapsed:.1f} "
        f"steps_per_second={STEPS / elapsed:.0f} (worker concurrency 2)"
    )

"""4. PostgreSQL stopped and started during a run: 503s meanwhile, nothing accepted is lost."""

from __future__ import annotations

import time
import uuid

from fastapi.testclient import TestClient

from tasks_core.api.app import create_app
from tasks_core.storage.keys import create_key
from tasks_core.task import TaskSpec
from tasks_core.usecases.create import create_task
from tests.support.figures import report
from tests.support.stack import stack
from tests.support.wait import wait_until

BEFORE = 100
DURING = 20
AFTER = 100


def test_api_answers_503_while_postgres_is_down_and_every_accepted_task_completes() -> None:
    with stack() as system:
        with system.store.transaction() as conn:
            key = create_key(conn, system.caller.organization_id).secret
        headers = {"Authorization": f"Bearer {key}"}
        body = {"kind": "CallAction", "targetId": "test/work", "input": {"seconds": 0.05}}
        system.start_worker("--concurrency", "2")
        system.start_sweeper()
        with TestClient(create_app(store=system.store), raise_server_exceptions=False) as api:

            def create() -> int:
                response = api.post("/v1/tasks", json=body, headers=headers)
                if response.status_code == 201:
                    accepted.append(uuid.UUID(response.json()["id"]))
                return response.status_code

            accepted: list[uuid.UUID] = []
            assert {create() for _ in range(BEFORE)} == {201}

            system.postgres.stop()
            refused = [api.post("/v1/tasks", json=body, headers=headers) for _ in range(DURING)]
            ready = api.get("/readyz")
            assert {r.status_code for r in refused} == {503}, [r.text for r in refused]
            assert all(set(r.json()) == {"code", "message"} for r in refused)
            assert refused[0].json()["code"] == "unavailable"
            assert ready.status_code == 503 and "database" in ready.json()["message"]

            system.postgres.start()
            wait_until(lambda: create() == 201, timeout=30, message="the API did not recover")
            assert {create() for _ in range(AFTER - 1)} == {201}

        system.wait_all(accepted, ("completed",), timeout=180)
        double = sum(1 for n in system.terminal_events(accepted).values() if n != 1)
        assert double == 0
        report(
            f"\npostgres outage: accepted={len(accepted)} refused_503={len(refused)} "
            f"completed={len(accepted)} lost=0 double={double}"
        )


def test_an_outcome_computed_while_postgres_is_down_is_written_when_it_returns() -> None:
    # A lease longer than the outage: the run is not presumed dead meanwhile.
    with stack(lease_seconds=60) as system:
        worker = system.start_worker("--concurrency", "1", env={"LEASE_SECONDS": "60"})
        spec = TaskSpec(kind="CallAction", target_id="test/work", input={"seconds": 0.5})
        task = create_task(system.store, system.caller, spec)
        system.wait_all([task.id], ("running",), timeout=30)
        system.postgres.stop()
        # The handler finishes while the database is down; the worker keeps the outcome.
        wait_until(
            lambda: "retrying the outcome of task" in worker.log(), timeout=30, interval=0.05
        )
        system.postgres.start()
        system.wait_all([task.id], ("completed",), timeout=60)
        final = system.task(task.id)
        assert final.attempt == 1 and final.output == {"attempt": 1}
        report("postgres outage mid-run: outcomes_kept=1 reruns=0")


def test_an_outcome_held_through_an_outage_longer_than_its_lease_is_written_not_lost() -> None:
    # A lease shorter than the outage: when PostgreSQL returns, the run's lease
    # has run out, and a sweeper is there to see it.
    lease = 3.0
    with stack(lease_seconds=lease) as system:
        worker = system.start_worker("--concurrency", "1", env={"LEASE_SECONDS": str(lease)})
        system.start_sweeper()
        spec = TaskSpec(kind="CallAction", target_id="test/work", input={"seconds": 0.5})
        task = create_task(system.store, system.caller, spec)
        system.wait_all([task.id], ("running",), timeout=30)
        system.postgres.stop()
        stopped = time.monotonic()
        wait_until(
            lambda: "retrying the outcome of task" in worker.log(), timeout=30, interval=0.05
        )
        # No renewal reached PostgreSQL after the stop: the lease runs out a lease later.
        wait_until(lambda: time.monotonic() > stopped + lease + 0.5, timeout=30,
                   message="the outage did not outlast the lease")  # fmt: skip
        system.postgres.start()
        system.wait_all([task.id], ("completed", "failed"), timeout=60)
        final = system.task(task.id)
        assert final.status.value == "completed", final
        assert final.attempt == 1 and final.output == {"attempt": 1}
        report(f"postgres outage past the lease ({lease:g} s): outcomes_kept=1 lost_runs=0")

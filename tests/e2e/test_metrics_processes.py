"""Metrics scraped from a real `tasks-core api --workers 2` and a real
`tasks-core worker --metrics-port` after real tasks: the counters match what
ran, summed over every API process and every pool process."""

from __future__ import annotations

import os
import signal
import tempfile
import uuid
from pathlib import Path

import httpx
from sqlalchemy import text

from tasks_core.devservers import free_port
from tasks_core.storage.keys import create_key
from tasks_core.task import TaskSpec
from tasks_core.usecases.create import create_task
from tests.bench.processes import ApiServer
from tests.support.figures import report
from tests.support.metrics import Samples, parse, value
from tests.support.stack import stack
from tests.support.wait import wait_until

TASKS = 20


def samples(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    return parse(response.text)


def test_api_and_worker_metrics_count_what_ran_across_their_processes() -> None:
    with stack() as system:
        port = free_port()
        worker = system.start_worker("--concurrency", "2", "--metrics-port", str(port))
        assert "/metrics" in worker.log()  # the worker says where its metrics are
        shared = Path(tempfile.mkdtemp(prefix="api-metrics-"))
        api = ApiServer({**system.env(), "PROMETHEUS_MULTIPROC_DIR": str(shared)}, workers=2)
        try:
            api.start_serving()
            with system.store.transaction() as conn:
                key = create_key(conn, system.caller.organization_id)
            headers = {"Authorization": f"Bearer {key.secret}"}
            body = {"kind": "CallAction", "targetId": "builtin/echo", "input": "hi"}
            ids = []
            for _ in range(TASKS):  # a connection each: the API's processes share them
                response = httpx.post(f"{api.url}/v1/tasks", json=body, headers=headers)
                assert response.status_code == 201, response.text
                ids.append(uuid.UUID(response.json()["id"]))
            system.wait_all(ids, ("completed",), timeout=60)

            # Every API process counted in the shared directory; a scrape of
            # any one of them sums all (scraped a few times: new connections
            # land on either process).
            counted_by = {p.name.rsplit("_", 1)[-1] for p in shared.glob("counter_*.db")}
            assert len(counted_by) >= 2, counted_by
            for _ in range(4):
                api_side = samples(f"{api.url}/metrics")
                assert value(api_side, "tasks_created_total", kind="CallAction") == TASKS
                posts = value(
                    api_side, "http_requests_total", method="POST", route="/v1/tasks", status="201"
                )
                assert posts == TASKS

            def worker_side() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
                found = samples(f"http://127.0.0.1:{port}/metrics")
                done = value(found, "tasks_finished_total", kind="CallAction", status="completed")
                return found if done == TASKS else None

            found = wait_until(worker_side, timeout=20, message="worker counters never matched")
            assert value(found, "task_run_seconds_count", kind="CallAction") == TASKS
            assert value(found, "task_queue_wait_seconds_count", kind="CallAction") == TASKS
            assert value(found, "tasks_running", kind="CallAction") == 0
            report(
                f"metrics: tasks={TASKS} api_processes_counting={len(counted_by)} "
                f"created_total={TASKS} finished_total={TASKS}"
            )
        finally:
            api.kill()


def test_a_killed_pool_process_stops_counting_its_run_under_way() -> None:
    with stack() as system:
        port = free_port()
        system.start_worker("--concurrency", "2", "--metrics-port", str(port))
        url = f"http://127.0.0.1:{port}/metrics"
        spec = TaskSpec(kind="CallAction", target_id="builtin/sleep", input={"seconds": 60})
        task = create_task(system.store, system.caller, spec)
        system.wait_all([task.id], ("running",), timeout=30)
        wait_until(
            lambda: value(samples(url), "tasks_running", kind="CallAction") == 1,
            timeout=10,
            message="the run under way is not counted",
        )
        with system.store.statement() as conn:
            name = conn.execute(
                text("SELECT worker FROM tasks WHERE id = :id"), {"id": task.id}
            ).scalar_one()
        os.kill(int(name.rsplit(":", 1)[1]), signal.SIGKILL)
        wait_until(
            lambda: value(samples(url), "tasks_running", kind="CallAction") == 0,
            timeout=10,
            message="a killed pool process still counts its run",
        )

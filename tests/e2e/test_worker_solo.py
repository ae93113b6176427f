"""The solo pool (``tasks-core worker --pool solo``): one run at a time in
the worker process itself, with no hand-off to a pool child; scaled by
running more such processes. Timeouts keep their meaning; the last resort
is the thread pool's (a process that is also the consumer is not ended)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tasks_core.store import Store
from tests.e2e.helpers_worker import stubborn_run_fails_and_its_worker_serves_on, worker_pid
from tests.support.api import OrgClient, wait_for_status
from tests.support.workers import WorkerProcess

POOL = "solo-pool"


@pytest.fixture(scope="module")
def solo(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    return start_worker("--executor", POOL, "--pool", "solo")


def test_the_solo_pool_runs_tasks_in_the_worker_process_itself(
    client: OrgClient, e2e_store: Store, solo: WorkerProcess
) -> None:
    ids = [
        client.create(executorId=POOL, kind="CallAction", targetId="builtin/echo")["id"]
        for _ in range(12)
    ]
    done = [wait_for_status(client, i) for i in ids]
    assert all(t["status"] == "completed" for t in done), done
    assert {worker_pid(e2e_store.engine, i) for i in ids} == {solo.pid}


def test_a_handler_ignoring_its_timeout_in_the_solo_pool_fails_and_the_process_serves_on(
    client: OrgClient, solo: WorkerProcess
) -> None:
    # The process is also the consumer: it is not ended, and once the
    # stubborn handler returns it takes the next task.
    stubborn_run_fails_and_its_worker_serves_on(client, solo, POOL)

"""A failing handler's traceback (file paths, source lines, SQL text) is for
the operator, in the worker's log; the tenant's event log and ``errors``
keep the exception's type and message, and the traceback only with
``EXPOSE_TRACEBACKS=true``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.support.api import OrgClient, wait_for_status
from tests.support.figures import report
from tests.support.wait import wait_until
from tests.support.workers import WorkerProcess

HANDLERS_FILE = "handlers.py"  # where test/raise lives: a path the tenant must not see


def _fail(client: OrgClient, **fields: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run test/raise to its failure; the task and its events."""
    created = client.create(kind="CallAction", targetId="test/raise", **fields)
    task = wait_for_status(client, created["id"])
    assert task["status"] == "failed", task
    events: list[dict[str, Any]] = client.get(f"/v1/tasks/{task['id']}/events").json()["items"]
    return task, events


def test_tracebacks_stay_in_the_workers_log(client: OrgClient, worker: WorkerProcess) -> None:
    task, events = _fail(client)
    assert task["errors"] == [{"code": "value_error", "message": "bad value in input"}]
    failed = next(e for e in events if e["toStatus"] == "failed")
    assert failed["detail"]["exception"] == "ValueError"
    shown = str(events) + str(task["errors"])
    with_traceback = sum("Traceback" in str(e) or HANDLERS_FILE in str(e) for e in events)
    assert "Traceback" not in shown and HANDLERS_FILE not in shown and 'File "' not in shown

    def logged() -> bool:
        log = worker.log()
        return task["id"] in log and "Traceback" in log and HANDLERS_FILE in log

    wait_until(logged, timeout=10, message=f"no traceback of {task['id']} in the worker's log")
    line = next(ln for ln in worker.log().splitlines() if task["id"] in ln and "raised" in ln)
    assert "ERROR" in line, line
    report(f"tracebacks: events_with_traceback={with_traceback} worker_log_has_traceback=true")


def test_expose_tracebacks_puts_them_in_the_event_log(
    client: OrgClient, start_worker: Callable[..., WorkerProcess]
) -> None:
    # A pool of its own (an executor) so that only this worker runs the task.
    start_worker("--executor", "debug", env={"EXPOSE_TRACEBACKS": "true"})
    _, events = _fail(client, executorId="debug")
    failed = next(e for e in events if e["toStatus"] == "failed")
    assert failed["detail"]["exception"] == "ValueError"
    assert "Traceback" in failed["detail"]["traceback"]
    assert HANDLERS_FILE in failed["detail"]["traceback"]

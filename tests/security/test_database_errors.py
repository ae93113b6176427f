"""A database error is told apart by what it means: an outage is waited out
(``tests/reliability/test_postgres_outage.py`` proves the worker's retries
and the API's 503), a collision is run again, and a value PostgreSQL refuses
fails the task at once, never retried."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from tasks_core.storage.errors import DatabaseFailure, classify
from tests.support.api import OrgClient, wait_for_status
from tests.support.figures import report
from tests.support.workers import FAST_WORKER_ENV, WorkerProcess

HANDLERS = f"{FAST_WORKER_ENV['TASKS_IMPORTS']},tests.security.database_error_handlers"


@pytest.fixture(scope="module")
def data_worker(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    """A worker that also knows the actions and flows PostgreSQL refuses."""
    return start_worker("--concurrency", "1", env={"TASKS_IMPORTS": HANDLERS})


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT CAST(:v AS jsonb)", DatabaseFailure.DATA),  # \u0000 in jsonb text
        ("SELECT CAST('1e400' AS float8)", DatabaseFailure.DATA),  # out of range
        ("SELECT array_fill(0, ARRAY[200000000])", DatabaseFailure.DATA),  # 54000, a size limit
        ("SET LOCAL statement_timeout = 1; SELECT pg_sleep(1)", DatabaseFailure.OUTAGE),
        ("SELECT * FROM no_such_table", DatabaseFailure.OTHER),
    ],
)
def test_errors_of_the_real_server_are_classified(
    e2e_engine: Engine, sql: str, expected: DatabaseFailure
) -> None:
    with pytest.raises(DBAPIError) as raised, e2e_engine.begin() as conn:
        for statement in sql.split("; "):
            conn.execute(text(statement), {"v": '{"a": "\\u0000"}'} if ":v" in statement else {})
    assert classify(raised.value) is expected


def test_an_output_postgres_refuses_fails_the_task_at_once_without_a_retry(
    client: OrgClient, data_worker: WorkerProcess
) -> None:
    started = time.monotonic()
    task = client.create(kind="CallAction", targetId="test/nul-output", maxAttempts=3)
    final = wait_for_status(client, task["id"], timeout=30)
    seconds = time.monotonic() - started
    code = final["errors"][0]["code"] if final["errors"] else None
    report(
        f"data error: attempts={final['attempt']} status={final['status']} code={code} "
        f"seconds_to_fail={seconds:.1f}"
    )
    assert final["status"] == "failed" and code == "output_rejected", final
    assert "Unicode" in final["errors"][0]["message"] and final["output"] is None
    assert final["attempt"] == 1
    events = client.get(f"/v1/tasks/{task['id']}/events").json()
    items = events["items"] if isinstance(events, dict) else events
    assert [e.get("toStatus") for e in items].count("running") == 1, items


def test_a_registered_flow_whose_steps_postgres_refuses_fails_at_once(
    client: OrgClient, data_worker: WorkerProcess
) -> None:
    flow = client.create(kind="Flow", targetId="test/nul-steps")
    final = wait_for_status(client, flow["id"], timeout=30)
    assert final["status"] == "failed" and final["attempt"] == 1, final
    assert final["errors"][0]["code"] == "invalid_flow"
    assert "refused the Flow's steps" in final["errors"][0]["message"]

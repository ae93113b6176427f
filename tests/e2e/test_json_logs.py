"""LOG_FORMAT=json on a real worker: every line of its output is one JSON
object, and the records of a run name its task, kind, attempt and worker."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.support.api import OrgClient, wait_for_status
from tests.support.workers import WorkerProcess


def test_a_json_worker_log_parses_line_by_line_and_names_the_run(
    client: OrgClient, start_worker: Callable[..., WorkerProcess]
) -> None:
    pool = "json-logs"
    worker = start_worker("--executor", pool, "--concurrency", "1", env={"LOG_FORMAT": "json"})
    task = client.create(kind="CallAction", targetId="test/raise", executorId=pool)
    assert wait_for_status(client, task["id"])["status"] == "failed"
    lines = [line for line in worker.log().splitlines() if line.strip()]
    records = []
    for line in lines:  # every line must be a JSON object
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"a line of the log is not JSON: {line!r}") from None
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    raised = [r for r in records if "its handler raised" in r["message"]]
    assert len(raised) == 1, raised
    (record,) = raised
    assert record["task_id"] == task["id"] and record["kind"] == "CallAction"
    assert record["attempt"] == 1 and record["worker"].endswith(
        f":{record['worker'].rsplit(':', 1)[1]}"
    )
    assert record["organization_id"] == client.organization_id
    assert "ValueError: bad value in input" in record["exception"]

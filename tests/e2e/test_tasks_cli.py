"""``tasks-core tasks`` as a user runs it: a real process against a real
``tasks-core api`` and worker, its output parsed and its exit codes read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.bench.processes import ApiServer


@pytest.fixture(scope="module")
def dev_folder(key: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder like the one `tasks-core dev` runs in: its key in .tasks/api-key."""
    folder = tmp_path_factory.mktemp("dev")
    (folder / ".tasks").mkdir()
    (folder / ".tasks" / "api-key").write_text(key + "\n")
    return folder


def tasks(folder: Path, api: ApiServer, *args: str) -> subprocess.CompletedProcess[str]:
    """``tasks-core tasks ARGS`` in ``folder``, with TASKS_URL pointing at ``api``."""
    env = {**os.environ, "TASKS_URL": api.url}
    env.pop("TASKS_API_KEY", None)
    command = [sys.executable, "-m", "tasks_core.cli", "tasks", *args]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=90)


def flow(*steps: dict[str, Any]) -> str:
    return json.dumps({"steps": list(steps)})


def test_create_with_wait_prints_the_ended_task(dev_folder: Path, api: ApiServer) -> None:
    done = tasks(
        dev_folder, api, "create", "--kind", "CallAction", "--target-id", "builtin/echo",
        "--input", '{"hello": "cli"}', "--wait",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    task = json.loads(done.stdout)
    assert task["status"] == "completed" and task["output"] == {"hello": "cli"}


def test_input_from_a_file_and_a_failed_wait_exits_1(dev_folder: Path, api: ApiServer) -> None:
    (dev_folder / "fail.json").write_text('{"code": "nope", "message": "no"}')
    done = tasks(
        dev_folder, api, "create", "--kind", "CallAction", "--target-id", "builtin/fail",
        "--input", "@fail.json", "--wait",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["errors"][0]["code"] == "nope"


def test_watch_a_completing_flow_exits_0_with_its_steps_done(
    dev_folder: Path, api: ApiServer
) -> None:
    steps = flow(
        {"id": "a", "kind": "CallAction", "targetId": "builtin/sleep", "input": {"seconds": 2}},
        {"id": "b", "kind": "CallAction", "targetId": "builtin/echo", "after": ["a"]},
    )
    made = tasks(dev_folder, api, "create", "--kind", "Flow", "--params", steps)
    assert made.returncode == 0, made.stderr
    watched = tasks(dev_folder, api, "watch", json.loads(made.stdout)["id"])
    assert watched.returncode == 0, watched.stderr
    lines = watched.stdout.splitlines()
    assert "2/2 done, 0 running, 0 failed" in lines[-1] and "completed" in lines[-1]
    assert len(lines) >= 2  # it showed progress before the end


def test_watch_a_failing_flow_exits_1(dev_folder: Path, api: ApiServer) -> None:
    steps = flow(
        {"id": "ok", "kind": "CallAction", "targetId": "builtin/echo"},
        {"id": "bad", "kind": "CallAction", "targetId": "builtin/fail", "input": {"code": "x"}},
    )
    made = tasks(dev_folder, api, "create", "--kind", "Flow", "--params", steps, "--json")
    watched = tasks(dev_folder, api, "watch", json.loads(made.stdout)["id"], "--json")
    assert watched.returncode == 1, watched.stderr
    last = json.loads(watched.stdout.splitlines()[-1])
    assert last["status"] == "failed" and "1 failed" in last["progress"]


def test_list_events_get_and_cancel(dev_folder: Path, api: ApiServer) -> None:
    app = f"app-{uuid.uuid4().hex[:8]}"
    slow = json.loads(
        tasks(
            dev_folder, api, "create", "--kind", "CallAction", "--target-id", "builtin/sleep",
            "--input", '{"seconds": 30}',
        ).stdout
    )  # fmt: skip
    cancelled = tasks(dev_folder, api, "cancel", slow["id"])
    assert json.loads(cancelled.stdout)["status"] == "cancelled"
    assert tasks(dev_folder, api, "watch", slow["id"]).returncode == 2

    rows = json.loads(tasks(dev_folder, api, "list", "--json", "--limit", "3").stdout)
    assert len(rows) == 3 and rows[0]["id"] == slow["id"]  # newest first
    table = tasks(dev_folder, api, "list", "--kind", "CallAction", "--status", "cancelled").stdout
    assert table.splitlines()[0].split() == ["ID", "KIND", "STATUS", "CREATED", "ENDED", "TITLE"]
    assert slow["id"] in table
    assert "(no tasks)" in tasks(dev_folder, api, "list", "--app-id", app).stdout

    timeline = json.loads(tasks(dev_folder, api, "events", slow["id"], "--json").stdout)
    assert "cancelled" in [e["toStatus"] for e in timeline]
    readable = tasks(dev_folder, api, "events", slow["id"]).stdout
    assert "-> cancelled" in readable
    assert json.loads(tasks(dev_folder, api, "get", slow["id"]).stdout)["id"] == slow["id"]


def test_errors_are_said_plainly(dev_folder: Path, api: ApiServer, tmp_path: Path) -> None:
    missing = tasks(dev_folder, api, "get", str(uuid.uuid4()))
    assert missing.returncode == 3 and "404 not_found" in missing.stderr
    no_key = tasks(tmp_path, api, "list")
    assert no_key.returncode == 2 and "no API key" in no_key.stderr
    bad_json = tasks(dev_folder, api, "create", "--kind", "default", "--input", "{oops")
    assert bad_json.returncode == 2 and "not JSON" in bad_json.stderr

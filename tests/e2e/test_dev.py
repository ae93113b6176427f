"""`tasks-core dev`: one command starts everything; the reference's curl runs a task."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tasks_core.devservers import free_port
from tests.support.wait import wait_until


@pytest.fixture
def dev_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tasks-core-dev-"))
    path.chmod(0o755)  # the PostgreSQL system user must traverse it
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _curl(method: str, url: str, key: str, body: str | None = None) -> dict[str, Any]:
    """The reference's call, with curl when the machine has it."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    if shutil.which("curl"):
        command = ["curl", "-sS", "-X", method, url]
        for name, value in headers.items():
            command += ["-H", f"{name}: {value}"]
        if body is not None:
            command += ["-d", body]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        result: dict[str, Any] = json.loads(out)
        return result
    response = httpx.request(method, url, headers=headers, content=body)
    return dict(response.json())


def test_dev_starts_everything_runs_the_reference_curl_and_stops_on_ctrl_c(
    dev_dir: Path,
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    log_path = dev_dir / "dev.log"
    with log_path.open("wb") as log:
        dev = subprocess.Popen(
            [sys.executable, "-m", "tasks_core.cli", "dev", "--data-dir", str(dev_dir / "data"),
             "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: " ready." in log_path.read_text() and _up(base),
            timeout=60,
            message=f"dev did not come up:\n{log_path.read_text()}",
        )
        key = (dev_dir / "data" / "api-key").read_text().strip()
        assert key in log_path.read_text()  # printed for the user too

        created = _curl("POST", f"{base}/v1/tasks", key, '{ "kind": "default" }')
        done = wait_until(
            lambda: _done(_curl("GET", f"{base}/v1/tasks/{created['id']}", key)),
            timeout=10,
            message="the task did not complete",
        )
        assert done["status"] == "completed"
        assert done["startedAt"] and done["endedAt"]

        # It says where the docs and the metrics are, and they answer.
        printed = log_path.read_text()
        assert f"docs at {base}/docs" in printed
        urls = re.findall(r"metrics at (http://\S+/metrics)", printed)
        (api_metrics,) = [u for u in urls if u.startswith(base)]
        (worker_metrics,) = [u for u in urls if not u.startswith(base)]
        assert 'tasks_created_total{kind="default"} 1.0' in httpx.get(api_metrics).text
        finished = 'tasks_finished_total{kind="default",status="completed"} 1.0'
        wait_until(
            lambda: finished in httpx.get(worker_metrics).text,
            timeout=10,
            message="the worker's metrics do not show the task",
        )
        # The queues view, and the dashboard's link with the dev key in it.
        assert f"queues at {base}/v1/queues" in printed
        queues = _curl("GET", f"{base}/v1/queues", key)
        assert "tasks.default" in [q["name"] for q in queues["items"]]
        dashboard = _line_value(printed, "Dashboard:")
        assert dashboard == f"{base}/ui/#key={key}"
        assert "app.js" in httpx.get(dashboard.split("#")[0]).text

        redis_url = _line_value(log_path.read_text(), "Redis:")
        dev.send_signal(signal.SIGINT)
        assert dev.wait(60) == 0, log_path.read_text()
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
    assert not _up(base)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(redis_url, socket_connect_timeout=1).ping()
    assert not (dev_dir / "data" / "pg" / "postmaster.pid").exists()
    assert (
        "worker"
        not in subprocess.run(
            ["ps", "-o", "args=", "--sid", str(dev.pid)], capture_output=True, text=True
        ).stdout
    )


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _done(task: dict[str, Any]) -> dict[str, Any] | None:
    return task if task["status"] in ("completed", "failed", "cancelled") else None


def _line_value(text: str, label: str) -> str:
    line = next(line for line in text.splitlines() if line.startswith(label))
    return line.split()[1]

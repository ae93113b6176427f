"""The processes a benchmark starts and measures: workers, API servers.

Each runs in a session of its own, so that ``kill()`` ends it with every child
(a pool's processes, uvicorn's workers); the benchmark kills them all in a
``finally``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from tasks_core.devservers import free_port
from tests.support.wait import wait_until
from tests.support.workers import REPO_ROOT, TASKS_CORE_WORKER

PYTHON = sys.executable


def rss_kib(pids: Sequence[int]) -> int:
    """Resident memory of these processes together, from /proc (KiB)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Sequence[int]) -> float:
    """CPU time (user + system) these processes have used, from /proc."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            raw = Path(f"/proc/{pid}/stat").read_text()
            fields = raw[raw.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICKS


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    found, todo = [pid], [pid]
    while todo:
        parent = todo.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{parent}/task").iterdir():
                children = (task / "children").read_text().split()
                found += [int(c) for c in children]
                todo += [int(c) for c in children]
    return found


class Service:
    """A long-running child process with a log file and a readiness check."""

    def __init__(self, command: Sequence[str], env: dict[str, str]) -> None:
        self.command = list(command)
        self.env = {**os.environ, **env}
        self.log_path = Path(tempfile.mkstemp(prefix="bench-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready: Callable[[], bool] = lambda: True, timeout: float = 60.0) -> Service:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, env=self.env, cwd=REPO_ROOT, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        process = self.process

        def up() -> bool:
            assert process.poll() is None, f"{self.command} exited:\n{self.log()}"
            return ready()

        try:
            wait_until(up, timeout=timeout, interval=0.1, message=f"{self.command} not ready")
        except BaseException:
            self.kill()
            raise
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pids(self) -> list[int]:
        return descendants(self.process.pid) if self.process else []

    def main_pids(self) -> list[int]:
        """The process started (a worker's Celery consumer), without those below it."""
        return [self.process.pid] if self.process else []

    def kill(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            self.process = None
        self.log_path.unlink(missing_ok=True)


class ApiServer(Service):
    """``tasks-core api`` (uvicorn) on ``port``, or a free one."""

    def __init__(self, env: dict[str, str], workers: int = 1, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workers = workers
        self.url = f"http://127.0.0.1:{self.port}"
        command = [PYTHON, "-m", "tasks_core.cli", "api", "--port", str(self.port)]
        super().__init__([*command, "--workers", str(workers)], env)

    def start_serving(self) -> ApiServer:
        self.start(self._healthy)
        return self

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


def tasks_core_worker(
    env: dict[str, str], concurrency: int, pool: str = "prefork", executor: str | None = None
) -> Service:
    """A real ``tasks-core worker`` (kinds default and Flow, of ``executor``'s queues if
    given) with the no-op action, at the production defaults and WARNING logs."""
    command = [*TASKS_CORE_WORKER, "--concurrency", str(concurrency), "--pool", pool]
    command += ["--kind", "default", "--kind", "Flow"]
    command += ["--executor", executor] if executor else []
    settings = {"TASKS_IMPORTS": "tests.bench.noop", "LOG_LEVEL": "WARNING"}
    return Service(command, {**env, **settings})


def sweeper(env: dict[str, str]) -> Service:
    """A real ``tasks-core sweeper``, as a deployment runs one (every 5 s: lost
    publishes, expired leases, and the tables' planner statistics as they fill)."""
    return Service([PYTHON, "-m", "tasks_core.cli", "sweeper"], {**env, "LOG_LEVEL": "WARNING"})


def raw_celery_worker(
    redis_url: str,
    concurrency: int,
    loglevel: str = "WARNING",
    pool: str = "prefork",
    queue: str | None = None,
    app: str = "tests.bench.raw_celery",
    env: dict[str, str] | None = None,
) -> Service:
    """A bare Celery worker (prefork, or ``pool``) for ``tests.bench.raw_celery``
    (or ``app``, a module holding its app; ``env``: more of its environment)."""
    from tests.bench.raw_celery import QUEUE

    command = [PYTHON, "-m", "celery", "-A", app, "worker"]
    command += ["-Q", queue or QUEUE]
    command += ["-c", str(concurrency), "--pool", pool, "--loglevel", loglevel]
    return Service(command, {"REDIS_URL": redis_url, **(env or {})})

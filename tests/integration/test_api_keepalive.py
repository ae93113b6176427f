"""Keep-alive at full speed with several API processes: a real
``tasks-core api --workers 2`` sets TCP_NODELAY on every connection it
accepts, so no answer waits for the client's delayed ACK (uvicorn #3149).

The option is read from the serving process's own accepted socket (a
duplicate of its descriptor, through pidfd_getfd), not inferred from times;
the times are printed as a figure.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tasks_core.devservers import free_port
from tests.support.figures import report
from tests.support.wait import wait_until

REQUESTS = 50
# Linux syscall numbers, the same on every architecture (new-style table).
SYS_PIDFD_OPEN = 434
SYS_PIDFD_GETFD = 438

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc and uses pidfd")


@pytest.fixture
def api(database_url: str, redis_url: str) -> Iterator[tuple[int, str]]:
    """A real two-process ``tasks-core api``: (supervisor pid, base URL)."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url}
    process = subprocess.Popen(
        [sys.executable, "-m", "tasks_core.cli", "api", "--workers", "2", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(base), timeout=30, message="tasks-core api did not start")
        yield process.pid, base
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *_descendants(int(child))]
    return found


def _socket_inode(local: tuple[str, int], remote: tuple[str, int]) -> str:
    """The inode of the IPv4 TCP socket from ``local`` to ``remote`` (/proc/net/tcp)."""

    def hexed(address: tuple[str, int]) -> str:
        packed = socket.inet_aton(address[0])[::-1].hex().upper()
        return f"{packed}:{address[1]:04X}"

    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == hexed(local) and fields[2] == hexed(remote):
            return fields[9]
    raise AssertionError(f"no socket {local} -> {remote} in /proc/net/tcp")


def _server_nodelay(supervisor: int, server: tuple[str, int], client: tuple[str, int]) -> int:
    """TCP_NODELAY of the socket an API process accepted from ``client``."""
    inode = _socket_inode(server, client)
    libc = ctypes.CDLL(None, use_errno=True)
    for pid in _descendants(supervisor):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target != f"socket:[{inode}]":
                continue
            pidfd = libc.syscall(SYS_PIDFD_OPEN, pid, 0)
            if pidfd < 0 and ctypes.get_errno() == errno.ENOSYS:
                pytest.skip("the kernel has no pidfd (Linux 5.6+)")
            assert pidfd >= 0, os.strerror(ctypes.get_errno())
            try:
                mine = libc.syscall(SYS_PIDFD_GETFD, pidfd, int(fd), 0)
                assert mine >= 0, os.strerror(ctypes.get_errno())
            finally:
                os.close(pidfd)
            with socket.socket(fileno=mine) as dup:
                return dup.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    raise AssertionError(f"no API process holds the socket accepted from {client}")


def test_keep_alive_connections_of_a_multiprocess_api_get_tcp_nodelay(
    api: tuple[int, str],
) -> None:
    supervisor, base = api
    times: list[float] = []
    with httpx.Client(base_url=base) as client:
        for _ in range(REQUESTS):
            started = time.perf_counter()
            response = client.get("/healthz")
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
        stream = response.extensions["network_stream"]
        sock: socket.socket = stream.get_extra_info("socket")
        local, server = sock.getsockname(), sock.getpeername()
        nodelay = _server_nodelay(supervisor, server, local)
    # One connection served all of them: the figure is about keep-alive.
    report(
        f"keep-alive: workers=2 requests={REQUESTS} "
        f"p50_ms={statistics.median(times[1:]):.2f} "
        f"over_30ms={sum(t > 30 for t in times[1:])} server_tcp_nodelay={nodelay}"
    )
    assert nodelay == 1

"""Cutting a test's stack off from PostgreSQL: stopped (connections refused at
once) or frozen (every process stopped, as across a network cut that drops
packets: a query in flight neither answers nor fails)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from tests.support.stack import Stack


def postgres_processes(system: Stack) -> list[int]:
    """The postmaster and its children (every backend and helper)."""
    pid = system.postgres.pid
    assert pid is not None
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [pid, *(int(p) for p in out.stdout.split())]


@contextmanager
def postgres_stopped(system: Stack) -> Iterator[None]:
    """PostgreSQL down: connections are refused at once."""
    system.postgres.stop()
    try:
        yield
    finally:
        system.postgres.start()


@contextmanager
def postgres_frozen(system: Stack) -> Iterator[None]:
    """PostgreSQL unreachable as across a network cut: every process of it
    stopped (SIGSTOP), so a query in flight neither answers nor fails."""
    frozen = postgres_processes(system)
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in frozen:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

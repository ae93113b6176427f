"""One directory of metric files for every process of a command.

prometheus_client chooses, when it is imported, whether values live in this
process's memory or in files under ``PROMETHEUS_MULTIPROC_DIR`` that a
scrape of any process sums. So a command whose work spreads over processes
(``tasks-core api --workers N``, ``tasks-core worker`` with its prefork pool)
calls :func:`share_between_processes` first, before ``tasks_core.metrics``
is imported; the processes it starts inherit the directory.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def share_between_processes(role: str) -> None:
    """Count in files under a fresh directory (no value of an earlier run is
    read), removed when this process exits; or under the operator's
    ``PROMETHEUS_MULTIPROC_DIR`` when set (which they wipe between runs)."""
    if "tasks_core.metrics" in sys.modules and not os.environ.get(MULTIPROC_ENV):
        raise RuntimeError("share_between_processes must run before tasks_core.metrics is imported")
    if os.environ.get(MULTIPROC_ENV):
        os.makedirs(os.environ[MULTIPROC_ENV], exist_ok=True)
        return
    path = tempfile.mkdtemp(prefix=f"tasks-core-{role}-metrics-")
    os.environ[MULTIPROC_ENV] = path
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:  # not a forked child's exit
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)


def process_ended(pid: int) -> None:
    """A process of the command ended: its `livesum` gauges (runs under way)
    no longer count."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]

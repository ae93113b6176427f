"""A benchmark ended by SIGTERM (``timeout``, a cancelled CI job, ``kill``)
stops everything it started, as Ctrl-C does: its PostgreSQL and Redis, its
worker and API processes, and removes its data directory. Real processes
throughout: ``open_bench`` as every comparison starts them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tasks_core.devservers.processes import _alive  # running, and not a zombie
from tests.support.wait import wait_until

REPO = Path(__file__).resolve().parents[2]

# Starts the comparison's servers and processes, says what it started, and
# waits for a signal as a long benchmark would be running.
DRIVER = """
import json, os, signal
from tests.bench.measure import open_bench
with open_bench(api_workers=(1,), procrastinate=False) as bench:
    started = [pid for pids in bench.server_pids.values() for pid in pids()]
    started += [pid for service in [*bench.workers.values(), *bench.api.values()]
                for pid in service.pids()]
    cmdline = open(f"/proc/{bench.server_pids['PostgreSQL']()[0]}/cmdline").read().split("\\0")
    data = os.path.dirname(cmdline[cmdline.index("-D") + 1])
    print(json.dumps({"pids": started, "data": data}), flush=True)
    signal.pause()
"""


def test_a_benchmark_ended_by_sigterm_stops_what_it_started() -> None:
    bench = subprocess.Popen(
        [sys.executable, "-c", DRIVER],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    pids: list[int] = []
    try:
        assert bench.stdout is not None
        started = json.loads(bench.stdout.readline())  # the test's timeout bounds it
        pids, data = started["pids"], Path(started["data"])
        assert len(pids) >= 8, pids  # PostgreSQL's, Redis, 2 worker groups, an API process
        assert all(_alive(pid) for pid in pids) and data.is_dir()

        bench.send_signal(signal.SIGTERM)
        assert bench.wait(timeout=60) == 128 + signal.SIGTERM

        left = wait_until(
            lambda: not [pid for pid in pids if _alive(pid)] and not data.exists(),
            timeout=30,
            message="a process or the data directory outlived the benchmark",
        )
        assert left
    finally:
        for pid in [bench.pid, *pids]:  # nothing outlives a failed run of this test
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

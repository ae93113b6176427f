"""procrastinate (jobs in PostgreSQL) with the same no-op task, for the
comparison; only used when the ``procrastinate`` package is installed.

    PROCRASTINATE_DSN=postgresql://... python -m procrastinate \
        --app tests.bench.procrastinate_app.app worker --queues bench
"""

from __future__ import annotations

import os

import procrastinate

from tests.bench.starts import record_start

QUEUE = "bench"

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=os.environ.get("PROCRASTINATE_DSN", ""))
)


@app.task(name="bench.noop", queue=QUEUE)
def noop(task_id: str) -> None:
    record_start(task_id)

"""A bare Celery app with a no-op task: the baseline the service is measured against.

Same broker, same late-ack settings; the task only records its start in Redis
(``tests.bench.starts``).
"""

from __future__ import annotations

import os

from celery import Celery

from tests.bench.starts import record_start

QUEUE = "raw"
THREADS_QUEUE = "raw-threads"  # served by the thread-pool workers

app = Celery("raw_celery", broker=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
)


@app.task(name="raw.noop")
def noop(task_id: str) -> None:
    record_start(task_id)

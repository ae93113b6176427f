"""Prometheus metrics of every service process, summed across processes.

An API served by several uvicorn processes, and a worker's prefork children,
each count in their own process. prometheus_client's multiprocess mode keeps
every process's values in files under one directory, and a scrape of any
process reads them all; ``tasks_core.metrics_processes`` makes that
directory before this module is imported. A process that counts alone
(tests, ``tasks-core dev``'s in-process parts) needs nothing.

Labels are only queue, kind, status, route and action: never a task or an
organization id. Kinds and queues are named by tenants, so each process
names at most ``MAX_LABEL_VALUES`` of each and counts the rest as ``other``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import REGISTRY, Collector

from tasks_core.metrics_processes import MULTIPROC_ENV

# No `_created` timestamp series beside each counter: half the lines, no use here.
disable_created_metrics()  # type: ignore[no-untyped-call]

MAX_LABEL_VALUES = 200
OTHER = "other"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seconds: a no-op run takes under a millisecond, a long one hours.
RUN_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300, 1800, 7200)
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)

HTTP_REQUESTS = Counter(
    "http_requests", "HTTP requests answered, by route template", ["method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds", "Time to answer a request", ["route"], buckets=REQUEST_BUCKETS
)
TASKS_CREATED = Counter("tasks_created", "Tasks created", ["kind"])
TASKS_FINISHED = Counter(
    "tasks_finished",
    "Runs a worker ended: completed, failed, or handed back (queued)",
    ["kind", "status"],
)
TASK_RUN = Histogram("task_run_seconds", "Time a handler ran", ["kind"], buckets=RUN_BUCKETS)
TASK_QUEUE_WAIT = Histogram(
    "task_queue_wait_seconds",
    "Time from a task's creation to the start of its run",
    ["kind"],
    buckets=RUN_BUCKETS,
)
TASKS_RUNNING = Gauge(
    "tasks_running", "Runs under way in the worker", ["kind"], multiprocess_mode="livesum"
)
SWEEPER_ACTIONS = Counter(
    "tasks_sweeper_actions", "Tasks the sweeper acted on, by recovery", ["action"]
)


class _Bounded:
    """The label values a process names: the first MAX_LABEL_VALUES it saw."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) >= MAX_LABEL_VALUES:
                return OTHER
            self._seen.add(value)
        return value


kind_label = _Bounded()
queue_label = _Bounded()


def registry(*extra: Collector) -> CollectorRegistry:
    """What a scrape reads: every process's values (or this process's, when
    it counts alone), and ``extra`` collectors read at scrape time."""
    scraped = CollectorRegistry()
    if os.environ.get(MULTIPROC_ENV):
        scraped.register(_AllProcesses(os.environ[MULTIPROC_ENV]))
    else:
        scraped.register(_ProcessValues())
    for collector in extra:
        scraped.register(collector)
    return scraped


class _ProcessValues(Collector):
    """This process's own metrics (the default registry's)."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


class _AllProcesses(Collector):
    """Every process's values from the shared directory. A process that
    ended without saying so (killed, or ended by a hard stop) is found by
    its pid, so that its runs under way stop counting in ``tasks_running``."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._files = multiprocess.MultiProcessCollector(None, path)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        for name in os.listdir(self._path):
            if name.startswith("gauge_live") and not _alive(_pid_of(name)):
                multiprocess.mark_process_dead(_pid_of(name), self._path)  # type: ignore[no-untyped-call]
        return self._files.collect()  # type: ignore[no-untyped-call,no-any-return]


def _pid_of(file_name: str) -> int:
    """The pid in a value file's name (``gauge_livesum_1234.db``)."""
    return int(file_name.rsplit("_", 1)[-1].split(".", 1)[0])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def exposition(scraped: CollectorRegistry) -> bytes:
    """The text format of a scrape."""
    return generate_latest(scraped)

"""``tasks-core worker``: start a Celery worker for a set of queues."""

from __future__ import annotations

import argparse
import logging
import uuid

from tasks_core.flow_definitions import FLOW_KIND
from tasks_core.queues import queue_name
from tasks_core.settings import get_settings
from worker.registry import import_modules, registry

log = logging.getLogger(__name__)


def queues_for(
    kinds: list[str], executors: list[str], *, known_kinds: list[str], prefix: str
) -> list[str]:
    """The queues of a pool: each executor (or none) times each kind (or every known one)."""
    chosen_kinds = kinds or known_kinds
    chosen_executors: list[str | None] = list(executors) or [None]
    return [queue_name(k, e, prefix) for e in chosen_executors for k in chosen_kinds]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tasks-core worker``."""
    parser.add_argument(
        "--executor", action="append", default=[], help="serve this executor's queues (repeatable)"
    )
    parser.add_argument(
        "--kind", action="append", default=[], help="serve this kind (repeatable; default: all)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=None, help="parallel runs (default: cores)"
    )
    parser.add_argument(
        "--pool",
        default="prefork",
        help="Celery pool: prefork (CPU-bound handlers), threads (I/O-bound handlers), "
        "solo (one run at a time in this process: short handlers, scaled by processes)",
    )
    parser.add_argument("--name", default=None, help="Celery node name (default: unique)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on this port (default: WORKER_METRICS_PORT; none)",
    )


def run_worker(args: argparse.Namespace) -> int:
    """Import the application's handlers, then serve the chosen queues until stopped."""
    settings = get_settings()
    port = args.metrics_port or settings.worker_metrics_port
    if port:
        _serve_metrics(port)
    from worker.celery_app import get_app

    app = get_app()
    import_modules(settings.tasks_imports)
    # Flow is built into the runner, beside the registered kinds.
    known = sorted({*registry.kinds(), FLOW_KIND})
    queues = queues_for(args.kind, args.executor, known_kinds=known, prefix=settings.queue_prefix)
    argv = ["worker", "-Q", ",".join(queues), "--pool", args.pool]
    argv += ["--loglevel", settings.log_level.upper()]

    argv += ["-n", args.name or f"tasks-{uuid.uuid4().hex[:8]}@%h"]
    if args.concurrency:
        argv += ["--concurrency", str(args.concurrency)]
    _register_node(queues, kinds=known, concurrency=args.concurrency)
    log.info("serving queues: %s", ", ".join(queues))
    if port:
        log.info("metrics: http://0.0.0.0:%s/metrics", port)
    # JSON logs: no banner (Celery's global --quiet), so that every line of
    # the output is a JSON record.
    quiet = ["--quiet"] if settings.log_format == "json" else []
    app.start([*quiet, *argv])
    return 0


def _serve_metrics(port: int) -> None:
    """/metrics of this worker and its pool's processes, from this process.
    Set up before anything counts, so that the pool's children count in the
    files this process reads."""
    from tasks_core.metrics_processes import share_between_processes

    share_between_processes("worker")
    from prometheus_client import start_http_server

    from tasks_core.metrics import registry

    start_http_server(port, registry=registry())


def _register_node(queues: list[str], *, kinds: list[str], concurrency: int | None) -> None:
    """Once the worker is ready, its main process heartbeats to the worker
    registry (``worker.heartbeat``) until it shuts down."""
    import os
    from datetime import UTC, datetime
    from importlib.metadata import version

    from celery.signals import worker_ready, worker_shutdown
    from celery.worker import state

    from tasks_core.storage.workers import Heartbeat
    from worker.celery_app import process_store
    from worker.heartbeat import Heartbeats

    started: list[Heartbeats] = []

    def ready(sender: object, **_: object) -> None:
        heartbeat = Heartbeat(
            name=str(getattr(sender, "hostname", "") or "unknown"),
            queues=queues,
            kinds=kinds,
            actions=sorted(registry.actions),
            concurrency=concurrency or os.cpu_count() or 1,
            running=0,
            version=version("tasks-core"),
            started_at=datetime.now(UTC),
        )
        # Messages in hand (a run set counts once).
        started.append(
            Heartbeats(
                process_store(), heartbeat, running=lambda: len(state.active_requests)
            ).start()
        )

    def shutdown(**_: object) -> None:
        for heartbeats in started:
            heartbeats.stop()

    worker_ready.connect(ready, weak=False, dispatch_uid="tasks-core-heartbeat")
    worker_shutdown.connect(shutdown, weak=False, dispatch_uid="tasks-core-heartbeat-stop")

"""The API's Prometheus metrics: ``GET /metrics``, its requests, its queues.

``/metrics`` is outside ``/v1`` and its API keys: it is for the operator's
scraper. ``METRICS_ENABLED=false`` turns it off (404); with ``METRICS_TOKEN``
it needs ``Authorization: Bearer <token>``. The queue gauges are read at
scrape time: how long tasks wait from PostgreSQL (one statement on an
index), the live workers of each queue from the worker registry, each
queue's list length from Redis (one pipeline).
A scrape that can not reach them answers the other metrics without them.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections import Counter
from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tasks_core.api.auth import StoreDep
from tasks_core.api.errors import error_response
from tasks_core.metrics import (
    CONTENT_TYPE,
    HTTP_DURATION,
    HTTP_REQUESTS,
    exposition,
    queue_label,
    registry,
)
from tasks_core.queues import queue_name
from tasks_core.storage.queues import waiting_by_queue
from tasks_core.storage.workers import nodes
from tasks_core.store import Store

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

UNMATCHED = "unmatched"  # the route label of a request no route took (a 404)


@router.get("/metrics")
def metrics(*, request: Request, store: StoreDep) -> Response:
    settings = store.settings
    if not settings.metrics_enabled:
        return error_response(404, "not_found", "metrics are turned off (METRICS_ENABLED=false)")
    if settings.metrics_token and not _bearer_is(request, settings.metrics_token):
        return _unauthorized()
    body = exposition(registry(QueueGauges(store)))
    return Response(body, media_type=CONTENT_TYPE)


def _bearer_is(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())


def _unauthorized() -> JSONResponse:
    return error_response(
        401,
        "unauthorized",
        "GET /metrics needs `Authorization: Bearer <METRICS_TOKEN>`",
        **{"WWW-Authenticate": "Bearer"},
    )


class QueueGauges(Collector):
    """``tasks_queue_depth`` and ``tasks_queue_oldest_waiting_seconds`` of the
    queues whose tasks have waited longest (at most METRICS_MAX_QUEUES), and
    ``tasks_workers``: the live nodes of each of those and of every queue a
    live node serves."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "tasks_queue_depth", "Messages on the queue's Redis list", labels=["queue"]
        )
        oldest = GaugeMetricFamily(
            "tasks_queue_oldest_waiting_seconds",
            "Age of the oldest task waiting (created or queued) on the queue",
            labels=["queue"],
        )
        workers = GaugeMetricFamily(
            "tasks_workers", "Live worker nodes consuming the queue", labels=["queue"]
        )
        settings = self._store.settings
        try:
            with self._store.statement() as conn:
                waiting = waiting_by_queue(conn, limit=settings.metrics_max_queues)
                found = nodes(conn, heartbeat_seconds=settings.worker_heartbeat_seconds)
            names = [queue_name(w.kind, w.executor_id, settings.queue_prefix) for w in waiting]
            lengths = self._store.publisher.depths(names)
        except Exception:  # a scrape still answers the other metrics
            log.warning("queue metrics unavailable", exc_info=True)
            return
        for name, w in zip(names, waiting, strict=True):
            label = queue_label(name)
            depth.add_metric([label], lengths.get(name, 0))
            oldest.add_metric([label], w.oldest_seconds)
        served = Counter(q for node in found if node.alive for q in node.queues)
        for name in sorted({*names, *served})[: settings.metrics_max_queues]:
            workers.add_metric([queue_label(name)], served.get(name, 0))
        yield depth
        yield oldest
        yield workers


class RequestMetrics:
    """ASGI middleware: ``http_requests_total`` and
    ``http_request_duration_seconds`` by route template (``/v1/tasks/{taskId}``,
    never the path itself: ids would make a series each)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", UNMATCHED)
            HTTP_REQUESTS.labels(scope["method"], route, str(status[0])).inc()
            HTTP_DURATION.labels(route).observe(time.perf_counter() - started)

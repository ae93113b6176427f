"""What serves which queue: the worker registry and the queues, as a caller sees them.

A caller sees the queues its tasks may use: those without an executorId and
those of the executors its organization may send to. Workers are listed
with those of their queues; a worker serving none of them is not listed.
``waiting`` and ``running`` count the caller's own tasks; ``depth`` (the
Redis list) and ``workers`` (live nodes consuming it) are the queue's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tasks_core.errors import Unavailable
from tasks_core.queues import parse_queue, queue_name
from tasks_core.records import Caller
from tasks_core.storage.queues import open_by_queue
from tasks_core.storage.workers import Node, nodes
from tasks_core.store import Store

# Most queues one answer lists (a caller's own, then those of live workers).
MAX_QUEUES = 1000


@dataclass(frozen=True, slots=True)
class QueueView:
    name: str
    kind: str
    executor_id: str | None
    waiting: int
    running: int
    oldest_waiting_seconds: float | None
    depth: int
    workers: int


def _usable(executor_id: str | None, caller: Caller) -> bool:
    return executor_id is None or caller.executors is None or executor_id in caller.executors


def list_workers(store: Store, caller: Caller) -> list[Node]:
    """The nodes heard from in the last hour that serve a queue the caller
    may use, each with those queues only."""
    prefix = store.settings.queue_prefix
    with store.statement() as conn:
        found = nodes(conn, heartbeat_seconds=store.settings.worker_heartbeat_seconds)
    shown = []
    for node in found:
        queues = [q for q in node.queues if _usable_queue(q, prefix, caller)]
        if queues:
            shown.append(replace(node, queues=queues))
    return shown


def _usable_queue(name: str, prefix: str, caller: Caller) -> bool:
    parsed = parse_queue(name, prefix)
    return parsed is not None and _usable(parsed[1], caller)


def list_queues(store: Store, caller: Caller) -> list[QueueView]:
    """Every queue the caller's unfinished tasks use, and every queue a live
    worker serves that the caller may use."""
    settings = store.settings
    prefix = settings.queue_prefix
    with store.statement() as conn:
        own = open_by_queue(conn, caller.organization_id, limit=MAX_QUEUES)
        found = nodes(conn, heartbeat_seconds=settings.worker_heartbeat_seconds)
    served: dict[str, int] = {}
    for node in found:
        for queue in node.queues if node.alive else ():
            served[queue] = served.get(queue, 0) + 1
    views: dict[str, QueueView] = {}
    for o in own:
        name = queue_name(o.kind, o.executor_id, prefix)
        views[name] = QueueView(
            name, o.kind, o.executor_id, o.waiting, o.running, o.oldest_seconds, 0, 0
        )
    for name in served:
        parsed = parse_queue(name, prefix)
        if name in views or parsed is None or not _usable(parsed[1], caller):
            continue
        if len(views) >= MAX_QUEUES:
            break
        views[name] = QueueView(name, parsed[0], parsed[1], 0, 0, None, 0, 0)
    try:
        depths = store.publisher.depths(list(views))
    except Exception as exc:
        raise Unavailable("Redis can not be reached: queue depths are unknown; retry") from exc
    return [
        replace(v, depth=depths.get(name, 0), workers=served.get(name, 0))
        for name, v in sorted(views.items())
    ]

"""The worker registry: one row per worker node, kept by its heartbeats."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, text


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What a node says of itself, every WORKER_HEARTBEAT_SECONDS."""

    name: str
    queues: Sequence[str]
    kinds: Sequence[str]
    actions: Sequence[str]
    concurrency: int
    running: int
    version: str
    started_at: datetime


@dataclass(frozen=True, slots=True)
class Node:
    """A node as the registry has it."""

    name: str
    queues: list[str]
    kinds: list[str]
    actions: list[str]
    concurrency: int
    running: int
    version: str
    started_at: datetime
    last_heartbeat_at: datetime
    alive: bool


_BEAT = text(
    "INSERT INTO worker_nodes (name, queues, kinds, actions, concurrency, running, version, "
    "started_at, last_heartbeat_at) VALUES (:name, :queues, :kinds, :actions, :concurrency, "
    ":running, :version, :started_at, now()) "
    "ON CONFLICT (name) DO UPDATE SET queues = excluded.queues, kinds = excluded.kinds, "
    "actions = excluded.actions, concurrency = excluded.concurrency, "
    "running = excluded.running, version = excluded.version, "
    "started_at = excluded.started_at, last_heartbeat_at = now()"
)

# Alive: a heartbeat within three intervals. Listed: within the last hour.
_NODES = text(
    "SELECT *, last_heartbeat_at > now() - make_interval(secs => :alive_within) AS alive "
    "FROM worker_nodes WHERE last_heartbeat_at > now() - interval '1 hour' ORDER BY name"
)

_HEARD = text(
    "SELECT DISTINCT unnest(queues) AS queue FROM worker_nodes "
    "WHERE last_heartbeat_at > now() - make_interval(secs => :within)"
)

_FORGET = text("DELETE FROM worker_nodes WHERE last_heartbeat_at <= now() - interval '1 hour'")


def beat(conn: Connection, heartbeat: Heartbeat) -> None:
    """One upsert: the node's row as it is now."""
    conn.execute(
        _BEAT,
        {
            "name": heartbeat.name,
            "queues": list(heartbeat.queues),
            "kinds": list(heartbeat.kinds),
            "actions": list(heartbeat.actions),
            "concurrency": heartbeat.concurrency,
            "running": heartbeat.running,
            "version": heartbeat.version,
            "started_at": heartbeat.started_at,
        },
    )


def nodes(conn: Connection, *, heartbeat_seconds: float) -> list[Node]:
    """Every node heard from in the last hour, alive or not."""
    rows = conn.execute(_NODES, {"alive_within": 3 * heartbeat_seconds})
    return [
        Node(
            name=r.name,
            queues=list(r.queues),
            kinds=list(r.kinds),
            actions=list(r.actions),
            concurrency=r.concurrency,
            running=r.running,
            version=r.version,
            started_at=r.started_at,
            last_heartbeat_at=r.last_heartbeat_at,
            alive=bool(r.alive),
        )
        for r in rows
    ]


def queues_heard_within(conn: Connection, seconds: float) -> set[str]:
    """The queues that some node heard from in the last ``seconds`` consumes."""
    return {r.queue for r in conn.execute(_HEARD, {"within": seconds})}


def forget_silent(conn: Connection) -> int:
    """Drop the nodes silent for an hour; how many."""
    return conn.execute(_FORGET).rowcount or 0

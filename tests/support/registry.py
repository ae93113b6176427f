"""Worker nodes written into the registry as their heartbeats would write them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import text

from tasks_core.storage.workers import Heartbeat, beat
from tasks_core.store import Store


def beat_node(store: Store, name: str, queues: Sequence[str], *, silent_for: float = 0) -> None:
    """Node ``name`` consuming ``queues``, last heard ``silent_for`` seconds ago."""
    with store.statement() as conn:
        beat(
            conn,
            Heartbeat(
                name=name,
                queues=queues,
                kinds=["default"],
                actions=["builtin/echo"],
                concurrency=4,
                running=1,
                version="test",
                started_at=datetime.now(UTC),
            ),
        )
        if silent_for:
            conn.execute(
                text(
                    "UPDATE worker_nodes SET last_heartbeat_at = now() - make_interval(secs => :s) "
                    "WHERE name = :n"
                ),
                {"s": silent_for, "n": name},
            )

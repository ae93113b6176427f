"""A worker node's heartbeats to the registry (``worker_nodes``).

The node's main process (Celery's consumer, not a pool child) writes its row
every ``WORKER_HEARTBEAT_SECONDS``: one upsert, committed without waiting
for the WAL flush (a lost heartbeat is only a late one). So 500 nodes at the
default 10 s cost 50 writes a second. A node is alive while its last
heartbeat is within three intervals; one that stops (killed, cut off) is
listed as not alive for an hour, then the sweeper drops it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace

from tasks_core.storage.workers import Heartbeat, beat
from tasks_core.store import Store

log = logging.getLogger(__name__)


class Heartbeats:
    """Beats ``heartbeat`` (its ``running`` read fresh each time) until stopped."""

    def __init__(self, store: Store, heartbeat: Heartbeat, *, running: Callable[[], int]) -> None:
        self._store = store
        self._heartbeat = heartbeat
        self._running = running
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)

    def start(self) -> Heartbeats:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def beat_once(self) -> None:
        now = replace(self._heartbeat, running=self._running())
        with self._store.relaxed_statement() as conn:
            beat(conn, now)

    def _loop(self) -> None:
        interval = self._store.settings.worker_heartbeat_seconds
        while True:
            try:
                self.beat_once()
            except Exception:  # the next beat tries again; the node is late, not gone
                log.warning("heartbeat of %s failed", self._heartbeat.name, exc_info=True)
            if self._stop.wait(interval):
                return

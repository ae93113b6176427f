"""``tasks-core sweeper``: the recovery loop (see ``tasks_core.services.sweep``)."""

from __future__ import annotations

import logging
import threading

from tasks_core.services.store import Store
from tasks_core.services.sweep import sweep_once

log = logging.getLogger(__name__)


def run_sweeper(store: Store, stop: threading.Event) -> None:
    """Sweep every ``SWEEP_INTERVAL_SECONDS`` until ``stop`` is set. A pass that
    fails (PostgreSQL down) is logged and tried again on the next tick."""
    interval = store.settings.sweep_interval_seconds
    log.info("sweeper started (every %ss)", interval)
    while not stop.is_set():
        try:
            sweep_once(store)
        except Exception:
            log.warning("sweep failed; trying again in %ss", interval, exc_info=True)
        stop.wait(interval)
    log.info("sweeper stopped")


def start_in_thread(store: Store) -> tuple[threading.Thread, threading.Event]:
    """A sweeper beside other work in this process (``tasks-core dev``)."""
    stop = threading.Event()
    thread = threading.Thread(target=run_sweeper, args=(store, stop), name="sweeper", daemon=True)
    thread.start()
    return thread, stop

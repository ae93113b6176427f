"""A whole system of its own for fault-injection tests: PostgreSQL, Redis,
workers and a sweeper that a test may kill and restart without disturbing
any other test."""

from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from tasks_core.devservers import EmbeddedPostgres, EmbeddedRedis
from tasks_core.migrate import upgrade
from tasks_core.records import Caller
from tasks_core.recovery import start_in_thread
from tasks_core.settings import Settings
from tasks_core.storage.keys import create_key, ensure_organization
from tasks_core.storage.tasks import get_task
from tasks_core.store import Store, store_from_settings
from tasks_core.task import TaskRecord, TaskSpec
from tasks_core.usecases.create import create_task
from tests.support.wait import wait_until
from tests.support.workers import WorkerProcess

# Fast recovery, so that faults heal within seconds.
RECOVERY = {
    "LEASE_SECONDS": "1.5",
    "HEARTBEAT_SECONDS": "0.2",
    "REPUBLISH_AFTER_SECONDS": "1.0",
    "SWEEP_INTERVAL_SECONDS": "0.2",
    "OUTCOME_RETRY_SECONDS": "60",
}


@dataclass
class Stack:
    """Servers, a store, one organization, and the workers started on them."""

    root: Path
    postgres: EmbeddedPostgres
    redis: EmbeddedRedis
    settings: Settings
    store: Store
    caller: Caller
    workers: list[WorkerProcess] = field(default_factory=list)
    _sweeper: tuple[threading.Thread, threading.Event] | None = None

    def env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.settings.database_url,
            "REDIS_URL": self.settings.redis_url,
            **RECOVERY,
        }

    def start_worker(self, *args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess({**self.env(), **(env or {})}, args)
        self.workers.append(worker.start())
        return worker

    def start_sweeper(self) -> None:
        self._sweeper = start_in_thread(self.store)

    def stop_sweeper(self) -> None:
        if self._sweeper is not None:
            thread, stop = self._sweeper
            stop.set()
            thread.join(30)
            self._sweeper = None

    def create(self, count: int, **fields: Any) -> list[uuid.UUID]:
        fields.setdefault("kind", "default")
        return [create_task(self.store, self.caller, TaskSpec(**fields)).id for _ in range(count)]

    def task(self, task_id: uuid.UUID) -> TaskRecord:
        """The task as stored now."""
        return stored_task(self.store, self.caller.organization_id, task_id)

    def statuses(self, ids: Sequence[uuid.UUID]) -> dict[str, int]:
        with self.store.statement() as conn:
            rows = conn.execute(
                text(
                    "SELECT status, count(*) AS n FROM tasks WHERE id = ANY(:ids) GROUP BY status"
                ),
                {"ids": list(ids)},
            )
            return {r.status: int(r.n) for r in rows}

    def wait_all(self, ids: Sequence[uuid.UUID], statuses: tuple[str, ...], timeout: float) -> None:
        last: dict[str, int] = {}

        def done() -> bool:
            try:
                counts = self.statuses(ids)
            except OperationalError:  # a pooled connection from before a restart
                return False
            last.clear()
            last.update(counts)
            return sum(counts.get(s, 0) for s in statuses) == len(ids)

        try:
            wait_until(done, timeout=timeout, interval=0.1)
        except AssertionError:
            raise AssertionError(f"not all tasks reached {statuses}: {last}") from None

    def terminal_events(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        """How many terminal status events each task has (exactly one is right)."""
        with self.store.statement() as conn:
            rows = conn.execute(
                text(
                    "SELECT t.id, count(e.id) AS n FROM tasks t LEFT JOIN task_events e "
                    "ON e.task_id = t.id AND e.type = 'status' "
                    "AND e.to_status IN ('completed', 'failed', 'cancelled') "
                    "WHERE t.id = ANY(:ids) GROUP BY t.id"
                ),
                {"ids": list(ids)},
            )
            return {r.id: int(r.n) for r in rows}


def stored_task(store: Store, organization_id: uuid.UUID | str, task_id: uuid.UUID) -> TaskRecord:
    """A task as stored now, read as its organization (it must be there)."""
    with store.statement() as conn:
        task = get_task(conn, uuid.UUID(str(organization_id)), task_id)
    assert task is not None, f"task {task_id} is not stored"
    return task


@contextmanager
def stack(*, durable: bool = False, **settings: Any) -> Iterator[Stack]:
    """A fresh system; ``durable`` keeps PostgreSQL's fsync (for tests that kill it)."""
    root = Path(tempfile.mkdtemp(prefix="tasks-stack-"))
    root.chmod(0o755)
    postgres = EmbeddedPostgres(root / "pg", fast_unsafe=not durable)
    redis_server = EmbeddedRedis(root / "redis")
    postgres.start()
    redis_server.start()
    store: Store | None = None
    the_stack: Stack | None = None
    try:
        upgrade(postgres.url)
        recovery = {
            "lease_seconds": float(RECOVERY["LEASE_SECONDS"]),
            "republish_after_seconds": float(RECOVERY["REPUBLISH_AFTER_SECONDS"]),
            "sweep_interval_seconds": float(RECOVERY["SWEEP_INTERVAL_SECONDS"]),
        }
        config = Settings(
            database_url=postgres.url, redis_url=redis_server.url, **{**recovery, **settings}
        )
        store = store_from_settings(config)
        with store.transaction() as conn:
            org = ensure_organization(conn, "reliability")
            key = create_key(conn, org)
        the_stack = Stack(
            root=root,
            postgres=postgres,
            redis=redis_server,
            settings=config,
            store=store,
            caller=Caller(organization_id=org, key_id=key.id),
        )
        yield the_stack
    finally:
        if the_stack is not None:
            the_stack.stop_sweeper()
            for worker in the_stack.workers:
                worker.kill()
        if store is not None:
            store.dispose()
        redis_server.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)

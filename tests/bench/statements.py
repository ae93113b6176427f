"""SQL statements and transactions per create, per run and per Flow step. Prints figures.

    python -m tests.bench.statements

Runs in this process against embedded PostgreSQL and Redis: a create through
the service, the run of a task by the worker's own runner (claim, handler,
outcome), and the runs of the steps of a parallel and of a sequential Flow
(each step's claim, outcome and fan-in). A transaction costs two round trips
more than its statements (BEGIN and COMMIT). Nothing here asserts anything.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event, text

import worker.builtins  # noqa: F401  (the kinds the runner runs here)
from tasks_core.devservers import EmbeddedPostgres, EmbeddedRedis
from tasks_core.migrate import upgrade
from tasks_core.records import Caller
from tasks_core.settings import Settings
from tasks_core.storage.keys import create_key, ensure_organization
from tasks_core.store import Store, store_from_settings
from tasks_core.task import TaskSpec
from tasks_core.usecases.create import create_task
from worker.runner import run_task

T = TypeVar("T")


class Counter:
    """Statements and committed transactions on a store's engines."""

    def __init__(self, store: Store) -> None:
        self.statements = 0
        self.transactions = 0
        for engine in {store.engine, store.relaxed_engine or store.engine}:
            event.listen(engine, "before_cursor_execute", self._statement)
            event.listen(engine, "commit", self._commit)

    def _statement(self, *_: Any) -> None:
        self.statements += 1

    def _commit(self, *_: Any) -> None:
        self.transactions += 1

    def measure(self, label: str, work: Callable[[], T]) -> T:
        self.statements = self.transactions = 0
        result = work()
        trips = self.statements + 2 * self.transactions
        print(
            f"{label}: statements={self.statements} transactions={self.transactions} "
            f"postgres_round_trips={trips}"
        )
        return result


@contextmanager
def servers() -> Iterator[Store]:
    root = Path(tempfile.mkdtemp(prefix="tasks-bench-"))
    root.chmod(0o755)
    pg, rd = EmbeddedPostgres(root / "pg", fast_unsafe=True), EmbeddedRedis(root / "redis")
    try:
        pg.start()
        rd.start()
        upgrade(pg.url)
        store = store_from_settings(Settings(database_url=pg.url, redis_url=rd.url))
        yield store
        store.dispose()
    finally:
        rd.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def waiting_steps(store: Store, flow_id: Any) -> list[str]:
    with store.statement() as conn:
        rows = conn.execute(
            text(
                "SELECT id FROM tasks WHERE parent_id = :f "
                "AND status IN ('created', 'queued') ORDER BY id"
            ),
            {"f": flow_id},
        )
        return [str(r.id) for r in rows]


def main() -> None:
    with servers() as store:
        with store.transaction() as conn:
            org = ensure_organization(conn, "bench")
            key = create_key(conn, org)
        caller = Caller(organization_id=org, key_id=key.id)
        counter = Counter(store)
        task = counter.measure(
            "create", lambda: create_task(store, caller, TaskSpec(kind="default"))
        )
        counter.measure("run", lambda: run_task(store, str(task.id), node="bench"))
        for mode in ("parallel", "sequential"):
            steps = [
                {"id": f"s{i}", "kind": "CallAction", "targetId": "builtin/echo", "input": i}
                for i in range(3)
            ]
            spec = TaskSpec(kind="Flow", params={"mode": mode, "steps": steps})
            flow = counter.measure(
                f"{mode} Flow: create", lambda s=spec: create_task(store, caller, s)
            )
            counter.measure(
                f"{mode} Flow: start", lambda f=flow: run_task(store, str(f.id), node="bench")
            )
            for i in range(3):
                step = waiting_steps(store, flow.id)[0]
                where = "last" if i == 2 else "not last"
                counter.measure(
                    f"{mode} Flow: step {i + 1} of 3 ({where})",
                    lambda s=step: run_task(store, s, node="bench"),
                )


if __name__ == "__main__":
    main()

"""Throughput of tasks-core next to raw Celery, on real servers. Prints figures.

    python -m tests.bench.throughput --tasks 2000 --concurrency 2

Measures, on embedded PostgreSQL (durable settings) and Redis:
1. create: tasks per second through the service (the same code as the API
   route, without HTTP), and SQL statements per create;
2. HTTP create: tasks per second through the in-process ASGI app;
3. run: tasks per second of `default` tasks through a real `tasks-core
   worker`, from a full queue to all completed;
4. raw Celery: the same count of no-op Celery tasks through a bare Celery
   worker on the same Redis, with the same settings.
Nothing here asserts a time: it reports.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from sqlalchemy import event, text

from tasks_core.devservers import EmbeddedPostgres, EmbeddedRedis
from tasks_core.migrate import upgrade
from tasks_core.records import Caller
from tasks_core.settings import Settings
from tasks_core.storage.keys import create_key, ensure_organization
from tasks_core.store import Store, store_from_settings
from tasks_core.task import TaskSpec
from tasks_core.usecases.create import create_task
from tests.support.workers import WorkerProcess


@contextmanager
def embedded_servers() -> Iterator[tuple[EmbeddedPostgres, EmbeddedRedis]]:
    """Fresh PostgreSQL (durable, fsync on, unless BENCH_UNSAFE=1) and Redis, in a
    temporary directory removed afterwards, however the benchmark ends."""
    root = Path(tempfile.mkdtemp(prefix="tasks-bench-"))
    root.chmod(0o755)
    pg = EmbeddedPostgres(root / "pg", fast_unsafe=os.environ.get("BENCH_UNSAFE") == "1")
    rd = EmbeddedRedis(root / "redis")
    try:
        with ended_as_interrupted(signal.SIGTERM):
            pg.start()
            rd.start()
            yield pg, rd
    finally:
        rd.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def ended_as_interrupted(signum: signal.Signals) -> Iterator[None]:
    """``signum`` ends the run as Ctrl-C does: as an exception, through every
    ``finally`` and exit callback, so that the servers, workers and API
    processes a benchmark started are stopped. Its default (``timeout``, a CI
    job cancelled, ``kill``) would end this process alone and leave them all
    running. Only the main thread can take a signal; elsewhere, as before."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(received: int, _frame: object) -> None:
        raise SystemExit(128 + received)

    previous = signal.signal(signum, interrupt)
    try:
        yield
    finally:
        signal.signal(signum, signal.SIG_DFL if previous is None else previous)


@contextmanager
def servers() -> Iterator[tuple[str, str]]:
    with embedded_servers() as (pg, rd):
        yield pg.url, rd.url


def count_statements(store: Store) -> list[int]:
    """[statements, of which durable]: the relaxed engine's commits skip the fsync wait."""
    counter = [0, 0]

    def _count(*_: object) -> None:
        counter[0] += 1

    def _durable(*_: object) -> None:
        counter[1] += 1

    for engine in (store.engine, store.relaxed_engine):
        if engine is not None:
            event.listen(engine, "before_cursor_execute", _count)
    event.listen(store.engine, "before_cursor_execute", _durable)
    return counter


def bench_create(store: Store, caller: Caller, n: int) -> None:
    counter = count_statements(store)
    started = time.perf_counter()
    for _ in range(n):
        create_task(store, caller, TaskSpec(kind="default"))
    elapsed = time.perf_counter() - started
    print(
        f"create (service): tasks={n} seconds={elapsed:.2f} per_second={n / elapsed:.0f} "
        f"sql_per_create={counter[0] / n:.1f} durable_commits_per_create={counter[1] / n:.1f} "
        "redis_publishes_per_create=1"
    )


def bench_http_create(store: Store, key: str, n: int) -> None:
    from fastapi.testclient import TestClient

    from tasks_core.api.app import create_app

    with TestClient(create_app(store=store)) as http:
        headers = {"Authorization": f"Bearer {key}"}
        started = time.perf_counter()
        for _ in range(n):
            assert (
                http.post("/v1/tasks", json={"kind": "default"}, headers=headers).status_code == 201
            )
        elapsed = time.perf_counter() - started
    print(
        f"create (HTTP, in-process): tasks={n} seconds={elapsed:.2f} per_second={n / elapsed:.0f}"
    )


def wait_for(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark did not finish in time")
        time.sleep(0.05)


def bench_run(
    store: Store, settings: Settings, n: int, concurrency: int, pool: str = "prefork"
) -> None:
    with store.statement() as conn:
        conn.execute(text("DELETE FROM tasks"))
    caller_org = None
    with store.transaction() as conn:
        caller_org = ensure_organization(conn, "bench")
        key = create_key(conn, caller_org)
    caller = Caller(organization_id=caller_org, key_id=key.id)
    for _ in range(n):
        create_task(store, caller, TaskSpec(kind="default"))
    env = {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "LOG_LEVEL": "WARNING",
    }
    args = ["--concurrency", str(concurrency), "--kind", "default", "--pool", pool]
    worker = WorkerProcess(env, args)

    polls = [0]

    def completed() -> bool:
        polls[0] += 1
        with store.statement() as conn:
            done = conn.execute(text("SELECT count(*) FROM tasks WHERE status = 'completed'"))
            return int(done.scalar_one()) >= n

    worker.env["LOG_LEVEL"] = "INFO"  # the readiness line is logged at INFO
    before = server_commits(store)
    worker.start()
    started = time.perf_counter()
    try:
        wait_for(completed, timeout=600)
    finally:
        elapsed = time.perf_counter() - started
        worker.stop()
    # The worker's commits (each autocommitted statement is one), counted by
    # the server: the stats of a connection are in once it closed.
    store.engine.dispose()
    time.sleep(0.5)
    commits = server_commits(store) - before - polls[0] - 1
    print(
        f"run (tasks-core worker, pool={pool}, concurrency={concurrency}): tasks={n} "
        f"seconds={elapsed:.2f} per_second={n / elapsed:.0f} "
        f"worker_commits_per_task={commits / n:.2f}"
    )


def server_commits(store: Store) -> int:
    with store.statement() as conn:
        sql = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        return int(conn.execute(text(sql)).scalar_one())


def bench_raw_celery(redis_url: str, n: int, concurrency: int, pool: str = "prefork") -> None:
    from tests.bench.processes import raw_celery_worker
    from tests.bench.starts import STARTED
    from tests.bench.systems import RawCelery

    client = redis.Redis.from_url(redis_url)
    client.delete(STARTED)
    system = RawCelery(redis_url)
    system.enqueue(n)
    system.close()
    proc = raw_celery_worker(
        redis_url, concurrency, loglevel="INFO", pool=pool
    )  # INFO: its " ready."
    try:
        proc.start(lambda: " ready." in proc.log())
        started = time.perf_counter()
        wait_for(lambda: int(client.hlen(STARTED)) >= n, timeout=600)
        elapsed = time.perf_counter() - started
    finally:
        proc.kill()
    print(
        f"run (raw Celery no-op, pool={pool}, concurrency={concurrency}): tasks={n} "
        f"seconds={elapsed:.2f} "
        f"per_second={n / elapsed:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--pool", default="prefork", help="the worker's pool: prefork, threads")
    args = parser.parse_args()
    with servers() as (database_url, redis_url):
        upgrade(database_url)
        settings = Settings(database_url=database_url, redis_url=redis_url)
        store = store_from_settings(settings)
        with store.transaction() as conn:
            org = ensure_organization(conn, "bench")
            key = create_key(conn, org)
        caller = Caller(organization_id=org, key_id=key.id)
        bench_create(store, caller, args.tasks)
        bench_http_create(store, key.secret, min(args.tasks, 1000))
        redis.Redis.from_url(redis_url).flushall()
        bench_run(store, settings, args.tasks, args.concurrency, args.pool)
        bench_raw_celery(redis_url, args.tasks, args.concurrency, args.pool)
        store.dispose()


if __name__ == "__main__":
    main()

"""The comparison's servers and processes (``open_bench``) and its measurements:
throughput, enqueue->start latency, statements, worker RSS."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import psycopg
import redis

from tasks_core.devservers import EmbeddedPostgres, EmbeddedRedis
from tasks_core.migrate import upgrade
from tasks_core.records import Caller
from tasks_core.settings import Settings
from tasks_core.storage.keys import create_key, ensure_organization
from tasks_core.store import Store, store_from_settings
from tests.bench.processes import (
    PYTHON,
    ApiServer,
    Service,
    cpu_seconds,
    descendants,
    raw_celery_worker,
    rss_kib,
    sweeper,
)
from tests.bench.processes import tasks_core_worker as start_tasks_core_worker
from tests.bench.starts import STARTED
from tests.bench.statements import Counter
from tests.bench.systems import (
    SOLO,
    SOLO_EXECUTOR,
    THREADS,
    THREADS_EXECUTOR,
    InProcess,
    InProcessBatch,
    System,
)
from tests.bench.throughput import embedded_servers
from tests.support.wait import wait_until

MONITOR = "bench_monitor"  # the harness's own role: its queries are not counted
OPEN = "('created', 'queued', 'running', 'waiting')"
PRELOAD = """
INSERT INTO tasks (id, organization_id, kind, status, params, errors,
                   created_at, updated_at, started_at, ended_at)
SELECT (lpad(to_hex(1600000000000 + g), 12, '0') || '70008000' || lpad(to_hex(g), 12, '0'))::uuid,
       %(org)s, 'default', 'completed', '{}'::jsonb, '[]'::jsonb, now(), now(), now(), now()
FROM generate_series(1, %(rows)s) g
"""
SERVER_STATEMENTS = f"""
SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND userid <> '{MONITOR}'::regrole
"""


@dataclass
class Bench:
    """Everything one run measures with, started once."""

    store: Store
    caller: Caller
    secret: str
    redis_url: str
    monitor: psycopg.Connection[tuple[object, ...]]
    counter: Counter
    workers: dict[str, Service]
    api: dict[int, ApiServer]
    procrastinate_dsn: str | None
    # The servers' processes and the sweeper's, by name.
    server_pids: dict[str, Callable[[], list[int]]] = field(default_factory=dict)
    # The environment the tasks-core processes were started with.
    env: dict[str, str] = field(default_factory=dict)
    create_statements: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.redis = redis.Redis.from_url(self.redis_url)

    def server_statements(self) -> int:
        row = self.monitor.execute(SERVER_STATEMENTS).fetchone()
        return int(row[0]) if row else 0  # type: ignore[call-overload]

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each group of processes: this client, the
        servers, the sweeper, each group of workers and each API server."""
        groups = {"client": [os.getpid()]}
        groups.update({name: pids() for name, pids in self.server_pids.items()})
        groups.update({name: worker.pids() for name, worker in self.workers.items()})
        groups.update({f"api --workers {n}": api.pids() for n, api in self.api.items()})
        return {name: cpu_seconds(pids) for name, pids in groups.items()}

    def settle(self, system: System, timeout: float = 300.0) -> None:
        """Wait until the system's tasks have all ended (outcomes, fan-ins, Flows)."""
        if not system.tasks_core:
            return
        query = f"SELECT count(*) FROM tasks WHERE organization_id = %s AND status IN {OPEN}"
        org = self.caller.organization_id

        def ended() -> bool:
            row = self.monitor.execute(query, (org,)).fetchone()
            return row is not None and row[0] == 0

        wait_until(ended, timeout=timeout, interval=0.05, message="tasks still open")

    def wait_started(self, n: int) -> dict[str, float]:
        """Start time of each task, once ``n`` have started."""
        wait_until(lambda: self.redis.hlen(STARTED) >= n, timeout=120 + n / 20, interval=0.01,
                   message=f"fewer than {n} tasks started")  # fmt: skip
        raw = self.redis.hgetall(STARTED)
        return {key.decode(): float(value) for key, value in raw.items()}

    def warm_up(self, systems: Sequence[System]) -> None:
        """A few tasks through each system: workers ready, connections open."""
        for system in systems:
            if system.latency:
                self.redis.delete(STARTED)
                for _ in range(3):
                    system.send_one()
                self.wait_started(3)
                self.settle(system)


@dataclass(frozen=True)
class Throughput:
    per_second: float  # N / (last start - first enqueue call)
    enqueue_per_second: float  # N / the client's enqueue calls alone
    statements: float  # PostgreSQL statements per task, every process
    started: int  # tasks whose start was recorded
    cpu_ms: dict[str, float] = field(default_factory=dict)  # CPU per task, by process group


def throughput(bench: Bench, system: System, n: int) -> Throughput:
    """Throughput of ``n`` tasks enqueued while the workers run."""
    bench.redis.delete(STARTED)
    before = bench.server_statements()
    bench.counter.statements = bench.counter.transactions = 0
    cpu_before = bench.cpu()
    first_call = time.time()
    system.enqueue(n)
    enqueued = time.time()
    starts = bench.wait_started(n)
    bench.settle(system)
    if bench.counter.statements:
        per_create = (bench.counter.statements / n, bench.counter.transactions / n)
        bench.create_statements[system.name] = per_create
    statements = (bench.server_statements() - before) / n
    per_second = n / (max(starts.values()) - first_call)
    cpu_ms = {name: (used - cpu_before.get(name, 0.0)) * 1000 / n
              for name, used in bench.cpu().items()}  # fmt: skip
    cpu_ms = {name: ms for name, ms in cpu_ms.items() if ms >= 0.005}
    return Throughput(per_second, n / (enqueued - first_call), statements, len(starts), cpu_ms)


def paced_sends(
    bench: Bench, system: System, count: int, gap: float
) -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
    """Send ``count`` tasks ``gap`` s apart, one at a time: each task's
    (enqueue call, its return) and, once all ran, each one's start."""
    bench.redis.delete(STARTED)
    calls: dict[str, tuple[float, float]] = {}
    begin = time.perf_counter()
    for i in range(count):
        delay = begin + i * gap - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # the pace of the sends, not a wait for a condition
        called = time.time()
        task_id = system.send_one()
        calls[task_id] = (called, time.time())
    starts = bench.wait_started(count)
    bench.settle(system)
    return calls, starts


def latency(bench: Bench, system: System, count: int, gap: float) -> tuple[float, float]:
    """(p50, p95) of enqueue->start in ms, over ``count`` tasks sent ``gap`` s apart."""
    calls, starts = paced_sends(bench, system, count, gap)
    ms = [(starts[task_id] - called) * 1000 for task_id, (called, _) in calls.items()]
    return statistics.median(ms), statistics.quantiles(ms, n=20)[18]


def rss(bench: Bench) -> dict[str, int]:
    """Resident memory (KiB) of each group of worker processes."""
    return {name: rss_kib(worker.pids()) for name, worker in bench.workers.items()}


def enable_statement_stats(pg: EmbeddedPostgres) -> None:
    """pg_stat_statements (a restart), and the harness's own role beside it."""
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        conn.execute(f"CREATE ROLE {MONITOR} LOGIN SUPERUSER")
    pg.stop()
    pg.start()
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")


def preload(monitor: psycopg.Connection[tuple[object, ...]], org: object, rows: int) -> None:
    started = time.perf_counter()
    monitor.execute(PRELOAD, {"org": org, "rows": rows})
    # A table that has held its rows a while: vacuumed (else autovacuum's
    # vacuum of the million new rows, due within its first minute, runs on
    # the same 2 cores in the middle of the measurements) and analyzed.
    monitor.execute("VACUUM ANALYZE tasks")
    print(f"preloaded rows={rows} seconds={time.perf_counter() - started:.0f}", flush=True)


def start_procrastinate(
    pg: EmbeddedPostgres, redis_url: str, stack: ExitStack
) -> tuple[str, Service] | None:
    """Its database, schema and two worker processes; None when not installed."""
    try:
        import procrastinate  # noqa: F401
    except ImportError:
        return None
    dsn = pg.url_for("procrastinate")
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE procrastinate")
    os.environ["PROCRASTINATE_DSN"] = dsn  # read when the app module is imported
    from tests.bench.procrastinate_app import QUEUE, app

    with app.open():
        app.schema_manager.apply_schema()
    command = [PYTHON, "-m", "procrastinate", "--app", "tests.bench.procrastinate_app.app",
               "--log-level", "warning", "worker", "--queues", QUEUE,
               "--concurrency", "2"]  # fmt: skip
    group = _Group([Service(command, {"PROCRASTINATE_DSN": dsn, "REDIS_URL": redis_url})
                    for _ in range(2)])  # fmt: skip
    stack.callback(group.kill)
    for member in group.members:
        member.start()
    return dsn, group


@contextmanager
def open_bench(
    preload_rows: int = 0,
    concurrency: int = 2,
    api_workers: Sequence[int] = (1, 2),
    procrastinate: bool = True,
    threads: bool = False,
    solo: bool = False,
    worker_env: dict[str, str] | None = None,
) -> Iterator[Bench]:
    """Fresh servers, a key, the workers (idle), a sweeper and API processes; all stopped after.
    ``threads``: also the thread-pool workers of both (``systems.THREADS``);
    ``solo``: also tasks-core's solo workers (``systems.SOLO``);
    ``worker_env``: more of the tasks-core processes' environment."""
    with embedded_servers() as (pg, rd), ExitStack() as stack:
        enable_statement_stats(pg)
        upgrade(pg.url)
        store = store_from_settings(Settings(database_url=pg.url, redis_url=rd.url))
        stack.callback(store.dispose)
        with store.transaction() as conn:
            org = ensure_organization(conn, "bench")
            key = create_key(conn, org)
        monitor = psycopg.connect(pg.url.replace("postgres@", f"{MONITOR}@"), autocommit=True)
        stack.callback(monitor.close)
        if preload_rows:
            preload(monitor, org, preload_rows)
        env = {"DATABASE_URL": pg.url, "REDIS_URL": rd.url, "LOG_LEVEL": "WARNING"}
        env.update(worker_env or {})
        workers = {
            "tasks-core worker": start_tasks_core_worker(env, concurrency),
            "raw Celery worker": raw_celery_worker(rd.url, concurrency),
        }
        if threads:
            workers.update(thread_pool_workers(env, rd.url))
        if solo:
            solos = [start_tasks_core_worker(env, 1, "solo", SOLO_EXECUTOR) for _ in range(SOLO)]
            workers["tasks-core workers, solo"] = _Group(solos)
        for worker in workers.values():
            stack.callback(worker.kill)
            worker.start()
        api = {}
        for count in api_workers:
            api[count] = ApiServer(env, count)
            stack.callback(api[count].kill)
            api[count].start_serving()
        recovery = sweeper(env)
        stack.callback(recovery.kill)
        recovery.start()
        started = start_procrastinate(pg, rd.url, stack) if procrastinate else None
        dsn = None
        if started is not None:
            dsn, workers["procrastinate workers"] = started
        yield Bench(
            store=store,
            caller=Caller(organization_id=org, key_id=key.id),
            secret=key.secret,
            redis_url=rd.url,
            monitor=monitor,
            counter=Counter(store),
            workers=workers,
            api=api,
            procrastinate_dsn=dsn,
            server_pids={**_server_pids(pg, rd), "sweeper": recovery.pids},
            env=env,
        )


def _server_pids(pg: EmbeddedPostgres, rd: EmbeddedRedis) -> dict[str, Callable[[], list[int]]]:
    def postgres() -> list[int]:
        pid = pg.pid
        return descendants(pid) if pid is not None else []

    def redis_server() -> list[int]:
        pid = rd.pid
        return [pid] if pid is not None else []

    return {"PostgreSQL": postgres, "Redis": redis_server}


def thread_pool_workers(env: dict[str, str], redis_url: str) -> dict[str, Service]:
    """THREADS[0] processes of THREADS[1] threads each, of tasks-core (on the
    queues of THREADS_EXECUTOR) and of raw Celery (on its THREADS_QUEUE)."""
    from tests.bench.raw_celery import THREADS_QUEUE

    processes, threads = THREADS
    ours = [start_tasks_core_worker(env, threads, "threads", THREADS_EXECUTOR)
            for _ in range(processes)]  # fmt: skip
    raw = [raw_celery_worker(redis_url, threads, pool="threads", queue=THREADS_QUEUE)
           for _ in range(processes)]  # fmt: skip
    return {"tasks-core workers, threads": _Group(ours), "raw Celery workers, threads": _Group(raw)}


class _Group(Service):
    """Several services measured together."""

    def __init__(self, members: list[Service]) -> None:
        super().__init__([], {})
        self.members = list(members)

    def start(self, ready: Callable[[], bool] = lambda: True, timeout: float = 60.0) -> Service:
        for member in self.members:
            member.start(ready, timeout)
        return self

    def pids(self) -> list[int]:
        return [pid for member in self.members for pid in member.pids()]

    def main_pids(self) -> list[int]:
        return [pid for member in self.members for pid in member.main_pids()]

    def kill(self) -> None:
        for member in self.members:
            member.kill()


def rss_over(total: int, chunk: int = 5000) -> None:
    """Worker RSS every ``chunk`` tasks over ``total`` no-op tasks (the fastest create)."""
    with open_bench(api_workers=(), procrastinate=False) as bench:
        batch = InProcessBatch(bench.store, bench.caller)
        system: System = batch if batch.missing is None else InProcess(bench.store, bench.caller)
        bench.warm_up([system])
        print(f"rss: tasks=0 tasks_core_worker_kib={rss(bench)['tasks-core worker']}", flush=True)
        done = 0
        while done < total:
            n = min(chunk, total - done)
            throughput(bench, system, n)
            done += n
            print(f"rss: tasks={done} tasks_core_worker_kib={rss(bench)['tasks-core worker']}",
                  flush=True)  # fmt: skip

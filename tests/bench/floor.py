"""The floor of a durable design, measured beside raw Celery and tasks-core.

    python -m tests.bench.floor                      # N=3,000, 300 latency tasks, 3 rounds
    python -m tests.bench.floor --tasks 1000 --rounds 1

What any task service that keeps tasks-core's promises (a task acknowledged
is committed, a claim keeps it from running twice, an outcome read survives
a crash) must pay on these servers, with none of tasks-core's own code: raw
Celery made durable by hand (``tests.bench.floor_celery``), one statement
on each side of the broker and nothing else. The comparison's servers
(``open_bench``: fresh PostgreSQL with fsync on, Redis, raw Celery's and
tasks-core's prefork workers of 2 processes, a sweeper), and a third
prefork worker of 2 processes for the durable no-op. Each round measures,
with the comparison's method (one by one: N ÷ (the last start - the first
enqueue call); enqueue→start over tasks sent 5 ms apart):

- raw Celery, the reference;
- raw Celery behind a durable insert: the client commits each task's row
  (one autocommitted ``INSERT``, its commit flushed) before sending it;
- the same, its worker also claiming the row (a relaxed commit) before the
  no-op and writing its outcome after (a durable commit);
- tasks-core, ``create_task()`` one by one.

It prints each one's tasks/s, p50 and CPU per task, and its ratios to raw
Celery in the same round. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import uuid
from dataclasses import dataclass, field

from tests.bench.floor_celery import INSERT, QUEUE, TABLE, connect
from tests.bench.measure import Bench, latency, open_bench, throughput
from tests.bench.processes import Service, raw_celery_worker
from tests.bench.systems import InProcess, RawCelery, System
from tests.support.wait import wait_until

FLOOR_WORKER = "durable floor worker"
Figures = tuple[float, float, float]
WARM_UP = 3  # tasks each system sends first (``Bench.warm_up``)


class DurableInsert(RawCelery):
    """Raw Celery, each message sent once its task's row is committed."""

    name = "raw Celery behind a durable insert (no claim, no outcome)"
    notes = "durable create only"

    def __init__(self, redis_url: str, database_url: str, *, run: bool = False) -> None:
        super().__init__(redis_url)
        self.task = "raw.noop"
        if run:
            self.name = "raw Celery, durable insert, claim and outcome"
            self.notes = "the floor: one statement per step"
            self.task, self.queue = "raw.durable", QUEUE
        self.db = connect(database_url)
        self.db.execute(TABLE)

    def send_one(self) -> str:
        task_id = uuid.uuid4()
        self.db.execute(INSERT, (task_id,))
        self.app.send_task(self.task, args=[str(task_id)], queue=self.queue, producer=self.producer)
        return str(task_id)

    def completed(self) -> int:
        """Rows the durable no-op claimed and finished."""
        row = self.db.execute("SELECT count(*) FROM floor_tasks WHERE status = 'completed'")
        found = row.fetchone()
        return int(found[0]) if found else 0

    def close(self) -> None:
        super().close()
        self.db.close()


@dataclass
class Results:
    """Per system, each round's (tasks/s, p50 ms, CPU ms per task in all
    processes); and how many tasks the durable no-op claimed and finished."""

    rounds: dict[str, list[Figures]] = field(default_factory=dict)
    floor_completed: int = 0


def floor_worker(bench: Bench, database_url: str, *, stamping: bool = False) -> Service:
    """A prefork worker of 2 processes for the durable no-op, counted in the
    run's CPU; ``stamping``: its no-op stamps its hops (``tests.bench.hops``)."""
    env = {"DATABASE_URL": database_url, **({"BENCH_HOPS": "1"} if stamping else {})}
    app = "tests.bench.floor_celery"
    return raw_celery_worker(bench.redis_url, 2, queue=QUEUE, app=app, env=env).start()


def measure(bench: Bench, system: System, tasks: int, latency_tasks: int) -> Figures:
    run = throughput(bench, system, tasks)
    p50, _ = latency(bench, system, latency_tasks, 0.005)
    return run.per_second, p50, sum(run.cpu_ms.values())


def run(tasks: int, latency_tasks: int, rounds: int) -> Results:
    """Each round: every system's throughput, then its latency."""
    results = Results()
    with open_bench(api_workers=(), procrastinate=False) as bench:
        database_url = bench.store.settings.database_url
        floor = bench.workers[FLOOR_WORKER] = floor_worker(bench, database_url)
        floor_system = DurableInsert(bench.redis_url, database_url, run=True)
        systems: list[System] = [
            RawCelery(bench.redis_url),
            DurableInsert(bench.redis_url, database_url),
            floor_system,
            InProcess(bench.store, bench.caller),
        ]
        try:
            bench.warm_up(systems)
            for _ in range(rounds):
                for system in systems:
                    figures = measure(bench, system, tasks, latency_tasks)
                    results.rounds.setdefault(system.name, []).append(figures)
                    print(f"{system.name}: tasks/s={figures[0]:.0f} p50_ms={figures[1]:.2f} "
                          f"cpu_ms/task={figures[2]:.2f}", flush=True)  # fmt: skip
            # A start is recorded before the outcome is written: wait for the last ones.
            sent = WARM_UP + rounds * (tasks + latency_tasks)
            wait_until(lambda: floor_system.completed() >= sent, timeout=30,
                       interval=0.01, message="durable no-ops not all finished")  # fmt: skip
            results.floor_completed = floor_system.completed()
        finally:
            for system in systems:
                system.close()
            floor.kill()
    return results


def ratios(results: Results) -> dict[str, tuple[float, float]]:
    """Each system's median (tasks/s, p50) as ratios to raw Celery's in the same rounds."""
    raw = next(iter(results.rounds.values()))
    out = {}
    for name, rounds in results.rounds.items():
        speed = statistics.median(r[0] / b[0] for r, b in zip(rounds, raw, strict=True))
        p50 = statistics.median(r[1] / b[1] for r, b in zip(rounds, raw, strict=True))
        out[name] = (speed, p50)
    return out


def main() -> None:
    raw = argparse.RawTextHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--tasks", type=int, default=3000, help="tasks of each throughput run")
    parser.add_argument("--latency-tasks", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    results = run(options.tasks, options.latency_tasks, options.rounds)
    print(
        f"\nN={options.tasks:,}, {options.latency_tasks} tasks 5 ms apart, "
        f"{options.rounds} round(s), medians; ratios to raw Celery in the same round\n"
    )
    print("| system | tasks/s | vs raw Celery | p50 ms | p50 vs raw Celery | CPU ms a task |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (speed, p50) in ratios(results).items():
        rounds = results.rounds[name]
        cells = [statistics.median(r[i] for r in rounds) for i in range(3)]
        print(f"| {name} | {cells[0]:,.0f} | {speed:.2f}x | {cells[1]:.2f} | {p50:.2f}x "
              f"| {cells[2]:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()

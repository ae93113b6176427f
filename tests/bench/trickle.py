"""Where a task's CPU goes when tasks come one at a time, beside raw Celery at the same pace.

    python -m tests.bench.trickle                       # 3,000 tasks at 300/s, 3 rounds
    python -m tests.bench.trickle --rate 150 --tasks 1000 --rounds 1

The comparison's servers and workers (``open_bench``: fresh PostgreSQL with
fsync on, Redis, the prefork tasks-core worker, 2 solo workers, raw Celery).
Each round sends ``--tasks`` tasks at ``--rate`` a second, one at a time,
through raw Celery and through tasks-core (``create_task()`` one by one, to
the prefork and to the solo workers), and prints, per task: the CPU of each
group of processes (this client, PostgreSQL, Redis, the sweeper, the system's worker
processes, split into the Celery consumer that takes the messages and the
pool processes that run them; a solo worker is both), and the PostgreSQL
statements of every process. Tasks that come one at a time are what one HTTP
client or a latency run sends: each is claimed and recorded alone, where a
stream sent back to back goes in sets. The CPU is what bounds the rate on
cores the whole system shares. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
from dataclasses import dataclass, field

from tests.bench.measure import Bench, open_bench, paced_sends
from tests.bench.processes import Service, cpu_seconds
from tests.bench.systems import InProcess, RawCelery, System

COLUMNS = ("all", "client", "PostgreSQL", "Redis", "sweeper", "worker consumer", "worker pool")


@dataclass
class Results:
    """Per system, each round's CPU ms per task (``COLUMNS``) and statements per task."""

    cpu_ms: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    statements: dict[str, list[float]] = field(default_factory=dict)


def _split(worker: Service) -> dict[str, list[int]]:
    """A worker's processes: the consumer(s) and the pool processes below them."""
    consumers = worker.main_pids()
    return {
        "worker consumer": consumers,
        "worker pool": [pid for pid in worker.pids() if pid not in consumers],
    }


def trickled(
    bench: Bench, system: System, worker: Service, count: int, rate: float
) -> tuple[dict[str, float], float]:
    """Send ``count`` tasks at ``rate`` a second through ``system`` (run by
    ``worker``): CPU ms per task by group, and statements per task."""
    groups = {name: pids() for name, pids in bench.server_pids.items()} | _split(worker)
    before = {name: cpu_seconds(pids) for name, pids in groups.items()}
    client = cpu_seconds([os.getpid()])
    statements = bench.server_statements()
    paced_sends(bench, system, count, 1 / rate)
    used = {name: cpu_seconds(pids) - before[name] for name, pids in groups.items()}
    used["client"] = cpu_seconds([os.getpid()]) - client
    per_task = {name: used.get(name, 0.0) * 1000 / count for name in COLUMNS[1:]}
    per_task["all"] = sum(per_task.values())
    return per_task, (bench.server_statements() - statements) / count


def run(count: int, rate: float, rounds: int) -> Results:
    """Each round: raw Celery, then tasks-core to its prefork and its solo workers."""
    results = Results()
    with open_bench(api_workers=(), procrastinate=False, solo=True) as bench:
        raw = RawCelery(bench.redis_url)
        systems: dict[str, tuple[System, Service]] = {
            "raw Celery, prefork -c 2": (raw, bench.workers["raw Celery worker"]),
            "tasks-core, prefork --concurrency 2": (
                InProcess(bench.store, bench.caller),
                bench.workers["tasks-core worker"],
            ),
            "tasks-core, 2 x --pool solo": (
                InProcess(bench.store, bench.caller, solo=True),
                bench.workers["tasks-core workers, solo"],
            ),
        }
        bench.warm_up([system for system, _ in systems.values()])
        for _ in range(rounds):
            for name, (system, worker) in systems.items():
                cpu, statements = trickled(bench, system, worker, count, rate)
                results.cpu_ms.setdefault(name, []).append(cpu)
                results.statements.setdefault(name, []).append(statements)
        raw.close()
    return results


def main() -> None:
    raw = argparse.RawTextHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=300.0, help="tasks a second, one at a time")
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    results = run(options.tasks, options.rate, options.rounds)
    print(f"\n{options.tasks:,} tasks at {options.rate:g}/s one at a time, "
          f"{options.rounds} round(s), medians; CPU ms per task\n")  # fmt: skip
    print("| system | " + " | ".join(COLUMNS) + " | statements per task |")
    print("|---|" + "---:|" * (len(COLUMNS) + 1))
    for name, rounds in results.cpu_ms.items():
        cells = " | ".join(f"{statistics.median(r[c] for r in rounds):.2f}" for c in COLUMNS)
        statements = statistics.median(results.statements[name])
        print(f"| {name} | {cells} | {statements:.1f} |")


if __name__ == "__main__":
    main()

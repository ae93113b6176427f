"""Where a task's enqueue→start goes, hop by hop, beside raw Celery's whole trip.

    python -m tests.bench.hops                    # 300 tasks 5 ms apart, 3 rounds
    python -m tests.bench.hops --tasks 100 --rounds 1

The comparison's servers and workers (``open_bench``: fresh PostgreSQL with
fsync on, Redis, the prefork tasks-core worker, 2 solo workers, raw Celery),
the tasks-core workers stamping each task's hops (``tests.bench.hop_stamps``),
and the floor of a durable design (raw Celery made durable by hand, its
own prefork worker of 2 processes: ``tests.bench.floor``) stamping the same
ones. Each round sends ``--tasks`` tasks ``--gap`` seconds apart through each
system (``create_task()`` one by one for tasks-core; for the floor, its
durable insert and then its send) and prints the medians of: the create
call; its return to the worker's run of the message; that to the claim's
statement; the claim; the claim's answer to the handler's start (as
recorded by the no-op); and the whole enqueue→start, with raw Celery's
enqueue→start measured in the same round. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass, field

from tests.bench.floor import FLOOR_WORKER, DurableInsert, floor_worker
from tests.bench.measure import Bench, latency, open_bench, paced_sends
from tests.bench.starts import HOPS
from tests.bench.systems import InProcess, RawCelery, System
from tests.support.wait import wait_until

FLOOR = "the floor: raw Celery durable by hand"
HOP_NAMES = ("create call", "→ worker", "→ claim sent", "claim", "→ handler", "enqueue→start")


@dataclass(frozen=True)
class Hops:
    """Median ms of each hop (``HOP_NAMES``) over one round of one system."""

    medians: tuple[float, ...]
    # Every task's stamps in causal order: call, reached, sent, answered,
    # start. The call's return is not among them: under load a worker may
    # take the message before the caller's thread resumes, so "→ worker"
    # may read below zero.
    in_order: bool


@dataclass
class Results:
    """Raw Celery's p50 of each round, and each tasks-core system's hops."""

    raw_p50_ms: list[float] = field(default_factory=list)
    hops: dict[str, list[Hops]] = field(default_factory=dict)


def stamped(bench: Bench, system: System, count: int, gap: float) -> Hops:
    """Send ``count`` tasks ``gap`` s apart and read back each one's stamps."""
    bench.redis.delete(HOPS)
    calls, starts = paced_sends(bench, system, count, gap)
    # A message's stamps are written once its run is over, after its start.
    wait_until(lambda: bench.redis.hlen(HOPS) >= count, timeout=30, interval=0.01,
               message=f"fewer than {count} tasks stamped")  # fmt: skip
    raw = bench.redis.hgetall(HOPS)
    stamps = {key.decode(): [float(x) for x in value.decode().split(",")]
              for key, value in raw.items()}  # fmt: skip
    hops = []
    in_order = True
    for task_id, (called, returned) in calls.items():
        reached, sent, answered = stamps[task_id]
        start = starts[task_id]
        in_order = in_order and called <= reached <= sent <= answered <= start
        hops.append((returned - called, reached - returned, sent - reached, answered - sent,
                     start - answered, start - called))  # fmt: skip
    medians = tuple(statistics.median(column) * 1000 for column in zip(*hops, strict=True))
    return Hops(medians, in_order)


def run(count: int, gap: float, rounds: int) -> Results:
    """Each round: raw Celery's p50, then the hops of prefork and solo workers and the floor."""
    results = Results(hops={"prefork": [], "solo": [], FLOOR: []})
    stamping = {"BENCH_HOPS": "1"}  # the workers load tests.bench.hop_stamps
    with open_bench(api_workers=(), procrastinate=False, solo=True, worker_env=stamping) as bench:
        database_url = bench.store.settings.database_url
        floor = bench.workers[FLOOR_WORKER] = floor_worker(bench, database_url, stamping=True)
        raw = RawCelery(bench.redis_url)
        systems: dict[str, System] = {
            "prefork": InProcess(bench.store, bench.caller),
            "solo": InProcess(bench.store, bench.caller, solo=True),
            FLOOR: DurableInsert(bench.redis_url, database_url, run=True),
        }
        try:
            bench.warm_up([raw, *systems.values()])
            for _ in range(rounds):
                results.raw_p50_ms.append(latency(bench, raw, count, gap)[0])
                for name, system in systems.items():
                    results.hops[name].append(stamped(bench, system, count, gap))
        finally:
            for system in (raw, *systems.values()):
                system.close()
            floor.kill()
    return results


def main() -> None:
    raw = argparse.RawTextHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--gap", type=float, default=0.005, help="seconds between sends")
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    results = run(options.tasks, options.gap, options.rounds)
    reference = statistics.median(results.raw_p50_ms)
    print(f"\n{options.tasks} tasks {options.gap * 1000:g} ms apart, {options.rounds} round(s), "
          "medians of the rounds' medians; raw Celery enqueue→start p50 "
          f"{reference:.2f} ms\n")  # fmt: skip
    print("| workers | " + " | ".join(f"{h} ms" for h in HOP_NAMES)
          + " | vs raw Celery |")  # fmt: skip
    print("|---|" + "---:|" * (len(HOP_NAMES) + 1))
    for name, rounds in results.hops.items():
        medians = [statistics.median(r.medians[i] for r in rounds) for i in range(len(HOP_NAMES))]
        cells = " | ".join(f"{m:.2f}" for m in medians)
        print(f"| {name} | {cells} | {medians[-1] / reference:.2f}x |")


if __name__ == "__main__":
    main()

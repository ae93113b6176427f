"""tasks-core beside raw Celery (and procrastinate), in one run on the same servers.

    python -m tests.bench.compare                 # N=5,000, 3 rounds, medians
    python -m tests.bench.compare --quick         # N=300, 1 round: a smoke run
    python -m tests.bench.compare --preload-rows 1000000   # a big table first
    python -m tests.bench.compare --rss-tasks 100000       # worker RSS over a long run

Fresh embedded PostgreSQL (fsync on: durable) and Redis; every worker and API
process is started first and idle. Each no-op task records when it started
(``tests.bench.starts``). Throughput is N / (last start - first enqueue call),
the client enqueueing while the workers run; latency is enqueue->start over
tasks sent 5 ms apart (p50, p95). Rounds go through every system in turn, so
drift of the machine hits them alike; every figure is also shown as a ratio to
raw Celery's in the same run. Statements are counted by pg_stat_statements
(every process, BEGIN and COMMIT included) and, for in-process creates, on the
client's engines (``tests.bench.statements.Counter``). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from tests.bench.measure import Bench, Throughput, latency, open_bench, rss, throughput
from tests.bench.report import Row, print_cpu, print_statements, print_table
from tests.bench.systems import (
    Http,
    HttpBatch,
    InProcess,
    InProcessBatch,
    ParallelFlow,
    Procrastinate,
    RawCelery,
    System,
)


@dataclass
class Options:
    tasks: int = 5000
    rounds: int = 3
    flow_steps: int = 10_000
    latency_tasks: int = 300
    latency_gap: float = 0.005
    preload_rows: int = 0
    concurrency: int = 2
    procrastinate: bool = True
    api_workers: tuple[int, ...] = (1, 2)
    threads: bool = True  # the thread-pool rows (systems.THREADS)
    solo: bool = True  # the solo-pool row (systems.SOLO)


@dataclass
class Sample:
    """One system's figures in one round."""

    run: Throughput
    p50: float | None = None
    p95: float | None = None


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    rss: dict[str, tuple[int, int]] = field(default_factory=dict)
    seconds: float = 0.0


def build_systems(bench: Bench, options: Options) -> list[System]:
    """Every row, raw Celery first (the reference)."""
    systems: list[System] = [RawCelery(bench.redis_url), InProcess(bench.store, bench.caller)]
    systems.append(InProcessBatch(bench.store, bench.caller))
    if options.threads:
        systems.append(RawCelery(bench.redis_url, threads=True))
        systems.append(InProcessBatch(bench.store, bench.caller, threads=True))
    if options.solo:
        systems.append(InProcess(bench.store, bench.caller, solo=True))
        http = options.api_workers[0]
        systems.append(Http(bench.api[http].url, bench.secret, http, solo=True))
    for workers in options.api_workers:
        systems.append(Http(bench.api[workers].url, bench.secret, workers))
    systems.append(HttpBatch(bench.api[options.api_workers[0]].url, bench.secret))
    systems.append(ParallelFlow(bench.store, bench.caller, options.flow_steps))
    if options.flow_steps != options.tasks:
        systems.append(InProcess(bench.store, bench.caller, options.flow_steps))
    systems.append(Procrastinate(bench.procrastinate_dsn))
    return systems


def run(options: Options) -> Results:
    """Start everything, measure every system in every round, stop everything."""
    started = time.perf_counter()
    results = Results()
    servers = open_bench(options.preload_rows, options.concurrency, options.api_workers,
                         options.procrastinate, options.threads, options.solo)  # fmt: skip
    with servers as bench, ExitStack() as closing:
        systems = build_systems(bench, options)
        for system in systems:
            closing.callback(system.close)
        live = [s for s in systems if s.missing is None]
        bench.warm_up(live)
        before = rss(bench)
        samples: dict[str, list[Sample]] = {}
        for round_number in range(1, options.rounds + 1):
            for system in live:
                n = system.count or options.tasks
                sample = Sample(throughput(bench, system, n))
                if system.latency:
                    sample.p50, sample.p95 = latency(
                        bench, system, options.latency_tasks, options.latency_gap
                    )
                samples.setdefault(system.name, []).append(sample)
                _progress(round_number, system.name, sample)
        after = rss(bench)
        results.rss = {name: (before[name], after[name]) for name in before}
        results.samples = samples
        results.rows = [_row(system, samples.get(system.name, []), bench) for system in systems]
    results.seconds = time.perf_counter() - started
    return results


def _progress(round_number: int, name: str, sample: Sample) -> None:
    """One line per measurement, so that a long run shows where it is."""
    p50 = "n/a" if sample.p50 is None else f"{sample.p50:.2f}"
    p95 = "n/a" if sample.p95 is None else f"{sample.p95:.2f}"
    print(f"round {round_number} | {name}: tasks/s={sample.run.per_second:.0f} "
          f"enqueue/s={sample.run.enqueue_per_second:.0f} p50_ms={p50} p95_ms={p95} "
          f"statements/task={sample.run.statements:.1f}", flush=True)  # fmt: skip


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _row(system: System, samples: list[Sample], bench: Bench) -> Row:
    row = Row(name=system.name, notes=system.missing or system.notes, missing=system.missing)
    if samples:
        row.per_second = _median([s.run.per_second for s in samples])
        row.enqueue_per_second = _median([s.run.enqueue_per_second for s in samples])
        row.p50_ms = _median([s.p50 for s in samples])
        row.p95_ms = _median([s.p95 for s in samples])
        if system.tasks_core:
            row.statements_per_task = _median([s.run.statements for s in samples])
        groups = {name for s in samples for name in s.run.cpu_ms}
        row.cpu_ms = {g: statistics.median(s.run.cpu_ms.get(g, 0.0) for s in samples)
                      for g in groups}  # fmt: skip
        row.create_statements = bench.create_statements.get(system.name)
    return row


@contextmanager
def _timed(label: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    print(f"{label}: wall_seconds={time.perf_counter() - started:.0f}")


def main() -> None:
    raw = argparse.RawTextHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--tasks", type=int, default=5000, help="N tasks per system and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flow-steps", type=int, default=10_000)
    parser.add_argument("--latency-tasks", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="N=300, 1 round, 300-step Flow")
    parser.add_argument("--preload-rows", type=int, default=0, help="completed rows inserted first")
    parser.add_argument("--rss-tasks", type=int, default=0, help="only: worker RSS over N tasks")
    parser.add_argument("--no-procrastinate", action="store_true")
    parser.add_argument("--no-threads", action="store_true", help="no thread-pool rows")
    parser.add_argument("--no-solo", action="store_true", help="no solo-pool row")
    args = parser.parse_args()
    if args.rss_tasks:
        from tests.bench.measure import rss_over

        with _timed("rss run"):
            rss_over(args.rss_tasks)
        return
    options = Options(
        tasks=300 if args.quick else args.tasks,
        rounds=1 if args.quick else args.rounds,
        flow_steps=300 if args.quick else args.flow_steps,
        latency_tasks=args.latency_tasks,
        preload_rows=args.preload_rows,
        procrastinate=not args.no_procrastinate,
        threads=not args.no_threads,
        solo=not args.no_solo,
    )
    results = run(options)
    print(
        f"\nN={options.tasks} rounds={options.rounds} (medians) flow_steps={options.flow_steps} "
        f"latency: {options.latency_tasks} tasks {options.latency_gap * 1000:.0f} ms apart; "
        f"preloaded rows={options.preload_rows}; wall_seconds={results.seconds:.0f}\n"
    )
    print_table(results.rows)
    print_statements(results.rows, results.rss)
    print_cpu(results.rows)


if __name__ == "__main__":
    main()

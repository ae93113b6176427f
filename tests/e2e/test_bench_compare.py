"""The comparison benchmark (`python -m tests.bench.compare`) works: a tiny run
produces every row, with figures for every system that exists here."""

from __future__ import annotations

from tests.bench.compare import Options, run
from tests.support.figures import report

TASKS = 50


def test_the_comparison_measures_every_system() -> None:
    options = Options(tasks=TASKS, rounds=1, flow_steps=60, latency_tasks=20, latency_gap=0.0,
                      procrastinate=False)  # fmt: skip
    results = run(options)

    names = [row.name for row in results.rows]
    assert names[0].startswith("raw Celery")
    for part in ("create_task() in-process", "create_tasks() in-process", "api --workers 1",
                 "api --workers 2", "POST /v1/tasks/batch", "parallel Flow", "independent tasks",
                 "--pool solo", "procrastinate"):  # fmt: skip
        assert any(part in name for name in names), (part, names)
    assert sum("--pool solo" in name for name in names) == 2, names  # in-process and HTTP
    measured = [row for row in results.rows if row.missing is None]
    assert len(measured) >= 6, names  # raw Celery, in-process, 2 x HTTP, Flow, independent
    for row in measured:
        (sample,) = results.samples[row.name]
        assert sample.run.started == (60 if "Flow" in row.name or "independent" in row.name
                                      else TASKS), row.name  # fmt: skip
        assert row.per_second is not None and row.per_second > 0, row
        assert row.enqueue_per_second is not None and row.enqueue_per_second > 0, row
    for row in measured:
        if "Flow" not in row.name and "independent" not in row.name:
            assert row.p50_ms is not None and row.p95_ms is not None, row
        if not row.name.startswith("raw Celery"):
            assert row.statements_per_task is not None and row.statements_per_task > 0, row
    in_process = next(r for r in measured if "create_task() in-process" in r.name)
    assert in_process.create_statements is not None and in_process.create_statements[0] > 0
    assert all(before > 0 and after > 0 for before, after in results.rss.values()), results.rss
    report(f"\nbench compare smoke: rows={len(results.rows)} measured={len(measured)} "
           f"seconds={results.seconds:.0f}")  # fmt: skip

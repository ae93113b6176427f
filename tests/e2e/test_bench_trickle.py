"""The one-at-a-time CPU benchmark (`python -m tests.bench.trickle`) works: a
tiny run measures each system's processes per task, beside raw Celery at the
same pace."""

from __future__ import annotations

from tests.bench.trickle import COLUMNS, run
from tests.support.figures import report

RAW = "raw Celery, prefork -c 2"
PREFORK = "tasks-core, prefork --concurrency 2"
SOLO = "tasks-core, 2 x --pool solo"


def test_each_system_s_cpu_is_split_by_process_group() -> None:
    results = run(count=100, rate=300.0, rounds=1)

    assert set(results.cpu_ms) == {RAW, PREFORK, SOLO}
    for name, (cpu,) in results.cpu_ms.items():
        assert set(cpu) == set(COLUMNS), name
        assert cpu["all"] > 0 and cpu["worker consumer"] > 0, (name, cpu)
        parts = sum(cpu[column] for column in COLUMNS[1:])
        assert abs(cpu["all"] - parts) < 1e-9, (name, cpu)
    # The prefork workers' runs are in their pool processes; a solo worker
    # runs its tasks in the process that takes the messages.
    assert results.cpu_ms[PREFORK][0]["worker pool"] > 0
    assert results.cpu_ms[SOLO][0]["worker pool"] == 0
    # Only tasks-core writes to PostgreSQL: each task's create, and its claim
    # and outcome, which tasks that came while the workers were behind share
    # in run sets (raw Celery's window may hold a periodic statement of a worker).
    assert results.statements[RAW][0] < 0.5
    assert results.statements[PREFORK][0] > 1 and results.statements[SOLO][0] > 1
    report(f"\nbench trickle smoke: systems={len(results.cpu_ms)} columns={len(COLUMNS)}")

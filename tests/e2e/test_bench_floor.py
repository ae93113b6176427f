"""The durable-floor benchmark (`python -m tests.bench.floor`) works: a tiny
run measures raw Celery, raw Celery made durable by hand, and tasks-core."""

from __future__ import annotations

from tests.bench.floor import ratios, run
from tests.support.figures import report


def test_each_system_is_measured_beside_raw_celery() -> None:
    results = run(tasks=60, latency_tasks=20, rounds=1)

    assert len(results.rounds) == 4
    for name, ((per_second, p50, cpu),) in results.rounds.items():
        assert per_second > 0 and p50 > 0 and cpu > 0, name
    assert set(ratios(results)) == set(results.rounds)
    # The floor's worker claimed and finished every task it was sent (3 to
    # warm up, then the round's throughput and latency runs), once each.
    assert results.floor_completed == 3 + 60 + 20
    report(f"\nbench floor smoke: systems={len(results.rounds)}")

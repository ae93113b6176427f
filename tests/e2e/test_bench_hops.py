"""The hop-by-hop benchmark (`python -m tests.bench.hops`) works: a tiny run
stamps every hop of every task in the prefork and solo workers and in the
durable floor's worker, beside raw Celery's enqueue→start."""

from __future__ import annotations

import worker.batching
import worker.runner
from tests.bench.hops import FLOOR, HOP_NAMES, run
from tests.support.figures import report


def test_every_hop_of_every_task_is_stamped() -> None:
    results = run(count=20, gap=0.0, rounds=1)

    assert len(results.raw_p50_ms) == 1 and results.raw_p50_ms[0] > 0
    assert set(results.hops) == {"prefork", "solo", FLOOR}
    claim, whole = HOP_NAMES.index("claim"), HOP_NAMES.index("enqueue→start")
    for name, rounds in results.hops.items():
        (hops,) = rounds
        assert len(hops.medians) == len(HOP_NAMES), name
        # Every task's stamps were read back in causal order (the floor's
        # claim is sent within a microsecond of its body's start: that hop
        # may read 0; "→ worker" may read below 0 under load, see Hops).
        assert hops.in_order, (name, hops)
        assert hops.medians[claim] > 0 and hops.medians[whole] > 0, (name, hops)
    # Only the workers are stamped: this process's run path is as it was.
    assert worker.runner.run_set.__module__ == "worker.runner"
    assert worker.batching.RunBatchers._claim.__module__ == "worker.batching"
    report(f"\nbench hops smoke: systems={len(results.hops)} hops={len(HOP_NAMES)}")

"""The HTTP ceiling benchmark (`python -m tests.bench.http_ceiling`) works: a
tiny run measures raw Celery and tasks-core over HTTP end to end, and the
creates alone, whose tasks it leaves nowhere."""

from __future__ import annotations

from tests.bench.http_ceiling import ALONE_BARE, ALONE_HTTPX, END_TO_END, RAW, run
from tests.support.figures import report


def test_the_creates_alone_are_measured_beside_raw_celery_and_leave_no_task() -> None:
    results = run(count=60, rounds=1)

    assert set(results.samples) == {RAW, END_TO_END, ALONE_HTTPX, ALONE_BARE}
    for name, (sample,) in results.samples.items():
        assert sample.per_second > 0, name
    for name in (ALONE_HTTPX, ALONE_BARE):
        (sample,) = results.samples[name]
        assert sample.cpu_ms["API"] > 0 and sample.cpu_ms["client"] > 0, (name, sample)
    assert results.unserved_left == 0  # deleted after each round, messages too
    report(f"\nbench http ceiling smoke: rows={len(results.samples)}")

"""How fast one keep-alive client can create over HTTP, beside raw Celery end to end.

    python -m tests.bench.http_ceiling                 # N=3,000, 3 rounds
    python -m tests.bench.http_ceiling --tasks 500 --rounds 1

The compare's one-HTTP-client row (``tests.bench.compare``) is a rate end to
end: its creates and the workers' runs share the machine's cores. This bench
puts beside it, on the same servers and in the same rounds, the rate of those
creates with nothing run: each task goes to a queue no worker serves, through
an API process of its own whose publisher never lingers (so each create
publishes its message as the end-to-end row's do), by the compare's client
(httpx) and by a bare ``http.client`` connection. No end-to-end rate can pass
the rate of its creates alone, so these rows bound the compare's. It also
prints the CPU a create costs the API process and the client. The tasks of
the unserved queue are deleted after each round (and their messages), so the
sweeper never sees them. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tasks_core.queues import queue_name
from tests.bench.measure import Bench, open_bench, throughput
from tests.bench.processes import ApiServer, cpu_seconds
from tests.bench.systems import NOOP, Http, RawCelery

UNSERVED_EXECUTOR = "bench-nobody"
UNSERVED_QUEUE = queue_name(str(NOOP["kind"]), UNSERVED_EXECUTOR)
RAW = "raw Celery 5, prefork -c 2, end to end"
END_TO_END = "tasks-core over HTTP, one keep-alive client (httpx), end to end"
ALONE_HTTPX = "creates alone over HTTP, httpx (nothing runs them)"
ALONE_BARE = "creates alone over HTTP, http.client (nothing runs them)"


@dataclass
class Sample:
    """One round of one row: tasks a second, and CPU ms per task by process."""

    per_second: float
    cpu_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class Results:
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    unserved_left: int = 0  # tasks and messages of the unserved queue at the end

    def add(self, name: str, sample: Sample) -> None:
        self.samples.setdefault(name, []).append(sample)


class BareClient:
    """One keep-alive ``http.client`` connection: what a client costs at least."""

    def __init__(self, url: str, secret: str, body: dict[str, Any]) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        self.headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        self.payload = json.dumps(body).encode()

    def fresh(self) -> BareClient:
        """Closed, so that the next request connects anew: the server closes a
        keep-alive connection left idle between rounds, and ``http.client``
        finds out only by failing a request."""
        self.connection.close()
        return self

    def send_one(self) -> None:
        self.connection.request("POST", "/v1/tasks", self.payload, self.headers)
        response = self.connection.getresponse()
        answer = response.read()
        assert response.status == 201, answer

    def close(self) -> None:
        self.connection.close()


def _alone(bench: Bench, api: ApiServer, send_one: Callable[[], object], n: int) -> Sample:
    """``n`` creates one after another: their rate, and the CPU of the API
    process and of this thread (the client) per create."""
    api_before, client_before = cpu_seconds(api.pids()), time.thread_time()
    began = time.perf_counter()
    for _ in range(n):
        send_one()
    took = time.perf_counter() - began
    cpu = {
        "API": (cpu_seconds(api.pids()) - api_before) * 1000 / n,
        "client": (time.thread_time() - client_before) * 1000 / n,
    }
    _forget_unserved(bench)
    return Sample(n / took, cpu)


def _forget_unserved(bench: Bench) -> None:
    """Delete the tasks of the unserved queue and its messages."""
    bench.monitor.execute("DELETE FROM tasks WHERE executor_id = %s", (UNSERVED_EXECUTOR,))
    bench.redis.delete(UNSERVED_QUEUE)


def _unserved_left(bench: Bench) -> int:
    """Tasks of the unserved queue, and messages on it, still there."""
    row = bench.monitor.execute(
        "SELECT count(*) FROM tasks WHERE executor_id = %s", (UNSERVED_EXECUTOR,)
    ).fetchone()
    tasks = int(str(row[0])) if row else 0
    messages: Any = bench.redis.llen(UNSERVED_QUEUE)
    return tasks + int(messages)


def run(count: int, rounds: int) -> Results:
    """Each round: raw Celery and tasks-core over HTTP end to end, then the creates alone."""
    results = Results()
    with open_bench(api_workers=(1,), procrastinate=False) as bench:
        quiet = ApiServer({**bench.env, "PUBLISH_LINGER_SECONDS": "0"}).start_serving()
        unserved = {**NOOP, "executorId": UNSERVED_EXECUTOR}
        raw, http_e2e = RawCelery(bench.redis_url), Http(bench.api[1].url, bench.secret, 1)
        httpx_alone = Http(quiet.url, bench.secret, 1)
        httpx_alone.body = unserved
        bare = BareClient(quiet.url, bench.secret, unserved)
        try:
            bench.warm_up([raw, http_e2e])
            for _ in range(rounds):
                for name, system in ((RAW, raw), (END_TO_END, http_e2e)):
                    results.add(name, Sample(throughput(bench, system, count).per_second))
                results.add(ALONE_HTTPX, _alone(bench, quiet, httpx_alone.send_one, count))
                results.add(ALONE_BARE, _alone(bench, quiet, bare.fresh().send_one, count))
            results.unserved_left = _unserved_left(bench)
        finally:
            for closing in (raw, http_e2e, httpx_alone, bare):
                closing.close()
            quiet.kill()
    return results


def print_table(results: Results) -> None:
    """Each row's median rate and its ratio to raw Celery's, by round in
    brackets (to raw Celery's rate of the same round; raw Celery's own)."""
    raw = [s.per_second for s in results.samples[RAW]]
    base = statistics.median(raw)
    print("\n| row | tasks/s | vs raw Celery | CPU ms per create: API, client |")
    print("|---|---:|---:|---|")
    for name, samples in results.samples.items():
        rate = statistics.median(s.per_second for s in samples)
        if name == RAW:
            by_round = ", ".join(f"{r:,.0f}/s" for r in raw)
        else:
            paired = zip(samples, raw, strict=True)
            by_round = ", ".join(f"{s.per_second / r:.2f}" for s, r in paired)
        cpu = ""
        if samples[0].cpu_ms:
            cpu = ", ".join(f"{statistics.median(s.cpu_ms[k] for s in samples):.2f}"
                            for k in ("API", "client"))  # fmt: skip
        print(f"| {name} | {rate:,.0f} | {rate / base:.2f}x ({by_round}) | {cpu} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)  # fmt: skip
    parser.add_argument("--tasks", type=int, default=3000, help="N tasks per row and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = run(args.tasks, args.rounds)
    print(f"\nN={args.tasks}, {args.rounds} round(s), medians; by round in brackets")
    print_table(results)


if __name__ == "__main__":
    main()

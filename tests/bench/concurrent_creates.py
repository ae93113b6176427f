"""Creates per second over HTTP: one keep-alive client against many at once.

    python -m tests.bench.concurrent_creates                # 1 and 32 clients, api --workers 1, 2
    python -m tests.bench.concurrent_creates --seconds 5 --clients 1 8 32
    python -m tests.bench.concurrent_creates --idempotency-keys  # a fresh key on each create
    python -m tests.bench.concurrent_creates --rounds 5 --seconds 3

Fresh embedded PostgreSQL (fsync on) and Redis, and a real ``tasks-core api``
per worker count. Each client is a keep-alive connection creating no-op
tasks one by one for ``--seconds`` (with ``--idempotency-keys`` each
create carries a fresh ``Idempotency-Key``, as ``TasksClient`` sends one
with each create); the clients are raw sockets of one
process (cheap, so that the load generator does not take the cores the
server is measured on). No worker runs: this measures the create alone.
The client counts take turns, ``--rounds`` times (1, 32, 1, 32, ...), so
that each ratio to one client compares windows seconds apart: this machine
swings by half within minutes. Each figure is the median of its rounds, the
ratio the median of each round's own ratio (all of them beside it).
Beside each figure: its ratio to one client's on the same server, the commits and
statements PostgreSQL ran per create (``pg_stat_database``,
``pg_stat_statements``), which show creates sharing commits, and the CPU a
create cost in the API processes, in PostgreSQL and in this client (the
cores are shared: their sum bounds creates per second). Nothing is
asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import socket
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from tasks_core.migrate import upgrade
from tasks_core.settings import Settings
from tasks_core.storage.keys import create_key, ensure_organization
from tasks_core.store import store_from_settings
from tests.bench.measure import enable_statement_stats
from tests.bench.processes import ApiServer, cpu_seconds, descendants
from tests.bench.systems import NOOP
from tests.bench.throughput import embedded_servers

COUNTERS = """
SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
       (SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()))
"""


class _Connection:
    """One keep-alive client: sends the same create again as soon as the
    last one is answered. Raw HTTP/1.1 on a socket, the request built once:
    a load generator in Python costs far less this way than with an HTTP
    client library, so that on a small machine it does not take the cores
    the server is measured on."""

    def __init__(self, port: int, request: bytes, keyed: bool = False) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.request = request
        self.keyed = keyed
        self.buffer = b""
        self.done = 0

    def send(self) -> None:
        if not self.keyed:
            self.sock.sendall(self.request)
            return
        head, _, body = self.request.partition(b"\r\n\r\n")
        key = f"Idempotency-Key: {uuid.uuid4()}".encode()
        self.sock.sendall(head + b"\r\n" + key + b"\r\n\r\n" + body)

    def on_readable(self) -> bool:
        """Read what came; True when a whole answer is in (and checked)."""
        self.buffer += self.sock.recv(65536)
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return False
        head = self.buffer[:head_end].decode("latin-1")
        length = int(re.search(r"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        if len(self.buffer) < head_end + 4 + length:
            return False
        if not head.startswith("HTTP/1.1 201"):
            raise RuntimeError(f"create answered: {self.buffer[: head_end + 4 + length]!r}")
        self.buffer = self.buffer[head_end + 4 + length :]
        self.done += 1
        return True


def creates_per_second(
    port: int, secret: str, clients: int, seconds: float, keyed: bool = False
) -> float:
    """Creates per second of ``clients`` concurrent keep-alive clients."""
    body = json.dumps(NOOP).encode()
    request = (
        f"POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {secret}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    connections = [_Connection(port, request, keyed) for _ in range(clients)]
    with selectors.DefaultSelector() as selector:
        for connection in connections:
            selector.register(connection.sock, selectors.EVENT_READ, connection)
        started = time.perf_counter()
        until = started + seconds
        for connection in connections:
            connection.send()
        while time.perf_counter() < until:
            for ready, _ in selector.select(timeout=1.0):
                connection = ready.data
                if connection.on_readable() and time.perf_counter() < until:
                    connection.send()
        elapsed = time.perf_counter() - started
    for connection in connections:
        connection.sock.close()
    return sum(c.done for c in connections) / elapsed


def _cpu(server: ApiServer, postgres: int | None) -> dict[str, float]:
    """CPU seconds used so far by the API processes, PostgreSQL (every
    backend, those a run opens too) and this client."""
    groups = {"api": server.pids(), "pg": descendants(postgres or 0), "client": [os.getpid()]}
    return {name: cpu_seconds(pids) for name, pids in groups.items()}


@dataclass(frozen=True, slots=True)
class Window:
    """One measurement: creates per second, and per create the commits and
    statements PostgreSQL ran and the CPU (ms) of each process group."""

    rate: float
    commits: float
    statements: float
    cpu_ms: dict[str, float]


def _window(
    server: ApiServer,
    monitor: psycopg.Connection[tuple[Any, ...]],
    postgres: int | None,
    secret: str,
    clients: int,
    seconds: float,
    keyed: bool,
) -> Window:
    """``clients`` creating for ``seconds``, and what it cost."""
    cpu = _cpu(server, postgres)
    before = monitor.execute(COUNTERS).fetchone()
    rate = creates_per_second(server.port, secret, clients, seconds, keyed)
    after = monitor.execute(COUNTERS).fetchone()
    used = {n: (ms - cpu[n]) * 1000 for n, ms in _cpu(server, postgres).items()}
    assert before is not None and after is not None
    made = rate * seconds
    commits = (after[0] - before[0]) / made
    statements = (after[1] - before[1]) / made
    return Window(rate, commits, statements, {name: ms / made for name, ms in used.items()})


def _row(workers: int, count: int, windows: list[Window], ratios: list[float]) -> str:
    """A table row: the medians of the rounds, and each round's ratio."""
    mid = statistics.median
    cpu = {name: mid([w.cpu_ms[name] for w in windows]) for name in windows[0].cpu_ms}
    rounds = ", ".join(f"{r:.2f}" for r in ratios)
    return (f"| {workers} | {count} | {mid([w.rate for w in windows]):,.0f} "
            f"| {mid(ratios):.2f}x | {rounds} | {mid([w.commits for w in windows]):.2f} "
            f"| {mid([w.statements for w in windows]):.2f} | {cpu['api']:.2f} "
            f"| {cpu['pg']:.2f} | {cpu['client']:.2f} |")  # fmt: skip


def run(
    api_workers: Sequence[int],
    clients: Sequence[int],
    seconds: float,
    keyed: bool = False,
    rounds: int = 3,
) -> None:
    with embedded_servers() as (pg, rd):
        enable_statement_stats(pg)
        upgrade(pg.url)
        store = store_from_settings(Settings(database_url=pg.url, redis_url=rd.url))
        with store.transaction() as conn:
            key = create_key(conn, ensure_organization(conn, "bench"))
        store.dispose()
        env = {"DATABASE_URL": pg.url, "REDIS_URL": rd.url, "LOG_LEVEL": "WARNING"}
        with psycopg.connect(pg.url, autocommit=True) as monitor:
            print(f"{rounds} rounds of {seconds:g} s per client count, taking turns; medians")
            print("| api --workers | clients | creates/s | vs 1 client | by round "
                  "| commits/create | statements/create | CPU ms/create: API | PostgreSQL "
                  "| client |")  # fmt: skip
            print("|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
            for workers in api_workers:
                server = ApiServer(env, workers).start_serving()
                try:
                    _rounds(server, monitor, pg.pid, key.secret, clients, seconds, keyed, rounds)
                finally:
                    server.kill()


def _rounds(
    server: ApiServer,
    monitor: psycopg.Connection[tuple[Any, ...]],
    postgres: int | None,
    secret: str,
    clients: Sequence[int],
    seconds: float,
    keyed: bool,
    rounds: int,
) -> None:
    """Every client count in turn, ``rounds`` times; a row for each count,
    its ratios to the first count's window of the same round."""
    creates_per_second(server.port, secret, 1, 1.0)  # warm up
    windows: dict[int, list[Window]] = {count: [] for count in clients}
    for _ in range(rounds):
        for count in clients:
            windows[count].append(_window(server, monitor, postgres, secret, count, seconds, keyed))
    first = windows[clients[0]]
    for count in clients:
        ratios = [w.rate / o.rate for w, o in zip(windows[count], first, strict=True)]
        print(_row(server.workers, count, windows[count], ratios), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measurement")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--api-workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--idempotency-keys", action="store_true", help="a fresh Idempotency-Key on each create"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="turns of every client count (medians)"
    )
    args = parser.parse_args()
    run(args.api_workers, args.clients, args.seconds, args.idempotency_keys, args.rounds)


if __name__ == "__main__":
    main()

"""PostgreSQL crashes (SIGKILL, as an OOM kill would) under live clients:
every create answered 201 and every outcome a client has read survive it.

The server keeps its durable settings (fsync, synchronous commit) here, as in
production: what it acknowledged is on disk. The relaxed writes (a claim, a
lease renewal) may be lost; then a task only runs again, and its outcome is
still written once.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tasks_core.storage.keys import create_key
from tests.bench.processes import ApiServer
from tests.support.figures import report
from tests.support.stack import Stack, stack
from tests.support.wait import wait_until

CLIENTS = 4
BODY = {"kind": "CallAction", "targetId": "test/work", "input": {"seconds": 0.01}}
BATCH = 10  # every fifth request of a client is a batch create of this many


@dataclass
class Traffic:
    """What the clients were told: ids answered 201, outcomes read, refusals."""

    answered: list[uuid.UUID] = field(default_factory=list)
    outcomes: dict[uuid.UUID, Any] = field(default_factory=dict)
    refused: int = 0
    read_cursor: int = 0  # the oldest task whose outcome no client has read yet
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def count(self) -> int:
        with self.lock:
            return len(self.answered)


def _create(http: httpx.Client, n: int) -> list[uuid.UUID] | None:
    """The ids of a create (every fifth a batch), or None when it was refused."""
    if n % 5 == 0:
        answer = http.post("/v1/tasks/batch", json={"tasks": [BODY] * BATCH})
        found = answer.json()["tasks"] if answer.status_code == 201 else None
    else:
        answer = http.post("/v1/tasks", json=BODY)
        found = [answer.json()] if answer.status_code == 201 else None
    return None if found is None else [uuid.UUID(t["id"]) for t in found]


def _client(url: str, secret: str, traffic: Traffic) -> None:
    """Creates until stopped, reading back after each the oldest task whose
    outcome no client has read yet (the oldest finish first)."""
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
        n = 0
        while not traffic.stop.is_set():
            n += 1
            try:
                made = _create(http, n)
                if made is None:
                    with traffic.lock:
                        traffic.refused += 1
                    continue
                with traffic.lock:
                    traffic.answered += made
                    earlier = traffic.answered[traffic.read_cursor]
                read = http.get(f"/v1/tasks/{earlier}", params={"depth": 0})
                if read.status_code == 200 and read.json()["status"] == "completed":
                    with traffic.lock:
                        if earlier not in traffic.outcomes:
                            traffic.outcomes[earlier] = read.json()["output"]
                            traffic.read_cursor += 1
            except httpx.TransportError:
                with traffic.lock:
                    traffic.refused += 1


def _outputs(system: Stack, ids: list[uuid.UUID]) -> dict[uuid.UUID, Any]:
    with system.store.statement() as conn:
        rows = conn.execute(
            text("SELECT id, output FROM tasks WHERE id = ANY(:ids) AND status = 'completed'"),
            {"ids": ids},
        )
        return {r.id: r.output for r in rows}


@pytest.mark.timeout(600)
def test_every_create_answered_201_and_every_outcome_read_survive_a_postgres_crash() -> None:
    with stack(durable=True) as system:
        with system.store.transaction() as conn:
            secret = create_key(conn, system.caller.organization_id).secret
        api = ApiServer(system.env(), workers=2).start_serving()
        traffic = Traffic()
        clients = [
            threading.Thread(target=_client, args=(api.url, secret, traffic))
            for _ in range(CLIENTS)
        ]
        try:
            system.start_worker("--concurrency", "2")
            system.start_sweeper()
            for client in clients:
                client.start()
            wait_until(
                lambda: traffic.count() >= 200 and len(traffic.outcomes) >= 20,
                timeout=120,
                message="the clients made too few tasks before the crash",
            )
            system.postgres.kill()
            crashed_at = traffic.count()
            with traffic.lock:
                read_before = dict(traffic.outcomes)
                refused_before = traffic.refused
            wait_until(
                lambda: traffic.refused >= refused_before + CLIENTS,
                timeout=60,
                message="no request was refused while PostgreSQL was down",
            )
            system.postgres.start()
            wait_until(
                lambda: traffic.count() >= crashed_at + 100,
                timeout=120,
                message="the API did not recover after the crash",
            )
        finally:
            traffic.stop.set()
            for client in clients:
                client.join(30)
            api.kill()

        answered = list(traffic.answered)
        assert len(set(answered)) == len(answered)
        # Every task answered 201 is there, before the crash or after it...
        missing = len(answered) - sum(system.statuses(answered).values())
        assert missing == 0, f"{missing} of {len(answered)} tasks answered 201 were lost"
        system.wait_all(answered, ("completed",), timeout=240)
        # ...and finished exactly once; every outcome read is unchanged.
        double = sum(1 for n in system.terminal_events(answered).values() if n != 1)
        assert double == 0
        outputs = _outputs(system, list(read_before))
        assert all(outputs[i] == output for i, output in read_before.items())
        report(
            f"postgres crash (SIGKILL) under {CLIENTS} clients: answered_201={len(answered)} "
            f"answered_before_crash={crashed_at} outcomes_read_before={len(read_before)} "
            f"refused_or_failed={traffic.refused} lost=0 double={double} outcomes_changed=0"
        )

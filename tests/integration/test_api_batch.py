"""Batch create: POST /v1/tasks/batch and create_tasks, on the real app, PostgreSQL and Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, event, text

from tasks_core.publisher import MemoryPublisher, TaskMessage
from tasks_core.records import Caller
from tasks_core.recovery import republish_stale
from tasks_core.store import Store
from tasks_core.task import TaskSpec
from tasks_core.usecases.create import create_tasks
from tests.integration.test_api_queueing import ids_on
from tests.support.api import OrgClient, error_of
from tests.support.figures import report
from tests.support.wait import wait_until


def _batch(
    client: OrgClient, tasks: list[dict[str, Any]], key: str | None = None
) -> tuple[int, Any, str]:
    headers = {"Idempotency-Key": key} if key else {}
    response = client.post("/v1/tasks/batch", json={"tasks": tasks}, headers=headers)
    return response.status_code, response.json(), response.headers.get("Idempotent-Replayed", "")


def _stored(engine: Engine, organization_id: str) -> int:
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT count(*) FROM tasks WHERE organization_id = :o"), {"o": organization_id}
        )
        return int(found.scalar_one())


def test_batch_answers_every_task_in_the_order_sent(acme: OrgClient, redis_url: str) -> None:
    sent = [{"kind": "default", "title": f"t{i}", "input": {"i": i}} for i in range(25)]
    status, body, _ = _batch(acme, sent)
    assert status == 201
    assert [t["title"] for t in body["tasks"]] == [t["title"] for t in sent]
    assert {t["status"] for t in body["tasks"]} == {"queued"}
    for task in body["tasks"]:  # stored as answered
        assert acme.get(f"/v1/tasks/{task['id']}").json()["title"] == task["title"]
    # Every task's message is on its queue, in the order sent.
    broker = redis.Redis.from_url(redis_url)
    on_queue = ids_on(broker, "tasks.default")
    broker.close()
    assert on_queue == [t["id"] for t in body["tasks"]]


def test_one_bad_task_refuses_the_batch_naming_it(acme: OrgClient, engine: Engine) -> None:
    good = {"kind": "default"}
    status, body, _ = _batch(acme, [good, good, good, {"kind": "no spaces allowed"}, good])
    assert status == 422 and body["code"] == "validation_error"
    assert body["message"].startswith("tasks[3].kind"), body
    # A field the schema refuses is named the same way.
    response = acme.post("/v1/tasks/batch", json={"tasks": [good, {"kind": "default", "x": 1}]})
    assert "tasks[1].x" in error_of(response, 422, "unknown_field")
    response = acme.post("/v1/tasks/batch", json={"tasks": [good, {"maxAttempts": 2}]})
    assert "tasks[1].kind" in error_of(response, 422, "validation_error")
    assert _stored(engine, acme.organization_id) == 0


def test_a_missing_parent_refuses_the_whole_batch(acme: OrgClient, engine: Engine) -> None:
    parent = acme.create()["id"]
    nobody = str(uuid.uuid4())
    tasks = [{"kind": "default", "parentId": parent}, {"kind": "default", "parentId": nobody}]
    status, body, _ = _batch(acme, tasks)
    assert status == 404 and nobody in body["message"]
    assert _stored(engine, acme.organization_id) == 1  # the parent only


def test_batch_size_is_bounded(acme: OrgClient, client_with: Any) -> None:
    assert "1 to" in error_of(
        acme.post("/v1/tasks/batch", json={"tasks": []}), 422, "validation_error"
    )
    small = client_with(batch_max=3)
    response = small.post("/v1/tasks/batch", json={"tasks": [{"kind": "default"}] * 4})
    assert "BATCH_MAX" in error_of(response, 422, "validation_error")


def test_an_idempotency_key_covers_the_whole_batch(acme: OrgClient, engine: Engine) -> None:
    tasks = [{"kind": "default", "title": f"t{i}"} for i in range(5)]
    first = _batch(acme, tasks, key="import-7")
    again = _batch(acme, tasks, key="import-7")
    assert first[0] == again[0] == 201
    assert [t["id"] for t in again[1]["tasks"]] == [t["id"] for t in first[1]["tasks"]]
    assert (first[2], again[2]) == ("", "true")
    other = acme.post(
        "/v1/tasks/batch", json={"tasks": tasks[:4]}, headers={"Idempotency-Key": "import-7"}
    )
    assert "Idempotency-Key" in error_of(other, 409, "idempotency_conflict")
    single = acme.post("/v1/tasks", json=tasks[0], headers={"Idempotency-Key": "import-7"})
    error_of(single, 409, "idempotency_conflict")
    assert _stored(engine, acme.organization_id) == 5


def test_quotas_count_the_whole_batch(client_with: Any, engine: Engine) -> None:
    capped = client_with(max_open_tasks_per_org=4)
    status, body, _ = _batch(capped, [{"kind": "default"}] * 5)
    assert status == 429 and body["code"] == "quota_exceeded"
    assert _stored(engine, capped.organization_id) == 0
    response = capped.post("/v1/tasks/batch", json={"tasks": [{"kind": "d", "executorId": "gpu"}]})
    assert response.status_code == 201  # no executor list: any executor


@contextmanager
def statements(store: Store) -> Iterator[list[int]]:
    """How many SQL statements the store's engines run meanwhile."""
    counter = [0]

    def count(*_: object) -> None:
        counter[0] += 1

    engines = {store.engine, store.relaxed_engine} - {None}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", count)
    try:
        yield counter
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", count)


def _caller(acme: OrgClient) -> Caller:
    return Caller(organization_id=uuid.UUID(acme.organization_id), key_id=uuid.UUID(acme.key_id))


class CountingPublisher(MemoryPublisher):
    """Counts broker round trips."""

    trips: int = 0

    def publish(
        self, message: TaskMessage, *, countdown: float | None = None, coalesce: bool = False
    ) -> None:
        self.trips += 1
        super().publish(message, countdown=countdown)

    def publish_many(self, messages: Sequence[TaskMessage]) -> None:
        self.trips += 1
        super().publish_many(messages)


def test_a_batch_costs_the_same_statements_and_one_publish_whatever_its_size(
    store: Store, acme: OrgClient
) -> None:
    broker = CountingPublisher()
    counting = Store(engine=store.engine, publisher=broker, settings=store.settings)
    caller = _caller(acme)
    counts = {}
    for n in (1, 10, 200):
        broker.trips = 0
        with statements(counting) as counter:
            made = create_tasks(counting, caller, [TaskSpec(kind="default")] * n)
        assert len(made) == n and all(t.status.value == "queued" for t in made)
        counts[n] = (counter[0], broker.trips)
    assert counts[1] == counts[10] == counts[200] == (1, 1), counts
    with statements(counting) as counter:  # with a key: still one insert, plus the key's
        create_tasks(
            counting,
            caller,
            [TaskSpec(kind="default")] * 50,
            idempotency=_key("bulk"),
        )
    report(f"\nbatch create: sql_per_batch={counts[200][0]} with_key={counter[0]} redis_trips=1")


def _key(key: str) -> Any:
    from tasks_core.usecases.create import Idempotency

    return Idempotency(key=key, digest=key.encode())


class DyingPublisher(MemoryPublisher):
    """The API process dies right after the commit, before anything is published."""

    def publish_many(self, messages: Sequence[TaskMessage]) -> None:
        raise SystemExit("killed between commit and publish")


@pytest.mark.parametrize("fault", ["refused", "died"])
def test_a_batch_whose_publish_is_lost_is_published_by_the_sweeper(
    store: Store, acme: OrgClient, fault: str
) -> None:
    broken = DyingPublisher() if fault == "died" else MemoryPublisher(fail=True)
    lost = Store(engine=store.engine, publisher=broken, settings=store.settings)
    specs = [TaskSpec(kind="default", title=f"t{i}") for i in range(30)]
    caller = _caller(acme)
    if fault == "died":
        with pytest.raises(SystemExit):
            create_tasks(lost, caller, specs)
        with store.statement() as conn:
            rows = conn.execute(
                text("SELECT id, status FROM tasks WHERE organization_id = :o"),
                {"o": acme.organization_id},
            ).all()
        ids = {r.id for r in rows}
        assert {r.status for r in rows} == {"queued"}  # committed; no message went out
    else:
        made = create_tasks(lost, caller, specs)
        assert {t.status.value for t in made} == {"created"}  # moved back: nothing queued
        ids = {t.id for t in made}
    assert len(ids) == 30
    broker = MemoryPublisher()
    settings = store.settings.model_copy(update={"republish_after_seconds": 0.2})
    sweeper = Store(engine=store.engine, publisher=broker, settings=settings)

    def all_published() -> bool:
        republish_stale(sweeper)
        return {uuid.UUID(m.task_id) for m in broker.messages} >= ids

    wait_until(all_published, timeout=20, interval=0.1)
    report(f"\nbatch lost publish ({fault}): tasks={len(ids)} republished={len(ids)} lost=0")


def test_a_batch_may_hold_inline_flows_each_checked(acme: OrgClient, engine: Engine) -> None:
    steps = [{"id": "a", "kind": "CallAction", "targetId": "builtin/echo"}]
    flow = {"kind": "Flow", "params": {"steps": steps}}
    status, body, _ = _batch(acme, [{"kind": "default"}, flow])
    assert status == 201 and [t["kind"] for t in body["tasks"]] == ["default", "Flow"]
    assert body["tasks"][1]["status"] == "queued"
    cyclic = {"kind": "Flow", "params": {"steps": [{**steps[0], "after": ["a"]}]}}
    status, body, _ = _batch(acme, [flow, cyclic])
    assert status == 422 and body["message"].startswith("tasks[1]"), body
    assert _stored(engine, acme.organization_id) == 2

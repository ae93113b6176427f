"""Run sets: one message naming a queue's tasks published together, claimed
and recorded in sets by the worker (worker/runner.py: run_set), on the real
database and broker. Worker processes running sets are in tests/e2e/test_run_sets.py."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from sqlalchemy import text

from tasks_core.linger import BEHIND_DEPTH
from tasks_core.publisher import CeleryPublisher
from tasks_core.queues import queue_name
from tasks_core.records import Caller
from tasks_core.status import Status
from tasks_core.store import Store
from tasks_core.task import TaskSpec
from tasks_core.usecases.create import create_task
from tests.integration.test_api_queueing import ids_on, messages_on
from tests.integration.test_run_batching import counted
from tests.support.api import OrgClient
from tests.support.figures import report
from tests.support.wait import wait_until
from worker.context import TaskContext
from worker.pace import pace_of
from worker.registry import action
from worker.runner import run_set

# The handler of "test/gated" waits for this before it returns (at most 10 s).
GATE = threading.Event()
GATED_STARTED = threading.Event()


@action("test/gated")
def gated(ctx: TaskContext) -> Any:
    GATED_STARTED.set()
    GATE.wait(10)
    return "let through"


@action("test/slow")
def slow(ctx: TaskContext) -> Any:
    ctx.sleep(0.1)
    return "slow"


@pytest.fixture
def broker(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _pool() -> str:
    """A pool of the test's own: no worker serves it, and its pace starts unknown."""
    return f"sets-{uuid.uuid4().hex[:8]}"


def _batch(acme: OrgClient, pool: str, targets: list[str]) -> list[str]:
    bodies = [{"kind": "CallAction", "executorId": pool, "targetId": t} for t in targets]
    response = acme.post("/v1/tasks/batch", json={"tasks": bodies})
    assert response.status_code == 201, response.text
    return [t["id"] for t in response.json()["tasks"]]


def _queue(store: Store, pool: str) -> str:
    return queue_name("CallAction", pool, store.settings.queue_prefix)


def _statuses(store: Store, ids: list[str]) -> dict[str, str]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id::text, status FROM tasks WHERE id = ANY(:ids)"),
            {"ids": [uuid.UUID(i) for i in ids]},
        )
        return {row[0]: row[1] for row in rows}


def _running_events(store: Store, ids: list[str]) -> dict[str, int]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT task_id::text, count(*) FROM task_events "
                "WHERE task_id = ANY(:ids) AND to_status = 'running' GROUP BY task_id"
            ),
            {"ids": [uuid.UUID(i) for i in ids]},
        )
        return {row[0]: row[1] for row in rows}


def test_a_batch_goes_out_as_one_message_naming_its_tasks(
    acme: OrgClient, store: Store, broker: redis.Redis
) -> None:
    pool = _pool()
    ids = _batch(acme, pool, ["builtin/echo"] * 5)
    [message] = messages_on(broker, _queue(store, pool))
    assert message["headers"]["task"] == "tasks_core.run_set"
    assert message["headers"]["kind"] == "CallAction"
    assert message["headers"]["executor_id"] == pool
    assert ids_on(broker, _queue(store, pool)) == ids


def test_a_set_of_short_tasks_takes_one_claim_and_one_outcome_write(
    acme: OrgClient, store: Store
) -> None:
    pool = _pool()
    queue = _queue(store, pool)
    # A wide window: however slow this machine is now, the eight fit in it.
    settings = store.settings.model_copy(update={"run_set_window_seconds": 5.0})
    wide = Store(engine=store.engine, publisher=store.publisher, settings=settings)
    (first,) = _batch(acme, pool, ["builtin/echo"])
    run_set(wide, [first], queue=queue)  # the queue's pace is known from here on
    ids = _batch(acme, pool, ["builtin/echo"] * 8)
    with counted(store) as statements:
        written = run_set(wide, ids, queue=queue, route=("CallAction", pool))
    assert [str(t.id) for t in written] == ids
    assert set(_statuses(store, ids).values()) == {Status.COMPLETED.value}
    assert statements[0] == 2  # one claim, one write of the eight outcomes
    report(f"run set: tasks=8 statements={statements[0]}")


def test_sets_run_one_after_another_start_no_thread_of_their_own(
    acme: OrgClient, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A part's late write is a wake of the process's one late writer, not a
    # timer thread of its own to start, cancel and join per part.
    pool = _pool()
    queue = _queue(store, pool)
    run_set(store, _batch(acme, pool, ["builtin/echo"] * 4), queue=queue)  # the threads exist
    started: list[str] = []
    start = threading.Thread.start

    def counted_start(thread: threading.Thread) -> None:
        started.append(thread.name)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", counted_start)
    for _ in range(10):
        ids = _batch(acme, pool, ["builtin/echo"] * 4)
        assert [str(t.id) for t in run_set(store, ids, queue=queue)] == ids
    assert started == []


def test_a_task_named_twice_in_a_set_or_in_two_sets_runs_once(
    acme: OrgClient, store: Store
) -> None:
    pool = _pool()
    queue = _queue(store, pool)
    ids = _batch(acme, pool, ["builtin/echo"] * 3)
    first = run_set(store, [ids[0], *ids, ids[1]], queue=queue)
    again = run_set(store, ids, queue=queue)  # the same set delivered again
    assert sorted(str(t.id) for t in first) == sorted(ids) and again == []
    assert _running_events(store, ids) == dict.fromkeys(ids, 1)


def test_the_rest_of_a_slow_set_is_handed_back_to_its_queue(
    acme: OrgClient, store: Store, broker: redis.Redis
) -> None:
    pool = _pool()
    queue = _queue(store, pool)
    ids = _batch(acme, pool, ["test/slow"] * 4)
    broker.delete(queue)  # the batch's message, taken "by this worker"
    written = run_set(store, ids, queue=queue, route=("CallAction", pool))
    # The first run showed the queue's tasks take longer than the window:
    # this worker went on with the next one, and the two others went back to
    # the queue, one per message, for idle workers to take.
    assert [str(t.id) for t in written] == ids[:2]
    seconds = pace_of(queue).seconds
    assert seconds is not None and seconds >= 0.1
    assert ids_on(broker, queue) == ids[2:]
    assert len(messages_on(broker, queue)) == 2
    assert _statuses(store, ids[2:]) == dict.fromkeys(ids[2:], Status.QUEUED.value)


def test_a_set_without_its_route_is_run_here_whole(acme: OrgClient, store: Store) -> None:
    pool = _pool()
    queue = _queue(store, pool)
    ids = _batch(acme, pool, ["test/slow"] * 2)
    written = run_set(store, ids, queue=queue)  # no kind and executorId to hand it back with
    assert sorted(str(t.id) for t in written) == sorted(ids)


@contextmanager
def _gated_set(acme: OrgClient, store: Store) -> Iterator[list[str]]:
    """A set of three claimed whole (its queue known as fast) whose middle run
    holds at the gate: inside, the set is running; leaving opens the gate."""
    pool = _pool()
    queue = _queue(store, pool)
    (warm,) = _batch(acme, pool, ["builtin/echo"])
    run_set(store, [warm], queue=queue)  # known as fast: the next set is claimed whole
    ids = _batch(acme, pool, ["builtin/echo", "test/gated", "builtin/echo"])
    GATE.clear()
    GATED_STARTED.clear()
    runner = threading.Thread(target=run_set, args=(store, ids), kwargs={"queue": queue})
    runner.start()
    try:
        assert GATED_STARTED.wait(10), "the gated run did not start"
        yield ids
    finally:
        GATE.set()
        runner.join(10)


def test_outcomes_before_a_run_that_overruns_are_written_while_it_runs(
    acme: OrgClient, store: Store
) -> None:
    with _gated_set(acme, store) as ids:
        # The first outcome is written RUN_SET_WINDOW_SECONDS after it was
        # decided, although its part (the gated run) has not ended.
        wait_until(
            lambda: _statuses(store, ids[:1]) == {ids[0]: Status.COMPLETED.value},
            timeout=5,
            message="the outcome before the gated run was not written while it ran",
        )
        assert _statuses(store, ids[1:]) == dict.fromkeys(ids[1:], Status.RUNNING.value)
    assert set(_statuses(store, ids).values()) == {Status.COMPLETED.value}


def test_a_fenced_outcome_in_a_set_is_dropped_and_the_others_written(
    acme: OrgClient, store: Store
) -> None:
    with _gated_set(acme, store) as ids:
        # The third task, claimed with the others, is cancelled before it runs.
        response = acme.post(f"/v1/tasks/{ids[2]}/cancel")
        assert response.status_code == 200, response.text
    assert _statuses(store, ids) == {
        ids[0]: Status.COMPLETED.value,
        ids[1]: Status.COMPLETED.value,
        ids[2]: Status.CANCELLED.value,
    }


@dataclass
class Creator:
    """Single creates on a pool of their own through a publisher whose
    linger is long, so that the test (not the clock) says when held messages go."""

    store: Store
    caller: Caller
    pool: str
    queue: str
    publisher: CeleryPublisher

    def create(self) -> str:
        spec = TaskSpec(kind="default", executor_id=self.pool)
        return str(create_task(self.store, self.caller, spec).id)


@pytest.fixture
def creator(acme: OrgClient, store: Store) -> Iterator[Creator]:
    publisher = CeleryPublisher(store.settings.redis_url, linger_seconds=60)
    pool = _pool()
    yield Creator(
        store=Store(engine=store.engine, publisher=publisher, settings=store.settings),
        caller=Caller(uuid.UUID(acme.organization_id), uuid.UUID(acme.key_id)),
        pool=pool,
        queue=queue_name("default", pool, store.settings.queue_prefix),
        publisher=publisher,
    )
    publisher.close()


def test_single_creates_on_a_queue_that_is_behind_go_out_as_one_set(
    creator: Creator, store: Store, broker: redis.Redis
) -> None:
    # The third push finds two waiting beside it (BEHIND_DEPTH): behind.
    first = [creator.create() for _ in range(BEHIND_DEPTH)]
    held = [creator.create() for _ in range(3)]
    assert ids_on(broker, creator.queue) == first  # the three wait in the publisher
    creator.publisher.linger.flush()
    assert ids_on(broker, creator.queue) == [*first, *held]
    *_, last = messages_on(broker, creator.queue)
    assert last["headers"]["task"] == "tasks_core.run_set"
    assert _statuses(store, held) == dict.fromkeys(held, Status.QUEUED.value)


def test_an_idle_queue_gets_each_single_create_at_once(
    creator: Creator, broker: redis.Redis
) -> None:
    for _ in range(3):
        task_id = creator.create()
        assert ids_on(broker, creator.queue) == [task_id]  # pushed before create returned
        broker.delete(creator.queue)  # taken by a worker: the queue is idle again

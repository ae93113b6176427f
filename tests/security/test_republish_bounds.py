"""Tasks no worker serves cost the service a bounded amount: the sweeper backs
off each task's republishes geometrically, never piles copies onto a queue
whose list already holds a message per waiting task, and the publisher keeps
nothing per queue name. Real PostgreSQL and Redis."""

from __future__ import annotations

import gc
import math
import uuid
from collections.abc import Iterator
from time import monotonic

import kombu
import pytest
import redis
from sqlalchemy import Engine, text

from tasks_core.flow_definitions import Limits
from tasks_core.lifecycle.engine import apply
from tasks_core.lifecycle.moves import (
    Attempt,
    Claim,
    Create,
    HandBack,
    MarkQueued,
    Outcome,
    Republish,
    Retried,
    Retry,
)
from tasks_core.publisher import QUEUE_CACHE_SIZE, CeleryPublisher, TaskMessage
from tasks_core.records import Caller
from tasks_core.recovery import sweep_once
from tasks_core.settings import Settings
from tasks_core.status import Status
from tasks_core.store import Store
from tasks_core.task import TaskRecord, TaskSpec
from tasks_core.usecases.create import new_task
from tests.support.api import issue_key
from tests.support.figures import report

AFTER = 0.05  # REPUBLISH_AFTER_SECONDS of these tests
WINDOW = 2.0  # seconds of sweeping measured
VOID = "tasks.default@void"


@pytest.fixture
def caller(engine: Engine) -> Caller:
    _, key_id, org_id = issue_key(engine, "acme")
    return Caller(organization_id=uuid.UUID(org_id), key_id=uuid.UUID(key_id))


@pytest.fixture
def sweeper(store: Store, settings: Settings) -> Store:
    fast = settings.model_copy(update={"republish_after_seconds": AFTER})
    return Store(engine=store.engine, publisher=store.publisher, settings=fast)


@pytest.fixture
def broker(settings: Settings) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(settings.redis_url) as client:
        yield client


def waiting_unpublished(
    engine: Engine, caller: Caller, count: int, **spec: object
) -> list[uuid.UUID]:
    """``count`` tasks stored `created` whose publish was lost, all in one move."""
    limits = Limits()
    news = tuple(new_task(caller, TaskSpec(kind="default", **spec), limits=limits)  # type: ignore[arg-type]
                 for _ in range(count))  # fmt: skip
    with engine.begin() as conn:
        apply(conn, Create(news, actor="system:test"))
    return [n.id for n in news]


def republish_events(engine: Engine, ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT task_id, count(*) AS n FROM task_events WHERE type = 'republished' "
                "AND task_id = ANY(:i) GROUP BY task_id"
            ),
            {"i": ids},
        )
        return {r.task_id: int(r.n) for r in rows}


def sweep_for(store: Store, seconds: float, before_each: object = None) -> int:
    """Sweep pass after pass for ``seconds``; how many passes."""
    passes = 0
    deadline = monotonic() + seconds
    while monotonic() < deadline:
        if callable(before_each):
            before_each()
        sweep_once(store)
        passes += 1
    return passes


def test_an_unserved_executor_holds_one_message_per_task_however_long_they_wait(
    engine: Engine, caller: Caller, sweeper: Store, broker: redis.Redis
) -> None:
    tasks = 1000
    ids = waiting_unpublished(engine, caller, tasks, executor_id="void")
    with engine.begin() as conn:  # their publish was lost a while ago
        conn.execute(
            text("UPDATE tasks SET updated_at = now() - interval '1 minute' WHERE id = ANY(:i)"),
            {"i": ids},
        )

    passes = sweep_for(sweeper, WINDOW)

    republished = sum(republish_events(engine, ids).values())
    listed = int(broker.llen(VOID))  # type: ignore[arg-type]
    with engine.connect() as conn:
        most = conn.execute(
            text("SELECT max(republishes) FROM tasks WHERE id = ANY(:i)"), {"i": ids}
        ).scalar_one()
    # Every lost message published once; then, nobody consuming, no more copies.
    assert republished == tasks and listed == tasks
    # Each task's clock backs off geometrically: a handful of turns in the window,
    # where a fixed period would have given one every AFTER seconds.
    assert most <= 2 + math.log2(WINDOW / AFTER), most
    report(
        f"\nunserved executor: tasks={tasks} republished_in_window={republished} "
        f"redis_list_len={listed} (window={WINDOW:g}s, REPUBLISH_AFTER_SECONDS={AFTER:g}, "
        f"passes={passes}, most_backoff_turns={most}, "
        f"a_fixed_period_would_publish~{tasks * int(WINDOW / AFTER)})"
    )


def test_a_queue_that_loses_every_message_sees_republishes_back_off_geometrically(
    engine: Engine, caller: Caller, sweeper: Store, broker: redis.Redis
) -> None:
    """Every message is lost again (its list emptied before each pass): each
    task is still published again only after 1, 2, 4 ... times
    REPUBLISH_AFTER_SECONDS, a logarithmic count, not one per period."""
    tasks = 100
    ids = waiting_unpublished(engine, caller, tasks, executor_id="leaky")
    sweep_for(sweeper, WINDOW, before_each=lambda: broker.delete("tasks.default@leaky"))
    per_task = republish_events(engine, ids)
    assert set(per_task) == set(ids)  # each was published again...
    assert max(per_task.values()) <= 2 + math.log2(WINDOW / AFTER)  # ...a few times only
    report(
        f"\nleaky queue: tasks={tasks} republished_in_window={sum(per_task.values())} "
        f"most_per_task={max(per_task.values())} (window={WINDOW:g}s, "
        f"a_fixed_period_would_publish~{tasks * int(WINDOW / AFTER)})"
    )


def _backoff(engine: Engine, task_id: uuid.UUID) -> tuple[int, object]:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT republishes, republish_at FROM tasks WHERE id = :i"), {"i": task_id}
        ).one()
        return int(row.republishes), row.republish_at


def test_a_task_handed_back_to_its_queue_starts_its_backoff_afresh(
    engine: Engine, caller: Caller
) -> None:
    [task_id] = waiting_unpublished(engine, caller, 1, max_attempts=3)
    with engine.begin() as conn:
        apply(conn, MarkQueued((task_id,), actor="t"))
        for _ in range(3):
            apply(conn, Republish((task_id,), actor="t", after_seconds=1, max_seconds=60))
    assert _backoff(engine, task_id)[0] == 3
    with engine.begin() as conn:
        run: TaskRecord = apply(conn, Claim((task_id,), worker="w:1", lease_seconds=30)).tasks[
            task_id
        ]
        failed = Outcome(Status.FAILED, errors=[{"code": "x", "message": "y"}])
        apply(conn, Retry((Retried(Attempt.of(run), failed, delay=0),), actor="t"))
    assert _backoff(engine, task_id) == (0, None)  # a retry
    with engine.begin() as conn:
        apply(conn, Republish((task_id,), actor="t", after_seconds=1, max_seconds=60))
        apply(conn, Claim((task_id,), worker="w:1", lease_seconds=30))
        apply(conn, HandBack("w:", actor="t"))
    assert _backoff(engine, task_id) == (0, None)  # a hand-back


def _declared_entities() -> int:
    """Declarations kombu caches, over every broker connection of this process."""
    return sum(
        len(c.declared_entities or ()) for c in gc.get_objects() if isinstance(c, kombu.Connection)
    )


def test_the_publisher_keeps_nothing_per_queue_name(
    settings: Settings, broker: redis.Redis
) -> None:
    publisher = CeleryPublisher(settings.redis_url)
    names = 10_000
    try:
        known = len(publisher._app.amqp.queues)  # Celery's table of queues
        declared = _declared_entities()  # other tests' connections may hold some
        for n in range(names):
            queue = f"tasks.default@tenant-{n}"
            publisher.publish(TaskMessage(f"t-{n}", queue, "default", f"tenant-{n}"))
        assert len(publisher._app.amqp.queues) == known
        # A message without a countdown is pushed directly (no kombu entity at
        # all); those with one take entities from the bounded LRU.
        kept = len(publisher._queues)
        assert kept <= QUEUE_CACHE_SIZE
        assert _declared_entities() == declared  # publishing declared nothing
        assert list(broker.scan_iter("_kombu.binding.*", count=1000)) == []  # nor in Redis
        assert broker.llen(f"tasks.default@tenant-{names - 1}") == 1  # and each went out
    finally:
        publisher.close()
    report(f"\npublisher queues: names={names} kept={kept} bound={QUEUE_CACHE_SIZE} declared=0")


def test_a_broker_that_lost_its_data_gets_every_waiting_task_again_at_once(
    engine: Engine, caller: Caller, sweeper: Store, broker: redis.Redis
) -> None:
    """The backoff never delays recovery from a Redis restarted empty: the
    sweeper notices the loss and publishes every waiting task again, however
    long its backoff, and once only."""
    tasks = 50
    ids = waiting_unpublished(engine, caller, tasks, executor_id="far")
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE tasks SET updated_at = now() - interval '1 minute' WHERE id = ANY(:i)"),
            {"i": ids},
        )
    assert sweep_once(sweeper).republished == tasks
    with engine.begin() as conn:  # long into their backoff
        conn.execute(
            text("UPDATE tasks SET republish_at = now() + interval '1 hour' WHERE id = ANY(:i)"),
            {"i": ids},
        )
    assert sweep_once(sweeper).republished == 0
    broker.flushall()  # Redis restarted without persistence

    again = sweep_once(sweeper)

    assert again.republished == tasks and again["republish_backoffs_restarted"] == tasks
    assert broker.llen("tasks.default@far") == tasks
    assert sweep_once(sweeper).republished == 0

"""Concurrent creates of one process share a statement and its commit
(tasks_core/lifecycle/shared_creates.py), each keeping its own answer."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tasks_core.errors import Conflict
from tasks_core.lifecycle.shared_creates import creates_for, loop_creates_for
from tasks_core.queues import queue_name
from tasks_core.records import Caller
from tasks_core.status import Status
from tasks_core.storage.idempotency import request_digest
from tasks_core.storage.tasks import get_task
from tasks_core.store import Store
from tasks_core.task import TaskRecord, TaskSpec
from tasks_core.usecases.create import (
    Idempotency,
    create_task,
    create_task_once,
    create_task_soon,
)
from tests.integration.test_api_queueing import ids_on
from tests.integration.test_run_batching import counted
from tests.support.api import OrgClient
from tests.support.figures import report
from tests.support.wait import until, wait_until

K = 8
POOL = "shared-creates"  # no worker serves it: the tasks stay queued


def _caller(client: OrgClient) -> Caller:
    return Caller(uuid.UUID(client.organization_id), uuid.UUID(client.key_id))


@contextmanager
def held_inserts(store: Store) -> Iterator[Callable[[], None]]:
    """Inserts into tasks wait (a table lock) until the returned release is called."""
    lock = store.engine.connect()
    lock.execute(text("LOCK TABLE tasks IN SHARE MODE"))
    try:
        yield lock.commit
    finally:
        lock.close()


def _create_in_sets(
    store: Store, jobs: list[tuple[Caller, TaskSpec]]
) -> tuple[list[TaskRecord | BaseException], int]:
    """Create ``jobs`` from threads: each caller's first alone, held in
    flight, so that its others pile up behind it; each job's answer (or
    error), and the statements the waiting ones cost together."""
    answers: list[TaskRecord | BaseException] = [RuntimeError("no answer")] * len(jobs)

    def one(index: int) -> None:
        caller, spec = jobs[index]
        try:
            answers[index] = create_task(store, caller, spec)
        except BaseException as exc:  # the test looks at it
            answers[index] = exc

    firsts = {caller.actor: i for i, (caller, _) in reversed(list(enumerate(jobs)))}
    behind = Counter(caller.actor for caller, _ in jobs)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(jobs))]
    with held_inserts(store) as release, counted(store) as statements:
        for i in firsts.values():
            threads[i].start()
        # Each caller's first insert is sent, and waits on the lock.
        wait_until(
            lambda: statements[0] == len(firsts), timeout=10, message="first creates not sent"
        )
        statements[0] = 0
        for i, thread in enumerate(threads):
            if i not in firsts.values():
                thread.start()
        wait_until(
            lambda: all(creates_for(store, a).waiting == n - 1 for a, n in behind.items()),
            timeout=10,
            message="creates not waiting",
        )
        release()
        for thread in threads:
            thread.join(20)
    return answers, statements[0]


def _spec(n: int, **fields: Any) -> TaskSpec:
    return TaskSpec(kind="default", executor_id=POOL, target_id=f"job-{n}", **fields)


def test_creates_that_wait_together_are_inserted_in_one_statement(
    acme: OrgClient, store: Store, redis_url: str
) -> None:
    caller = _caller(acme)
    jobs = [(caller, _spec(i)) for i in range(K + 1)]
    creates = creates_for(store, caller.actor)
    sets_before = creates.sets_sent
    queue = queue_name("default", POOL, store.settings.queue_prefix)
    broker = redis.Redis.from_url(redis_url)
    messages_before = broker.llen(queue)
    answers, statements = _create_in_sets(store, jobs)
    tasks = [a for a in answers if isinstance(a, TaskRecord)]
    assert len(tasks) == K + 1, answers
    # Each caller got its own task, queued, and stored so.
    for (_, spec), task in zip(jobs, tasks, strict=True):
        assert task.target_id == spec.target_id and task.status is Status.QUEUED
        with store.statement() as conn:
            stored = get_task(conn, caller.organization_id, task.id)
        assert stored is not None and stored.status is Status.QUEUED
    # The first went alone; the K behind it went as one set, one insert.
    assert creates.sets_sent - sets_before == 2
    assert statements == 1
    # Each was published after the commit, those of the set in a run set.
    assert set(ids_on(broker, queue)) >= {str(t.id) for t in tasks}
    assert broker.llen(queue) - messages_before == 2
    broker.close()
    report(f"shared creates: {K} waiting creates took {statements} statement")


def test_each_caller_shares_its_own_sets_and_its_events_name_it(
    acme: OrgClient, globex: OrgClient, store: Store
) -> None:
    callers = [_caller(acme), _caller(globex)]
    jobs = [(callers[i % 2], _spec(i)) for i in range(K + 2)]
    answers, statements = _create_in_sets(store, jobs)
    tasks = [a for a in answers if isinstance(a, TaskRecord)]
    assert len(tasks) == K + 2, answers
    pairs = list(zip(jobs, tasks, strict=True))
    assert all(t.organization_id == c.organization_id for (c, _), t in pairs)
    assert statements == 2  # one set of each caller's waiting creates
    with store.statement() as conn:
        actors = dict(
            conn.execute(
                text(
                    "SELECT task_id, actor FROM task_events WHERE type = 'created' "
                    "AND task_id = ANY(:ids)"
                ),
                {"ids": [t.id for t in tasks]},
            ).all()
        )
    assert all(actors[t.id] == c.actor for (c, _), t in pairs)


def test_a_value_refused_in_a_set_fails_only_its_own_create(acme: OrgClient, store: Store) -> None:
    caller = _caller(acme)
    bad = K // 2
    jobs = [(caller, _spec(i)) for i in range(K + 1)]
    # PostgreSQL refuses a NUL character in a JSON string.
    jobs[bad] = (caller, _spec(bad, input={"text": "nul \u0000 here"}))
    creates = creates_for(store, caller.actor)
    sets_before = creates.sets_sent
    answers, _ = _create_in_sets(store, jobs)
    assert isinstance(answers[bad], DBAPIError)
    # The first alone, the set of K that failed, then its K creates one by one.
    assert creates.sets_sent - sets_before == 2 + K
    made = [a for i, a in enumerate(answers) if i != bad]
    assert all(isinstance(a, TaskRecord) and a.status is Status.QUEUED for a in made), answers
    with store.statement() as conn:
        stored = conn.execute(
            text("SELECT count(*) FROM tasks WHERE executor_id = :p AND organization_id = :o"),
            {"p": POOL, "o": caller.organization_id},
        ).scalar_one()
    assert stored == K


@pytest.mark.parametrize("threads", [16])
def test_concurrent_creates_from_many_threads_each_make_one_task(
    acme: OrgClient, store: Store, threads: int
) -> None:
    """Unheld, as in production: every create answers its own new task."""
    caller = _caller(acme)
    answers: list[uuid.UUID] = []
    lock = threading.Lock()

    def one(n: int) -> None:
        for i in range(10):
            task = create_task(store, caller, _spec(n * 100 + i))
            with lock:
                answers.append(task.id)

    workers = [threading.Thread(target=one, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert len(answers) == len(set(answers)) == threads * 10
    with store.statement() as conn:
        stored = conn.execute(
            text("SELECT count(*) FROM tasks WHERE id = ANY(:ids) AND status = 'queued'"),
            {"ids": answers},
        ).scalar_one()
    assert stored == threads * 10


def test_creates_awaited_on_a_loop_that_wait_together_are_inserted_in_one_statement(
    acme: OrgClient, store: Store
) -> None:
    """The API's path: creates awaited on its event loop share a set while
    one is in flight, and the loop runs on meanwhile (it waits here, on the
    loop, for the held insert)."""
    caller = _caller(acme)
    creates = loop_creates_for(store, caller.actor)
    sets_before = creates.sets_sent

    async def main() -> tuple[list[TaskRecord], int]:
        with held_inserts(store) as release, counted(store) as statements:
            first = asyncio.ensure_future(create_task_soon(store, caller, _spec(0)))
            await until(lambda: statements[0] == 1, message="the first insert was not sent")
            statements[0] = 0
            behind = [asyncio.ensure_future(create_task_soon(store, caller, _spec(i)))
                      for i in range(1, K + 1)]  # fmt: skip
            await until(lambda: creates.waiting == K, message="the creates behind it did not join")
            assert not first.done()
            release()
            answers = await asyncio.gather(first, *behind)
        assert not any(replayed for _, replayed in answers)
        return [task for task, _ in answers], statements[0]

    tasks, statements = asyncio.run(main())
    assert [t.target_id for t in tasks] == [f"job-{i}" for i in range(K + 1)]
    assert all(t.status is Status.QUEUED for t in tasks)
    assert len({t.id for t in tasks}) == K + 1
    assert creates.sets_sent - sets_before == 2 and statements == 1
    with store.statement() as conn:
        stored = conn.execute(
            text("SELECT count(*) FROM tasks WHERE id = ANY(:ids) AND status = 'queued'"),
            {"ids": [t.id for t in tasks]},
        ).scalar_one()
    assert stored == K + 1


Job = tuple[TaskSpec, Idempotency | None]


def _key(name: str, body: object = "same") -> Idempotency:
    return Idempotency(key=name, digest=request_digest({"body": body}))


def _soon_in_sets(
    store: Store, caller: Caller, first: Job, behind: list[Job]
) -> tuple[list[tuple[TaskRecord, bool] | BaseException], int]:
    """Await ``first`` on a loop with inserts held, so that ``behind`` join
    the next set; each answer (or error), and the statements after the first."""
    creates = loop_creates_for(store, caller.actor)

    async def soon(job: Job) -> tuple[TaskRecord, bool]:
        return await create_task_soon(store, caller, job[0], idempotency=job[1])

    async def main() -> tuple[list[tuple[TaskRecord, bool] | BaseException], int]:
        with held_inserts(store) as release, counted(store) as statements:
            head = asyncio.ensure_future(soon(first))
            await until(lambda: statements[0] == 1, message="the first insert was not sent")
            statements[0] = 0
            rest = [asyncio.ensure_future(soon(job)) for job in behind]
            await until(lambda: creates.waiting == len(behind), message="the creates did not join")
            release()
            answers = await asyncio.gather(head, *rest, return_exceptions=True)
        return answers, statements[0]

    return asyncio.run(main())


def _stored(store: Store, caller: Caller, target_id: str) -> int:
    """How many of the caller's tasks have this targetId."""
    with store.statement() as conn:
        count: int = conn.execute(
            text("SELECT count(*) FROM tasks WHERE organization_id = :o AND target_id = :t"),
            {"o": caller.organization_id, "t": target_id},
        ).scalar_one()
    return count


def test_keyed_creates_awaited_together_share_one_transaction(
    acme: OrgClient, store: Store
) -> None:
    """Creates with an Idempotency-Key (the client sends one with each) share
    a set too: one insert and one claim of all its keys, in one transaction."""
    caller = _caller(acme)
    creates = loop_creates_for(store, caller.actor)
    sets_before = creates.sets_sent
    behind: list[Job] = [(_spec(i), _key(f"order-{i}")) for i in range(1, K + 1)]
    answers, statements = _soon_in_sets(store, caller, (_spec(0), _key("order-0")), behind)
    assert all(not isinstance(a, BaseException) and not a[1] for a in answers), answers
    tasks = [a[0] for a in answers if not isinstance(a, BaseException)]
    assert [t.target_id for t in tasks] == [f"job-{i}" for i in range(K + 1)]
    assert creates.sets_sent - sets_before == 2
    # After the first's insert: its key's claim, then the set's one insert
    # and one claim of all its keys, in one transaction.
    assert statements == 1 + 1 + 1
    # Each key is bound to its own task: a retry answers it.
    for i, task in enumerate(tasks):
        again, replayed = create_task_once(store, caller, _spec(i), idempotency=_key(f"order-{i}"))
        assert again.id == task.id and replayed


def test_a_replayed_key_in_a_set_answers_its_first_task_and_the_others_their_own(
    acme: OrgClient, store: Store
) -> None:
    caller = _caller(acme)
    earlier = create_task(store, caller, _spec(99), idempotency=_key("retried"))
    creates = loop_creates_for(store, caller.actor)
    sets_before = creates.sets_sent
    behind: list[Job] = [(_spec(i), _key(f"new-{i}")) for i in range(1, 4)]
    behind.insert(1, (_spec(99), _key("retried")))
    answers, _ = _soon_in_sets(store, caller, (_spec(0), None), behind)
    assert not any(isinstance(a, BaseException) for a in answers), answers
    got = [a for a in answers if not isinstance(a, BaseException)]
    assert got[2][0].id == earlier.id and got[2][1]  # the retry: its first task, replayed
    fresh = [task for i, (task, replayed) in enumerate(got) if i != 2]
    assert all(not replayed for i, (_, replayed) in enumerate(got) if i != 2)
    assert len({t.id for t in fresh} | {earlier.id}) == len(got)
    # The set was refused for the replay, then sent again one create at a time.
    assert creates.sets_sent - sets_before == 2 + len(behind)
    stored = _stored(store, caller, "job-99")
    assert stored == 1  # the retry made no second task


def test_a_key_used_with_another_body_in_a_set_refuses_only_its_create(
    acme: OrgClient, store: Store
) -> None:
    caller = _caller(acme)
    create_task(store, caller, _spec(50), idempotency=_key("taken", body="first body"))
    behind: list[Job] = [(_spec(1), _key("a")), (_spec(2), _key("taken", body="other")),
                         (_spec(3), None)]  # fmt: skip
    answers, _ = _soon_in_sets(store, caller, (_spec(0), None), behind)
    assert isinstance(answers[2], Conflict), answers
    made = [a for i, a in enumerate(answers) if i != 2]
    assert all(not isinstance(a, BaseException) and not a[1] for a in made), answers


def test_one_key_twice_in_a_set_makes_one_task_and_answers_both_with_it(
    acme: OrgClient, store: Store
) -> None:
    """A client that retries while its first request is still pending sends
    the same key twice into one set: the keys of a set are bound in one
    statement, which can not bind a key twice, so the set goes one create at
    a time; the first makes the task, the retry is answered with it."""
    caller = _caller(acme)
    creates = loop_creates_for(store, caller.actor)
    sets_before = creates.sets_sent
    behind: list[Job] = [(_spec(1), _key("twice")), (_spec(2), _key("other")),
                         (_spec(1), _key("twice"))]  # fmt: skip
    answers, _ = _soon_in_sets(store, caller, (_spec(0), None), behind)
    assert not any(isinstance(a, BaseException) for a in answers), answers
    got = [a for a in answers if not isinstance(a, BaseException)]
    assert got[1][0].id == got[3][0].id
    assert (got[1][1], got[3][1]) == (False, True)  # the first made it, the retry replayed
    assert len({task.id for task, _ in got}) == 3
    assert creates.sets_sent - sets_before == 2 + len(behind)
    stored = _stored(store, caller, "job-1")
    assert stored == 1

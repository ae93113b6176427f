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

from tasks_core.lifecycle.shared_creates import creates_for, loop_creates_for
from tasks_core.queues import queue_name
from tasks_core.records import Caller
from tasks_core.status import Status
from tasks_core.storage.tasks import get_task
from tasks_core.store import Store
from tasks_core.task import TaskRecord, TaskSpec
from tasks_core.usecases.create import create_task, create_task_soon
from tests.integration.test_api_queueing import ids_on
from tests.integration.test_run_batching import counted
from tests.support.api import OrgClient
from tests.support.figures import report
from tests.support.wait import wait_until

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


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Let the loop run until ``condition`` holds (10 s at most)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not condition():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.001)


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
            await _until(lambda: statements[0] == 1, "the first insert was not sent")
            statements[0] = 0
            behind = [asyncio.ensure_future(create_task_soon(store, caller, _spec(i)))
                      for i in range(1, K + 1)]  # fmt: skip
            await _until(lambda: creates.waiting == K, "the creates behind it did not join")
            assert not first.done()
            release()
            tasks = await asyncio.gather(first, *behind)
        return tasks, statements[0]

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

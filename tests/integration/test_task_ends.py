"""The wake of long polls on real PostgreSQL: a task's end, committed by
any move, wakes its waiters through LISTEN; a lost listening connection is
replaced, and a waiter that was waiting through the loss still wakes."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import psycopg
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from tasks_core.records import Caller
from tasks_core.status import Status
from tasks_core.storage.db import libpq_url
from tasks_core.storage.task_ends import CHANNEL, EndListener
from tasks_core.store import Store
from tasks_core.task import TaskSpec
from tasks_core.usecases.create import create_task
from tasks_core.usecases.read import get_task_tree
from tasks_core.usecases.update import update_task
from tasks_core.usecases.wait import SharedReads, read_when_ended
from tests.support.api import issue_key

LISTENING = f"SELECT pid FROM pg_stat_activity WHERE query = 'LISTEN {CHANNEL}'"


def _caller(engine: Engine) -> Caller:
    _, key_id, org_id = issue_key(engine, f"ends-{uuid.uuid4().hex[:6]}")
    return Caller(organization_id=uuid.UUID(org_id), key_id=uuid.UUID(key_id))


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _listeners(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [row[0] for row in conn.execute(LISTENING)]


def test_a_waiter_through_a_lost_listener_still_wakes_at_the_end(
    store: Store, engine: Engine
) -> None:
    caller = _caller(engine)
    task = create_task(store, caller, TaskSpec(kind="default", status=Status.RUNNING))
    url = libpq_url(store.settings.database_url)

    async def scenario() -> tuple[str, float]:
        listener = EndListener(store.settings.database_url)

        def read() -> Any:
            return get_task_tree(store, caller, str(task.id), depth=0)

        waiter = asyncio.create_task(
            read_when_ended(listener, SharedReads(), str(task.id), read, 20, reader=("t",))
        )
        try:
            await _until(lambda: run_in_threadpool(lambda: bool(_listeners(url))))
            (first,) = await run_in_threadpool(_listeners, url)
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (first,))
            # The waiter listens anew (a new backend) and goes on waiting.
            await _until(lambda: run_in_threadpool(lambda: _listeners(url) not in ([], [first])))
            assert not waiter.done()
            changes = {"status": Status.COMPLETED, "output": {"done": True}}
            await run_in_threadpool(update_task, store, caller, str(task.id), changes)
            ended = time.monotonic()
            tree = await asyncio.wait_for(waiter, 5)
            return str(tree.task.status), time.monotonic() - ended
        finally:
            waiter.cancel()
            await listener.close()

    status, lag = asyncio.run(scenario())
    assert status == "completed"
    assert lag < 0.5, lag


def test_many_waiters_of_one_task_share_one_listening_connection(
    store: Store, engine: Engine
) -> None:
    caller = _caller(engine)
    tasks = [
        create_task(store, caller, TaskSpec(kind="default", status=Status.RUNNING))
        for _ in range(3)
    ]
    url = libpq_url(store.settings.database_url)

    async def scenario() -> list[str]:
        listener = EndListener(store.settings.database_url)
        shared = SharedReads()

        def reader(task_id: str) -> Any:
            return lambda: get_task_tree(store, caller, task_id, depth=0)

        waiters = [
            asyncio.create_task(
                read_when_ended(listener, shared, str(t.id), reader(str(t.id)), 20, reader=("t",))
            )
            for t in tasks
            for _ in range(10)
        ]
        try:
            await _until(lambda: run_in_threadpool(lambda: bool(_listeners(url))))
            assert len(await run_in_threadpool(_listeners, url)) == 1
            for t in tasks:
                await run_in_threadpool(
                    update_task, store, caller, str(t.id), {"status": Status.CANCELLED}
                )
            done = await asyncio.wait_for(asyncio.gather(*waiters), 5)
            return [str(tree.task.status) for tree in done]
        finally:
            for waiter in waiters:
                waiter.cancel()
            await listener.close()

    assert asyncio.run(scenario()) == ["cancelled"] * 30

"""Reading a task once it has ended, waiting up to a bound (``waitSeconds``).

The waiter listens for the task's end (``tasks_core.storage.task_ends``)
before it reads the task, so an end committed at any moment after that read
wakes it; it holds no database connection while it waits. Where no
listener can be had (the database is unreachable for a moment), the task is
read and answered at once, as without a wait: a client waiting in a loop
then asks again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import psycopg
from starlette.concurrency import run_in_threadpool

from tasks_core.records import Caller
from tasks_core.status import is_terminal
from tasks_core.storage.task_ends import EndListener
from tasks_core.store import Store
from tasks_core.usecases.read import TaskTree, get_task_tree

# The longest one request may wait: below common proxy and load-balancer
# idle timeouts, so that a long poll is not cut off on its way.
WAIT_SECONDS_MAX = 60.0


class SharedReads:
    """Reads of one task by the same organization at the same depth, shared
    by the waiters a task's end wakes together: 200 waiters cost one read,
    not 200 in turn through the pool. A waiter joins only a read begun after
    it was woken, so it never takes a state from before the end."""

    def __init__(self) -> None:
        self._flights: dict[tuple[object, ...], tuple[float, asyncio.Future[TaskTree]]] = {}

    async def read(
        self, key: tuple[object, ...], woken_at: float, read: Callable[[], TaskTree]
    ) -> TaskTree:
        flight = self._flights.get(key)
        if flight is not None and flight[0] >= woken_at:
            return await asyncio.shield(flight[1])
        loop = asyncio.get_running_loop()
        future: asyncio.Future[TaskTree] = loop.create_future()
        self._flights[key] = (loop.time(), future)
        try:
            tree = await run_in_threadpool(read)
            future.set_result(tree)
            return tree
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: joiners raise it themselves
            raise
        finally:
            if self._flights.get(key, (0.0, None))[1] is future:
                del self._flights[key]


async def read_when_ended(
    listener: EndListener,
    shared: SharedReads,
    task_id: str,
    read: Callable[[], TaskTree],
    seconds: float | None,
    *,
    reader: tuple[object, ...],
) -> TaskTree:
    """``read()`` once the task has ended, or after ``seconds`` as it is then.
    ``reader`` says whose read it is (organization, depth): only the same
    reader's waiters share a read."""
    try:
        task_key = str(uuid.UUID(task_id))  # as the trigger spells it
    except ValueError:
        task_key = ""
    if not seconds or not task_key:
        return await run_in_threadpool(read)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    try:
        async with listener.watch(task_key) as woken:
            tree = await run_in_threadpool(read)
            while not is_terminal(tree.task.status):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(woken.wait(), remaining)
                except TimeoutError:
                    return await run_in_threadpool(read)  # as it is now
                woken.clear()
                await listener.listening()  # again, if the wake was a lost connection
                tree = await shared.read((task_key, *reader), woken.at, read)
            return tree
    except (psycopg.Error, OSError, ValueError):
        return await run_in_threadpool(read)


class TaskWaits:
    """An API process's long polls: one listener and one set of shared reads
    for every request that waits for a task (``waitSeconds``, action calls)."""

    def __init__(self, database_url: str) -> None:
        self.listener = EndListener(database_url)
        self.shared = SharedReads()

    async def task_tree(
        self, store: Store, caller: Caller, task_id: str, *, depth: int, seconds: float | None
    ) -> TaskTree:
        """The caller's task with ``depth`` levels of children, once it has
        ended or after ``seconds`` (at once without them)."""

        def read() -> TaskTree:
            return get_task_tree(store, caller, task_id, depth=depth)

        reader = (caller.organization_id, depth)
        return await read_when_ended(
            self.listener, self.shared, task_id, read, seconds, reader=reader
        )

    async def close(self) -> None:
        await self.listener.close()

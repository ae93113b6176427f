"""``AsyncTasksClient``: the public API from Python, for asyncio, on httpx."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, Self, cast

import httpx

from tasks_core.client import calls
from tasks_core.client.calls import RETRY_STATUSES, Call, EventList, Task, TaskList
from tasks_core.client.policy import Retry, WaitClock


class AsyncTasksClient:
    """The same calls as :class:`TasksClient`, as coroutines (``list`` is an
    async iterator), resent by the same rules. Use it as an async context
    manager, or await :meth:`close`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        retry: Retry | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            **calls.http_options(base_url, api_key, timeout), transport=transport
        )
        self._retry = retry or Retry()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call) -> Any:
        delays = self._retry.delays() if call.retry else iter(())
        while True:
            try:
                response = await self._http.request(
                    call.method,
                    call.path,
                    params=call.params,
                    json=call.json,
                    headers=call.headers,
                    timeout=call.timeout if call.timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError:
                delay = next(delays, None)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                continue
            if response.status_code in RETRY_STATUSES:
                delay = next(delays, None)
                if delay is not None:
                    await asyncio.sleep(delay)
                    continue
            return calls.answer(response)

    async def create(self, kind: str, *, idempotency_key: str | None = None, **fields: Any) -> Task:
        """Create a task of ``kind`` with the API's fields (``targetId``, ``input``...)."""
        return cast(Task, await self._send(calls.create(kind, fields, idempotency_key)))

    async def create_many(
        self, bodies: list[Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> TaskList:
        """Create tasks in one transaction (``POST /v1/tasks/batch``), in the order given."""
        answer = await self._send(calls.create_many(bodies, idempotency_key))
        return cast(TaskList, answer["tasks"])

    async def get(self, task_id: str, depth: int = 1) -> Task:
        """The task, with ``depth`` levels of children."""
        return cast(Task, await self._send(calls.get(task_id, depth)))

    async def wait(self, task_id: str, timeout: float | None = None, depth: int = 1) -> Task:
        """The task once it has ended; ``TimeoutError`` after ``timeout`` seconds."""
        clock = WaitClock(timeout)
        while True:
            asked = clock.next_wait()
            started = time.monotonic()
            task = cast(Task, await self._send(calls.get(task_id, depth, wait_seconds=asked)))
            if calls.is_terminal(task):
                return task
            if clock.expired():
                raise TimeoutError(f"task {task_id} is still {task['status']} after {timeout} s")
            await asyncio.sleep(clock.pause_after(asked, time.monotonic() - started))

    async def list(self, **filters: Any) -> AsyncIterator[Task]:
        """Every task matching ``filters`` (``status``, ``kind``, ``executorId``,
        ``parentId``, ``appId``, ``targetId``, ``limit`` per page), newest
        first, page after page."""
        cursor: str | None = None
        while True:
            page = await self._send(calls.list_page(filters, cursor))
            for task in cast(TaskList, page["items"]):
                yield task
            cursor = page["nextCursor"]
            if cursor is None:
                return

    async def update(self, task_id: str, **fields: Any) -> Task:
        """Change the fields given (``status``, ``output``, ``errors``...)."""
        return cast(Task, await self._send(calls.update(task_id, fields)))

    async def cancel(self, task_id: str) -> Task:
        """Cancel the task and its unfinished descendants."""
        return cast(Task, await self._send(calls.cancel(task_id)))

    async def events(self, task_id: str) -> EventList:
        """The task's whole event log, oldest first."""
        found: EventList = []
        while True:
            answer = await self._send(calls.events_page(task_id, after=calls.after_id(found)))
            page = cast(EventList, answer["items"])
            found += page
            if len(page) < calls.EVENTS_PAGE:
                return found

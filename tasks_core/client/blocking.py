"""``TasksClient``: the public API from Python, blocking, on httpx."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Self, cast

import httpx

from tasks_core.client import calls
from tasks_core.client.calls import RETRY_STATUSES, Call, EventList, Task, TaskList
from tasks_core.client.policy import Retry, WaitClock


class TasksClient:
    """A client of one API with one key. Use it as a context manager, or
    call :meth:`close`. Field names are the API's own (camelCase):
    ``client.create("CallAction", targetId="builtin/echo", input={...})``.

    Every error answer raises :class:`TasksError`. Creates are sent with an
    ``Idempotency-Key`` (yours, or one made per call) and resent on a lost
    connection or a 502/503/504, so a resend never makes a second task;
    reads are resent too. Updates and cancels are sent once.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        retry: Retry | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            **calls.http_options(base_url, api_key, timeout), transport=transport
        )
        self._retry = retry or Retry()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call) -> Any:
        delays = self._retry.delays() if call.retry else iter(())
        while True:
            try:
                response = self._http.request(
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
                time.sleep(delay)
                continue
            if response.status_code in RETRY_STATUSES:
                delay = next(delays, None)
                if delay is not None:
                    time.sleep(delay)
                    continue
            return calls.answer(response)

    def create(self, kind: str, *, idempotency_key: str | None = None, **fields: Any) -> Task:
        """Create a task of ``kind`` with the API's fields (``targetId``, ``input``...)."""
        return cast(Task, self._send(calls.create(kind, fields, idempotency_key)))

    def create_many(
        self, bodies: list[Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> TaskList:
        """Create tasks in one transaction (``POST /v1/tasks/batch``), in the order given."""
        answer = self._send(calls.create_many(bodies, idempotency_key))
        return cast(TaskList, answer["tasks"])

    def get(self, task_id: str, depth: int = 1) -> Task:
        """The task, with ``depth`` levels of children."""
        return cast(Task, self._send(calls.get(task_id, depth)))

    def wait(self, task_id: str, timeout: float | None = None, depth: int = 1) -> Task:
        """The task once it has ended; ``TimeoutError`` after ``timeout`` seconds."""
        clock = WaitClock(timeout)
        while True:
            asked = clock.next_wait()
            started = time.monotonic()
            task = cast(Task, self._send(calls.get(task_id, depth, wait_seconds=asked)))
            if calls.is_terminal(task):
                return task
            if clock.expired():
                raise TimeoutError(f"task {task_id} is still {task['status']} after {timeout} s")
            time.sleep(clock.pause_after(asked, time.monotonic() - started))

    def list(self, **filters: Any) -> Iterator[Task]:
        """Every task matching ``filters`` (``status``, ``kind``, ``executorId``,
        ``parentId``, ``appId``, ``targetId``, ``limit`` per page), newest
        first, page after page."""
        cursor: str | None = None
        while True:
            page = self._send(calls.list_page(filters, cursor))
            yield from cast(TaskList, page["items"])
            cursor = page["nextCursor"]
            if cursor is None:
                return

    def update(self, task_id: str, **fields: Any) -> Task:
        """Change the fields given (``status``, ``output``, ``errors``...)."""
        return cast(Task, self._send(calls.update(task_id, fields)))

    def cancel(self, task_id: str) -> Task:
        """Cancel the task and its unfinished descendants."""
        return cast(Task, self._send(calls.cancel(task_id)))

    def events(self, task_id: str) -> EventList:
        """The task's whole event log, oldest first."""
        found: EventList = []
        while True:
            answer = self._send(calls.events_page(task_id, after=calls.after_id(found)))
            page = cast(EventList, answer["items"])
            found += page
            if len(page) < calls.EVENTS_PAGE:
                return found

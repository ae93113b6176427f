"""The API's calls, as data: what each client method sends and what it gets back.

Both clients (``TasksClient``, ``AsyncTasksClient``) build their requests
here and differ only in how they send them, so the two cannot drift apart.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict
from urllib.parse import quote

import httpx

from tasks_core.status import TERMINAL_STATUSES

TERMINAL = frozenset(str(status) for status in TERMINAL_STATUSES)
# The longest wait one GET with waitSeconds may ask of the API.
WAIT_SECONDS_MAX = 60.0
# Statuses after which a call may be sent again unchanged: the API is
# shedding load or a dependency is down for a moment.
RETRY_STATUSES = frozenset({502, 503, 504})
# Events per page (the API's largest): a shorter page is the last.
EVENTS_PAGE = 1000


class Task(TypedDict):
    """A task as the API answers it (the Task object of ``POST /v1/tasks``)."""

    id: str
    kind: str
    status: str
    title: str | None
    description: str | None
    organizationId: str
    authorId: str | None
    executorId: str | None
    appId: str | None
    targetId: str | None
    parentId: str | None
    stateId: str | None
    input: Any
    params: Any
    output: Any
    errors: list[Any]
    children: list[Task]
    createdAt: str
    updatedAt: str
    startedAt: str | None
    endedAt: str | None
    attempt: int
    maxAttempts: int
    timeoutSeconds: float | None
    truncated: NotRequired[bool]


class Event(TypedDict):
    """One line of a task's event log."""

    id: int
    taskId: str
    at: str
    type: str
    fromStatus: str | None
    toStatus: str | None
    actor: str
    detail: dict[str, Any] | None


# Named here: inside a client class, ``list`` is its method.
TaskList = list[Task]
EventList = list[Event]


class TasksError(Exception):
    """An error answer of the API: its HTTP status and its ``{code, message}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    @classmethod
    def of(cls, response: httpx.Response) -> TasksError:
        try:
            body = response.json()
            return cls(response.status_code, str(body["code"]), str(body["message"]))
        except (ValueError, KeyError, TypeError):  # not the API's error shape (a proxy's page)
            return cls(response.status_code, "http_error", response.text[:500] or "no body")


@dataclass(frozen=True)
class Call:
    """One request. ``retry`` says it may be sent again after a lost connection
    or a 5xx of ``RETRY_STATUSES``: true of reads, and of creates, which carry
    an ``Idempotency-Key`` so that a resent create never makes a second task."""

    method: str
    path: str
    params: Mapping[str, Any] = field(default_factory=dict)
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    retry: bool = False
    timeout: float | None = None  # None: the client's own


def http_options(base_url: str, api_key: str, timeout: float) -> dict[str, Any]:
    """The httpx client options of both clients."""
    return {
        "base_url": base_url.rstrip("/"),
        "headers": {"Authorization": f"Bearer {api_key}"},
        "timeout": timeout,
    }


def _path_id(task_id: str) -> str:
    # An id is a UUID; whatever else a caller passes stays one path segment.
    return quote(str(task_id), safe="")


def _idempotent(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key or f"client-{uuid.uuid4()}"}


def create(kind: str, fields: Mapping[str, Any], idempotency_key: str | None) -> Call:
    body = {"kind": kind, **fields}
    return Call("POST", "/v1/tasks", json=body, headers=_idempotent(idempotency_key), retry=True)


def create_many(bodies: list[Mapping[str, Any]], idempotency_key: str | None) -> Call:
    body = {"tasks": list(bodies)}
    return Call(
        "POST", "/v1/tasks/batch", json=body, headers=_idempotent(idempotency_key), retry=True
    )


def get(task_id: str, depth: int = 1, wait_seconds: float | None = None) -> Call:
    params: dict[str, Any] = {"depth": depth}
    timeout = None
    if wait_seconds is not None and wait_seconds > 0:
        params["waitSeconds"] = round(min(wait_seconds, WAIT_SECONDS_MAX), 3)
        timeout = params["waitSeconds"] + 10.0  # the wait, and the answer after it
    return Call("GET", f"/v1/tasks/{_path_id(task_id)}", params=params, retry=True, timeout=timeout)


def list_page(filters: Mapping[str, Any], cursor: str | None) -> Call:
    params = {name: value for name, value in filters.items() if value is not None}
    if cursor is not None:
        params["cursor"] = cursor
    return Call("GET", "/v1/tasks", params=params, retry=True)


def update(task_id: str, fields: Mapping[str, Any]) -> Call:
    return Call("PUT", f"/v1/tasks/{_path_id(task_id)}", json=dict(fields))


def cancel(task_id: str) -> Call:
    return Call("POST", f"/v1/tasks/{_path_id(task_id)}/cancel")


def events_page(task_id: str, after: int) -> Call:
    params = {"after": after, "limit": EVENTS_PAGE}
    return Call("GET", f"/v1/tasks/{_path_id(task_id)}/events", params=params, retry=True)


def after_id(events: list[Event]) -> int:
    """The ``after`` of the next page of events."""
    return events[-1]["id"] if events else 0


def answer(response: httpx.Response) -> Any:
    """The JSON of a success; a :class:`TasksError` for an error answer."""
    if response.is_error:
        raise TasksError.of(response)
    return response.json()


def is_terminal(task: Task) -> bool:
    return task["status"] in TERMINAL

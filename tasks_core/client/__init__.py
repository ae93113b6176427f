"""A Python client of the public API (``/v1``), on httpx.

    from tasks_core.client import TasksClient

    with TasksClient("http://127.0.0.1:8000", api_key) as tasks:
        task = tasks.create("CallAction", targetId="builtin/echo", input={"n": 1})
        done = tasks.wait(task["id"], timeout=30)

``AsyncTasksClient`` offers the same methods as coroutines. It needs only
httpx and the API: no database credentials, no Celery.
"""

from __future__ import annotations

from tasks_core.client.asynchronous import AsyncTasksClient
from tasks_core.client.blocking import TasksClient
from tasks_core.client.calls import Event, Task, TasksError
from tasks_core.client.policy import Retry

__all__ = ["AsyncTasksClient", "Event", "Retry", "Task", "TasksClient", "TasksError"]

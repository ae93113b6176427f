"""The systems the comparison measures, each able to enqueue N no-op tasks
(``enqueue``) and one task whose id it returns (``send_one``, for latency).

Each no-op records its start under its id in ``tests.bench.starts``. A
system whose feature is not in this code base says why in ``missing``; the
table shows it as "n/a". Features picked up when present: an in-process
``create_tasks(store, caller, specs)`` and ``POST /v1/tasks/batch``.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from tasks_core.records import Caller
from tasks_core.store import Store
from tasks_core.task import TaskSpec
from tasks_core.usecases.create import create_task
from tests.bench.noop import NOOP_ACTION

NOOP = {"kind": "default", "targetId": NOOP_ACTION}
NOOP_SPEC = TaskSpec(kind="default", target_id=NOOP_ACTION)
BATCH = 500
# Where an in-process batch create may live, newest first.
CREATE_TASKS_MODULES = ("tasks_core.usecases.create", "tasks_core.usecases.create_batch")


def chunks(n: int, size: int = BATCH) -> Iterator[int]:
    while n > 0:
        yield min(size, n)
        n -= size


class System:
    """One row of the table."""

    name = ""
    notes = ""
    tasks_core = True  # its tasks are rows in the benchmark's database
    latency = True  # has a send_one
    missing: str | None = None  # why it is n/a
    count: int | None = None  # a fixed task count instead of the run's N

    def enqueue(self, n: int) -> None:
        raise NotImplementedError

    def send_one(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        """Release what it holds (clients, producers)."""


# The thread-pool rows: worker processes x threads each, on queues of their own.
THREADS = (2, 8)
THREADS_EXECUTOR = "bench-threads"
THREADS_LABEL = f"{THREADS[0]} worker processes x --pool threads -c {THREADS[1]}"
# The solo rows: worker processes running one task at a time each, no pool child.
SOLO = 2
SOLO_EXECUTOR = "bench-solo"
SOLO_LABEL = f"{SOLO} worker processes x --pool solo"


class RawCelery(System):
    name = "raw Celery 5, prefork -c 2, acks_late, no results"
    notes = "nothing durable"
    tasks_core = False

    def __init__(self, redis_url: str, *, threads: bool = False) -> None:
        from tests.bench.raw_celery import QUEUE, THREADS_QUEUE, app

        self.queue = THREADS_QUEUE if threads else QUEUE
        if threads:
            self.name = f"raw Celery 5, {THREADS_LABEL}, acks_late, no results"
        self.app = app
        # A connection of its own, not the app's pool: the app is the module's,
        # and a second run in one process (the tests) is on another Redis.
        self.connection = app.connection_for_write(redis_url)
        self.producer = app.amqp.Producer(self.connection)

    def send_one(self) -> str:
        task_id = uuid.uuid4().hex
        self.app.send_task("raw.noop", args=[task_id], queue=self.queue, producer=self.producer)
        return task_id

    def enqueue(self, n: int) -> None:
        for _ in range(n):
            self.send_one()

    def close(self) -> None:
        self.connection.release()


class InProcess(System):
    name = "tasks-core create_task() in-process, one by one"
    notes = "durable"

    def __init__(
        self, store: Store, caller: Caller, count: int | None = None, *, solo: bool = False
    ) -> None:
        self.store, self.caller, self.count = store, caller, count
        self.spec = NOOP_SPEC
        if count is not None:
            self.name = f"{count:,} independent tasks, create_task() one by one"
            self.latency = False
        if solo:
            self.name += f", {SOLO_LABEL}"
            self.spec = TaskSpec(kind="default", target_id=NOOP_ACTION, executor_id=SOLO_EXECUTOR)

    def send_one(self) -> str:
        return str(create_task(self.store, self.caller, self.spec).id)

    def enqueue(self, n: int) -> None:
        for _ in range(n):
            create_task(self.store, self.caller, self.spec)


def find_create_tasks() -> Callable[..., Any] | None:
    """The in-process batch create, where the code base has one."""
    for module in CREATE_TASKS_MODULES:
        try:
            found = getattr(importlib.import_module(module), "create_tasks", None)
        except ImportError:
            continue
        if callable(found):
            return found  # type: ignore[no-any-return]
    return None


class InProcessBatch(System):
    name = f"tasks-core create_tasks() in-process, batches of {BATCH}"
    notes = "durable"

    def __init__(self, store: Store, caller: Caller, *, threads: bool = False) -> None:
        self.store, self.caller = store, caller
        self.spec = NOOP_SPEC
        if threads:
            self.name += f", {THREADS_LABEL}"
            self.spec = TaskSpec(
                kind="default", target_id=NOOP_ACTION, executor_id=THREADS_EXECUTOR
            )
        self.create_tasks = find_create_tasks()
        if self.create_tasks is None:
            self.missing = "no create_tasks() yet"

    def send_one(self) -> str:
        assert self.create_tasks is not None
        return str(self.create_tasks(self.store, self.caller, [self.spec])[0].id)

    def enqueue(self, n: int) -> None:
        assert self.create_tasks is not None
        for size in chunks(n):
            self.create_tasks(self.store, self.caller, [self.spec] * size)


class Http(System):
    """POST /v1/tasks, one keep-alive client against a real ``tasks-core api``."""

    notes = "durable"

    def __init__(self, url: str, secret: str, api_workers: int, *, solo: bool = False) -> None:
        self.name = f"tasks-core over HTTP, one keep-alive client, api --workers {api_workers}"
        self.body: dict[str, Any] = NOOP
        if solo:
            self.name += f", {SOLO_LABEL}"
            self.body = {**NOOP, "executorId": SOLO_EXECUTOR}
        headers = {"Authorization": f"Bearer {secret}"}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=60)

    def _post(self, path: str, body: Any) -> Any:
        response = self.http.post(path, json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def send_one(self) -> str:
        return str(self._post("/v1/tasks", self.body)["id"])

    def enqueue(self, n: int) -> None:
        for _ in range(n):
            self._post("/v1/tasks", self.body)

    def close(self) -> None:
        self.http.close()


class HttpBatch(Http):
    """POST /v1/tasks/batch, batches of BATCH, where the endpoint exists."""

    def __init__(self, url: str, secret: str) -> None:
        super().__init__(url, secret, 1)
        self.name = f"tasks-core bulk over HTTP, POST /v1/tasks/batch of {BATCH}"
        probe = self.http.post("/v1/tasks/batch", json={"tasks": []})
        if probe.status_code in (404, 405):
            self.missing = f"no POST /v1/tasks/batch yet ({probe.status_code})"

    def send_one(self) -> str:
        return str(self._post("/v1/tasks/batch", {"tasks": [NOOP]})["tasks"][0]["id"])

    def enqueue(self, n: int) -> None:
        for size in chunks(n):
            self._post("/v1/tasks/batch", {"tasks": [NOOP] * size})


class ParallelFlow(System):
    """One Flow of ``steps`` parallel no-op steps, from its create to its last step's start."""

    notes = "durable; one create"
    latency = False

    def __init__(self, store: Store, caller: Caller, steps: int) -> None:
        self.store, self.caller, self.count = store, caller, steps
        self.name = f"a {steps:,}-step parallel Flow"

    def enqueue(self, n: int) -> None:
        steps = [{"id": f"s{i}", **NOOP} for i in range(n)]
        spec = TaskSpec(kind="Flow", params={"mode": "parallel", "steps": steps})
        create_task(self.store, self.caller, spec)


class Procrastinate(System):
    """procrastinate's bulk defer (jobs in PostgreSQL), when the package is installed."""

    name = f"procrastinate, bulk defer of {BATCH}"
    notes = "durable; 2 workers x concurrency 2"
    tasks_core = False

    def __init__(self, dsn: str | None) -> None:
        if dsn is None:
            self.missing = "not measured (not installed, or --no-procrastinate)"
            return
        from tests.bench import procrastinate_app

        self.task = procrastinate_app.noop
        self.app = procrastinate_app.app
        self._open = self.app.open()
        self._open.__enter__()

    def send_one(self) -> str:
        task_id = f"p-{uuid.uuid4().hex}"
        self.task.defer(task_id=task_id)
        return task_id

    def enqueue(self, n: int) -> None:
        for size in chunks(n):
            self.task.batch_defer(*({"task_id": f"p-{uuid.uuid4().hex}"} for _ in range(size)))

    def close(self) -> None:
        if self.missing is None:
            self._open.__exit__(None, None, None)

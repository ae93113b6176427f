"""Routing: ``executorId`` and ``kind`` choose the queue, and only the pools
serving a queue run its tasks (real ``tasks-core worker`` and ``celery`` processes)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import redis

from tasks_core.records import Caller
from tasks_core.settings import Settings
from tasks_core.status import Status
from tasks_core.store import Store
from tasks_core.task import TaskSpec
from tasks_core.usecases.create import create_task
from tests.e2e.conftest import worker_env
from tests.e2e.helpers_worker import (
    queue_depth,
    run,
    start_many,
    stop_many,
    worker_column,
    worker_pid,
)
from tests.support.api import OrgClient, wait_for_status
from tests.support.workers import PLAIN_CELERY_WORKER, WorkerProcess

NO_HANDLER_KIND = "test.NoHandlerAnywhere"


@dataclass(frozen=True)
class Pools:
    """The module's workers, started together (and stopped together)."""

    plain: WorkerProcess  # every known kind, no executor
    gpu: WorkerProcess  # every known kind, executor "gpu" only
    odd: WorkerProcess  # only NO_HANDLER_KIND, which has no handler
    celery: WorkerProcess  # plain `celery -A worker worker -Q <plain prefix>.default`
    plain_prefix: str  # the queue prefix only `celery` serves


@pytest.fixture(scope="module")
def pools(start_worker: Callable[..., WorkerProcess], e2e_settings: Settings) -> Iterator[Pools]:
    # A prefix of its own for the plain Celery worker, so that the other
    # workers (which serve "<module prefix>.default") can not take its task.
    plain_prefix = f"{e2e_settings.queue_prefix}_plain"
    celery = WorkerProcess(
        worker_env(e2e_settings.model_copy(update={"queue_prefix": plain_prefix})),
        [
            "-Q",
            f"{plain_prefix}.default",
            "--pool",
            "solo",
            "--loglevel",
            "INFO",
            "-n",
            f"plain-{uuid.uuid4().hex[:8]}@%h",
        ],
        command=PLAIN_CELERY_WORKER,
    )
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            celery_started = pool.submit(celery.start)
            plain, gpu, odd = start_many(
                start_worker,
                ["--concurrency", "2"],
                ["--executor", "gpu", "--concurrency", "2"],
                ["--kind", NO_HANDLER_KIND, "--concurrency", "1"],
            )
            celery_started.result()
        yield Pools(plain=plain, gpu=gpu, odd=odd, celery=celery, plain_prefix=plain_prefix)
        stop_many([plain, gpu, odd, celery])
    finally:
        celery.stop()  # start_worker stops the others, even when a start failed


@pytest.fixture(scope="module")
def broker(e2e_settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(e2e_settings.redis_url)
    yield client
    client.close()


def test_gpu_task_runs_only_on_the_gpu_worker(
    client: OrgClient, e2e_store: Store, pools: Pools
) -> None:
    # Both pools are up; several tasks so that a wrong route could not pass by luck.
    created = [client.create(kind="default", executorId="gpu") for _ in range(4)]
    gpu_pids = set(pools.gpu.pids())
    plain_pids = set(pools.plain.pids())
    for task in created:
        done = wait_for_status(client, task["id"])
        assert done["status"] == "completed", done
        assert done["executorId"] == "gpu"
        pid = worker_pid(e2e_store.engine, task["id"])
        assert pid in gpu_pids, (worker_column(e2e_store.engine, task["id"]), gpu_pids)
        assert pid not in plain_pids


def test_tasks_without_executor_never_run_on_the_gpu_worker(
    client: OrgClient, e2e_store: Store, pools: Pools
) -> None:
    created = [client.create(kind="default") for _ in range(6)]
    created.append(client.create(kind="CallAction", targetId="builtin/echo", input=1))
    gpu_pids = set(pools.gpu.pids())
    plain_pids = set(pools.plain.pids())
    for task in created:
        done = wait_for_status(client, task["id"])
        assert done["status"] == "completed", done
        pid = worker_pid(e2e_store.engine, task["id"])
        assert pid not in gpu_pids
        assert pid in plain_pids


def test_task_of_an_executor_no_worker_serves_stays_queued(
    client: OrgClient,
    e2e_store: Store,
    e2e_settings: Settings,
    broker: redis.Redis,
    pools: Pools,
) -> None:
    executor = f"nobody-{uuid.uuid4().hex[:8]}"
    stranded = client.create(kind="default", executorId=executor)
    assert stranded["status"] == "queued"
    # Tasks published after it run to the end: the workers are consuming.
    for fields in ({"kind": "default"}, {"kind": "default", "executorId": "gpu"}):
        assert run(client, **fields)["status"] == "completed"
    task = client.get(f"/v1/tasks/{stranded['id']}").json()
    assert task["status"] == "queued", task
    assert task["attempt"] == 0 and task["startedAt"] is None
    assert worker_column(e2e_store.engine, stranded["id"]) is None
    # Its message waits on the executor's own queue, untouched.
    assert queue_depth(broker, f"{e2e_settings.queue_prefix}.default@{executor}") == 1


def test_worker_for_a_kind_without_handler_fails_it_as_unknown_kind(
    client: OrgClient, e2e_store: Store, pools: Pools
) -> None:
    task = run(client, kind=NO_HANDLER_KIND, input={"x": 1})
    assert task["status"] == "failed", task
    assert task["errors"][0]["code"] == "unknown_kind", task["errors"]
    assert NO_HANDLER_KIND in task["errors"][0]["message"]
    assert task["attempt"] == 1
    assert worker_pid(e2e_store.engine, task["id"]) in pools.odd.pids()


def test_plain_celery_worker_on_a_queue_runs_a_default_task(
    client: OrgClient, e2e_store: Store, e2e_settings: Settings, pools: Pools
) -> None:
    settings = e2e_settings.model_copy(update={"queue_prefix": pools.plain_prefix})
    store = Store(engine=e2e_store.engine, publisher=e2e_store.publisher, settings=settings)
    caller = Caller(
        organization_id=uuid.UUID(client.organization_id), key_id=uuid.UUID(client.key_id)
    )
    created = create_task(store, caller, TaskSpec(kind="default", input={"via": "celery"}))
    assert created.status is Status.QUEUED
    task = wait_for_status(client, str(created.id))
    assert task["status"] == "completed", (task, pools.celery.log())
    assert task["attempt"] == 1
    # --pool solo runs tasks in the main process: the one started here.
    assert worker_pid(e2e_store.engine, str(created.id)) == pools.celery.pid

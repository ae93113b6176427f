"""A run its worker stopped for want of its lease goes back to its queue
(``release_run``), fenced on its attempt: a stale release changes nothing."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from tasks_core.queues import queue_name
from tasks_core.status import Status
from tasks_core.store import Store
from tasks_core.worker_protocol import claim_task, release_run
from tests.support.api import OrgClient
from tests.support.stack import stored_task

POOL = "release-pool"  # no worker serves it: the test alone claims its tasks


def test_a_released_run_is_queued_and_published_again_and_a_stale_release_changes_nothing(
    acme: OrgClient, store: Store
) -> None:
    task_id = uuid.UUID(acme.create(kind="default", executorId=POOL)["id"])
    queue = queue_name("default", POOL, store.settings.queue_prefix)
    run = claim_task(store, task_id, worker="cut-off:1")
    assert run is not None and run.attempt == 1
    depth = store.publisher.depths([queue])[queue]

    assert release_run(store, run, worker="cut-off:1") is True
    released = stored_task(store, acme.organization_id, task_id)
    assert (released.status, released.attempt, released.lease_expires_at) == (
        Status.QUEUED, 1, None,
    )  # fmt: skip
    assert store.publisher.depths([queue])[queue] == depth + 1
    with store.statement() as conn:
        detail = conn.execute(
            text(
                "SELECT detail FROM task_events WHERE task_id = :i AND type = 'status' "
                "AND from_status = 'running' AND to_status = 'queued'"
            ),
            {"i": task_id},
        ).scalar_one()
    assert detail == {"reason": "lease_lost", "attempt": 1}

    again = claim_task(store, task_id, worker="other:1")
    assert again is not None and again.attempt == 2
    assert release_run(store, run, worker="cut-off:1") is False  # attempt 1 is not current
    current = stored_task(store, acme.organization_id, task_id)
    assert (current.status, current.attempt, current.worker) == (Status.RUNNING, 2, "other:1")

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tasks_core.errors import NotFound, ValidationFailed
from tasks_core.flow_definitions import Limits
from tasks_core.queues import queue_name
from tasks_core.records import Caller
from tasks_core.status import Status
from tasks_core.task import TaskSpec
from tasks_core.usecases.create import new_task
from tasks_core.usecases.validation import check_name, check_times, parse_task_id

LIMITS = Limits()
CALLER = Caller(organization_id=uuid.uuid4(), key_id=uuid.uuid4())


@pytest.mark.parametrize(
    "name", ["default", "CallAction", "billing/charge", "a.b:c-d_e", "x" * 128]
)
def test_plain_names_are_accepted(name: str) -> None:
    check_name("kind", name)


@pytest.mark.parametrize("name", ["", "a b", "-lead", "x" * 129, "émoji", "a\nb", "a*b"])
def test_names_that_would_break_queue_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationFailed, match="kind"):
        check_name("kind", name)


def test_ended_before_started_is_refused_naming_both_fields() -> None:
    now = datetime.now(UTC)
    with pytest.raises(ValidationFailed, match=r"endedAt .* before startedAt"):
        check_times(now, now - timedelta(seconds=1))
    check_times(now, now)
    check_times(None, now)


def test_an_id_that_is_not_a_uuid_names_no_task() -> None:
    with pytest.raises(NotFound, match="parentId"):
        parse_task_id("nope", field="parentId")
    value = uuid.uuid4()
    assert parse_task_id(str(value)) == value


def test_queued_is_not_an_initial_status() -> None:
    with pytest.raises(ValidationFailed, match="queued"):
        new_task(CALLER, TaskSpec(kind="default", status=Status.QUEUED), limits=LIMITS)


def test_new_task_takes_organization_and_author_from_the_caller() -> None:
    new = new_task(CALLER, TaskSpec(kind="default", stateful=True), limits=LIMITS)
    assert new.organization_id == CALLER.organization_id
    assert new.author_id == str(CALLER.key_id)
    assert new.state_id is not None and new.state_id != new.id


def test_naive_timestamps_are_read_as_utc() -> None:
    new = new_task(
        CALLER, TaskSpec(kind="default", started_at=datetime(2026, 1, 1, 12)), limits=LIMITS
    )
    assert new.spec.started_at == datetime(2026, 1, 1, 12, tzinfo=UTC)


def test_queue_names_follow_kind_and_executor() -> None:
    assert queue_name("default", None) == "tasks.default"
    assert queue_name("CallAction", "gpu-pool") == "tasks.CallAction@gpu-pool"
    assert queue_name("Flow", None, prefix="prod") == "prod.Flow"

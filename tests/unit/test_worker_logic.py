"""The worker's pure decisions: outcomes, retries, the registry, cancellation."""

from __future__ import annotations

import random
import threading
import time
import uuid
from datetime import UTC, datetime
from unittest import mock

import pytest
import sqlalchemy

from tasks_core.status import Status
from tasks_core.task import TaskRecord
from worker import outcome
from worker.context import TaskContext
from worker.errors import Cancelled, TaskError, TimedOut
from worker.registry import Registry


def test_a_json_result_completes_the_task() -> None:
    decision = outcome.from_result({"a": [1, "x", None]})
    assert decision.outcome.status is Status.COMPLETED
    assert decision.outcome.output == {"a": [1, "x", None]}


@pytest.mark.parametrize("bad", [object(), {1, 2}, float("nan"), b"bytes"])
def test_a_result_that_is_not_json_fails_with_invalid_output(bad: object) -> None:
    decision = outcome.from_result(bad)
    assert decision.outcome.status is Status.FAILED
    assert decision.outcome.errors[0]["code"] == "invalid_output"
    assert not decision.retryable


def test_an_exception_gets_a_code_from_its_class_and_its_type_in_the_event_log() -> None:
    try:
        raise KeyError("user_id")
    except KeyError as exc:
        decision = outcome.from_exception(exc)
    assert decision.outcome.errors == [{"code": "key_error", "message": "'user_id'"}]
    assert decision.outcome.detail == {"error": "key_error", "exception": "KeyError"}
    assert decision.retryable


def test_the_traceback_goes_into_the_event_log_only_when_exposed() -> None:
    try:
        raise KeyError("user_id")
    except KeyError as exc:
        decision = outcome.from_exception(exc, expose_traceback=True)
    assert decision.outcome.detail and "Traceback" in decision.outcome.detail["traceback"]
    assert "Traceback" not in decision.outcome.errors[0]["message"]


def test_a_database_error_keeps_its_message_but_not_its_sql() -> None:
    engine = sqlalchemy.create_engine("sqlite://")  # a real driver's error, no server
    try:
        with engine.connect() as conn:
            conn.execute(
                sqlalchemy.text("SELECT card_number FROM payments WHERE id = :id"), {"id": 7}
            )
    except sqlalchemy.exc.OperationalError as exc:
        assert "card_number" in str(exc)  # what SQLAlchemy itself would show
        decision = outcome.from_exception(exc)
    message = decision.outcome.errors[0]["message"]
    assert message == "OperationalError: no such table: payments"
    assert "card_number" not in str(decision.outcome.detail)


def test_task_error_sets_code_message_and_retryability() -> None:
    decision = outcome.from_exception(TaskError("card_declined", "declined", retryable=False))
    assert decision.outcome.errors == [{"code": "card_declined", "message": "declined"}]
    assert not decision.retryable


def test_cancel_and_timeout_exceptions_are_not_plain_failures() -> None:
    assert outcome.from_exception(Cancelled()).outcome.status is Status.CANCELLED
    timed = outcome.from_exception(TimedOut())
    assert timed.outcome.errors[0]["code"] == "timeout"


def test_retries_follow_attempts_and_retryability() -> None:
    failure = outcome.failure("x", "y", retryable=True)
    assert outcome.should_retry(failure, attempt=1, max_attempts=3)
    assert outcome.should_retry(failure, attempt=2, max_attempts=3)
    assert not outcome.should_retry(failure, attempt=3, max_attempts=3)
    final = outcome.failure("x", "y", retryable=False)
    assert not outcome.should_retry(final, attempt=1, max_attempts=3)
    assert not outcome.should_retry(outcome.from_result(1), attempt=1, max_attempts=3)


def test_retry_delay_is_exponential_with_full_jitter_and_capped() -> None:
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = min(60.0, 1.0 * 2 ** (attempt - 1))
        delays = [outcome.retry_delay(attempt, base=1.0, cap=60.0, rng=rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # jitter spans the range


def test_registering_a_name_twice_is_an_error() -> None:
    registry = Registry()
    registry.handler("K")(lambda ctx: 1)
    with pytest.raises(ValueError, match="already registered"):
        registry.handler("K")(lambda ctx: 2)
    assert registry.kinds() == ["K"]


def _task() -> TaskRecord:
    now = datetime.now(UTC)
    return TaskRecord(
        id=uuid.uuid4(), organization_id=uuid.uuid4(), author_id=None, parent_id=None,
        state_id=None, kind="k", status=Status.RUNNING, app_id=None, executor_id=None,
        target_id=None, title=None, description=None, input=None, output=None, params={},
        errors=[], attempt=1, max_attempts=1, timeout_seconds=None, flow_step_id=None,
        created_at=now, updated_at=now, started_at=now, ended_at=None,
        queue_timeout_seconds=None, lease_expires_at=None, worker=None, open_steps=None,
        available_at=None,
    )  # fmt: skip


def test_context_sleep_returns_early_when_stopped() -> None:
    ctx = TaskContext(_task(), store=mock.Mock(), logger=mock.Mock())
    threading.Timer(0.05, ctx.request_stop).start()
    started = time.monotonic()
    assert ctx.sleep(10) is True
    assert time.monotonic() - started < 5
    with pytest.raises(Cancelled):
        ctx.check_cancelled()


def test_context_reports_a_timeout_as_such() -> None:
    ctx = TaskContext(_task(), store=mock.Mock(), logger=mock.Mock())
    ctx.request_stop(timed_out=True)
    with pytest.raises(TimedOut):
        ctx.check_cancelled()

"""Binding Idempotency-Keys to new tasks, several in one statement (real PostgreSQL)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from tasks_core.records import Caller
from tasks_core.storage.idempotency import Binding, bind_keys, find_replay, request_digest
from tasks_core.store import Store
from tasks_core.task import TaskSpec
from tasks_core.usecases.create import create_task, create_tasks
from tests.support.api import OrgClient


def _caller(org: OrgClient) -> Caller:
    return Caller(organization_id=uuid.UUID(org.organization_id), key_id=uuid.UUID(org.key_id))


def _tasks(store: Store, caller: Caller, n: int) -> list[uuid.UUID]:
    specs = [TaskSpec(kind="default", target_id=f"job-{i}") for i in range(n)]
    return [t.id for t in create_tasks(store, caller, specs)]


def test_free_keys_are_bound_in_one_statement_and_a_taken_one_is_not(
    acme: OrgClient, store: Store
) -> None:
    caller = _caller(acme)
    earlier = create_task(store, caller, TaskSpec(kind="default"))
    with store.transaction() as conn:
        first = Binding("taken", request_digest(1), earlier.id)
        assert bind_keys(conn, caller.organization_id, [first]) == [True]
    a, b, c, d = _tasks(store, caller, 4)
    bindings = [
        Binding("k-b", request_digest("b"), b),
        Binding("taken", request_digest(2), a),
        Binding("k-a", request_digest("a"), c, batch=(c, d)),
    ]
    with store.transaction() as conn:
        assert bind_keys(conn, caller.organization_id, bindings) == [True, False, True]
        replay = find_replay(conn, caller.organization_id, "k-a", request_digest("a"))
        assert replay is not None and replay.tasks == (c, d)
        kept = find_replay(conn, caller.organization_id, "taken", request_digest(1))
        assert kept is not None and kept.tasks == (earlier.id,)  # not rebound
        single = find_replay(conn, caller.organization_id, "k-b", request_digest("b"))
        assert single is not None and single.tasks == (b,)


def test_an_expired_key_is_bound_again_among_others(acme: OrgClient, store: Store) -> None:
    caller = _caller(acme)
    old, new, other = _tasks(store, caller, 3)
    with store.transaction() as conn:
        bind_keys(conn, caller.organization_id, [Binding("old", request_digest(0), old)])
        conn.execute(
            text("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'"
                 " WHERE organization_id = :o AND key = 'old'"),
            {"o": caller.organization_id},
        )  # fmt: skip
    with store.transaction() as conn:
        bindings = [Binding("old", request_digest(1), new), Binding("x", request_digest(2), other)]
        assert bind_keys(conn, caller.organization_id, bindings) == [True, True]
        replay = find_replay(conn, caller.organization_id, "old", request_digest(1))
        assert replay is not None and replay.tasks == (new,)


def test_one_key_twice_in_one_binding_is_refused_before_the_statement(
    acme: OrgClient, store: Store
) -> None:
    caller = _caller(acme)
    a, b = _tasks(store, caller, 2)
    twice = [Binding("same", request_digest(1), a), Binding("same", request_digest(1), b)]
    with store.transaction() as conn, pytest.raises(ValueError, match="twice"):
        bind_keys(conn, caller.organization_id, twice)

"""Answers have a budget: a ``depth`` read of a wide tree stops at
``TREE_NODES_MAX`` nested tasks (and says ``"truncated": true``) without
reading the rest, and a list page stops at ``LIST_PAGE_BYTES_MAX`` bytes with
a cursor that goes on exactly after its last task."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine

from tasks_core.flow_definitions import Limits
from tasks_core.lifecycle.engine import apply
from tasks_core.lifecycle.moves import Create
from tasks_core.records import Caller
from tasks_core.status import Status
from tasks_core.storage import tasks as task_reads
from tasks_core.storage.db import as_ids, statement
from tasks_core.task import TaskSpec
from tasks_core.usecases.create import new_task
from tests.support.api import OrgClient
from tests.support.figures import report

WIDE = 30  # children of the root
STEPS = 100  # children of each: 3,000 grandchildren, three times the default budget


def _create(engine: Engine, caller: Caller, count: int, **spec: Any) -> list[str]:
    """``count`` tasks in one Create move (records: created, never published)."""
    news = tuple(new_task(caller, TaskSpec(**spec), limits=Limits()) for _ in range(count))
    with engine.begin() as conn:
        apply(conn, Create(news, actor=caller.actor))
    return [str(n.id) for n in news]


def _caller(client: OrgClient) -> Caller:
    return Caller(
        organization_id=uuid.UUID(client.organization_id), key_id=uuid.UUID(client.key_id)
    )


def _nested(task: dict[str, Any]) -> int:
    return sum(1 + _nested(child) for child in task["children"])


@pytest.fixture
def wide_tree(engine: Engine, acme: OrgClient) -> tuple[str, list[str]]:
    """A root, ``WIDE`` children, ``STEPS`` tasks under each: (root id, child ids)."""
    caller = _caller(acme)
    (root,) = _create(engine, caller, 1, kind="Report", status=Status.COMPLETED)
    children = _create(engine, caller, WIDE, kind="Flow", status=Status.COMPLETED, parent_id=root)
    for child in children:
        _create(engine, caller, STEPS, kind="CallAction", status=Status.COMPLETED, parent_id=child)
    return root, children


def _rows_read_by_the_second_level(engine: Engine, frontier: list[str]) -> int:
    """Rows of ``tasks`` PostgreSQL reads for a level of 1,001 (the budget and one)."""
    sql = "EXPLAIN (ANALYZE, FORMAT JSON) " + task_reads._CHILDREN.text
    values = {"ids": frontier, "n": 1001, "total": 1001}
    with engine.connect() as conn:
        plan = conn.execute(statement(sql, "ids"), values).scalar_one()
    plan = plan if isinstance(plan, list) else json.loads(plan)

    def read(node: dict[str, Any]) -> float:
        own = node["Actual Rows"] * node["Actual Loops"] if "Relation Name" in node else 0
        return own + sum(read(child) for child in node.get("Plans", []))

    return round(read(plan[0]["Plan"]))


def test_a_depth_read_stops_at_the_node_budget(
    acme: OrgClient, engine: Engine, wide_tree: tuple[str, list[str]]
) -> None:
    root, children = wide_tree
    body = acme.get(f"/v1/tasks/{root}", params={"depth": 2}).json()
    returned = _nested(body)
    assert returned == 1000
    assert body["truncated"] is True
    # Nested in order: every child of the root, then their steps, oldest first.
    assert [c["id"] for c in body["children"]] == children
    assert [len(c["children"]) for c in body["children"]] == [STEPS] * 9 + [70] + [0] * 20
    assert all("truncated" not in c for c in body["children"])
    read = _rows_read_by_the_second_level(engine, as_ids(uuid.UUID(c) for c in children))
    assert read <= 1001 + STEPS, read  # stops inside the eleventh parent, not at 3,000
    tree = 1 + WIDE + WIDE * STEPS
    report(f"depth budget: tree={tree} returned={returned} rows_read={read} truncated=true")


def test_a_read_within_the_budget_is_not_truncated(
    acme: OrgClient, wide_tree: tuple[str, list[str]]
) -> None:
    root, children = wide_tree
    whole_level = acme.get(f"/v1/tasks/{root}", params={"depth": 1}).json()
    assert _nested(whole_level) == WIDE and "truncated" not in whole_level
    one_flow = acme.get(f"/v1/tasks/{children[0]}", params={"depth": 3}).json()
    assert _nested(one_flow) == STEPS and "truncated" not in one_flow


def test_children_max_per_task_says_truncated_too(
    client_with: Callable[..., OrgClient], engine: Engine
) -> None:
    small = client_with(children_max=10)
    caller = _caller(small)
    (root,) = _create(engine, caller, 1, kind="default", status=Status.COMPLETED)
    _create(engine, caller, 11, kind="default", status=Status.COMPLETED, parent_id=root)
    body = small.get(f"/v1/tasks/{root}").json()
    assert len(body["children"]) == 10 and body["truncated"] is True


def test_the_budget_spent_on_one_level_leaves_the_next_out(
    client_with: Callable[..., OrgClient], engine: Engine
) -> None:
    small = client_with(tree_nodes_max=3)
    caller = _caller(small)
    (root,) = _create(engine, caller, 1, kind="default", status=Status.COMPLETED)
    kids = _create(engine, caller, 3, kind="default", status=Status.COMPLETED, parent_id=root)
    assert "truncated" not in small.get(f"/v1/tasks/{root}", params={"depth": 2}).json()
    _create(engine, caller, 1, kind="default", status=Status.COMPLETED, parent_id=kids[0])
    body = small.get(f"/v1/tasks/{root}", params={"depth": 2}).json()
    assert _nested(body) == 3 and body["truncated"] is True


def test_a_list_page_stops_at_its_byte_budget_and_the_cursor_goes_on(
    client_with: Callable[..., OrgClient], engine: Engine
) -> None:
    budget = 1_000_000
    lister = client_with(list_page_bytes_max=budget, list_limit_max=500)
    caller = _caller(lister)
    big = {"blob": "x" * 150_000}  # about 300 kB a task with output: 3 a page
    ids: list[str] = []
    for _ in range(4):
        ids += _create(
            engine, caller, 10, kind="default", status=Status.COMPLETED, input=big, output=big
        )
    huge = {"blob": "y" * 500_000}  # a task over the budget alone still gets its page
    ids += _create(
        engine, caller, 1, kind="default", status=Status.COMPLETED, input=huge, output=huge
    )
    ids += _create(engine, caller, 5, kind="default", status=Status.COMPLETED)
    seen: list[str] = []
    pages, largest, cursor = 0, 0, None
    while True:
        params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        answer = lister.get("/v1/tasks", params=params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["items"], "a page is never empty while tasks are left"
        pages += 1
        if len(body["items"]) > 1:
            largest = max(largest, len(answer.content))
        seen += [t["id"] for t in body["items"]]
        cursor = body["nextCursor"]
        if cursor is None:
            break
    expected = sorted(ids, reverse=True)  # newest first (ids are time-ordered)
    skipped = len(set(expected) - set(seen))
    repeated = len(seen) - len(set(seen))
    assert seen == expected
    assert largest <= budget and pages >= len(ids) // 4
    report(
        f"list budget: page_bytes<={largest} budget={budget} pages={pages} "
        f"tasks={len(seen)} skipped={skipped} repeated={repeated}"
    )

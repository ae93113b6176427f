"""Reading tasks: one task with its subtree, pages of tasks, event logs."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from tasks_core.errors import NotFound, ValidationFailed
from tasks_core.records import Caller, EventRecord
from tasks_core.storage.tasks import children_of, get_task, list_events, list_tasks
from tasks_core.store import Store
from tasks_core.task import TaskRecord
from tasks_core.usecases.validation import parse_task_id


@dataclass(frozen=True, slots=True)
class TaskTree:
    """A task with its children nested, and whether some were left out (by
    ``CHILDREN_MAX`` per task or ``TREE_NODES_MAX`` in all)."""

    task: TaskRecord
    truncated: bool


def get_task_tree(store: Store, caller: Caller, task_id: str, *, depth: int = 1) -> TaskTree:
    """A task of the caller's organization with ``depth`` levels of children nested.

    One query per level, each bounded by ``CHILDREN_MAX`` children per task
    and by what is left of ``TREE_NODES_MAX`` nested tasks in all; each asks
    for one row more than it may show, which tells whether anything was left out.
    """
    tid = parse_task_id(task_id)
    settings = store.settings
    budget, truncated = settings.tree_nodes_max, False
    with store.statement() as conn:
        root = get_task(conn, caller.organization_id, tid)
        if root is None:
            raise NotFound(f"task {task_id!r} not found")
        levels: list[list[TaskRecord]] = []
        frontier = [root.id]
        for _ in range(depth):
            if budget == 0:
                # Children below the budget's end exist only if this level has any.
                truncated = truncated or bool(children_of(conn, frontier, per_parent=1, total=1))
                break
            rows = children_of(
                conn, frontier, per_parent=settings.children_max + 1, total=budget + 1
            )
            level, cut = _within(rows, per_parent=settings.children_max, total=budget)
            truncated = truncated or cut
            if not level:
                break
            levels.append(level)
            budget -= len(level)
            frontier = [t.id for t in level]
    return TaskTree(task=_assemble(root, levels), truncated=truncated)


def _within(
    rows: list[TaskRecord], *, per_parent: int, total: int
) -> tuple[list[TaskRecord], bool]:
    """The rows that fit ``per_parent`` children per task and ``total`` in
    all, and whether any did not (rows were asked for one over each bound)."""
    kept: list[TaskRecord] = []
    counts: dict[uuid.UUID | None, int] = defaultdict(int)
    for row in rows:
        if counts[row.parent_id] < per_parent and len(kept) < total:
            counts[row.parent_id] += 1
            kept.append(row)
    return kept, len(kept) < len(rows)


def _assemble(root: TaskRecord, levels: list[list[TaskRecord]]) -> TaskRecord:
    """Nest each level under its parents, deepest level first."""
    nested: dict[uuid.UUID, tuple[TaskRecord, ...]] = {}
    for level in reversed(levels):
        by_parent: dict[uuid.UUID, list[TaskRecord]] = defaultdict(list)
        for child in level:
            assert child.parent_id is not None
            by_parent[child.parent_id].append(
                dataclasses.replace(child, children=nested.get(child.id, ()))
            )
        nested = {pid: tuple(kids) for pid, kids in by_parent.items()}
    return dataclasses.replace(root, children=nested.get(root.id, ()))


@dataclass(frozen=True, slots=True)
class TaskPage:
    """One page of a listing and the cursor of the next (None on the last page)."""

    items: list[TaskRecord]
    next_cursor: str | None


def encode_cursor(task_id: uuid.UUID) -> str:
    """Opaque to callers: the id of the last task of a page."""
    return base64.urlsafe_b64encode(task_id.bytes).decode().rstrip("=")


def decode_cursor(cursor: str) -> uuid.UUID:
    """The position a cursor stands for; a cursor we did not make is a 422."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return uuid.UUID(bytes=raw)
    except (ValueError, binascii.Error):
        raise ValidationFailed(
            f"cursor {cursor!r} is not valid: pass the nextCursor of a previous page",
            code="invalid_cursor",
        ) from None


def list_page(
    store: Store,
    caller: Caller,
    *,
    filters: dict[str, Any],
    cursor: str | None,
    limit: int,
) -> TaskPage:
    """Tasks of the caller's organization, newest first, ``limit`` at a time,
    and fewer when they pass ``LIST_PAGE_BYTES_MAX`` (never fewer than one, so
    that paging always goes on): the cursor continues after the last one shown."""
    before = decode_cursor(cursor) if cursor else None
    if "parent_id" in filters:
        try:
            filters = {**filters, "parent_id": parse_task_id(filters["parent_id"])}
        except NotFound:
            return TaskPage(items=[], next_cursor=None)  # no task has that parent
    with store.statement() as conn:
        listed = list_tasks(
            conn,
            caller.organization_id,
            filters=filters,
            before=before,
            limit=limit + 1,
            max_bytes=store.settings.list_page_bytes_max,
        )
    items = listed.items[:limit]
    more = listed.cut or len(listed.items) > limit
    return TaskPage(items=items, next_cursor=encode_cursor(items[-1].id) if more else None)


def task_events(
    store: Store, caller: Caller, task_id: str, *, after: int = 0, limit: int = 1000
) -> list[EventRecord]:
    """The event log of one of the caller's tasks, oldest first."""
    tid = parse_task_id(task_id)
    with store.transaction() as conn:
        if get_task(conn, caller.organization_id, tid) is None:
            raise NotFound(f"task {task_id!r} not found")
        return list_events(conn, tid, after=after, limit=limit)

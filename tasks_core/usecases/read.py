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


def get_task_tree(store: Store, caller: Caller, task_id: str, *, depth: int = 1) -> TaskRecord:
    """A task of the caller's organization with ``depth`` levels of children nested.

    One query per level, each bounded by ``CHILDREN_MAX`` children per task.
    """
    tid = parse_task_id(task_id)
    with store.statement() as conn:
        root = get_task(conn, caller.organization_id, tid)
        if root is None:
            raise NotFound(f"task {task_id!r} not found")
        levels: list[list[TaskRecord]] = []
        frontier = [root.id]
        for _ in range(depth):
            level = children_of(conn, frontier, per_parent=store.settings.children_max)
            if not level:
                break
            levels.append(level)
            frontier = [t.id for t in level]
    return _assemble(root, levels)


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
    """Tasks of the caller's organization, newest first, ``limit`` at a time."""
    before = decode_cursor(cursor) if cursor else None
    if "parent_id" in filters:
        try:
            filters = {**filters, "parent_id": parse_task_id(filters["parent_id"])}
        except NotFound:
            return TaskPage(items=[], next_cursor=None)  # no task has that parent
    with store.statement() as conn:
        rows = list_tasks(
            conn,
            caller.organization_id,
            filters=filters,
            before=before,
            limit=limit + 1,
        )
    items = rows[:limit]
    next_cursor = encode_cursor(items[-1].id) if len(rows) > limit else None
    return TaskPage(items=items, next_cursor=next_cursor)


def task_events(
    store: Store, caller: Caller, task_id: str, *, after: int = 0, limit: int = 1000
) -> list[EventRecord]:
    """The event log of one of the caller's tasks, oldest first."""
    tid = parse_task_id(task_id)
    with store.transaction() as conn:
        if get_task(conn, caller.organization_id, tid) is None:
            raise NotFound(f"task {task_id!r} not found")
        return list_events(conn, tid, after=after, limit=limit)

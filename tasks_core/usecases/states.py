"""State objects: named containers of variables, scoped to an organization."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB

from tasks_core.errors import NotFound
from tasks_core.ids import new_id
from tasks_core.records import Caller, StateRecord
from tasks_core.store import Store
from tasks_core.usecases.validation import parse_task_id


def create_state(
    store: Store, caller: Caller, *, name: str, variables: dict[str, Any] | None = None
) -> StateRecord:
    """A new state object of the caller's organization, at version 1."""
    with store.statement() as conn:
        row = (
            conn.execute(
                text(
                    "INSERT INTO states (id, organization_id, name, variables) "
                    "VALUES (:id, :org, :name, :variables) RETURNING *"
                ).bindparams(bindparam("variables", type_=JSONB)),
                {
                    "id": new_id(),
                    "org": caller.organization_id,
                    "name": name,
                    "variables": variables or {},
                },
            )
            .mappings()
            .one()
        )
    return StateRecord.from_row(row)


def get_state(store: Store, caller: Caller, state_id: str) -> StateRecord:
    """A state object of the caller's organization."""
    try:
        sid = parse_task_id(state_id, field="state")
    except NotFound:
        raise NotFound(f"state {state_id!r} not found") from None
    with store.statement() as conn:
        row = (
            conn.execute(
                text("SELECT * FROM states WHERE id = :id AND organization_id = :org"),
                {"id": sid, "org": caller.organization_id},
            )
            .mappings()
            .first()
        )
    if row is None:
        raise NotFound(f"state {state_id!r} not found")
    return StateRecord.from_row(row)

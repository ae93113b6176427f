"""State objects: named containers of variables, scoped to an organization."""

from __future__ import annotations

from typing import Any

from tasks_core.errors import NotFound
from tasks_core.ids import new_id
from tasks_core.records import Caller, StateRecord
from tasks_core.storage import states
from tasks_core.store import Store
from tasks_core.usecases.validation import parse_task_id


def create_state(
    store: Store, caller: Caller, *, name: str, variables: dict[str, Any] | None = None
) -> StateRecord:
    """A new state object of the caller's organization, at version 1."""
    with store.statement() as conn:
        return states.insert_state(
            conn, new_id(), caller.organization_id, name=name, variables=variables or {}
        )


def get_state(store: Store, caller: Caller, state_id: str) -> StateRecord:
    """A state object of the caller's organization."""
    try:
        sid = parse_task_id(state_id, field="state")
    except NotFound:
        raise NotFound(f"state {state_id!r} not found") from None
    with store.statement() as conn:
        state = states.get_state(conn, caller.organization_id, sid)
    if state is None:
        raise NotFound(f"state {state_id!r} not found")
    return state

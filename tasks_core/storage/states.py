"""SQL of state objects: named variables with a version for optimistic writes."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB

from tasks_core.records import StateRecord

_INSERT = text(
    "INSERT INTO states (id, organization_id, name, variables) "
    "VALUES (:id, :org, :name, :variables) RETURNING *"
).bindparams(bindparam("variables", type_=JSONB))

_GET = text("SELECT * FROM states WHERE id = :id AND organization_id = :org")

_READ = text("SELECT variables, version FROM states WHERE id = :id")

_WRITE_IF = text(
    "UPDATE states SET variables = :v, version = version + 1, updated_at = now() "
    "WHERE id = :id AND version = :version RETURNING version"
).bindparams(bindparam("v", type_=JSONB))

_LOCK = text("SELECT variables FROM states WHERE id = :id FOR NO KEY UPDATE")

_WRITE = text(
    "UPDATE states SET variables = :v, version = version + 1, updated_at = now() WHERE id = :id"
).bindparams(bindparam("v", type_=JSONB))


def insert_state(
    conn: Connection,
    state_id: uuid.UUID,
    organization_id: uuid.UUID,
    *,
    name: str,
    variables: dict[str, Any],
) -> StateRecord:
    """A new state object, at version 1."""
    values = {"id": state_id, "org": organization_id, "name": name, "variables": variables}
    return StateRecord.from_row(conn.execute(_INSERT, values).mappings().one())


def get_state(
    conn: Connection, organization_id: uuid.UUID, state_id: uuid.UUID
) -> StateRecord | None:
    """A state object of the organization."""
    row = conn.execute(_GET, {"id": state_id, "org": organization_id}).mappings().first()
    return StateRecord.from_row(row) if row else None


def read_state(conn: Connection, state_id: uuid.UUID) -> tuple[dict[str, Any], int]:
    """The variables and the version they are at."""
    row = conn.execute(_READ, {"id": state_id}).one()
    return dict(row.variables), int(row.version)


def write_state_if(
    conn: Connection, state_id: uuid.UUID, variables: dict[str, Any], *, version: int
) -> int | None:
    """Replace the variables if still at ``version``: the new version, or None
    when another writer got there first."""
    row = conn.execute(_WRITE_IF, {"id": state_id, "v": variables, "version": version}).first()
    return int(row.version) if row is not None else None


def change_state(
    conn: Connection, state_id: uuid.UUID, change: Callable[[dict[str, Any]], dict[str, Any]]
) -> dict[str, Any]:
    """Apply ``change`` to the variables with the row locked (call it in a
    transaction): concurrent changers queue up instead of retrying."""
    current = conn.execute(_LOCK, {"id": state_id}).one()
    new = change(dict(current.variables))
    conn.execute(_WRITE, {"id": state_id, "v": new})
    return new

"""API keys: random secrets shown once, stored only as a SHA-256 digest.

A key is 32 random bytes, so a fast hash is enough (no dictionary to guess
from); lookups are by digest through a unique index, one round trip.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, text

from tasks_core.errors import NotFound
from tasks_core.ids import new_id
from tasks_core.records import Caller

KEY_PREFIX = "tk_"


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A newly created key: ``secret`` is shown to the operator once and never stored."""

    id: uuid.UUID
    organization_id: uuid.UUID
    secret: str


def digest(secret: str) -> bytes:
    """The stored form of a key."""
    return hashlib.sha256(secret.encode("utf-8")).digest()


def ensure_organization(conn: Connection, name: str) -> uuid.UUID:
    """The id of the organization called ``name``, created if missing."""
    row = conn.execute(
        text(
            "INSERT INTO organizations (id, name) VALUES (:id, :name) "
            "ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id"
        ),
        {"id": new_id(), "name": name},
    ).scalar_one()
    return uuid.UUID(str(row))


def create_key(
    conn: Connection,
    organization_id: uuid.UUID,
    *,
    name: str | None = None,
    expires_at: datetime | None = None,
) -> IssuedKey:
    """Create a key bound to one organization."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = new_id()
    conn.execute(
        text(
            "INSERT INTO api_keys (id, organization_id, name, prefix, key_hash, expires_at) "
            "VALUES (:id, :org, :name, :prefix, :hash, :expires_at)"
        ),
        {
            "id": key_id,
            "org": organization_id,
            "name": name,
            "prefix": secret[: len(KEY_PREFIX) + 6],
            "hash": digest(secret),
            "expires_at": expires_at,
        },
    )
    return IssuedKey(id=key_id, organization_id=organization_id, secret=secret)


def revoke_key(conn: Connection, key_id: uuid.UUID) -> None:
    """Revoke a key at once; raises NotFound for an unknown id."""
    result = conn.execute(
        text("UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = :id"),
        {"id": key_id},
    )
    if result.rowcount == 0:
        raise NotFound(f"no API key with id {key_id}")


@dataclass(frozen=True, slots=True)
class Grant:
    """What a valid key stands for, and until when (None: no expiry)."""

    caller: Caller
    expires_at: datetime | None


def authenticate(conn: Connection, secret: str) -> Caller | None:
    """The caller a presented key stands for, or None if unknown, revoked or expired."""
    grant = look_up(conn, digest(secret))
    return None if grant is None else grant.caller


def look_up(conn: Connection, key_hash: bytes) -> Grant | None:
    """The grant of the key with this digest, or None if unknown, revoked or expired."""
    row = conn.execute(
        text(
            "SELECT k.id, k.organization_id, k.expires_at, o.allowed_executors FROM api_keys k "
            "JOIN organizations o ON o.id = k.organization_id WHERE k.key_hash = :hash "
            "AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())"
        ),
        {"hash": key_hash},
    ).first()
    if row is None:
        return None
    executors = None if row.allowed_executors is None else frozenset(row.allowed_executors)
    caller = Caller(organization_id=row.organization_id, key_id=row.id, executors=executors)
    return Grant(caller=caller, expires_at=row.expires_at)


def set_allowed_executors(
    conn: Connection, organization: str, executors: Sequence[str] | None
) -> uuid.UUID:
    """Let the organization called ``organization`` send tasks only to
    ``executors`` (None: to any); raises NotFound for an unknown name."""
    row = conn.execute(
        text(
            "UPDATE organizations SET allowed_executors = :executors "
            "WHERE name = :name RETURNING id"
        ),
        {"executors": None if executors is None else sorted(set(executors)), "name": organization},
    ).first()
    if row is None:
        raise NotFound(f"no organization named {organization!r}")
    return uuid.UUID(str(row.id))

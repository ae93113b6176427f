"""``Idempotency-Key`` on create: a retried request returns the first task.

The key is stored with a digest of the request body in the same transaction
as the task it created, so two concurrent requests with one key create one
task: the second waits on the first's key row, then finds it. A key is good
for ``IDEMPOTENCY_TTL`` (24 hours); after that it may be used again. A key
of a batch create names all its tasks, in the order sent (``task_ids``; its
``task_id`` is the first, whose deletion removes the key).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from tasks_core.errors import Conflict

IDEMPOTENCY_TTL_HOURS = 24
MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Claimed:
    """The key was free (or expired) and now names the new task."""


@dataclass(frozen=True, slots=True)
class Replay:
    """The key names a task (or a batch's tasks) created before with the same body."""

    task_id: uuid.UUID
    task_ids: tuple[uuid.UUID, ...] | None = None  # a batch's, in order

    @property
    def tasks(self) -> tuple[uuid.UUID, ...]:
        """Every task the key names, in the order they were sent."""
        return self.task_ids if self.task_ids is not None else (self.task_id,)


def request_digest(body: Any) -> bytes:
    """A stable digest of a request body (keys sorted)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class Binding:
    """An ``Idempotency-Key`` to bind to the task (or a batch's tasks) just inserted."""

    key: str
    digest: bytes
    task_id: uuid.UUID
    batch: tuple[uuid.UUID, ...] | None = None  # a batch's tasks, ``task_id`` first


# Keys are inserted in key order, so that two transactions binding some of
# the same keys wait on each other instead of deadlocking.
_BIND = text(
    """
INSERT INTO idempotency_keys (organization_id, key, request_hash, task_id, task_ids)
SELECT :org, b.key, decode(b.digest, 'hex'), b.task_id, b.task_ids
FROM jsonb_to_recordset(CAST(:bindings AS jsonb))
    AS b(key text, digest text, task_id uuid, task_ids uuid[])
ORDER BY b.key
ON CONFLICT (organization_id, key) DO UPDATE
    SET request_hash = EXCLUDED.request_hash, task_id = EXCLUDED.task_id,
        task_ids = EXCLUDED.task_ids, created_at = now()
    WHERE idempotency_keys.created_at < now() - make_interval(hours => :ttl)
RETURNING key
"""
)


def bind_keys(
    conn: Connection, organization_id: uuid.UUID, bindings: Sequence[Binding]
) -> list[bool]:
    """Bind each key that is free (or expired) to its tasks, in one statement;
    for each, whether it was bound (False: the key names earlier tasks, see
    :func:`find_replay`). The keys must differ (one statement can not bind a
    key twice)."""
    keys = [b.key for b in bindings]
    if len(set(keys)) < len(keys):
        raise ValueError("a key named twice in one binding")
    rows = [
        {
            "key": b.key,
            "digest": b.digest.hex(),
            "task_id": str(b.task_id),
            "task_ids": None if b.batch is None else [str(i) for i in b.batch],
        }
        for b in bindings
    ]
    params = {"org": organization_id, "bindings": json.dumps(rows), "ttl": IDEMPOTENCY_TTL_HOURS}
    bound = {row.key for row in conn.execute(_BIND, params)}
    return [key in bound for key in keys]


def claim_key(conn: Connection, organization_id: uuid.UUID, binding: Binding) -> Claimed | Replay:
    """Bind a key to the tasks just inserted in this transaction, or report
    what it already names. Raises :class:`Conflict` for the same key with
    another body."""
    if bind_keys(conn, organization_id, [binding])[0]:
        return Claimed()
    replay = find_replay(conn, organization_id, binding.key, binding.digest)
    assert replay is not None, "the key's row stopped the insert and is still there"
    return replay


def find_replay(
    conn: Connection, organization_id: uuid.UUID, key: str, digest: bytes
) -> Replay | None:
    """The task ``key`` names within its lifetime, if any. Raises
    :class:`Conflict` for the same key with another body."""
    existing = conn.execute(
        text(
            "SELECT request_hash, task_id, task_ids FROM idempotency_keys "
            "WHERE organization_id = :org AND key = :key "
            "AND created_at >= now() - make_interval(hours => :ttl)"
        ),
        {"org": organization_id, "key": key, "ttl": IDEMPOTENCY_TTL_HOURS},
    ).first()
    if existing is None:
        return None
    if bytes(existing.request_hash) != digest:
        raise Conflict(
            f"Idempotency-Key {key!r} was used with a different request body in the last "
            f"{IDEMPOTENCY_TTL_HOURS} hours; use a new key for a new task",
            code="idempotency_conflict",
        )
    batch = None if existing.task_ids is None else tuple(existing.task_ids)
    return Replay(task_id=existing.task_id, task_ids=batch)


def forget_expired(conn: Connection, *, batch: int) -> int:
    """Delete keys past their lifetime (the sweeper calls this)."""
    result = conn.execute(
        text(
            "DELETE FROM idempotency_keys WHERE ctid IN (SELECT ctid FROM idempotency_keys "
            "WHERE created_at < now() - make_interval(hours => :ttl) LIMIT :batch)"
        ),
        {"ttl": IDEMPOTENCY_TTL_HOURS, "batch": batch},
    )
    return int(result.rowcount)

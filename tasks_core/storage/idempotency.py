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


def claim_key(
    conn: Connection,
    organization_id: uuid.UUID,
    key: str,
    digest: bytes,
    task_id: uuid.UUID,
    *,
    batch: Sequence[uuid.UUID] | None = None,
) -> Claimed | Replay:
    """Bind ``key`` to ``task_id`` (inserted in this transaction), or to the
    ``batch`` of tasks (``task_id`` its first), or report what it already
    names. Raises :class:`Conflict` for the same key with another body."""
    row = conn.execute(
        text(
            """
INSERT INTO idempotency_keys (organization_id, key, request_hash, task_id, task_ids)
VALUES (:org, :key, :digest, :task, CAST(:batch AS uuid[]))
ON CONFLICT (organization_id, key) DO UPDATE
    SET request_hash = EXCLUDED.request_hash, task_id = EXCLUDED.task_id,
        task_ids = EXCLUDED.task_ids, created_at = now()
    WHERE idempotency_keys.created_at < now() - make_interval(hours => :ttl)
RETURNING task_id
"""
        ),
        {"org": organization_id, "key": key, "digest": digest, "task": task_id,
         "batch": None if batch is None else list(batch), "ttl": IDEMPOTENCY_TTL_HOURS},
    ).first()  # fmt: skip
    if row is not None:
        return Claimed()
    replay = find_replay(conn, organization_id, key, digest)
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

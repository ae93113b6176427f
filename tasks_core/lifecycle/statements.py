"""The SQL of every move of tasks: with ``flow_statements``, the only code that
writes ``tasks`` or ``task_events``.

Each statement applies its move to a set of tasks (``tasks_core.lifecycle.sql``
gives them their shape). Recursive walks of a task tree stop at a task seen
before (a cycle) and at ``MAX_TREE_DEPTH``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Row, text

from tasks_core.lifecycle.sql import (
    DECIDED_IN_TIME,
    IDS,
    LEASE_FENCE,
    RECOVERY_COLUMNS,
    TERMINAL,
    by_key,
    events,
    fenced,
    json_rows,
    keyed_status,
    locked,
    move,
    records,
    recordset,
    timestamps,
)
from tasks_core.status import RULES, MoveKind, Status
from tasks_core.storage.db import as_ids, json_ids, sql_list, statement
from tasks_core.task import INSERT_COLUMNS, MAX_TREE_DEPTH, MUTABLE_FIELDS, TaskRecord

_MARK_QUEUED = statement(move(MoveKind.MARK_QUEUED, status="'queued'", keys=IDS), "ids")
_PUBLISH_FAILED = statement(
    move(
        MoveKind.PUBLISH_FAILED,
        status="'created'",
        keys=IDS,
        detail="jsonb_build_object('reason', 'publish_failed')",
    ),
    "ids",
)

# The queue a task waits on (tasks_core.queues.queue_name, in SQL).
_QUEUE = ":prefix || '.' || t.kind || coalesce('@' || t.executor_id, '')"

# A claim takes a task only from the queue it waits on now: a message left on
# its old queue by a PUT of executorId is refused there (the PUT published it
# on the new one). Without :queue (a caller that is no worker) any queue.
_ON_QUEUE = f"(CAST(:queue AS text) IS NULL OR {_QUEUE} = :queue)"

# The organization and queue whose running tasks MAX_RUNNING_PER_ORG counts.
_SHARE = "t.organization_id, t.kind, t.executor_id"

# With MAX_RUNNING_PER_ORG: the named tasks that fit under it, each counted
# after the ones of its share before it in the same claim. The claim holds
# the share's lock (_LOCK_SHARES), so no concurrent claim counts meanwhile.
_FITTING = f"""SELECT f.id FROM (
    SELECT t.id, row_number() OVER (PARTITION BY {_SHARE} ORDER BY t.id) AS n,
        (SELECT count(*) FROM (
            SELECT 1 FROM tasks r
            WHERE r.organization_id = t.organization_id AND r.kind = t.kind
              AND r.status = '{Status.RUNNING.value}'
              AND (r.executor_id = t.executor_id
                   OR (r.executor_id IS NULL AND t.executor_id IS NULL))
            LIMIT :max_running
        ) AS c) AS running
    FROM ({IDS}) AS k CROSS JOIN LATERAL (
        SELECT t.* FROM tasks t
        WHERE t.id = k.id AND {keyed_status(RULES[MoveKind.CLAIM].sources)} OFFSET 0
    ) AS t
) AS f WHERE f.running + f.n <= :max_running"""

_CLAIM_SETS = (
    ", attempt = t.attempt + 1, worker = :worker,"
    " lease_expires_at = now() + make_interval(secs => :lease)"
)
_CLAIM = statement(
    move(MoveKind.CLAIM, status="'running'", keys=IDS, where=_ON_QUEUE, sets=_CLAIM_SETS),
    "ids",
)
_FAIR_CLAIM = statement(
    move(MoveKind.CLAIM, status="'running'", keys=_FITTING, where=_ON_QUEUE, sets=_CLAIM_SETS),
    "ids",
)

# Transaction locks of the shares of the named tasks, in one order (so two
# claims can not deadlock); a hash collision only makes two shares take turns.
_LOCK_SHARES = statement(
    f"""
SELECT pg_advisory_xact_lock(s.key) FROM (
    SELECT DISTINCT hashtextextended(
        t.organization_id::text || ' ' || t.kind || '@' || coalesce(t.executor_id, ''), 0
    ) AS key
    FROM tasks t WHERE t.id = ANY({json_ids("ids")})
    ORDER BY key
) AS s
""",
    "ids",
)

# Not a move (the task stays waiting): a task a fair claim had no room for
# waits a while before its message comes back, longer the longer it has
# waited (a quarter of its age, from one heartbeat up to _WAIT_MAX), so a
# large backlog is looked at less and less often. A second message of a
# task already waiting this way is dropped, not sent round again.
_WAIT_MAX = 30.0
_NOT_WAITING = "(t.available_at IS NULL OR t.available_at < now() + make_interval(secs => :base))"
_WAIT_TURN = statement(
    f"""
WITH picked AS (
    {locked(MoveKind.CLAIM, keys=IDS, where=_ON_QUEUE + " AND " + _NOT_WAITING)}
)
UPDATE tasks t SET updated_at = now(), available_at = now() + make_interval(secs =>
    least({_WAIT_MAX}, greatest(:base, extract(epoch FROM now() - t.created_at) / 4))
    * (0.75 + random() / 2))
WHERE {by_key("picked")}
RETURNING t.*, extract(epoch FROM t.available_at - now()) AS countdown
""",
    "ids",
)

# Not a move (the status stays): a run still current gets a later lease end.
_RENEW_LEASE = statement(
    f"""
WITH current AS (
    SELECT t.id FROM (
        SELECT * FROM jsonb_to_recordset(:r) AS k(id uuid, attempt int) ORDER BY id
    ) AS k
    CROSS JOIN LATERAL (
        SELECT t.id FROM tasks t
        WHERE t.id = k.id AND t.attempt = k.attempt AND {keyed_status([Status.RUNNING])}
        FOR NO KEY UPDATE
    ) AS t
)
UPDATE tasks t SET lease_expires_at = now() + make_interval(secs => :lease)
WHERE {by_key("current")}
RETURNING t.id
""",
    "r",
)

# Runs whose lease ran out, held for a while by the sweeper that picked them
# (a short lease of its own) so that other sweepers skip them meanwhile.
_HOLD_EXPIRED = text(
    f"""
WITH picked AS (
    SELECT id FROM tasks
    WHERE status = '{Status.RUNNING.value}' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT :batch
    FOR NO KEY UPDATE SKIP LOCKED
)
UPDATE tasks t SET lease_expires_at = now() + make_interval(secs => :hold)
WHERE {by_key("picked")}
RETURNING t.*
"""
)


# The same for named runs (still expired, and not held by another sweeper).
_HOLD_NAMED = statement(
    f"""
WITH picked AS (
    SELECT t.id FROM ({IDS} ORDER BY id) AS k CROSS JOIN LATERAL (
        SELECT t.id FROM tasks t
        WHERE t.id = k.id AND {keyed_status([Status.RUNNING])} AND t.lease_expires_at < now()
        FOR NO KEY UPDATE SKIP LOCKED
    ) AS t
)
UPDATE tasks t SET lease_expires_at = now() + make_interval(secs => :hold)
WHERE {by_key("picked")}
RETURNING t.*
""",
    "ids",
)


def _finish_sql(kind: MoveKind, *, lease: bool = False) -> str:
    """Outcomes fenced by attempt; ``lease``: also by the lease the sweeper
    saw, and only while the sweeper's decision is in time."""
    return fenced(
        kind,
        status="r.status",
        columns="status text, output jsonb, errors jsonb, detail jsonb"
        + (f", {RECOVERY_COLUMNS}" if lease else ""),
        sets=", output = r.output, errors = r.errors, lease_expires_at = NULL",
        detail="r.detail",
        where=f"{LEASE_FENCE} AND {DECIDED_IN_TIME}" if lease else "",
    )


# An outcome fenced off is dropped; its task's log says so (if the task is still there).
_IGNORED_DETAIL = "jsonb_build_object('attempt', r.attempt, 'status', r.status)"
_IGNORED = f""", ignored AS (
    {events("r", type_="'result_ignored'", detail=_IGNORED_DETAIL,
            where="WHERE r.id NOT IN (SELECT id FROM moved) AND r.id = ANY(ARRAY("
                  "SELECT t.id FROM tasks t WHERE " + by_key("r") + "))")}
)
SELECT * FROM moved"""  # fmt: skip


def _with_ignored(sql: str) -> str:
    head, _, _ = sql.rpartition("SELECT * FROM moved")
    return head.rstrip() + _IGNORED


_FINISH = statement(_with_ignored(_finish_sql(MoveKind.FINISH)), "r")
_LOSE = statement(_with_ignored(_finish_sql(MoveKind.RECOVER_LEASE, lease=True)), "r")

_RETRY = statement(
    fenced(
        MoveKind.RETRY,
        status="'queued'",
        columns="errors jsonb, delay float8, detail jsonb",
        sets=", errors = r.errors, lease_expires_at = NULL,"
        " available_at = now() + make_interval(secs => r.delay)",
        detail="r.detail",
    ),
    "r",
)

_REQUEUE_LOST = statement(
    fenced(
        MoveKind.RECOVER_LEASE,
        status="'queued'",
        columns=RECOVERY_COLUMNS,
        sets=", lease_expires_at = NULL, available_at = NULL",
        detail="jsonb_build_object('reason', 'worker_lost', 'attempt', r.attempt)",
        where=f"{LEASE_FENCE} AND {DECIDED_IN_TIME}",
    ),
    "r",
)

# The sweeper gives up on tasks whose recovery failed too often: fenced on the
# lease it saw (none for a waiting task) and on the count stored.
_FAIL_RECOVERY = statement(
    move(
        MoveKind.RECOVERY_FAILED,
        status="'failed'",
        inputs=recordset("r", "id uuid, lease timestamptz, errors jsonb, detail jsonb"),
        keys="SELECT * FROM r",
        where=f"{LEASE_FENCE} AND t.recovery_failures >= :max",
        using="JOIN r ON r.id = old.id",
        sets=", errors = r.errors, lease_expires_at = NULL",
        detail="r.detail",
        returning="t.id, t.parent_id, t.flow_step_id, t.status, t.errors",
    ),
    "r",
)

# Not a move (the status stays): one more failed recovery of each task, logged.
_COUNT_RECOVERY_FAILURE = statement(
    f"""
WITH r AS (SELECT * FROM jsonb_to_recordset(:r) AS r(id uuid, error text)), picked AS (
    {locked(MoveKind.RECOVERY_FAILED, keys="SELECT * FROM r")}
), counted AS (
    UPDATE tasks t SET recovery_failures = t.recovery_failures + 1
    FROM r WHERE {by_key("picked")} AND r.id = t.id
    RETURNING t.id, t.recovery_failures, r.error
), ev AS (
    {
        events(
            "counted",
            type_="'recovery_error'",
            detail="jsonb_build_object('action', CAST(:action AS text), 'error', error, "
            "'failures', recovery_failures)",
        )
    }
)
SELECT id, recovery_failures FROM counted
""",
    "r",
)

_HAND_BACK = statement(
    move(
        MoveKind.HAND_BACK,
        status="'queued'",
        keys=None,  # a worker node's runs: among the running ones
        where="starts_with(t.worker, :prefix)",
        sets=", lease_expires_at = NULL",
        detail="""'{"reason": "worker stopping"}'::jsonb""",
    )
)

_RELEASE = statement(
    fenced(
        MoveKind.RELEASE,
        status="'queued'",
        sets=", lease_expires_at = NULL, available_at = NULL",
        detail="jsonb_build_object('reason', 'lease_lost', 'attempt', r.attempt)",
    ),
    "r",
)

_QUEUE_TIMEOUT = statement(
    move(
        MoveKind.QUEUE_TIMEOUT,
        status="'failed'",
        keys=IDS,
        where="t.queue_timeout_seconds IS NOT NULL"
        " AND t.created_at < now() - make_interval(secs => t.queue_timeout_seconds)",
        sets=", errors = :errors",
        detail="""'{"reason": "queue_timeout"}'::jsonb""",
        returning="t.id, t.parent_id, t.flow_step_id, t.status, t.errors",
    ),
    "ids",
    "errors",
)

# Fenced on what made the sweeper pick them: still waiting past the timeout,
# and no node heard from within it lists the queue.
_UNSERVED = statement(
    move(
        MoveKind.UNSERVED,
        status="'failed'",
        keys=IDS,
        where="t.created_at < now() - make_interval(secs => :timeout)"
        " AND NOT EXISTS (SELECT 1 FROM worker_nodes w WHERE :queue = ANY(w.queues)"
        " AND w.last_heartbeat_at > now() - make_interval(secs => :timeout))",
        sets=", errors = :errors",
        detail="""'{"reason": "unknown_kind"}'::jsonb""",
        returning="t.id, t.parent_id, t.flow_step_id, t.status, t.errors",
    ),
    "ids",
    "errors",
)


def _named_tasks(relation: str) -> str:
    """The tasks of the ids in ``relation``, by key; a condition on them is
    applied after the lookup (OFFSET 0 keeps it from reaching an index of its
    own, such as organization and status)."""
    return (
        "SELECT t.id, t.parent_id, t.flow_step_id, t.organization_id FROM tasks t "
        f"WHERE {by_key(relation)} OFFSET 0"
    )


# A subtree walked down from its roots, one index lookup of children per task
# (OFFSET 0 keeps the lookup a lookup: it can not become a join over all
# tasks); each task once, with a root it is under.
_SUBTREE = f"""sub(id, root, depth, path) AS (
    SELECT t.id, t.id, 1, ARRAY[t.id] FROM ({_named_tasks("roots")}) AS t {{org}}
    UNION ALL
    SELECT c.id, sub.root, sub.depth + 1, sub.path || c.id
    FROM sub CROSS JOIN LATERAL (
        SELECT c.id FROM tasks c WHERE c.parent_id = sub.id OFFSET 0
    ) AS c
    WHERE sub.depth < {MAX_TREE_DEPTH} AND c.id <> ALL(sub.path)
), tree AS (SELECT DISTINCT ON (id) id, root FROM sub ORDER BY id, depth), """


def _cancel_sql(org: str) -> str:
    return move(
        MoveKind.CANCEL,
        status="'cancelled'",
        inputs=f"roots AS ({IDS}), " + _SUBTREE.format(org=org),
        keys="SELECT id, root FROM tree",
        using="JOIN tree ON tree.id = old.id",
        detail="jsonb_build_object('reason', 'cancel requested', 'root', tree.root)",
        returning="t.id, t.parent_id, t.flow_step_id, t.status, t.errors",
        recursive=True,
    )


_CANCEL_IN_ORG = statement(_cancel_sql("WHERE t.organization_id = :org"), "ids")
_CANCEL = statement(_cancel_sql(""), "ids")

_WAITED_TOO_LONG = """'{"reason": "waited too long for a worker"}'::jsonb"""

# Not a move: the broker lost its data, so a message of every waiting task
# may be gone, and none waits for its backoff.
_RESTART_BACKOFFS = text(
    f"""
UPDATE tasks SET republish_at = now()
WHERE status IN {sql_list(RULES[MoveKind.REPUBLISH].sources)} AND republish_at > now()
"""
)

# The wait before a task's next republish: REPUBLISH_AFTER_SECONDS, doubled
# for each republish of this wait, up to REPUBLISH_MAX_SECONDS.
_BACKOFF = "least(:after * power(2, least(t.republishes + 1, 40)), greatest(:max, :after))"

# Not a status change for a task already queued: its backoff is re-armed, and a
# `created` one published becomes `queued`. A task not published (its queue
# holds messages enough, see tasks_core.recovery) only backs off, unlogged.
# The rows are locked already, by the sweeper that picked them.
_REPUBLISH = statement(
    f"""
WITH r AS (SELECT * FROM jsonb_to_recordset(:r) AS r(id uuid, published bool)), picked AS (
    {locked(MoveKind.REPUBLISH, keys="SELECT * FROM r")}
), moved AS (
    UPDATE tasks t SET updated_at = now(),
        status = CASE WHEN r.published AND t.status = 'created' THEN 'queued' ELSE t.status END,
        republish_at = now() + make_interval(secs => {_BACKOFF}),
        republishes = t.republishes + 1, recovery_failures = 0
    FROM r WHERE {by_key("picked")} AND r.id = t.id
    RETURNING t.id, t.status, r.published
), ev AS (
    {
        events(
            "moved",
            type_="'republished'",
            to_status="status",
            detail=_WAITED_TOO_LONG,
            where="WHERE published",
        )
    }
)
SELECT id FROM moved WHERE published
""",
    "r",
)


# --- A caller's PUT: fields and status in one statement --------------------------------

_FIELD_TYPES = {
    "description": "text",
    "ended_at": "timestamptz",
    "errors": "jsonb",
    "executor_id": "text",
    "input": "jsonb",
    "output": "jsonb",
    "params": "jsonb",
    "parent_id": "uuid",
    "started_at": "timestamptz",
    "title": "text",
}
assert set(_FIELD_TYPES) == MUTABLE_FIELDS - {"status"}, "every mutable field has an SQL type"


def _new(column: str) -> str:
    """The value a column takes: the one sent, else the stored one."""
    return f"CASE WHEN '{column}' = ANY(r.fields) THEN r.{column} ELSE t.{column} END"


# A PUT may keep the status, or move it from one of the sources of its target.
_PUT_GUARD = "(k.status IS NULL OR t.status = k.status OR t.status = ANY(k.sources))"


def _update_sql() -> str:
    columns = ", ".join(f"{name} {kind}" for name, kind in sorted(_FIELD_TYPES.items()))
    plain = [c for c in sorted(_FIELD_TYPES) if c not in ("started_at", "ended_at")]
    sets = ", ".join(f"{c} = {_new(c)}" for c in plain)
    status = "coalesce(r.status, t.status)"
    stamps = timestamps(
        status, MoveKind.SET_STATUS, started=_new("started_at"), ended=_new("ended_at")
    )
    return f"""
WITH r AS (
    SELECT * FROM jsonb_to_recordset(:r) AS r(id uuid, fields text[], status text,
                                              sources text[], {columns})
), old AS (
    {locked(MoveKind.SET_STATUS, keys="SELECT * FROM r", where=_PUT_GUARD)}
), moved AS (
    UPDATE tasks t SET {sets}, status = {status},
        {stamps}
    FROM old JOIN r ON r.id = old.id
    WHERE {by_key("old")} AND t.id = old.id
    RETURNING t.*, old.status AS from_status, r.fields AS changed
), logged AS (
    SELECT id, 1 AS ord, 'updated' AS type, NULL AS from_status, NULL AS to_status,
           jsonb_build_object('fields', to_jsonb(changed)) AS detail
    FROM moved WHERE cardinality(changed) > 0
    UNION ALL
    SELECT id, 2, 'status', from_status, status, NULL FROM moved WHERE status <> from_status
), ev AS (
    {
        events(
            "logged",
            type_="type",
            from_status="from_status",
            to_status="to_status",
            detail="detail",
            where="ORDER BY id, ord",
        )
    }
)
SELECT * FROM moved
"""


_UPDATE = statement(_update_sql(), "r")


# --- Creating tasks -----------------------------------------------------------------------

# Each distinct parent, its organization and how deep it is (walked up to the
# cap, one primary-key lookup a level: OFFSET 0 keeps it a lookup).
_PARENTS = f"""up(start, organization_id, id, parent_id, depth, path) AS (
    SELECT p.id, p.organization_id, p.id, p.parent_id, 1, ARRAY[p.id] FROM tasks p
    WHERE {by_key("r", alias="p", column="parent_id")}
    UNION ALL
    SELECT up.start, up.organization_id, t.id, t.parent_id, up.depth + 1, up.path || t.id
    FROM up CROSS JOIN LATERAL (
        SELECT t.id, t.parent_id FROM tasks t WHERE t.id = up.parent_id OFFSET 0
    ) AS t
    WHERE up.depth < {MAX_TREE_DEPTH} AND t.id <> ALL(up.path)
), parents AS (
    SELECT start AS id, organization_id, max(depth) AS depth FROM up
    GROUP BY start, organization_id
), ok AS (
    SELECT r.* FROM r WHERE r.parent_id IS NULL OR EXISTS (
        SELECT 1 FROM parents p WHERE p.id = r.parent_id
        AND p.organization_id = r.organization_id AND p.depth < {MAX_TREE_DEPTH})
), """


# A new task its creator publishes right after the commit is stored `queued`
# at once (the `mark_queued` move folded into the insert): no second round trip.
_QUEUED_AT_ONCE = RULES[MoveKind.MARK_QUEUED]
assert _QUEUED_AT_ONCE.sources == {Status.CREATED} and _QUEUED_AT_ONCE.targets == {Status.QUEUED}
_INITIAL = (
    f"CASE WHEN :queue AND ok.status = '{Status.CREATED.value}' "
    f"THEN '{Status.QUEUED.value}' ELSE ok.status END"
)


def _create_sql(*, with_parents: bool) -> str:
    values = {c: f"ok.{c}" for c in INSERT_COLUMNS}
    values["status"] = _INITIAL
    values["params"] = "coalesce(ok.params, '{}'::jsonb)"
    values["started_at"] = "coalesce(ok.started_at, CASE WHEN ok.status = 'running' THEN now() END)"
    values["ended_at"] = (
        f"coalesce(ok.ended_at, CASE WHEN ok.status IN {TERMINAL} "
        "THEN greatest(now(), ok.started_at) END)"
    )
    ok = _PARENTS if with_parents else "ok AS (SELECT * FROM r), "
    queued, created = f"'{Status.QUEUED.value}'", f"'{Status.CREATED.value}'"
    return f"""
WITH RECURSIVE r AS (
    SELECT * FROM jsonb_populate_recordset(NULL::tasks, :rows)
), {ok}st AS (
    INSERT INTO states (id, organization_id, name)
    SELECT ok.state_id, ok.organization_id, 'task ' || ok.id FROM ok
    WHERE ok.id = ANY({json_ids("stateful")})
), t AS (
    INSERT INTO tasks ({", ".join(INSERT_COLUMNS)}, created_at, updated_at)
    SELECT {", ".join(values[c] for c in INSERT_COLUMNS)}, now(), now()
    FROM ok ORDER BY ok.id
    RETURNING *
), logged AS (
    SELECT id, 1 AS ord, 'created' AS type, NULL AS from_status,
        CASE WHEN status = {queued} THEN {created} ELSE status END AS to_status,
        CASE WHEN flow_step_id IS NOT NULL
            THEN jsonb_build_object('flow', parent_id, 'step', flow_step_id) END AS detail,
        CAST(:actor AS text) AS actor
    FROM t
    UNION ALL
    SELECT id, 2, 'status', {created}, {queued}, NULL, CAST(:publisher AS text)
    FROM t WHERE status = {queued}
), ev AS (
    {
        events(
            "logged",
            type_="type",
            from_status="from_status",
            to_status="to_status",
            detail="detail",
            actor="actor",
            where="ORDER BY id, ord",
        )
    }
)
SELECT * FROM t ORDER BY id
"""


_CREATE = statement(_create_sql(with_parents=False), "rows", "stateful")
_CREATE_WITH_PARENTS = statement(_create_sql(with_parents=True), "rows", "stateful")


# --- Locks ---------------------------------------------------------------------------------

# A task and every Flow it is (transitively) a step of, in id order: the order
# every writer of a task tree locks in.
_LOCK_CHAINS = f"""
WITH RECURSIVE chain(id, parent_id, flow_step_id, depth, path) AS (
    SELECT t.id, t.parent_id, t.flow_step_id, 1, ARRAY[t.id]
    FROM ({_named_tasks("(" + IDS + ") AS named")}) AS t {{org}}
    UNION ALL
    SELECT t.id, t.parent_id, t.flow_step_id, c.depth + 1, c.path || t.id
    FROM chain c CROSS JOIN LATERAL (
        SELECT t.id, t.parent_id, t.flow_step_id FROM tasks t
        WHERE t.id = c.parent_id AND c.flow_step_id IS NOT NULL OFFSET 0
    ) AS t
    WHERE c.depth < {MAX_TREE_DEPTH} AND t.id <> ALL(c.path)
)
SELECT t.id FROM tasks t WHERE {by_key("chain")} ORDER BY t.id FOR NO KEY UPDATE
"""
_LOCK = statement(_LOCK_CHAINS.format(org=""), "ids")
_LOCK_IN_ORG = statement(_LOCK_CHAINS.format(org="WHERE t.organization_id = :org"), "ids")


# --- Running them ----------------------------------------------------------------------------


def create(
    conn: Connection,
    rows: Sequence[Mapping[str, Any]],
    stateful: Sequence[uuid.UUID],
    *,
    actor: str,
    trusted: bool = False,
    queued_by: str | None = None,
) -> list[TaskRecord]:
    """Insert tasks (``rows``: column -> value), the state objects of the
    ``stateful`` ones and their `created` events; a row whose parent is
    missing, of another organization or at the depth cap is left out, unless
    its parent is ``trusted`` (a locked Flow spawning its steps). With
    ``queued_by`` (the publisher's actor), a `created` task is stored `queued`
    with its `created` -> `queued` event, for a caller that publishes it
    right after the commit."""
    checked = not trusted and any(row.get("parent_id") is not None for row in rows)
    stmt = _CREATE_WITH_PARENTS if checked else _CREATE
    values = {
        "rows": json_rows(rows),
        "stateful": as_ids(stateful),
        "actor": actor,
        "queue": queued_by is not None,
        "publisher": queued_by or actor,
    }
    return records(conn, stmt, values)


def mark_queued(conn: Connection, ids: Sequence[uuid.UUID], *, actor: str) -> list[TaskRecord]:
    """`created` -> `queued` for published tasks."""
    return records(conn, _MARK_QUEUED, {"ids": as_ids(ids), "actor": actor})


def publish_failed(conn: Connection, ids: Sequence[uuid.UUID], *, actor: str) -> list[TaskRecord]:
    """`queued` -> `created` for new tasks the broker did not take."""
    return records(conn, _PUBLISH_FAILED, {"ids": as_ids(ids), "actor": actor})


def republish(
    conn: Connection,
    published: Sequence[uuid.UUID],
    deferred: Sequence[uuid.UUID],
    *,
    after: float,
    most: float,
    actor: str,
) -> int:
    """Back off the next republish of tasks published again (marking `created`
    ones `queued`) or ``deferred``; returns how many of the published changed."""
    rows = [{"id": i, "published": True} for i in published]
    rows += [{"id": i, "published": False} for i in deferred]
    values = {"r": json_rows(rows), "after": after, "max": most, "actor": actor}
    return len(conn.execute(_REPUBLISH, values).all())


def restart_backoffs(conn: Connection) -> int:
    """Every waiting task backing off may be published again now (the broker
    lost its messages); how many."""
    return int(conn.execute(_RESTART_BACKOFFS).rowcount)


def count_recovery_failures(
    conn: Connection, errors: Mapping[uuid.UUID, str], *, action: str, actor: str
) -> dict[uuid.UUID, int]:
    """One more failed recovery (``action``) of each task, with its error; the
    failures each task has now."""
    rows = [{"id": task_id, "error": error} for task_id, error in errors.items()]
    values = {"r": json_rows(rows), "action": action, "actor": actor}
    return {r.id: r.recovery_failures for r in conn.execute(_COUNT_RECOVERY_FAILURE, values)}


def fail_recovery(
    conn: Connection, rows: Sequence[Mapping[str, Any]], *, max_failures: int, actor: str
) -> list[Row[Any]]:
    """Tasks (id, lease, errors, detail) whose recovery failed ``max_failures``
    times -> `failed` (slim rows)."""
    values = {"r": json_rows(rows), "max": max_failures, "actor": actor}
    return list(conn.execute(_FAIL_RECOVERY, values))


def claim(
    conn: Connection,
    ids: Sequence[uuid.UUID],
    *,
    worker: str,
    lease: float,
    actor: str,
    queue: str | None = None,
    prefix: str = "tasks",
    max_running: int = 0,
) -> list[TaskRecord]:
    """Waiting tasks (on ``queue``, if given) -> `running` as a new attempt
    with a lease; with ``max_running``, only as many of an organization's
    tasks on one queue as fit under it (after :func:`lock_shares`)."""
    values = {
        "ids": as_ids(ids),
        "worker": worker,
        "lease": lease,
        "actor": actor,
        "queue": queue,
        "prefix": prefix,
    }
    if max_running > 0:
        return records(conn, _FAIR_CLAIM, {**values, "max_running": max_running})
    return records(conn, _CLAIM, values)


def lock_shares(conn: Connection, ids: Sequence[uuid.UUID]) -> None:
    """Lock, until the transaction ends, the (organization, queue) of each task."""
    conn.execute(_LOCK_SHARES, {"ids": as_ids(ids)})


def wait_turn(
    conn: Connection, ids: Sequence[uuid.UUID], *, queue: str | None, prefix: str, base: float
) -> list[tuple[TaskRecord, float]]:
    """Tasks a fair claim had no room for wait before they are published
    again: each, with the seconds to wait."""
    values = {"ids": as_ids(ids), "queue": queue, "prefix": prefix, "base": base}
    rows = conn.execute(_WAIT_TURN, values).mappings()
    return [(TaskRecord.from_row(r), max(0.0, float(r["countdown"]))) for r in rows]


def renew_leases(
    conn: Connection, attempts: Sequence[tuple[uuid.UUID, int]], *, lease: float
) -> set[uuid.UUID]:
    """Extend the leases of runs still current; the ids renewed."""
    rows = [{"id": task_id, "attempt": number} for task_id, number in attempts]
    values = {"r": json_rows(rows), "lease": lease}
    return {r.id for r in conn.execute(_RENEW_LEASE, values)}


def hold_expired(conn: Connection, *, batch: int, hold: float) -> list[TaskRecord]:
    """Pick runs whose lease expired and hold them for ``hold`` seconds."""
    return records(conn, _HOLD_EXPIRED, {"batch": batch, "hold": hold})


def hold_named(conn: Connection, ids: Sequence[uuid.UUID], *, hold: float) -> list[TaskRecord]:
    """Hold the named runs whose lease expired for ``hold`` seconds."""
    return records(conn, _HOLD_NAMED, {"ids": as_ids(ids), "hold": hold})


def finish(
    conn: Connection, rows: Sequence[Mapping[str, Any]], *, actor: str, lost: bool = False
) -> list[TaskRecord]:
    """Fenced outcomes (id, attempt, status, output, errors, detail); a
    fenced-off one is logged as `result_ignored`. ``lost``: the sweeper's,
    for runs whose worker stopped."""
    return records(conn, _LOSE if lost else _FINISH, {"r": json_rows(rows), "actor": actor})


def retry(conn: Connection, rows: Sequence[Mapping[str, Any]], *, actor: str) -> list[TaskRecord]:
    """Fenced hand-backs for another attempt (id, attempt, errors, delay, detail)."""
    return records(conn, _RETRY, {"r": json_rows(rows), "actor": actor})


def requeue_lost(
    conn: Connection, rows: Sequence[Mapping[str, Any]], *, actor: str
) -> list[TaskRecord]:
    """Fenced hand-backs of runs whose worker stopped (id, attempt, lease, decide_by)."""
    return records(conn, _REQUEUE_LOST, {"r": json_rows(rows), "actor": actor})


def hand_back(conn: Connection, *, worker_prefix: str, actor: str) -> list[TaskRecord]:
    """Every task running on one worker node -> `queued`."""
    return records(conn, _HAND_BACK, {"prefix": worker_prefix, "actor": actor})


def release(conn: Connection, rows: Sequence[Mapping[str, Any]], *, actor: str) -> list[TaskRecord]:
    """Fenced hand-backs of runs stopped for want of their lease (id, attempt)."""
    return records(conn, _RELEASE, {"r": json_rows(rows), "actor": actor})


def queue_timeout(
    conn: Connection, ids: Sequence[uuid.UUID], errors: list[dict[str, str]], *, actor: str
) -> list[Row[Any]]:
    """Waiting tasks past their queueTimeoutSeconds -> `failed` (slim rows)."""
    values = {"ids": as_ids(ids), "errors": errors, "actor": actor}
    return list(conn.execute(_QUEUE_TIMEOUT, values))


def unserved(
    conn: Connection,
    ids: Sequence[uuid.UUID],
    errors: list[dict[str, str]],
    *,
    queue: str,
    timeout: float,
    actor: str,
) -> list[Row[Any]]:
    """Waiting tasks of a queue no live worker served for ``timeout`` -> `failed` (slim rows)."""
    values = {"ids": as_ids(ids), "errors": errors, "queue": queue, "timeout": timeout}
    return list(conn.execute(_UNSERVED, {**values, "actor": actor}))


def cancel(
    conn: Connection,
    ids: Sequence[uuid.UUID],
    *,
    actor: str,
    organization_id: uuid.UUID | None = None,
) -> list[Row[Any]]:
    """Tasks and every non-terminal descendant -> `cancelled` (slim rows)."""
    values: dict[str, Any] = {"ids": as_ids(ids), "actor": actor}
    if organization_id is None:
        return list(conn.execute(_CANCEL, values))
    return list(conn.execute(_CANCEL_IN_ORG, {**values, "org": organization_id}))


def update(
    conn: Connection, rows: Sequence[Mapping[str, Any]], *, actor: str
) -> list[tuple[TaskRecord, Status]]:
    """PUTs: (id, fields, status, sources, the fields' values) -> each task as
    changed, and the status it had before."""
    result = conn.execute(_UPDATE, {"r": json_rows(rows), "actor": actor}).mappings()
    return [(TaskRecord.from_row(r), Status(r["from_status"])) for r in result]


def lock(
    conn: Connection, ids: Sequence[uuid.UUID], *, organization_id: uuid.UUID | None = None
) -> set[uuid.UUID]:
    """Lock tasks and the Flows they are steps of, in id order; the ids locked."""
    if organization_id is None:
        return {r.id for r in conn.execute(_LOCK, {"ids": as_ids(ids)})}
    values = {"ids": as_ids(ids), "org": organization_id}
    return {r.id for r in conn.execute(_LOCK_IN_ORG, values)}

"""Planner statistics of the tables that every move and create reads by key.

psycopg prepares a statement it has run a few times (``DB_PREPARE_THRESHOLD``)
and PostgreSQL then runs it with a generic plan, made with what the planner
knows of each table at that moment and kept until the table's statistics
change. Made while ``tasks`` is nearly empty (a new database, or one that a
retention purge emptied), that plan finds a move's tasks by reading the
table whole, since on a few pages a scan costs less than the index (the
``UPDATE`` of a move joins its locked tasks back to the table, and the
planner may do that join by a scan). Kept while the table grows, it makes
every claim and every outcome a scan of the table: a claim of one task took
2.5 ms at 50,000 rows instead of 0.46, and more as the table grew, until
autovacuum's first ``ANALYZE`` of it, which comes up to a minute or more
later (``autovacuum_naptime``). An ``ANALYZE`` makes every cached plan on
the table be made again, by key.

So the sweeper analyzes a table of :data:`TABLES` as soon as it holds more
than :data:`STALE_ROWS` rows and more than four times what its statistics
say (``outgrown``). Analyzed past that size, the keyed plans stay right
however large the table grows, and autovacuum keeps its statistics current;
a table whose statistics keep up with it is never analyzed here.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, text

# The tables read by key on every create and move (a move's tasks and their
# events; a create's Idempotency-Key).
TABLES = ("idempotency_keys", "task_events", "tasks")

# Below this many rows a scan costs about what an index lookup does.
STALE_ROWS = 1000

# How long an ANALYZE waits for its lock (autovacuum or another sweeper may
# hold it) before this pass leaves the table to the next one.
LOCK_TIMEOUT = "200ms"

_OUTGROWN = text(
    """
SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
WHERE s.schemaname = current_schema() AND s.relname = ANY(:tables)
  AND s.n_live_tup > :rows AND greatest(c.reltuples, 0) * 4 < s.n_live_tup
ORDER BY s.relname
"""
)


def outgrown(conn: Connection, tables: Sequence[str] = TABLES) -> list[str]:
    """The ``tables`` that have outgrown their planner statistics (see the module)."""
    found = conn.execute(_OUTGROWN, {"tables": list(tables), "rows": STALE_ROWS})
    return [str(name) for name in found.scalars()]


def analyze(conn: Connection, table: str) -> bool:
    """``ANALYZE`` one of :data:`TABLES` in the caller's transaction; whether
    its statistics now cover it (False: the role may not analyze it, and
    PostgreSQL skipped it with a warning). Raises when its lock was not
    had within :data:`LOCK_TIMEOUT`."""
    if table not in TABLES:
        raise ValueError(f"not a table of the lifecycle: {table!r}")
    conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    conn.execute(text(f"ANALYZE {conn.dialect.identifier_preparer.quote(table)}"))
    return table not in outgrown(conn, [table])

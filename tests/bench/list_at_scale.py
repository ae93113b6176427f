"""GET /v1/tasks at a million rows: each filter's page is an index range scan.

    python -m tests.bench.list_at_scale --rows 1000000

Fills the tasks table (10 organizations, mixed kinds, statuses, executors,
apps, targets and parents), runs ANALYZE, then for every filter of the list
endpoint prints the plan's top scan and the execution time of the first page
and of a page deep in the cursor chain. Nothing is asserted; it reports.
"""

from __future__ import annotations

import argparse
import time

from sqlalchemy import text

from tasks_core.migrate import upgrade
from tasks_core.storage.db import make_engine
from tests.bench.throughput import servers

FILL = """
INSERT INTO organizations (id, name)
SELECT ('00000000-0000-7000-8000-' || lpad(g::text, 12, '0'))::uuid, 'org' || g
FROM generate_series(0, 9) g;

INSERT INTO tasks (id, organization_id, kind, status, executor_id, app_id, target_id, parent_id,
                   params, errors, created_at, updated_at)
SELECT
    -- UUIDv7-like: time-ordered prefix from the row number
    (lpad(to_hex(1700000000000 + g), 12, '0') || '70008000'
     || lpad(to_hex(g), 12, '0'))::uuid,
    ('00000000-0000-7000-8000-' || lpad(((g / 3) % 10)::text, 12, '0'))::uuid,
    (ARRAY['default', 'CallAction', 'Flow', 'Report'])[1 + g % 4],
    (ARRAY['completed', 'completed', 'completed', 'failed', 'queued', 'running'])[1 + g % 6],
    CASE WHEN g % 5 = 0 THEN 'pool-' || (g % 3) END,
    CASE WHEN g % 7 = 0 THEN 'app-' || (g % 11) END,
    CASE WHEN g % 3 = 0 THEN 'billing/charge-' || (g % 13) END,
    -- every 50th task after the first thousand is a child of one of the first 100
    CASE WHEN g > 1000 AND g % 50 = 0 THEN
        (lpad(to_hex(1700000000000 + 1 + g % 100), 12, '0') || '70008000'
         || lpad(to_hex(1 + g % 100), 12, '0'))::uuid END,
    '{}'::jsonb, '[]'::jsonb, now(), now()
FROM generate_series(1, :rows) g;

ANALYZE tasks;
"""

ORG = "'00000000-0000-7000-8000-000000000003'"
# Row 51, the parent of every 100th child (about 200 of them in ORG).
_MS = f"{1700000000000 + 51:012x}"
PARENT = f"{_MS[:8]}-{_MS[8:]}-7000-8000-{51:012x}"
FILTERS = {
    "none": "",
    "status": "AND status = 'failed'",
    "kind": "AND kind = 'Report'",
    "executorId": "AND executor_id = 'pool-1'",
    "appId": "AND app_id = 'app-5'",
    "targetId": "AND target_id = 'billing/charge-7'",
    "parentId": f"AND parent_id = '{PARENT}'",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with servers() as (database_url, _):
        upgrade(database_url)
        engine = make_engine(database_url)
        started = time.perf_counter()
        with engine.begin() as conn:
            for statement in FILL.split(";\n"):
                if statement.strip():
                    conn.execute(text(statement), {"rows": args.rows})
        print(f"filled rows={args.rows} seconds={time.perf_counter() - started:.1f}")
        with engine.connect() as conn:
            for name, condition in FILTERS.items():
                first = _page(conn, condition, "")
                deep_cursor = conn.execute(
                    text(
                        f"SELECT id FROM tasks WHERE organization_id = {ORG} {condition} "
                        "ORDER BY id DESC OFFSET 2000 LIMIT 1"
                    )
                ).scalar()
                deep = _page(conn, condition, f"AND id < '{deep_cursor}'") if deep_cursor else None
                print(f"filter={name:<10} first_page: {first}  page_after_2000: {deep or 'n/a'}")
        engine.dispose()


def _page(conn: object, condition: str, cursor: str) -> str:
    sql = (
        f"EXPLAIN (ANALYZE, FORMAT TEXT) SELECT * FROM tasks WHERE organization_id = {ORG} "
        f"{condition} {cursor} ORDER BY id DESC LIMIT 51"
    )
    lines = [row[0] for row in conn.execute(text(sql))]  # type: ignore[attr-defined]
    scan = next((line.strip() for line in lines if "Scan" in line), lines[0].strip())
    scan = scan.split("  (")[0].replace("->  ", "")
    execution = next(line for line in lines if line.startswith("Execution Time"))
    return f"{scan} | {execution.split(': ')[1]}"


if __name__ == "__main__":
    main()

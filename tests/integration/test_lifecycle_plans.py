"""Every statement of the lifecycle reaches tasks by key, whatever the statistics.

psycopg prepares a statement it has run five times, and PostgreSQL may then
run it with a generic plan, made without the parameters' values. A move that
names its tasks by id must still find them through the primary key, never by
scanning every waiting or running task (or the whole table): at a million
tasks that would make each claim cost a scan. Checked on real PostgreSQL,
with the statistics of a table just filled (not analyzed) and of an analyzed one.
"""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import Engine, TextClause, text

from tasks_core.flow_definitions import Limits
from tasks_core.lifecycle import flow_statements, statements
from tasks_core.lifecycle.engine import apply
from tasks_core.lifecycle.moves import Create
from tasks_core.records import Caller
from tasks_core.storage import tasks as task_reads
from tasks_core.task import TaskSpec
from tests.support.api import issue_key

# Where picking by status is the point, and the indexes made for it: the
# sweeper's expired runs, a worker node's runs at hand-back, the waiting tasks
# to publish again and their backoffs, an organization's open tasks (counted
# for its quota), the running tasks of an organization's queue (counted for
# MAX_RUNNING_PER_ORG), and whether a queue has tasks waiting.
RUNNING = ("ix_tasks_running_",)
WAITING = ("ix_tasks_waiting_",)
BY_STATUS = {
    "_OPEN_TASKS": ("ix_tasks_org_status_id",),
    "_HOLD_EXPIRED": RUNNING,
    "_EXPIRED": RUNNING,
    "_HAND_BACK": RUNNING,
    "_FAIR_CLAIM": RUNNING,
    "_STALE": WAITING,
    "_RESTART_BACKOFFS": WAITING,
    "_WAITING_ON": WAITING,
}
FINISHED_ROWS = """
INSERT INTO tasks (id, organization_id, kind, status, params, errors,
                   created_at, updated_at, started_at, ended_at)
SELECT gen_random_uuid(), (SELECT organization_id FROM tasks LIMIT 1), 'default',
       'completed', '{}'::jsonb, '[]'::jsonb, now(), now(), now(), now()
FROM generate_series(1, :rows)
"""
FINISH_MOST = "UPDATE tasks SET status = 'completed', ended_at = now() WHERE random() < 0.9"
FULL_SCAN = re.compile(r"Seq Scan on (tasks|flow_steps|task_events)\b")
# Every index that picks tasks by status (the partial ones of waiting and
# running tasks) or by organization.
STATUS_INDEX = re.compile(r"ix_tasks_(waiting_\w+|running_\w+|org_status_id|org_kind_id)")
BIND = re.compile(r"(?<![:\w]):([a-z_]+)\b")


def lifecycle_statements() -> dict[str, TextClause]:
    found = {}
    for module in (statements, flow_statements, task_reads):
        for name, value in vars(module).items():
            if isinstance(value, TextClause):
                found[f"{module.__name__.rsplit('.', 1)[-1]}.{name}"] = value
    return found


def generic_plan(engine: Engine, clause: TextClause) -> str:
    """The plan PostgreSQL makes without the parameters' values."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    sql = BIND.sub(number, clause.text)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("EXPLAIN (GENERIC_PLAN) " + sql.replace("%", "%%"))
        return "\n".join(r[0] for r in rows)


@pytest.fixture
def filled(engine: Engine) -> Engine:
    """A table of 6,000 tasks in every status and 3,000 Flow steps."""
    _, key_id, org_id = issue_key(engine, "acme")
    caller = Caller(organization_id=uuid.UUID(org_id), key_id=uuid.UUID(key_id))
    from tasks_core.usecases.create import new_task

    with engine.begin() as conn:
        # Statistics come only from the cases' own ANALYZE: an autoanalyze
        # landing mid-test (on a slow machine) made "just filled" a case
        # with statistics, in which half the tasks of its one organization
        # are open and a scan is the cheapest way to count a few of them.
        conn.execute(text("ALTER TABLE tasks SET (autovacuum_enabled = false)"))
        news = tuple(
            new_task(caller, TaskSpec(kind="default"), limits=Limits()) for _ in range(6000)
        )
        apply(conn, Create(news, actor="system:test"))
        conn.execute(
            text(
                "UPDATE tasks SET status = (ARRAY['queued','running','completed','failed'])"
                "[1 + (hashtext(id::text) & 3)] WHERE random() < 0.8"
            )
        )
        conn.execute(
            text(
                "INSERT INTO flow_steps (flow_id, step_id, spec, dependents, pending) "
                "SELECT id, 's' || n, '{}'::jsonb, '{}', 0 FROM "
                "(SELECT id FROM tasks LIMIT 1000) f, generate_series(1, 3) n"
            )
        )
    return engine


@pytest.mark.parametrize("statistics", ["just filled", "analyzed", "analyzed while none waited"])
def test_every_statement_finds_tasks_by_key_in_its_generic_plan(
    filled: Engine, statistics: str
) -> None:
    if statistics == "analyzed":
        # Most tasks finished, as in a table that has run for a while.
        with filled.begin() as conn:
            conn.execute(text(FINISH_MOST))
    if statistics == "analyzed while none waited":
        # A larger table of finished tasks: the partial indexes of waiting
        # and running tasks look empty, so the cheapest way to any one task,
        # unless the statement allows only its key (a backlog later makes
        # such an index large, and the cached plan scans it for each id).
        with filled.begin() as conn:
            conn.execute(text("UPDATE tasks SET status = 'completed', ended_at = now()"))
            conn.execute(text(FINISHED_ROWS), {"rows": 20_000})
    if statistics != "just filled":
        with filled.connect() as conn:
            # VACUUM too: the partial indexes keep the entries of rows moved
            # out of them until then, and so look larger than they are.
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(text("VACUUM ANALYZE"))
    wrong = {}
    for name, clause in lifecycle_statements().items():
        plan = generic_plan(filled, clause)
        allowed = BY_STATUS.get(name.split(".")[-1], ())
        bad = [
            line.strip()
            for line in plan.splitlines()
            if FULL_SCAN.search(line)
            or (STATUS_INDEX.search(line) and not any(index in line for index in allowed))
        ]
        if bad:
            wrong[name] = bad
    assert wrong == {}, "\n".join(f"{k}: {v}" for k, v in wrong.items())


def test_the_check_sees_a_statement_that_scans() -> None:
    lines = ["->  Seq Scan on tasks t  (cost=0.00..261.03 rows=3003 width=54)"]
    assert any(FULL_SCAN.search(line) for line in lines)
    assert STATUS_INDEX.search("Bitmap Index Scan on ix_tasks_waiting_updated_at")


def test_each_move_is_planned_once_per_connection(engine: Engine) -> None:
    """A prepared statement whose every run looks cheaper to plan afresh (a
    literal array of ids, say) is planned on every run: about as long as the
    run itself. Run each move a dozen times on one connection; every
    statement must then be running its cached generic plan."""
    _, key_id, org_id = issue_key(engine, "acme")
    caller = Caller(organization_id=uuid.UUID(org_id), key_id=uuid.UUID(key_id))
    from tasks_core.lifecycle.moves import (
        Attempt,
        Cancel,
        Claim,
        Finish,
        Finished,
        MarkQueued,
        Outcome,
        Retried,
        Retry,
    )
    from tasks_core.status import Status
    from tasks_core.usecases.create import new_task

    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        for _ in range(12):
            spec = TaskSpec(kind="default", max_attempts=2)
            news = (new_task(caller, spec, limits=Limits()),)
            ids = tuple(apply(conn, Create(news, actor="a")).tasks)
            apply(conn, MarkQueued(ids, actor="a"))
            run = apply(conn, Claim(ids, worker="w:1", lease_seconds=30)).tasks[ids[0]]
            statements.renew_leases(conn, [(run.id, run.attempt)], lease=30)
            failed = Outcome(Status.FAILED, errors=[{"code": "x", "message": "y"}])
            apply(conn, Retry((Retried(Attempt.of(run), failed, 0),), actor="a"))
            run = apply(conn, Claim(ids, worker="w:1", lease_seconds=30)).tasks[ids[0]]
            apply(conn, Finish((Finished(Attempt.of(run), Outcome(Status.COMPLETED)),), actor="a"))
            apply(conn, Cancel(caller.organization_id, ids, actor="a"))
        prepared = conn.execute(
            text("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")
        ).all()
    planned_each_time = [
        row.statement.strip().splitlines()[0:3]
        for row in prepared
        if row.custom_plans >= 5 and row.generic_plans == 0
    ]
    assert len(prepared) >= 6, prepared
    assert planned_each_time == []

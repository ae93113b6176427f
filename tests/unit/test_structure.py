"""Rules of the code base, checked by reading its source, so that nobody has to
remember them: who writes a task's status and log, where SQL lives, and what
importing the worker's registry costs."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("tasks_core", "worker")
LIFECYCLE = "tasks_core/lifecycle/"
# SQL has these homes: the lifecycle (every write of a task) and the storage
# layer (reads, and writes of everything else); migrations are schema history.
SQL_HOMES = (LIFECYCLE, "tasks_core/storage/", "tasks_core/migrations/")

# A write of a task's row, its log, or a Flow's steps: the lifecycle's alone.
TASK_WRITE = re.compile(
    r"\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(tasks|task_events|flow_steps)\b", re.IGNORECASE
)
# The same through SQLAlchemy's constructs instead of SQL text.
TASK_WRITE_CALL = re.compile(r"\b(insert|update|delete)\(\s*(tasks|TaskEvent|FlowStep)\b")
SQL = re.compile(r"\b(SELECT|INSERT\s+INTO|DELETE\s+FROM|UPDATE\s+\w+\s+SET)\b")


def sources() -> Iterator[tuple[str, str]]:
    """(path from the root, text) of every module of the service."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), path.read_text()


def strings(source: str) -> Iterator[tuple[int, str]]:
    """(line, text) of every string in the code, docstrings left out; an
    f-string's literal parts are joined so that SQL built with one is seen whole."""
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    f_parts = {
        id(part)
        for node in ast.walk(tree)
        if isinstance(node, ast.JoinedStr)
        for part in node.values
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = [v.value for v in node.values if isinstance(v, ast.Constant)]
            yield node.lineno, " ".join(str(p) for p in parts)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings | f_parts
        ):
            yield node.lineno, node.value


def task_writes(source: str) -> list[int]:
    """Lines that write a task, its events or a Flow's steps."""
    found = [line for line, value in strings(source) if TASK_WRITE.search(value)]
    found += [source[: m.start()].count("\n") + 1 for m in TASK_WRITE_CALL.finditer(source)]
    return found


def sql_lines(source: str) -> list[int]:
    """Lines of SQL text, or of SQLAlchemy's ``text`` brought in to run some."""
    found = [line for line, value in strings(source) if SQL.search(value)]
    tree = ast.parse(source)
    found += [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and (node.module or "").startswith("sqlalchemy")
        and any(alias.name == "text" for alias in node.names)
    ]
    return found


def test_only_the_lifecycle_writes_a_task_its_events_or_its_flow_steps() -> None:
    offenders = {
        path: lines
        for path, source in sources()
        if not path.startswith(LIFECYCLE) and not path.startswith("tasks_core/migrations/")
        and (lines := task_writes(source))
    }  # fmt: skip
    assert offenders == {}, f"outside {LIFECYCLE}, a write of tasks or task_events: {offenders}"


def test_event_rows_are_built_in_one_place() -> None:
    places = [
        (path, line)
        for path, source in sources()
        for line, value in strings(source)
        if re.search(r"INSERT\s+INTO\s+task_events", value, re.IGNORECASE)
    ]
    assert len(places) == 1 and places[0][0] == "tasks_core/lifecycle/sql.py", places


def test_sql_lives_in_the_lifecycle_and_the_storage_layer_only() -> None:
    offenders = {
        path: lines
        for path, source in sources()
        if not path.startswith(SQL_HOMES) and (lines := sql_lines(source))
    }
    assert offenders == {}, f"SQL outside {SQL_HOMES}: {offenders}"


@pytest.mark.parametrize(
    "source",
    [
        'conn.execute(text("UPDATE tasks SET status = :s WHERE id = :id"))',
        'sql = f"INSERT INTO task_events (task_id) SELECT {col} FROM t"',
        "stmt = update(tasks).values(status='failed')",
        '"""Doc."""\nX = """\nDELETE FROM flow_steps WHERE flow_id = :f\n"""',
    ],
)
def test_the_checks_see_a_write_of_a_task(source: str) -> None:
    assert task_writes(source), source


def test_the_checks_see_sql_and_skip_docstrings() -> None:
    assert sql_lines('from sqlalchemy import text\nQ = "SELECT id FROM states"')
    assert not sql_lines('"""SELECT this docstring, it is prose."""\nX = "selected"')


def test_registering_handlers_loads_no_celery() -> None:
    """The README's handler module imports the registry; that alone must not
    build the Celery app, connect to Redis or patch kombu."""
    probe = (
        "import sys\n"
        "from worker.errors import TaskError\n"
        "from worker.registry import action, flow, handler\n"
        "@handler('Report')\n"
        "def report(ctx): return None\n"
        "loaded = sorted(m for m in sys.modules\n"
        "                if m.split('.')[0] in ('celery', 'kombu', 'redis', 'sqlalchemy')\n"
        "                or m == 'worker.celery_app')\n"
        "print(loaded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout

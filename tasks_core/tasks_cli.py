"""``tasks-core tasks``: the public API from a terminal, through ``tasks_core.client``.

tasks-core tasks create --kind K [--target-id T] [--input JSON|@file] [--params JSON|@file]
                        [--executor-id E] [--wait]
tasks-core tasks get ID [--depth N]
tasks-core tasks list [--status S] [--kind K] [--executor-id E] [--app-id A] [--parent-id P]
tasks-core tasks watch ID
tasks-core tasks cancel ID
tasks-core tasks events ID

Where it connects: ``--url`` and ``--key``, else ``TASKS_URL`` and
``TASKS_API_KEY``, else what ``tasks-core dev`` made in this folder
(``http://127.0.0.1:8000`` and ``.tasks/api-key``). ``--json`` gives machine
output everywhere. Exit codes: 0 done (a task waited on or watched ended
``completed``), 1 it ended ``failed``, 2 ``cancelled`` (or a usage error),
3 the API refused the call or could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, TextIO

import httpx

from tasks_core.client import TasksClient, TasksError
from tasks_core.client.calls import Task, is_terminal
from tasks_core.task import TASK_FIELDS

DEV_URL = "http://127.0.0.1:8000"
DEV_KEY_FILE = Path(".tasks") / "api-key"
EXIT_BY_STATUS = {"completed": 0, "failed": 1, "cancelled": 2}
EXIT_UNREACHABLE = 3
WATCH_INTERVAL = 0.5
# The filters of `tasks list`, by TaskRecord field; the API names them as TASK_FIELDS says.
LIST_FILTERS = ("status", "kind", "executor_id", "app_id", "parent_id", "target_id")
WIRE = {field.name: field.wire for field in TASK_FIELDS}


class _Usage(Exception):
    """A problem with what was asked, said to the user as is."""


def add_tasks_commands(sub: Any) -> None:
    """Register ``tasks`` and its actions on the top-level subparsers ``sub``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the API (TASKS_URL; default {DEV_URL})")
    common.add_argument("--key", help="an API key (TASKS_API_KEY; default ./.tasks/api-key)")
    common.add_argument("--json", action="store_true", help="machine output (JSON)")
    tasks = sub.add_parser("tasks", help="create, inspect and watch tasks through the API")
    actions = tasks.add_subparsers(metavar="ACTION")

    create = actions.add_parser("create", parents=[common], help="create a task, print it")
    create.add_argument("--kind", required=True)
    create.add_argument("--target-id")
    create.add_argument("--executor-id")
    create.add_argument("--input", type=_json_value, help="JSON, or @file holding JSON")
    create.add_argument("--params", type=_json_value, help="JSON, or @file holding JSON")
    create.add_argument("--wait", action="store_true", help="print it once it has ended")
    create.set_defaults(run=_command(_create))

    get = actions.add_parser("get", parents=[common], help="print a task")
    get.add_argument("id")
    get.add_argument("--depth", type=int, default=1, help="levels of children (default 1)")
    get.set_defaults(run=_command(_get))

    listing = actions.add_parser("list", parents=[common], help="your tasks, newest first")
    for name in LIST_FILTERS:
        listing.add_argument(f"--{name.replace('_', '-')}", metavar=WIRE[name])
    listing.add_argument("--limit", type=int, default=50, help="rows at most (default 50)")
    listing.set_defaults(run=_command(_list))

    for name, run, help_ in (
        ("watch", _watch, "show a task's progress until it ends"),
        ("cancel", _cancel, "cancel a task and its unfinished descendants"),
        ("events", _events, "a task's timeline"),
    ):
        action = actions.add_parser(name, parents=[common], help=help_)
        action.add_argument("id")
        action.set_defaults(run=_command(run))


def _json_value(text: str) -> Any:
    source = Path(text[1:]).read_text() if text.startswith("@") else text
    try:
        return json.loads(source)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc.msg} at character {exc.pos})") from exc


Action = Callable[[TasksClient, argparse.Namespace], int]


def _command(action: Action) -> Callable[[argparse.Namespace], int]:
    return lambda args: run(args, action)


def run(args: argparse.Namespace, action: Action) -> int:
    """Run a ``tasks`` action with a client, turning failures into messages and exit codes."""
    try:
        with TasksClient(*_where(args)) as client:
            return action(client, args)
    except _Usage as exc:
        print(f"tasks-core tasks: {exc}", file=sys.stderr)
        return 2
    except TasksError as exc:
        print(f"tasks-core tasks: {exc.status} {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except httpx.TransportError as exc:
        print(f"tasks-core tasks: cannot reach the API ({exc})", file=sys.stderr)
        return EXIT_UNREACHABLE


def _where(args: argparse.Namespace) -> tuple[str, str]:
    url = args.url or os.environ.get("TASKS_URL") or DEV_URL
    key = args.key or os.environ.get("TASKS_API_KEY")
    if not key and DEV_KEY_FILE.is_file():
        key = DEV_KEY_FILE.read_text().strip()
    if not key:
        raise _Usage(
            "no API key: pass --key, set TASKS_API_KEY, or run where `tasks-core dev` "
            f"wrote {DEV_KEY_FILE}"
        )
    return url, key


def _print_json(value: Any, out: TextIO = sys.stdout) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False), file=out)


def _create(client: TasksClient, args: argparse.Namespace) -> int:
    given = {
        "targetId": args.target_id,
        "executorId": args.executor_id,
        "input": args.input,
        "params": args.params,
    }
    task = client.create(args.kind, **{k: v for k, v in given.items() if v is not None})
    if args.wait:
        task = client.wait(task["id"])
    _print_json(task)
    return EXIT_BY_STATUS[task["status"]] if args.wait else 0


def _get(client: TasksClient, args: argparse.Namespace) -> int:
    _print_json(client.get(args.id, depth=args.depth))
    return 0


def _cancel(client: TasksClient, args: argparse.Namespace) -> int:
    _print_json(client.cancel(args.id))
    return 0


def _list(client: TasksClient, args: argparse.Namespace) -> int:
    filters = {
        WIRE[name]: getattr(args, name) for name in LIST_FILTERS if getattr(args, name) is not None
    }
    filters["limit"] = min(args.limit, 100)
    rows = list(islice(client.list(**filters), args.limit))
    if args.json:
        _print_json(rows)
    else:
        print(_table(rows))
    return 0


def _table(rows: list[Task]) -> str:
    header = ("ID", "KIND", "STATUS", "CREATED", "ENDED", "TITLE")
    lines = [header] + [
        (
            t["id"],
            t["kind"],
            t["status"],
            _short_time(t["createdAt"]),
            _short_time(t["endedAt"]),
            t.get("title") or "",
        )
        for t in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines
    ]
    return "\n".join(line.rstrip() for line in text) + ("" if rows else "\n(no tasks)")


def _short_time(at: str | None) -> str:
    return at.replace("T", " ")[:19] if at else "-"


def _events(client: TasksClient, args: argparse.Namespace) -> int:
    events = client.events(args.id)
    if args.json:
        _print_json(events)
        return 0
    for event in events:
        at = event["at"].replace("T", " ")[:23]
        change = f"{event['fromStatus'] or '·'} -> {event['toStatus']}" if event["toStatus"] else ""
        print(f"{at}  {event['type']:<8} {change:<22} {event['actor']}")
    return 0


def _watch(client: TasksClient, args: argparse.Namespace) -> int:
    live = sys.stdout.isatty() and not args.json
    shown = ""
    for task in _until_ended(client, args.id):
        line = progress_line(task)
        if args.json:
            if line != shown:
                print(json.dumps({"status": task["status"], "progress": line}), flush=True)
        elif live:
            print(f"\r\033[K{line}", end="", flush=True)
        elif line != shown:
            print(line, flush=True)
        shown = line
    if live:
        print()
    return EXIT_BY_STATUS[task["status"]]


def _until_ended(client: TasksClient, task_id: str) -> Iterator[Task]:
    while True:
        task = client.get(task_id, depth=1)
        yield task
        if is_terminal(task):
            return
        time.sleep(WATCH_INTERVAL)


def progress_line(task: Task) -> str:
    """One line of a task's progress: a bar of its steps for a Flow."""
    head = f"{task['kind']} {task['id']}: {task['status']}"
    if task["kind"] != "Flow":
        return f"{head}, attempt {task.get('attempt', 0)}"
    children = task["children"]
    steps = task["params"].get("steps") if isinstance(task["params"], dict) else None
    total = max(len(steps) if isinstance(steps, list) else 0, len(children))
    count = {s: sum(1 for c in children if c["status"] == s) for s in EXIT_BY_STATUS}
    running = sum(1 for c in children if c["status"] == "running")
    done = sum(count.values())
    width = 20
    filled = width * done // total if total else width
    bar = "#" * filled + "." * (width - filled)
    return (
        f"{head} [{bar}] {done}/{total} done, {running} running, "
        f"{count['failed']} failed, {count['cancelled']} cancelled"
    )

"""Queue names: how a task's ``executorId`` and ``kind`` choose where it waits.

- ``{prefix}.{kind}`` for a task without ``executorId`` (any pool of that kind);
- ``{prefix}.{kind}@{executorId}`` for a task bound to one executor's pool.

``prefix`` is the ``QUEUE_PREFIX`` setting (``tasks``). The names are stable:
operators start pools on them (``celery -A worker worker -Q tasks.default``)
and monitor their depth. ``kind`` and ``executorId`` are restricted to
``[A-Za-z0-9_.:/-]`` at the API so that a name never needs escaping.
"""

from __future__ import annotations

import re

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/\-]{0,127}$"
_NAME_RE = re.compile(NAME_PATTERN)


def is_valid_name(value: str) -> bool:
    """Whether ``value`` may be used as a kind or an executor id."""
    return bool(_NAME_RE.fullmatch(value))


def queue_name(kind: str, executor_id: str | None, prefix: str = "tasks") -> str:
    """The queue a task of ``kind`` (bound to ``executor_id`` if given) is published on."""
    if executor_id:
        return f"{prefix}.{kind}@{executor_id}"
    return f"{prefix}.{kind}"


def parse_queue(name: str, prefix: str = "tasks") -> tuple[str, str | None] | None:
    """The kind and executorId a queue name stands for; None for a name that
    is not one of this prefix's task queues."""
    head = f"{prefix}."
    if not name.startswith(head):
        return None
    kind, _, executor_id = name[len(head) :].partition("@")
    if not is_valid_name(kind) or (executor_id and not is_valid_name(executor_id)):
        return None
    return kind, executor_id or None

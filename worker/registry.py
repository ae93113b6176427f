"""Which code runs a task: handlers by ``kind``, actions and flows by name.

Application code registers its own with the decorators and lists its modules
in ``TASKS_IMPORTS``; the worker imports them at start-up::

    from worker.registry import action, handler

    @handler("ResizeImage")
    def resize(ctx): ...

    @action("billing/charge")
    def charge(ctx): ...

    @flow("onboarding")          # a Flow task with targetId "onboarding" runs these steps
    def onboarding(ctx): return [{"id": "account", "kind": "CallAction", ...}]
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from worker.context import TaskContext

Handler = Callable[["TaskContext"], Any]
F = TypeVar("F", bound=Handler)


class Registry:
    """Handlers by kind, actions and flows by name, each name registered once."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.actions: dict[str, Handler] = {}
        # A flow returns its steps: a list, or {"mode": ..., "steps": [...]}.
        self.flows: dict[str, Handler] = {}

    def handler(self, kind: str) -> Callable[[F], F]:
        """Decorator: run ``fn(ctx)`` for tasks of ``kind``."""
        return self._register(self.handlers, kind, "kind")

    def action(self, name: str) -> Callable[[F], F]:
        """Decorator: ``fn(ctx)`` is the action ``name`` (a CallAction's ``targetId``)."""
        return self._register(self.actions, name, "action")

    def flow(self, name: str) -> Callable[[F], F]:
        """Decorator: ``fn(ctx)`` returns the steps of the flow ``name``; a Flow
        task with ``targetId`` = name runs them."""
        return self._register(self.flows, name, "flow")

    @staticmethod
    def _register(table: dict[str, Handler], name: str, what: str) -> Callable[[F], F]:
        def decorate(fn: F) -> F:
            existing = table.get(name)
            if existing is not None and existing is not fn:
                raise ValueError(f"{what} {name!r} is already registered to {existing!r}")
            table[name] = fn
            return fn

        return decorate

    def kinds(self) -> list[str]:
        """Every kind this worker can run."""
        return sorted(self.handlers)


registry = Registry()
handler = registry.handler
action = registry.action
flow = registry.flow


def import_modules(spec: str) -> list[str]:
    """Import the comma-separated modules of ``TASKS_IMPORTS`` (they register on import)."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    for name in names:
        importlib.import_module(name)
    return names

"""What one task or one organization may take of the service, as pure checks.

- A run lasts at most its ``timeoutSeconds``, else ``DEFAULT_TIMEOUT_SECONDS``,
  and never longer than ``MAX_TIMEOUT_SECONDS`` (:func:`run_timeout`). A task
  created without a timeout keeps showing ``timeoutSeconds: null`` (the field
  is the caller's, as in the reference); the default applies where the run is
  watched, in the worker.
- A task may name only an executorId of its organization's allow-list, when
  the organization has one (:func:`check_executor`).

The counted limits (open tasks per organization, running tasks per
organization and queue) are read where they are counted: the open-task count
in ``tasks_core.usecases.open_tasks``, the running count in the claim
statement of the lifecycle.
"""

from __future__ import annotations

from collections.abc import Set

from tasks_core.errors import ExecutorNotAllowed, ValidationFailed
from tasks_core.settings import Settings


def run_timeout(timeout_seconds: float | None, settings: Settings) -> float:
    """How long a run may last before it is stopped with ``timeout``."""
    asked = settings.default_timeout_seconds if timeout_seconds is None else timeout_seconds
    return min(asked, settings.max_timeout_seconds)


def check_timeout(timeout_seconds: float | None, cap: float | None, *, where: str = "") -> None:
    """A ``timeoutSeconds`` above ``MAX_TIMEOUT_SECONDS`` is refused (422)."""
    if timeout_seconds is not None and cap is not None and timeout_seconds > cap:
        raise ValidationFailed(
            f"{where}timeoutSeconds {timeout_seconds:g} is above the longest run allowed, "
            f"{cap:g} s (MAX_TIMEOUT_SECONDS); send a timeoutSeconds of at most {cap:g}"
        )


def check_executor(executor_id: str | None, allowed: Set[str] | None, *, where: str = "") -> None:
    """An organization with an allow-list may send tasks only to those executors
    (a task without executorId goes to the shared pools and is always allowed)."""
    if executor_id is None or allowed is None or executor_id in allowed:
        return
    listed = ", ".join(sorted(allowed)) or "none"
    raise ExecutorNotAllowed(
        f"{where}executorId {executor_id!r} is not one this organization may use "
        f"(allowed: {listed}); an operator changes the list with "
        "`tasks-core orgs executors`"
    )

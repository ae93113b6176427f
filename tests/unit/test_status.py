from __future__ import annotations

import pytest

from tasks_core.errors import InvalidTransition
from tasks_core.status import (
    ALLOWED_MOVES,
    TERMINAL_STATUSES,
    Status,
    can_move,
    check_move,
    is_terminal,
    sources_of,
)


def test_every_status_has_a_row_in_the_table() -> None:
    assert set(ALLOWED_MOVES) == set(Status)


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATUSES))
def test_terminal_statuses_allow_no_move(terminal: Status) -> None:
    assert is_terminal(terminal)
    for target in Status:
        assert not can_move(terminal, target)
        if target is not terminal:
            with pytest.raises(InvalidTransition, match="terminal"):
                check_move(terminal, target)


@pytest.mark.parametrize("status", [s for s in Status if s not in TERMINAL_STATUSES])
def test_every_live_status_can_end_every_way(status: Status) -> None:
    for end in TERMINAL_STATUSES:
        assert can_move(status, end)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (Status.CREATED, Status.QUEUED),
        (Status.QUEUED, Status.RUNNING),
        (Status.RUNNING, Status.QUEUED),  # retry / lost worker
        (Status.RUNNING, Status.WAITING),
        (Status.WAITING, Status.RUNNING),
    ],
)
def test_lifecycle_moves_are_allowed(current: Status, target: Status) -> None:
    check_move(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (Status.QUEUED, Status.CREATED),
        (Status.RUNNING, Status.CREATED),
        (Status.WAITING, Status.QUEUED),
        (Status.CREATED, Status.CREATED),
    ],
)
def test_backward_moves_are_refused_with_the_allowed_targets(
    current: Status, target: Status
) -> None:
    with pytest.raises(InvalidTransition) as raised:
        check_move(current, target)
    assert f"'{current}'" in raised.value.message and f"'{target}'" in raised.value.message
    assert raised.value.code == "invalid_transition"


def test_sources_of_is_the_inverse_of_the_table() -> None:
    for target in Status:
        for source in Status:
            assert (source in sources_of(target)) == can_move(source, target)
    assert sources_of(Status.CREATED) == frozenset()

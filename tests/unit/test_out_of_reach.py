"""Which database errors tell the sweeper that PostgreSQL was out of reach,
so that it waits before judging workers by their silence
(``tasks_core.recovery.Hearing``), and which only refused work for now."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from tasks_core.errors import Conflict
from tasks_core.storage.errors import is_unavailable, out_of_reach


class _DriverError(Exception):
    def __init__(self, sqlstate: str | None) -> None:
        super().__init__(f"driver error {sqlstate}")
        self.sqlstate = sqlstate


def _raised(sqlstate: str | None) -> DBAPIError:
    return OperationalError("SELECT 1", {}, _DriverError(sqlstate))


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_raised(None), True),  # refused, or lost before the server answered
        (_raised("08006"), True),  # connection failure
        (_raised("57P01"), True),  # the server is shutting down
        (_raised("53300"), True),  # too many connections
        (_raised("40P01"), False),  # a deadlock: the server answered
        (_raised("57014"), False),  # a statement timeout: not unavailable at all
        (PoolTimeout("pool exhausted"), False),  # this process's own pool
        (Conflict("collisions kept coming back"), False),
    ],
)
def test_only_a_server_out_of_reach_is_out_of_reach(error: Exception, expected: bool) -> None:
    assert out_of_reach(error) is expected
    if expected:
        assert is_unavailable(error)  # every error out of reach is one the caller waits out

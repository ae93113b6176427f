"""The figures tests report reach the run's summary, from this process and
from pytest-xdist's test processes alike."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]

# The root conftest's hooks, in a run of its own (not its server fixtures).
CONFTEST = """
from tests.conftest import (
    pytest_runtest_logreport,
    pytest_runtest_makereport,
    pytest_terminal_summary,
)
"""

TESTS = """
import pytest
from tests.support.figures import report

@pytest.fixture
def measured():
    report("fixture figure: set up")
    yield
    report("fixture figure: torn down")

def test_one(measured):
    report("test figure: one")

def test_two():
    report("test figure: two")
"""


@pytest.mark.parametrize("processes", ["0", "2"])
def test_every_figure_is_in_the_summary_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, processes: str
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_measured=TESTS)

    result = pytester.runpytest_subprocess("-q", "-n", processes)

    result.assert_outcomes(passed=2)
    summary = result.stdout.str().split("= figures =", 1)[-1].splitlines()
    for line in (
        "fixture figure: set up",
        "fixture figure: torn down",
        "test figure: one",
        "test figure: two",
    ):
        assert summary.count(line) == 1, (line, result.stdout.str())

"""Figures that fault and scale tests measure, shown at the end of every run.

pytest captures a passing test's output, so a plain ``print`` would hide them;
``report`` keeps each line until the phase of the test that measured it
ends, and the root conftest then hands the lines on with that phase's report
(``FIGURE`` entries of its ``user_properties``). Reports are what pytest-xdist
sends from its test processes to the one that prints the summary, so the
figures reach it from every process; the root conftest prints them all in
the terminal summary (also under ``pytest -q``, as in CI).
"""

from __future__ import annotations

FIGURE = "figure"  # the user_properties name of a figure's line

# Lines reported in the phase of a test under way, not yet on a report.
_PENDING: list[str] = []


def report(line: str) -> None:
    """Record a one-line summary such as ``worker kills: tasks=500 kills=5 lost=0``."""
    _PENDING.append(line.strip())
    print(line)


def take_pending() -> list[str]:
    """The lines reported since the last call, handed over once."""
    lines = _PENDING[:]
    _PENDING.clear()
    return lines

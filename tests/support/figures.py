"""Figures that fault and scale tests measure, shown at the end of every run.

pytest captures a passing test's output, so a plain ``print`` would hide them;
``report`` keeps each line and the root conftest prints them all in the
terminal summary (also under ``pytest -q``, as in CI).
"""

from __future__ import annotations

FIGURES: list[str] = []


def report(line: str) -> None:
    """Record a one-line summary such as ``worker kills: tasks=500 kills=5 lost=0``."""
    FIGURES.append(line.strip())
    print(line)

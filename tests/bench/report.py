"""The comparison's printed tables (Markdown, to paste into the README)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Row:
    """One system's medians; the first row is the reference (raw Celery)."""

    name: str
    notes: str
    missing: str | None = None
    per_second: float | None = None
    enqueue_per_second: float | None = None  # the client's calls alone
    p50_ms: float | None = None
    p95_ms: float | None = None
    statements_per_task: float | None = None  # PostgreSQL, every process, end to end
    create_statements: tuple[float, float] | None = None  # (statements, commits) per create
    cpu_ms: dict[str, float] = field(default_factory=dict)  # CPU per task, by process group


def _num(value: float | None, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{suffix}"


def _ratio(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return "n/a"
    return f"{value / reference:.2f}x"


def print_table(rows: list[Row]) -> None:
    ref = rows[0]
    print("| system | tasks/s | vs raw Celery | enqueue calls/s | enqueue→start p50 ms | p95 ms "
          "| p50 vs raw Celery | notes |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        print(
            f"| {row.name} | {_num(row.per_second)} | {_ratio(row.per_second, ref.per_second)} "
            f"| {_num(row.enqueue_per_second)} "
            f"| {_num(row.p50_ms, 2)} | {_num(row.p95_ms, 2)} | {_ratio(row.p50_ms, ref.p50_ms)} "
            f"| {row.notes} |"
        )
    flow = next((r for r in rows if "parallel Flow" in r.name), None)
    alone = next((r for r in rows if "independent tasks" in r.name), None)
    alone = alone or next((r for r in rows if "create_task() in-process" in r.name), None)
    if flow and alone:
        print(f"\nFlow vs independent tasks ({alone.name}): "
              f"{_ratio(flow.per_second, alone.per_second)} of their tasks/s")  # fmt: skip


def print_statements(rows: list[Row], rss: dict[str, tuple[int, int]]) -> None:
    print("\n| system | PostgreSQL statements per task, end to end | per create (client) "
          "| commits per create | the rest (run path) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        if row.statements_per_task is None:
            continue
        create, commits = row.create_statements or (None, None)
        rest = None if create is None else row.statements_per_task - create
        print(
            f"| {row.name} | {_num(row.statements_per_task, 1)} | {_num(create, 1)} "
            f"| {_num(commits, 2)} | {_num(rest, 1)} |"
        )
    print()
    for name, (before, after) in rss.items():
        growth = f"{(after - before) / before * 100:+.0f}%" if before else "n/a"
        print(f"worker RSS {name}: before={before / 1024:.0f} MiB after={after / 1024:.0f} MiB "
              f"({growth})")  # fmt: skip


def print_cpu(rows: list[Row]) -> None:
    """Where each system's CPU goes: ms per task in each group of processes
    (the client, PostgreSQL, Redis, workers, API servers), throughput runs only.
    On a machine whose cores the whole system shares, this total bounds tasks/s."""
    groups = sorted({g for row in rows for g in row.cpu_ms})
    if not groups:
        return
    print("\n| system | CPU ms per task, all processes | " + " | ".join(groups) + " |")
    print("|---|---:|" + "---:|" * len(groups))
    for row in rows:
        if row.cpu_ms:
            cells = " | ".join(_num(row.cpu_ms.get(g), 2) for g in groups)
            print(f"| {row.name} | {_num(sum(row.cpu_ms.values()), 2)} | {cells} |")

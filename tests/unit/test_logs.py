"""The JSON log format (tasks_core/logs.py): one object a line, with the run's context."""

from __future__ import annotations

import json
import logging

from tasks_core.logs import JsonFormatter, logging_config, run_context


def _record(message: str, *, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("tasks.Report", logging.ERROR, __file__, 1, message, (), exc_info)


def test_a_record_is_one_json_line_with_the_run_it_belongs_to() -> None:
    with run_context(task_id="t-1", kind="Report", attempt=2, worker="w@h:9", organization_id=None):
        line = JsonFormatter().format(_record("rendering page 3"))
    assert "\n" not in line
    record = json.loads(line)
    assert record["message"] == "rendering page 3" and record["level"] == "ERROR"
    assert record["logger"] == "tasks.Report" and record["time"].endswith("+00:00")
    assert (record["task_id"], record["kind"], record["attempt"], record["worker"]) == (
        "t-1",
        "Report",
        2,
        "w@h:9",
    )
    assert "organization_id" not in record  # not known: not written


def test_a_traceback_stays_on_the_record_s_line() -> None:
    try:
        raise ValueError("bad input")
    except ValueError as exc:
        line = JsonFormatter().format(_record("handler raised", exc=exc))
    assert "\n" not in line
    assert "ValueError: bad input" in json.loads(line)["exception"]


def test_outside_a_run_a_record_has_no_run_fields() -> None:
    record = json.loads(JsonFormatter().format(_record("started")))
    assert not {"task_id", "kind", "attempt", "worker"} & set(record)


def test_the_text_format_stays_the_default() -> None:
    assert logging_config("INFO", "text")["formatters"]["main"] == {
        "format": "%(asctime)s %(levelname)s %(name)s: %(message)s"
    }

"""One JSON form of a project: the fast reader of `tmo list --json` gives exactly ``to_dict()``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tmux_orchestrator.store.rows import PROJECT_COLUMNS, project_dicts, row_to_project

COLUMNS = PROJECT_COLUMNS.split(", ")

#: A row as tmo writes it (SQLite's text forms), every column set.
USUAL: dict[str, Any] = {
    "id": 7, "name": "build", "status": "failed", "priority": 3, "command": '["sh", "-c", "echo \'a b\'"]',
    "env": '{"K": "v"}', "project_path": "/src", "spec_path": "/src/spec.md", "session_name": "build-7",
    "session_id": "$3", "window_id": "@3", "pane_pid": 4242, "outcome": "exited", "exit_code": 3,
    "error_message": "exited with code 3", "enqueued_at": "2026-12-01 17:10:47.123456",
    "started_at": "2026-12-01 17:10:48.000000", "completed_at": "2026-12-01 17:10:49.5",
    "session_closed_at": "2026-12-01 17:10:50.123", "attempt": 2, "retry_count": 1, "max_retries": 2,
    "retry_delay": 30.0, "not_before": None, "timeout": 7200.0, "idle_timeout": 1.5, "host": "h1",
    "server_instance": "99.123", "runner": "h1:abc", "pinned_host": "h1", "required_labels": '["gpu"]',
    "agent_state": "waiting", "agent_state_since": "2026-12-01 17:10:48.500",
    "agent_state_source": "reported",
}

#: Values a hand edit or another program may leave, per column (and some usual ones).
ODD: dict[str, list[Any]] = {
    "name": ["", None, "caf\u00e9", "bad\udcff", 5],
    "status": ["queued", "FAILED", "", None],
    "priority": [None, "high", 2.5, -1],
    "command": ["[]", "printf hi", '{"a": 1}', '["\\udcff"]', '["a", 1]', ["x"], None, "[\"\u00e9\"]"],
    "env": ["{}", "", None, "[1]", '{"A": 1}', '{"\u00e9": "\u00fc"}', {"A": "b"}],
    "project_path": [None, "", "bad\udcff", 3],
    "pane_pid": [None, "12", 1.0],
    "outcome": [None, "", "weird", "signal"],
    "exit_code": [None, "3", 3.5],
    "enqueued_at": [None, "", "yesterday", "2026-13-45 99:99:99.123456", "2026-12-01T17:10:47+02:00",
                    datetime(2026, 12, 1, 17, 10, 47, tzinfo=UTC), 0, 5, b"x"],
    "not_before": [None, "2026-12-01 17:10:47", "soon", "2026-12-01 17:10:47.12345Z",
                   "2026-12-01 17:10:47.12Z", "2026-12-01 17:10:47.1+01:00"],
    "attempt": [None, "2", 0],
    "retry_delay": [None, 0.0, -0.0, 5, "30s", float("nan"), float("inf")],
    "timeout": [None, 5, "2h", float("nan"), -0.0],
    "required_labels": ["[]", "", None, '"gpu"', "[1]", '["a", "b"]', ["x"]],
    "agent_state": [None, "working", "busy", "", 3],
    "agent_state_since": [None, "now", "2026-12-01 17:10:47.123456", 5],
    "agent_state_source": [None, "activity", "screen", ""],
}


def _row(**changes: Any) -> tuple[Any, ...]:
    values = {**USUAL, **changes}
    return tuple(values[c] for c in COLUMNS)


def test_a_usual_row_reads_as_to_dict() -> None:
    row = _row()
    [data] = project_dicts([row])
    assert data == row_to_project(row).to_dict()
    assert list(data) == list(row_to_project(row).to_dict())  # the same order too
    assert data["problems"] == [] and data["completed_at"] == "2026-12-01T17:10:49.500000+00:00"


@pytest.mark.parametrize(("column", "value"), [(c, v) for c, values in ODD.items() for v in values])
def test_any_row_reads_as_to_dict(column: str, value: Any) -> None:
    row = _row(**{column: value})
    assert project_dicts([row]) == [row_to_project(row).to_dict()]

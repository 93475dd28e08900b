"""Stored values and the records built from them, whatever the database.

A row is read into a :class:`~tmux_orchestrator.project.Project` without ever raising on a bad
value (a hand edit, another program's write): the value is kept as text in ``Project.raw`` and the
field gets a neutral value, so one bad row can be shown, and failed with a message saying what is
wrong, instead of stopping whoever reads it.

The same reader serves both backends: SQLite hands over timestamps as UTC text and JSON columns as
text; PostgreSQL hands over ``timestamptz`` as aware datetimes (JSON it also hands over as text, but
already parsed lists and dicts are taken too).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from tmux_orchestrator.project import Outcome, Project, ProjectStatus
from tmux_orchestrator.store.base import Event, Host
from tmux_orchestrator.timestamps import format_time

T = TypeVar("T")

#: The columns of a project row, in the order :func:`row_to_project` reads them.
PROJECT_COLUMNS = (
    "id, name, status, priority, command, env, project_path, spec_path, session_name, session_id, "
    "window_id, pane_pid, outcome, exit_code, error_message, enqueued_at, started_at, completed_at, "
    "session_closed_at, attempt, retry_count, max_retries, retry_delay, not_before, timeout, "
    "idle_timeout, host, server_instance, runner, pinned_host, required_labels"
)


def now_text() -> str:
    """The current UTC time in the format of every timestamp column."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def to_text(value: datetime) -> str:
    """A datetime in the format of every timestamp column."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def parse_time(text: str | datetime | None) -> datetime | None:
    """A timestamp column value (SQLite's text, or PostgreSQL's datetime) as an aware UTC datetime."""
    if not text:
        return None
    value = text if isinstance(text, datetime) else datetime.fromisoformat(text)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_time_or_none(text: str | datetime | None) -> datetime | None:
    """:func:`parse_time`, None for text that does not parse."""
    try:
        return parse_time(text)
    except (TypeError, ValueError):
        return None


def iso_time(text: str | datetime | None) -> str | None:
    """A timestamp column in the output format (:func:`~tmux_orchestrator.timestamps.format_time`);
    text that does not parse is returned as it is."""
    try:
        value = parse_time(text)
    except ValueError:
        return str(text)
    return format_time(value) if value else None


def row_to_project(row: Sequence[Any]) -> Project:
    """A row as a :class:`Project`. Never raises on a bad stored value (a hand edit, another
    program): the value is kept as text in ``Project.raw`` and the field gets a neutral value, so
    one bad row can be shown, and failed with a message, instead of stopping whoever reads it."""
    # Positional access in PROJECT_COLUMNS order: listing 10,000 rows is on the `tmo list` path.
    (pid, name, status, priority, command, env, project_path, spec_path, session_name, session_id,
     window_id, pane_pid, outcome, exit_code, error_message, enqueued_at, started_at, completed_at,
     session_closed_at, attempt, retry_count, max_retries, retry_delay, not_before, timeout,
     idle_timeout, host, server_instance, runner, pinned_host, required_labels) = tuple(row)
    raw: dict[str, str] = {}
    project = Project(
        id=pid,
        name=_text(name, "name", raw) or "",
        status=_status(status, raw),
        priority=_number(priority, "priority", raw, int) or 0,
        command=_command(command, raw),
        env=_env(env, raw),
        project_path=_text(project_path, "project_path", raw),
        spec_path=_text(spec_path, "spec_path", raw),
        session_name=session_name,
        session_id=session_id,
        window_id=window_id,
        pane_pid=_number(pane_pid, "pane_pid", raw, int),
        outcome=_outcome(outcome, raw),
        exit_code=_number(exit_code, "exit_code", raw, int),
        error_message=_text(error_message, "error_message", raw),
        enqueued_at=_time(enqueued_at, "enqueued_at", raw),
        started_at=_time(started_at, "started_at", raw),
        completed_at=_time(completed_at, "completed_at", raw),
        session_closed_at=_time(session_closed_at, "session_closed_at", raw),
        attempt=_number(attempt, "attempt", raw, int) or 0,
        retry_count=_number(retry_count, "retry_count", raw, int) or 0,
        max_retries=_number(max_retries, "max_retries", raw, int) or 0,
        retry_delay=_number(retry_delay, "retry_delay", raw, float) or 0.0,
        not_before=_time(not_before, "not_before", raw),
        timeout=_number(timeout, "timeout", raw, float),
        idle_timeout=_number(idle_timeout, "idle_timeout", raw, float),
        host=host,
        server_instance=server_instance,
        runner=runner,
        pinned_host=_text(pinned_host, "pinned_host", raw),
        required_labels=_labels(required_labels, raw),
    )
    project.raw = raw
    return project


def _utf8(text: str) -> bool:
    """True if ``text`` encodes as UTF-8 (no lone surrogate: what a non-UTF-8 byte becomes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(value: object) -> str:
    """A stored value as text for ``Project.raw``, whatever it is."""
    text = value if isinstance(value, str) else repr(value)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _text(value: Any, column: str, raw: dict[str, str]) -> str | None:
    if value is None or (isinstance(value, str) and _utf8(value)):
        return value
    raw[column] = _shown(value)
    return None


def _number(value: Any, column: str, raw: dict[str, str], kind: type[T]) -> T | None:
    if value is None:
        return None
    try:
        number = kind(value)  # type: ignore[call-arg]
    except (TypeError, ValueError, OverflowError):
        raw[column] = _shown(value)
        return None
    if isinstance(value, str) or number != number:  # typed by hand as text, or NaN
        raw[column] = _shown(value)
        return None
    return number


def _time(value: Any, column: str, raw: dict[str, str]) -> datetime | None:
    try:
        return parse_time(value) if isinstance(value, (str, datetime)) or value is None else None
    except ValueError:
        pass
    raw[column] = _shown(value)
    return None


def _json(value: Any) -> Any:
    """JSON text parsed; a list or dict a driver already parsed taken as it is; None for anything else."""
    if isinstance(value, (list, dict)):
        return value
    try:
        return json.loads(value)
    except (TypeError, ValueError, RecursionError):
        return None


def _command(value: Any, raw: dict[str, str]) -> list[str]:
    argv = _json(value)
    if isinstance(argv, list) and argv and all(isinstance(w, str) and _utf8(w) for w in argv):
        return argv
    raw["command"] = _shown(value)
    return []


def _env(value: Any, raw: dict[str, str]) -> dict[str, str]:
    if not value or value == "{}":
        return {}
    env = _json(value)
    if isinstance(env, dict) and all(
        isinstance(k, str) and isinstance(v, str) and _utf8(k) and _utf8(v) for k, v in env.items()
    ):
        return env
    raw["env"] = _shown(value)
    return {}


def _status(value: Any, raw: dict[str, str]) -> ProjectStatus:
    # The CHECK constraint keeps other values out, unless switched off by hand
    # (`PRAGMA ignore_check_constraints`): such a row is shown, and counts as failed.
    try:
        return ProjectStatus(value)
    except ValueError:
        raw["status"] = _shown(value)
        return ProjectStatus.FAILED


def _labels(value: Any, raw: dict[str, str]) -> list[str]:
    if not value or value == "[]":
        return []
    labels = _json(value)
    if isinstance(labels, list) and all(isinstance(x, str) and _utf8(x) for x in labels):
        return labels
    raw["required_labels"] = _shown(value)
    return []


def _outcome(value: Any, raw: dict[str, str]) -> Outcome | None:
    if not value:
        return None
    try:
        return Outcome(value)
    except ValueError:
        raw["outcome"] = _shown(value)
        return None


def row_to_event(row: Any) -> Event:
    """An events row as an :class:`Event`; never raises: a time that does not parse becomes the
    epoch, and a value of the wrong type (a BLOB written by hand) is shown as text."""
    try:
        at = parse_time(row["at"]) if isinstance(row["at"], (str, datetime)) else None
    except ValueError:
        at = None
    return Event(
        id=row["id"],
        at=at if isinstance(at, datetime) else EPOCH,
        kind=_event_text(row["kind"]) or "?",
        source=_event_text(row["source"]) or "?",
        project_id=row["project_id"] if isinstance(row["project_id"], int) else None,
        project_name=_event_text(row["project_name"]),
        old_status=_event_text(row["old_status"]),
        new_status=_event_text(row["new_status"]),
        outcome=_event_text(row["outcome"]),
        exit_code=row["exit_code"] if isinstance(row["exit_code"], int) else None,
        session_name=_event_text(row["session_name"]),
        message=_event_text(row["message"]),
    )


def _event_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return _shown(value)
def row_to_host(row: Any, silent_for: float | None) -> Host:
    """A ``hosts`` row (by column name) as a :class:`Host`; ``silent_for`` by the database's clock.
    Labels that are not a JSON list of text read as none, a concurrency that is not a number as 1."""
    labels = _json(row["labels"] or "[]")
    concurrency = row["concurrency"]
    return Host(
        name=row["name"], runner=row["runner"], home=row["home"], pid=row["pid"], owner=row["owner"],
        labels=[str(x) for x in labels] if isinstance(labels, list) else [],
        concurrency=concurrency if isinstance(concurrency, int) else 1,
        paused=bool(row["paused"]), started_at=parse_time_or_none(row["started_at"]),
        heartbeat_at=parse_time_or_none(row["heartbeat_at"]),
        stopped_at=parse_time_or_none(row["stopped_at"]), expired_at=parse_time_or_none(row["expired_at"]),
        silent_for=silent_for,
    )


#: Stands for an event time that does not parse.
EPOCH = datetime.fromtimestamp(0, UTC)




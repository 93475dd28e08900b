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

import gc
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from tmux_orchestrator.agent_state import AgentState, StateSource
from tmux_orchestrator.checkin import Checkin
from tmux_orchestrator.message import Message, MessageKind, MessageStatus
from tmux_orchestrator.project import Outcome, Project, ProjectStatus
from tmux_orchestrator.store.base import Event, Host
from tmux_orchestrator.timestamps import format_time

T = TypeVar("T")

#: The columns of a project row, in the order :func:`row_to_project` reads them.
PROJECT_COLUMNS = (
    "id, name, status, priority, command, env, project_path, spec_path, session_name, session_id, "
    "window_id, pane_pid, outcome, exit_code, error_message, enqueued_at, started_at, completed_at, "
    "session_closed_at, attempt, retry_count, max_retries, retry_delay, not_before, timeout, "
    "idle_timeout, host, server_instance, runner, pinned_host, required_labels, agent_state, "
    "agent_state_since, agent_state_source"
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
     idle_timeout, host, server_instance, runner, pinned_host, required_labels, agent_state,
     agent_state_since, agent_state_source) = tuple(row)
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
        agent_state=_choice(AgentState, agent_state, "agent_state", raw),
        agent_state_since=_time(agent_state_since, "agent_state_since", raw),
        agent_state_source=_choice(StateSource, agent_state_source, "agent_state_source", raw),
    )
    project.raw = raw
    return project


def project_dicts(rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """``[row_to_project(row).to_dict() for row in rows]``, twice as fast (``tmo list --json``).

    :meth:`Project.to_dict` is the one definition of a project's JSON form; this gives exactly the
    same dicts (tests hold them equal, odd values included), but reads a row whose values are all
    in the form tmo writes straight into its dict, without the general reader's objects and
    conversions. Any other row goes through :func:`row_to_project`.
    """
    out = []
    # Hundreds of thousands of new lists and dicts, none in a cycle: the cyclic collector would
    # scan them again and again (a fifth of the time at 10,000 rows) and free nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for row in rows:
            try:
                out.append(_usual_row_dict(tuple(row)))
            except _Unusual:
                out.append(row_to_project(row).to_dict())
    finally:
        if collecting:
            gc.enable()
    return out


class _Unusual(Exception):
    """A stored value not in the form tmo writes: the row is read by :func:`row_to_project`."""


_STATUS_VALUES = frozenset(s.value for s in ProjectStatus)
_OUTCOME_VALUES = frozenset(o.value for o in Outcome)
_AGENT_STATE_VALUES = frozenset(s.value for s in AgentState)
_SOURCE_VALUES = frozenset(s.value for s in StateSource)


def _usual_row_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    """The JSON form of a row as tmo writes it; raises :class:`_Unusual` for any other row."""
    (pid, name, status, priority, command, env, project_path, spec_path, session_name, session_id,
     window_id, pane_pid, outcome, exit_code, error_message, enqueued_at, started_at, completed_at,
     session_closed_at, attempt, retry_count, max_retries, retry_delay, not_before, timeout,
     idle_timeout, host, server_instance, runner, pinned_host, required_labels, agent_state,
     agent_state_since, agent_state_source) = row
    # `type(x) is int`: a bool, a float or text in an integer column is not the usual form
    if not (status in _STATUS_VALUES and (outcome is None or outcome in _OUTCOME_VALUES)
            and type(priority) is int and type(attempt) is int and type(retry_count) is int
            and type(max_retries) is int and (pane_pid is None or type(pane_pid) is int)
            and (exit_code is None or type(exit_code) is int) and _usual_seconds(retry_delay) is not None
            and name and _usual_text(name) and _usual_text(project_path) and _usual_text(spec_path)
            and _usual_text(error_message) and _usual_text(pinned_host)
            and (agent_state is None or agent_state in _AGENT_STATE_VALUES)
            and (agent_state_source is None or agent_state_source in _SOURCE_VALUES)):
        raise _Unusual
    argv = _json(command)
    if not (type(argv) is list and argv and all(_usual_text(w) for w in argv)):
        raise _Unusual
    variables = {} if env == "{}" else _json(env)
    if not (type(variables) is dict and all(_usual_text(k) and _usual_text(v) for k, v in variables.items())):
        raise _Unusual
    labels = [] if required_labels == "[]" else _json(required_labels)
    if not (type(labels) is list and all(_usual_text(x) for x in labels)):
        raise _Unusual
    return {
        "id": pid, "name": name, "status": status, "command": argv, "priority": priority,
        "project_path": project_path, "spec_path": spec_path, "env_names": sorted(variables),
        "session_name": session_name, "session_id": session_id, "window_id": window_id,
        "pane_pid": pane_pid, "outcome": outcome, "exit_code": exit_code, "error_message": error_message,
        "enqueued_at": _usual_time(enqueued_at), "started_at": _usual_time(started_at),
        "completed_at": _usual_time(completed_at), "session_closed_at": _usual_time(session_closed_at),
        "attempt": attempt, "retry_count": retry_count, "max_retries": max_retries,
        "retry_delay": retry_delay or 0.0, "not_before": _usual_time(not_before),
        "timeout": _usual_seconds(timeout), "idle_timeout": _usual_seconds(idle_timeout), "host": host,
        "server_instance": server_instance, "runner": runner, "pinned_host": pinned_host,
        "required_labels": labels, "agent_state": agent_state,
        "agent_state_since": _usual_time(agent_state_since), "agent_state_source": agent_state_source,
        "problems": [],
    }


def _usual_text(value: Any) -> bool:
    """None, or text that encodes as UTF-8."""
    return value is None or (type(value) is str and (value.isascii() or _utf8(value)))


def _usual_seconds(value: Any) -> float | None:
    """A duration column as stored by tmo: None or a float that is a number."""
    if value is None or (type(value) is float and value == value):
        return value
    raise _Unusual


def _usual_time(value: Any) -> str | None:
    """A timestamp column in the output format: the two text forms tmo writes on SQLite are
    converted as text (once checked to be a time), the rest through a datetime."""
    if value is None:
        return None
    if (type(value) is str and len(value) in (23, 26) and value[10:11] == " " and value[19:20] == "."
            and value[20:].isdigit()):
        try:
            datetime.fromisoformat(value)  # a real time, no offset (taken as UTC, as stored)
        except ValueError:
            raise _Unusual from None
        # now_text() writes "2026-12-01 17:10:47.123456", SQLite's strftime('%f') milliseconds
        return f"{value[:10]}T{value[11:]}{'000' if len(value) == 23 else ''}+00:00"
    try:
        parsed = parse_time(value)
    except (TypeError, ValueError):
        raise _Unusual from None
    return None if parsed is None else format_time(parsed)


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


E = TypeVar("E", AgentState, StateSource)


def _choice(kind: type[E], value: Any, column: str, raw: dict[str, str]) -> E | None:
    """A column holding one of an enum's values (the CHECK keeps others out unless switched off)."""
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        raw[column] = _shown(value)
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





def row_to_message(row: Any) -> Message:
    """A :class:`~tmux_orchestrator.message.Message` from a row of ``MESSAGE_COLUMNS``."""
    return Message(
        id=int(row[0]), project_id=int(row[1]), attempt=int(row[2]), kind=MessageKind(row[3]),
        body=str(row[4]), status=MessageStatus(row[5]), reason=row[6],
        created_at=parse_time_or_none(row[7]), delivered_at=parse_time_or_none(row[8]),
        tries=int(row[9]), when_waiting=bool(row[10]),
        checkin_id=int(row[11]) if row[11] is not None else None,
    )


def row_to_checkin(row: Any) -> Checkin:
    """A :class:`~tmux_orchestrator.checkin.Checkin` from a row of ``CHECKIN_SELECT``."""
    return Checkin(
        id=int(row[0]), project_id=int(row[1]), attempt=int(row[2]), every=float(row[3]),
        body=str(row[4]), created_at=parse_time(row[5]) or datetime.now(UTC),
        last_at=parse_time_or_none(row[6]), pending=bool(row[7]),
    )

"""The state machine as SQL, shared by the SQLite and the PostgreSQL schema.

Both dialects build their status guard and their status-event trigger from these expressions, and
these are generated from :data:`tmux_orchestrator.project.ALLOWED`: the table of allowed changes, the
event kind of each change and the end fields a change stamps exist once, so hand-written SQL in
``sqlite3`` and in ``psql`` is refused, and recorded, alike. Every expression here is plain SQL that
both dialects read the same way (``CASE``, ``IN``, ``coalesce``); ``OLD`` and ``NEW`` are the rows
of the trigger.
"""

from __future__ import annotations

from collections.abc import Iterable

from tmux_orchestrator.agent_state import AgentState, StateSource
from tmux_orchestrator.project import ALLOWED, TERMINAL, ProjectStatus


def quoted(values: Iterable[object]) -> str:
    """``'a', 'b'``: SQL literals of ``values``, sorted (plain words only: nothing is escaped)."""
    return ", ".join(f"'{v}'" for v in sorted(str(x) for x in values))


#: Every status, for the ``CHECK`` of ``project_queue.status``.
STATUSES = quoted(s.value for s in ProjectStatus)
#: The statuses a project ends in.
TERMINALS = quoted(s.value for s in TERMINAL)
#: Every agent state and every source of one, for the ``CHECK`` of their columns.
AGENT_STATES = quoted(s.value for s in AgentState)
STATE_SOURCES = quoted(s.value for s in StateSource)


def allowed_condition() -> str:
    """True when ``OLD.status -> NEW.status`` is a change :data:`ALLOWED` lists."""
    return " OR ".join(
        f"(OLD.status = '{old.value}' AND NEW.status IN ({quoted(t.value for t in targets)}))"
        for old, targets in ALLOWED.items()
        if targets
    )


def allowed_table() -> str:
    """The allowed changes for people: ``queued -> cancelled|processing; ...``."""
    return "; ".join(
        f"{old.value} -> {'|'.join(sorted(t.value for t in targets))}" for old, targets in ALLOWED.items()
    )


#: What the status guard says when it refuses a change (both dialects prefix ``tmo: ``, which the
#: stores strip again: an error a user sees through ``tmo`` reads like any other).
GUARD_MESSAGE = f"status change not allowed (allowed: {allowed_table()})"

#: What the delete guard says (``''`` is a quote inside an SQL string literal).
DELETE_REFUSED = (
    "a project whose session is still open cannot be deleted; cancel it first "
    "(UPDATE project_queue SET status=''cancelled'' WHERE id=...), then delete it once its session "
    "is closed"
)

#: The event ``kind`` of a status change.
EVENT_KIND = """CASE NEW.status
            WHEN 'processing' THEN 'started'
            WHEN 'queued' THEN CASE OLD.status WHEN 'processing' THEN 'requeued' ELSE 'retried' END
            ELSE NEW.status END"""

#: The event ``message`` of a status change: why it failed or was cancelled.
EVENT_MESSAGE = "CASE WHEN NEW.status IN ('failed', 'cancelled') THEN {row}.error_message END"


def end_fields(now: str) -> list[tuple[str, str]]:
    """``(column, expression)`` a status change stamps on its row, ``now`` being the dialect's clock.

    An ended project gets an outcome (``manual`` unless the writer gave one) and an end time; a
    project queued again forgets its last run (outcome, exit code, start and end).
    """
    return [
        ("outcome", f"""CASE
            WHEN NEW.status IN ({TERMINALS}) THEN coalesce(NEW.outcome, 'manual')
            WHEN NEW.status = 'queued' THEN NULL
            ELSE NEW.outcome END"""),
        ("exit_code", "CASE WHEN NEW.status = 'queued' THEN NULL ELSE NEW.exit_code END"),
        ("completed_at", f"""CASE
            WHEN NEW.status IN ({TERMINALS}) THEN coalesce(NEW.completed_at, {now})
            ELSE NULL END"""),
        ("started_at", "CASE WHEN NEW.status = 'queued' THEN NULL ELSE NEW.started_at END"),
    ]

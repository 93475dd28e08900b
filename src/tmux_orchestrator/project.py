"""The project record, its status state machine and its outcome.

The status says where a project is in its life; the outcome says *how* it ended. Keeping them apart
(as pueue does with TaskStatus/TaskResult) lets ``status='failed'`` carry ``outcome='timeout'`` or
``outcome='lost'`` without inventing a status per failure mode.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tmux_orchestrator.agent_state import AgentState, StateSource
from tmux_orchestrator.timestamps import format_time


class ProjectStatus(enum.StrEnum):
    """Where a project is in its life. Values are what ``project_queue.status`` holds."""

    #: Waiting for a free slot.
    QUEUED = "queued"
    #: Claimed by the daemon; its tmux session is starting or running.
    PROCESSING = "processing"
    #: Ended successfully (exit code 0, ``tmo complete``, success marker, or manual SQL).
    COMPLETED = "completed"
    #: Ended unsuccessfully; ``outcome`` says how.
    FAILED = "failed"
    #: Stopped by ``tmo cancel`` before or while running.
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True for statuses a project only leaves by being run again."""
        return self in TERMINAL


TERMINAL = frozenset({ProjectStatus.COMPLETED, ProjectStatus.FAILED, ProjectStatus.CANCELLED})

#: The one table of allowed status changes. The database enforces the same table with a trigger
#: generated from it (``store/schema.py``), so hand-written SQL cannot make an illegal change either.
ALLOWED: dict[ProjectStatus, frozenset[ProjectStatus]] = {
    ProjectStatus.QUEUED: frozenset({ProjectStatus.PROCESSING, ProjectStatus.CANCELLED}),
    ProjectStatus.PROCESSING: frozenset(
        {
            ProjectStatus.COMPLETED,
            ProjectStatus.FAILED,
            ProjectStatus.CANCELLED,
            # requeue: stop the session and run the project again
            ProjectStatus.QUEUED,
        }
    ),
    ProjectStatus.COMPLETED: frozenset({ProjectStatus.QUEUED}),
    ProjectStatus.FAILED: frozenset({ProjectStatus.QUEUED}),
    ProjectStatus.CANCELLED: frozenset({ProjectStatus.QUEUED}),
}


def can_transition(old: ProjectStatus, new: ProjectStatus) -> bool:
    """Whether ``old -> new`` is an allowed status change."""
    return new in ALLOWED[old]


def predecessors(new: ProjectStatus) -> frozenset[ProjectStatus]:
    """The statuses from which ``new`` may be reached."""
    return frozenset(old for old, targets in ALLOWED.items() if new in targets)


class Outcome(enum.StrEnum):
    """How a project ended, stored apart from its status."""

    #: The command exited by itself; ``exit_code`` holds its code.
    EXITED = "exited"
    #: The command was ended by a signal; ``exit_code`` is 128 + the signal number.
    SIGNAL = "signal"
    #: ``tmo complete``/``tmo fail``, the API, or a hand-written SQL change ended it.
    MANUAL = "manual"
    #: The project wrote its marker file (``$TMO_DONE_FILE``).
    MARKER = "marker"
    #: It ran longer than its ``--timeout``.
    TIMEOUT = "timeout"
    #: It printed nothing for longer than its ``--idle-timeout``.
    IDLE = "idle"
    #: ``tmo cancel`` stopped it.
    CANCELLED = "cancelled"
    #: Its session vanished with no recorded end (tmux server died, reboot, ...).
    LOST = "lost"
    #: Its session could not be started (missing directory, tmux error, ...).
    SPAWN_ERROR = "spawn_error"


def outcome_for_exit(exit_code: int) -> Outcome:
    """The outcome of a process that ended with ``exit_code`` (shell convention: >128 = signal)."""
    return Outcome.SIGNAL if exit_code > 128 else Outcome.EXITED


@dataclass
class Project:
    """One row of ``project_queue``."""

    id: int
    name: str
    status: ProjectStatus
    command: list[str]
    priority: int = 0
    project_path: str | None = None
    spec_path: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    session_name: str | None = None
    session_id: str | None = None
    window_id: str | None = None
    pane_pid: int | None = None
    outcome: Outcome | None = None
    exit_code: int | None = None
    error_message: str | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    session_closed_at: datetime | None = None
    attempt: int = 0
    retry_count: int = 0
    max_retries: int = 0
    retry_delay: float = 0.0
    not_before: datetime | None = None
    timeout: float | None = None
    idle_timeout: float | None = None
    host: str | None = None
    #: tmux server instance (``pid.start time``) of the current attempt's session.
    server_instance: str | None = None
    #: ``host:home key`` of the daemon that claimed the current attempt.
    runner: str | None = None
    #: Only this host may run it (``tmo add --host``).
    pinned_host: str | None = None
    #: Only a host with all these labels may run it (``tmo add --requires``).
    required_labels: list[str] = field(default_factory=list)
    #: What its agent does while it runs (None once it ended or before it started).
    agent_state: AgentState | None = None
    #: Since when its agent is in that state.
    agent_state_since: datetime | None = None
    #: Which source decided the state (None: nothing has yet).
    agent_state_source: StateSource | None = None
    #: Stored values that do not parse (a hand edit, another program): column -> the text as
    #: stored. The field holds a neutral value instead; ``problems`` says what is wrong.
    raw: dict[str, str] = field(default_factory=dict)

    @property
    def is_terminal(self) -> bool:
        """True when the project has ended (completed, failed or cancelled)."""
        return self.status.is_terminal

    @property
    def problems(self) -> list[str]:
        """One line per stored value that does not parse, e.g. ``enqueued_at 'yesterday' is not a time``."""
        return [f"{column} {'(value not shown)' if column == 'env' else repr(text)} "
                f"{_WHY.get(column, 'is not valid')}" for column, text in self.raw.items()]

    @property
    def runnable_problems(self) -> list[str]:
        """The problems that keep the project from running (its command, environment, directory)."""
        return [p for p in self.problems if p.split(" ", 1)[0] in _NEEDED_TO_RUN]

    def to_dict(self) -> dict[str, Any]:
        """The project as JSON-ready data: the one schema every output of a project uses
        (``tmo add/list/show --json``; documented in docs/json.md). Timestamps in the one format of
        :mod:`~tmux_orchestrator.timestamps`; a stored value that does not parse is given as stored,
        and ``problems`` says so."""
        out = dict(self.__dict__)
        for key in _TIME_FIELDS:
            value = out[key]
            if value is not None:
                out[key] = format_time(value)
        for key in ("status", "outcome", "agent_state", "agent_state_source"):
            if out[key] is not None:
                out[key] = out[key].value
        out["command"] = list(self.command)
        # Names only: a captured environment holds API keys, which must not reach every script,
        # log or CI output that lists projects (and made `list --json` 50 times bigger).
        # `tmo show ID --env` prints the values; the API has them in :attr:`env`.
        out = {("env_names" if k == "env" else k): (sorted(self.env) if k == "env" else v)
               for k, v in out.items()}
        out["required_labels"] = list(self.required_labels)
        raw = dict(out.pop("raw"))
        raw.pop("env", None)  # its text may hold secrets too; `problems` says it is unreadable
        out.update(raw)
        out["problems"] = self.problems
        return out


_TIME_FIELDS = ("enqueued_at", "started_at", "completed_at", "session_closed_at", "not_before",
                "agent_state_since")
_NEEDED_TO_RUN = frozenset({"command", "env", "project_path", "spec_path", "required_labels",
                            "not_before"})
_WHY = {
    **{name: "is not a time" for name in _TIME_FIELDS},
    "command": "is not a JSON list of strings",
    "env": "is not a JSON object of strings",
    "outcome": "is not an outcome",
    "status": "is not a status (queued, processing, completed, failed, cancelled)",
    "required_labels": "is not a JSON list of labels",
    "project_path": "is not valid text",
    "spec_path": "is not valid text",
    "agent_state": "is not an agent state (working, waiting, idle, unknown)",
    "agent_state_source": "is not a state source (reported, activity)",
}

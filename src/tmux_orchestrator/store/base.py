"""The storage contract: domain verbs every backend (SQLite, PostgreSQL) implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from tmux_orchestrator.project import Outcome, Project, ProjectStatus


@dataclass
class NewProject:
    """What ``enqueue`` needs to know about a project."""

    command: list[str]
    name: str = ""
    priority: int = 0
    project_path: str | None = None
    spec_path: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    max_retries: int = 0
    retry_delay: float = 0.0
    timeout: float | None = None
    idle_timeout: float | None = None


@dataclass
class Event:
    """One row of the ``events`` table."""

    id: int
    at: datetime
    kind: str
    source: str
    project_id: int | None = None
    project_name: str | None = None
    old_status: str | None = None
    new_status: str | None = None
    outcome: str | None = None
    exit_code: int | None = None
    session_name: str | None = None
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; ``at`` in ISO 8601 UTC."""
        out = dict(self.__dict__)
        out["at"] = self.at.isoformat()
        return out


class Store(Protocol):
    """Persistent queue state. Every status change writes exactly one event in its transaction."""

    def close(self) -> None:
        """Release the connection."""

    def enqueue(self, new: NewProject, *, source: str) -> Project:
        """Insert a queued project and return it."""

    def enqueue_many(self, news: list[NewProject], *, source: str) -> list[Project]:
        """Insert many queued projects in one transaction (all or none); return them in order."""

    def get(self, project_id: int) -> Project:
        """The project with ``project_id``; raises ``ProjectNotFound``."""

    def list_projects(
        self, statuses: list[ProjectStatus] | None = None, limit: int | None = None
    ) -> list[Project]:
        """Projects in queue order (processing first, then by priority and age)."""

    def claim_next(self, *, host: str, max_processing: int) -> Project | None:
        """Atomically move the next runnable queued project to ``processing``."""

    def next_due(self) -> float | None:
        """Seconds until the earliest delayed queued project becomes due (None if none waits)."""

    def record_session(
        self, project_id: int, *, session_id: str, window_id: str, pane_pid: int
    ) -> None:
        """Store the tmux ids of a started session."""

    def transition(
        self,
        project_id: int,
        new: ProjectStatus,
        *,
        source: str,
        outcome: Outcome | None = None,
        exit_code: int | None = None,
        error_message: str | None = None,
        expected: ProjectStatus | None = None,
        not_before: datetime | None = None,
    ) -> Project:
        """Apply one allowed status change; raises ``InvalidTransition`` or ``ProjectNotFound``."""

    def close_session(self, project_id: int, session_name: str | None = None) -> bool:
        """Claim the clean-up of a project's session; True for exactly one caller."""

    def set_exit_code(self, project_id: int, exit_code: int) -> None:
        """Record an exit code that arrived after the project had already ended."""

    def count_unclosed_ended(self) -> int:
        """Rows that left ``processing`` while their session was still open."""

    def open_sessions(self) -> list[Project]:
        """Projects whose session has not been closed yet."""

    def remove(self, project_id: int, *, source: str) -> Project:
        """Delete a project that is not running."""

    def append_event(
        self,
        kind: str,
        *,
        source: str,
        project: Project | None = None,
        message: str | None = None,
        session_name: str | None = None,
    ) -> None:
        """Write a non-status event (session killed, output saved, daemon started, ...)."""

    def events_after(
        self,
        after_id: int = 0,
        *,
        limit: int = 1000,
        project_id: int | None = None,
        kinds: list[str] | None = None,
    ) -> list[Event]:
        """Events with an id above ``after_id``, oldest first."""

    def last_event_id(self) -> int:
        """The highest event id, 0 when there is none."""

    def get_setting(self, key: str, default: str | None = None) -> str | None:
        """A value from the settings table."""

    def set_setting(self, key: str, value: str) -> None:
        """Store a value in the settings table."""

    def changes_token(self) -> int:
        """A number that changes whenever another connection commits (cheap to poll)."""

    def counts(self) -> dict[str, int]:
        """Number of projects per status."""

"""The storage contract: domain verbs every backend (SQLite, PostgreSQL) implements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from tmux_orchestrator.agent_state import AgentState, StateSource
from tmux_orchestrator.checkin import Checkin
from tmux_orchestrator.message import Message, MessageKind, MessageStatus
from tmux_orchestrator.project import Outcome, Project, ProjectStatus
from tmux_orchestrator.timestamps import format_time


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
    #: Only this host may run it (``tmo add --host``).
    pinned_host: str | None = None
    #: Only a host with all these labels may run it (``tmo add --requires``).
    required_labels: list[str] = field(default_factory=list)


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
        out["at"] = format_time(self.at)
        return out


@dataclass(frozen=True)
class Claim:
    """What one cleaner asks to clean: a session, known by its key (see :func:`session_key`)."""

    key: str
    session_name: str
    project_id: int | None = None
    attempt: int | None = None
    #: True when the session is the project's current one: the row must still have it open.
    current: bool = False


@dataclass
class Host:
    """One host of the queue, a row of ``hosts``: the daemon holding its lease, and its settings.

    A host is alive while its daemon heartbeats (by the database's clock); a host silent for longer
    than the lease (``host_lease``) is dead, and whatever it ran is lost and retried elsewhere.
    """

    name: str
    runner: str
    home: str
    pid: int
    #: ``machine:pid:process start`` of its daemon (machine: the real hostname, for a liveness check).
    owner: str
    labels: list[str] = field(default_factory=list)
    concurrency: int = 1
    paused: bool = False
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    stopped_at: datetime | None = None
    expired_at: datetime | None = None
    #: Seconds since its last heartbeat, by the database's clock (filled in when read).
    silent_for: float | None = None

    def is_alive(self, lease: float) -> bool:
        """True while its daemon holds the lease: not stopped, not expired, heard from within
        ``lease`` seconds."""
        return (self.stopped_at is None and self.expired_at is None and self.silent_for is not None
                and self.silent_for <= lease)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = dict(self.__dict__)
        for key in ("started_at", "heartbeat_at", "stopped_at", "expired_at"):
            if out[key] is not None:
                out[key] = format_time(out[key])
        return out


def session_key(instance: str | None, session_id: str | None, name: str) -> str:
    """The key of a session: its server instance, ``$id`` and name together (tmux numbers
    sessions from ``$0`` again after a restart, so an ``$id`` alone names different sessions)."""
    return f"{instance or '?'}/{session_id or '?'}/{name}"


#: An event as append_events writes it: ``(kind, project, session name, message)``.
EventRow = tuple[str, Project | None, str | None, str | None]


class Store(Protocol):
    """Persistent queue state: the contract every backend (SQLite, PostgreSQL) keeps.

    Every status change writes exactly one event in its own transaction (a trigger, so hand-written
    SQL does too); event ids become visible in id order, so a reader that remembers the last id it
    saw misses nothing. Methods raise :class:`~tmux_orchestrator.errors.StoreError` for what the
    database itself refused or could not do (a full disk, a lost connection).
    """

    # -- the connection ----------------------------------------------------------------------
    def close(self) -> None:
        """Release the connection."""

    def schema_version(self) -> int:
        """The schema version of the open database."""

    def changes_token(self) -> int:
        """A number that changes whenever another connection committed (cheap to poll).

        SQLite: ``PRAGMA data_version`` (any commit by another connection). PostgreSQL: the count of
        ``NOTIFY tmo`` received so far, taken without waiting; they come on commits of project and
        event rows, and of the settings and host fields a daemon reads (pause, concurrency; not
        heartbeats nor the dispatcher's cursors), by any connection, this store's own included.
        The number only ever grows there.
        """

    def is_shared(self) -> bool:
        """True when several hosts may use this database (PostgreSQL): a host that loses it for
        long must fence itself. False for SQLite, one host's file."""

    def change_fd(self) -> int | None:
        """A file descriptor that becomes readable when another connection committed a change the
        daemon cares about (PostgreSQL's LISTEN socket), or None when changes must be polled with
        :meth:`changes_token` (SQLite).

        It stays readable until :meth:`changes_token` takes what waits. After the LISTEN connection
        was lost and opened again (``changes_token`` moves then) it is another descriptor: ask for
        it again after each ``changes_token`` rather than keeping it.
        """

    # -- projects ----------------------------------------------------------------------------
    def enqueue(self, new: NewProject, *, source: str) -> Project:
        """Insert a queued project and return it."""

    def enqueue_many(self, news: list[NewProject], *, source: str) -> list[Project]:
        """Insert many queued projects in one transaction (all or none); return them in order."""

    def get(self, project_id: int) -> Project:
        """The project with ``project_id``; raises ``ProjectNotFound``."""

    def list_projects(
        self, statuses: list[ProjectStatus] | None = None, limit: int | None = None
    ) -> list[Project]:
        """Projects in queue order (processing first, then by priority and age, then newest ended;
        rows whose status a hand edit forced past the CHECK last)."""

    def list_columns(
        self, columns: list[str], statuses: list[ProjectStatus] | None = None, limit: int | None = None
    ) -> list[tuple[Any, ...]]:
        """Some columns of the projects, in queue order, as plain tuples (``tmo list``); besides
        the table's columns ``age_s`` and ``runtime_s`` (seconds)."""

    def find_by_session(self, session_names: list[str]) -> dict[str, Project]:
        """Projects whose current session has one of ``session_names``."""

    def attempts(self, project_ids: list[int]) -> dict[int, tuple[str, int]]:
        """``{id: (status, attempt)}`` of the given projects (those that still exist)."""

    def counts(self) -> dict[str, int]:
        """Number of projects per status."""

    def next_due(self) -> float | None:
        """Seconds until the earliest delayed queued project becomes due (None if none waits)."""

    def claim_next(self, *, host: str, max_processing: int, runner: str | None = None,
                   skip: frozenset[int] = frozenset(),
                   labels: frozenset[str] = frozenset()) -> Project | None:
        """Atomically move the next queued project this host may run to ``processing``.

        A slot is taken by every running project and every session not confirmed gone: at most
        ``max_processing`` on ``host``, and at most the ``concurrency.global`` setting (if set) over
        all hosts. A project pinned to another host, or requiring a label not in ``labels``, is
        passed over, as are the ids in ``skip``.
        """

    def record_session(self, project_id: int, *, session_id: str, window_id: str, pane_pid: int,
                       instance: str | None = None, attempt: int | None = None) -> bool:
        """Store the tmux ids of a started session; False if ``attempt`` no longer runs."""

    def set_agent_state(self, project_id: int, state: AgentState, *, attempt: int,
                        decided_by: StateSource, source: str) -> bool:
        """Record what the agent of ``attempt`` does, decided by ``decided_by``; True when the state
        changed, which writes one ``state_changed`` event in the same transaction.

        Nothing is written when ``attempt`` no longer runs (a hook of an ended attempt), when
        ``decided_by`` is activity and the agent has reported, or when nothing changes.
        """

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
        count_retry: bool = False,
        close_session: bool = False,
        ended_at: datetime | None = None,
    ) -> Project:
        """Apply one allowed status change; raises ``InvalidTransition`` or ``ProjectNotFound``."""

    def set_exit_code(self, project_id: int, exit_code: int) -> None:
        """Record an exit code that arrived after the project had already ended."""

    def remove(self, project_id: int, *, source: str) -> Project:
        """Delete a project that is not running and whose session is closed."""

    # -- sessions and their clean-up ---------------------------------------------------------
    def close_session(self, project_id: int, session_name: str | None = None) -> bool:
        """Record that a project's session is gone, with its processes; True for the one caller
        that closed it."""

    def open_sessions(self) -> list[Project]:
        """Projects whose session has not been closed yet."""

    def count_unclosed_ended(self) -> int:
        """Rows that left ``processing`` while their session was still open."""

    def claim_cleanup(self, claims: list[Claim], *, owner: str, ttl: float,
                      owner_gone: Callable[[str], bool]) -> dict[str, str]:
        """Claim the clean-up of sessions; ``{key: stage}`` of the claims now held."""

    def advance_claim(self, key: str, *, owner: str, stage: str, event: EventRow | None,
                      source: str) -> bool:
        """Move a held claim to ``stage`` with ``event``, in one transaction; False if not ours."""

    def release_claim(self, key: str, *, owner: str) -> None:
        """Give a claim back unfinished: anyone may take it at once."""

    def finish_cleanup(self, key: str, *, close: tuple[int, int] | None, events: list[EventRow],
                       source: str) -> None:
        """Drop a claim, close ``(project id, attempt)``'s session and write ``events``, at once."""

    def claims(self) -> list[dict[str, Any]]:
        """Every clean-up claim."""

    def drop_claims(self, keys: list[str]) -> None:
        """Forget claims whose session is gone and whose owner died."""

    # -- hosts ---------------------------------------------------------------------------------
    def register_host(self, host: Host, *, holder_gone: Callable[[Host], bool]) -> Host | None:
        """Take ``host.name``'s lease for the daemon ``host.owner`` (heartbeat now, by the database's
        clock; ``stopped_at`` and ``expired_at`` cleared; labels, home, pid and runner as given,
        concurrency and paused kept); returns the current holder instead when it is another live
        daemon (``holder_gone`` decides)."""

    def heartbeat(self, name: str, owner: str) -> bool:
        """Renew the lease; False when it is no longer ``owner``'s (taken, or expired by another
        host: then this daemon must fence itself before it goes on)."""

    def unregister_host(self, name: str, owner: str) -> None:
        """A daemon that stops gives its lease up (``stopped_at``); the row stays for ``tmo hosts``."""

    def hosts(self) -> list[Host]:
        """Every host, with ``silent_for`` by the database's clock."""

    def set_host(self, name: str, *, concurrency: int | None = None, paused: bool | None = None) -> None:
        """Change a host's concurrency or pause (``tmo daemon start -c``, ``tmo pause --host``)."""

    def expire_hosts(self, ttl: float, *, source: str) -> list[Project]:
        """Hosts silent for more than ``ttl`` seconds (neither stopped nor already expired) are dead:
        mark them expired and fail their ``processing`` projects ``lost`` (their sessions closed:
        their host kills them before it claims again), all in one transaction. Returns the failed
        projects, for their retry policy."""

    # -- events and settings -------------------------------------------------------------------
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

    def append_events(self, events: list[EventRow], *, source: str) -> None:
        """Write many non-status events at once."""

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

    def concurrency(self) -> int:
        """The stored concurrency; 1 when unset or not a positive whole number."""

    # -- messages (tmo send) -----------------------------------------------------------------
    def add_message(self, project_id: int, attempt: int, kind: MessageKind, body: str, *,
                    when_waiting: bool = False, checkin_id: int | None = None) -> Message:
        """Queue a message for attempt ``attempt`` of a project (held until its agent waits with
        ``when_waiting``; sent for check-in ``checkin_id``)."""

    def get_message(self, message_id: int) -> Message | None:
        """The message ``message_id``, None when there is none."""

    def messages(self, status: MessageStatus, project_ids: list[int]) -> list[Message]:
        """Messages with ``status`` to the projects ``project_ids``, oldest first."""

    def stale_messages(self, limit: int = 100) -> list[Message]:
        """Queued messages whose attempt is no longer running (the project ended, was requeued or
        removed): they can never be delivered, oldest first."""

    def update_message(self, message_id: int, *, expected: MessageStatus, status: MessageStatus,
                       reason: str | None = None, tries: int | None = None) -> bool:
        """Move a message from ``expected`` to ``status`` (``delivered`` stamps ``delivered_at``);
        False, and nothing changed, when it was not in ``expected``."""

    # -- check-ins (tmo checkin) ------------------------------------------------------------
    def add_checkin(self, project_id: int, attempt: int, every: float, body: str) -> Checkin:
        """Schedule ``body`` every ``every`` seconds for attempt ``attempt`` of a project."""

    def checkins(self, project_ids: list[int] | None = None) -> list[Checkin]:
        """The check-ins of the projects ``project_ids`` (all with None), oldest first."""

    def remove_checkin(self, checkin_id: int) -> Checkin | None:
        """Delete check-in ``checkin_id``; returns it, None when there was none."""

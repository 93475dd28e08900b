"""Exceptions. Every exception of this package derives from :class:`OrchestratorError`.

Each carries a one-line message fit for a user; the CLI prints it as ``tmo: error: <message>``.
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Something went wrong in tmux-orchestrator."""

    #: Exit code the CLI uses for this error.
    exit_code = 1


class UsageError(OrchestratorError):
    """The request was malformed (bad argument, unknown option value)."""

    exit_code = 2


class InvalidBatch(UsageError):
    """Some items of a batch (``enqueue_many``, ``tmo add --from-file``) are invalid; none was queued.

    ``errors`` lists ``(position, message)`` for every invalid item, positions 1-based.
    """

    def __init__(self, errors: list[tuple[int, str]]) -> None:
        shown = [f"project {n}: {msg}" for n, msg in errors[:20]]
        if len(errors) > 20:
            shown.append(f"... and {len(errors) - 20} more")
        super().__init__(f"{len(errors)} invalid project(s), nothing queued: " + "; ".join(shown))
        self.errors = errors


class ConfigError(OrchestratorError):
    """The configuration (environment, ``config.toml``, ``TMO_HOME``) is invalid."""

    exit_code = 2


class UnsafePath(ConfigError):
    """A directory or file of the home (or the database, or the tmux socket directory) is not private
    to the user: owned by someone else, writable by others, or a symbolic link. Nothing in it was read
    or written; the message says how to fix it."""


class ForeignServer(ConfigError):
    """The tmux server on the socket was not started by this home (no ``@tmo_home`` mark), or its
    socket is not the user's. Nothing was sent to it."""


class ProjectNotFound(OrchestratorError):
    """No project has the given id."""

    def __init__(self, project_id: int) -> None:
        super().__init__(f"no project with id {project_id} (see `tmo list`)")
        self.project_id = project_id


class InvalidTransition(OrchestratorError):
    """The project is not in a status from which the requested change is allowed."""

    def __init__(self, project_id: int, old: str, new: str) -> None:
        super().__init__(f"project {project_id} is {old}; it cannot become {new}")
        self.project_id = project_id
        self.old = old
        self.new = new


class NotRunning(OrchestratorError):
    """The project does not run (here): it has no pane to send to or to look at."""


class StoreError(OrchestratorError):
    """The database could not be opened or used."""


class NoDatabase(StoreError):
    """The database does not exist, and the command is one that creates nothing (a read command)."""


class SchemaTooNew(StoreError):
    """The database was written by a newer tmux-orchestrator."""


class DaemonError(OrchestratorError):
    """The daemon could not be started, reached or stopped."""


class DaemonNotRunning(DaemonError):
    """No daemon runs for this home."""


class DaemonAlreadyRunning(DaemonError):
    """Another daemon already holds the lock of this home."""

    def __init__(self, pid: int | None, lock_path: str) -> None:
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"a daemon is already running for this home ({who}, lock {lock_path})")
        self.pid = pid


class ServerBusy(OrchestratorError):
    """Projects still run in sessions of this home's tmux server, so it was not stopped."""

    def __init__(self, project_ids: list[int]) -> None:
        super().__init__(f"the tmux server still runs project(s) {', '.join(map(str, project_ids))}")
        self.project_ids = project_ids


class DatabaseInUse(DaemonError):
    """Another daemon (another home on this host) already runs the queue of this database."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class TmuxError(OrchestratorError):
    """A tmux command failed."""

    def __init__(self, message: str, *, command: list[str] | None = None) -> None:
        super().__init__(message)
        self.command = command or []


class TmuxNotFound(TmuxError):
    """tmux is not installed, or too old."""


class ServerNotRunning(TmuxError):
    """The orchestrator's tmux server is not running."""


class SessionNotFound(TmuxError):
    """The session does not exist."""


class DuplicateSession(TmuxError):
    """A session with that name already exists."""


class UnsafeLogFile(TmuxError):
    """A project's log file is a symbolic link or not the user's: its session is not started (a
    spawn error), so tmux never appends to whatever the link points at."""


class NotOwned(TmuxError):
    """The session exists but does not carry this orchestrator's ownership tag."""

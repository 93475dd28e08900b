"""The orchestrator's dedicated tmux server: start it, start project sessions, list, capture, kill.

Ownership: every project session gets ``@tmo_owner <tag>`` in the same command list that creates it.
Only sessions carrying this home's tag are ever listed as ours or killed, and always by exact target
(``$id`` or ``=name``), never by a bare name (prefix match) or an empty target (most recent session).
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from pathlib import Path

from tmux_orchestrator.errors import ServerNotRunning, SessionNotFound, TmuxError
from tmux_orchestrator.naming import is_safe_session_name
from tmux_orchestrator.tmux.client import MAX_CHAIN_BYTES, Tmux

log = logging.getLogger(__name__)

#: The keeper session holds the server up (with ``exit-empty off``) and is never a project.
KEEPER = "_tmo_keep"
_FIELDS = (
    "#{session_id}\t#{@tmo_owner}\t#{@tmo_project}\t#{session_created}\t#{pane_pid}\t"
    "#{window_id}\t#{session_attached}\t#{session_name}"
)


@dataclass(frozen=True)
class SessionInfo:
    """One session on the server, as ``list-sessions`` reports it."""

    session_id: str
    name: str
    owner: str
    project_id: int | None
    created: int
    pane_pid: int | None
    window_id: str
    attached: bool

    @property
    def target(self) -> str:
        """The exact target of this session."""
        return self.session_id


def _parse(line: str) -> SessionInfo | None:
    parts = line.split("\t", 7)
    if len(parts) != 8:
        return None
    sid, owner, project, created, pane_pid, window_id, attached, name = parts
    return SessionInfo(
        session_id=sid,
        name=name,
        owner=owner,
        project_id=int(project) if project.isdigit() else None,
        created=int(created) if created.isdigit() else 0,
        pane_pid=int(pane_pid) if pane_pid.isdigit() else None,
        window_id=window_id,
        attached=attached not in ("", "0"),
    )


def _format_literal(text: str) -> str:
    """Protect text from tmux format expansion (``#`` starts a format)."""
    return text.replace("#", "##")


@dataclass(frozen=True)
class StartedSession:
    """tmux ids of a freshly created session."""

    session_id: str
    window_id: str
    pane_pid: int


class OrchestratorServer:
    """This home's tmux server and the sessions it owns."""

    def __init__(self, tmux: Tmux, owner_tag: str) -> None:
        self.tmux = tmux
        self.owner_tag = owner_tag

    # -- server ------------------------------------------------------------------------------
    def is_running(self) -> bool:
        """True if the server answers and has its keeper session."""
        try:
            self.tmux.run(["has-session", "-t", f"={KEEPER}"])
            return True
        except TmuxError:
            return False

    def ensure_running(self, *, history_limit: int = 50000, window_size: str = "200x50") -> bool:
        """Start the server if it is not running. Returns True when it was started now."""
        if self.is_running():
            return False
        self.tmux.socket_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        width, _, height = window_size.partition("x")
        self.tmux.run(
            ["new-session", "-d", "-s", KEEPER, "sleep", "2147483647"],
            ["set-option", "-s", "exit-empty", "off"],
            ["set-option", "-g", "history-limit", str(history_limit)],
            ["set-option", "-g", "remain-on-exit", "off"],
            ["set-option", "-g", "update-environment", ""],
            ["set-option", "-g", "default-size", f"{width or 200}x{height or 50}"],
            ["set-option", "-t", f"={KEEPER}:", "@tmo_role", "keeper"],
        )
        log.info("started tmux server on %s", self.tmux.socket_path)
        return True

    def kill_server(self) -> None:
        """Stop this home's server (only ever this socket)."""
        try:
            self.tmux.run(["kill-server"])
        except ServerNotRunning:
            pass

    # -- listing -----------------------------------------------------------------------------
    def list_all(self) -> list[SessionInfo]:
        """Every session on the server, owned or not. Raises on tmux errors other than no server."""
        try:
            result = self.tmux.run(["list-sessions", "-F", _FIELDS])
        except ServerNotRunning:
            return []
        return [s for s in map(_parse, result.lines) if s is not None]

    def snapshot(self) -> tuple[bool, list[SessionInfo]]:
        """(server alive with its keeper, owned sessions) from one ``list-sessions`` call.

        A tmux failure other than "no server" raises: the caller must treat it as "unknown".
        """
        try:
            result = self.tmux.run(["list-sessions", "-F", _FIELDS])
        except ServerNotRunning:
            return False, []
        sessions = [s for s in map(_parse, result.lines) if s is not None]
        alive = any(s.name == KEEPER for s in sessions)
        return alive, [s for s in sessions if s.owner == self.owner_tag and s.name != KEEPER]

    def list_owned(self) -> list[SessionInfo]:
        """Sessions carrying this home's ownership tag (the keeper excluded)."""
        return [s for s in self.list_all() if s.owner == self.owner_tag and s.name != KEEPER]

    def find_owned(self, name: str) -> SessionInfo | None:
        """The owned session named exactly ``name``."""
        for session in self.list_owned():
            if session.name == name:
                return session
        return None

    # -- sessions ----------------------------------------------------------------------------
    def start_session(
        self,
        *,
        name: str,
        project_id: int,
        cwd: str,
        argv: list[str],
        log_path: Path,
    ) -> StartedSession:
        """Create, tag and pipe a session in one command list (no output is ever missed)."""
        if not is_safe_session_name(name):
            raise TmuxError(f"refusing unsafe session name {name!r}")
        pipe = f"exec cat >> {shlex.quote(str(log_path))}"
        result = self.tmux.run(
            ["new-session", "-d", "-s", name, "-P", "-F", "#{session_id} #{window_id} #{pane_pid}",
             "-c", _format_literal(cwd), *argv],
            ["set-option", "-t", f"={name}:", "@tmo_owner", self.owner_tag],
            ["set-option", "-t", f"={name}:", "@tmo_project", str(project_id)],
            ["pipe-pane", "-t", f"={name}:", "-o", _format_literal(pipe)],
        )
        first = result.lines[0].split() if result.lines else []
        if len(first) != 3:
            raise TmuxError(f"unexpected new-session output {result.stdout!r}")
        return StartedSession(first[0], first[1], int(first[2]))

    def capture(self, target: str) -> str:
        """Whole scrollback and screen of the session's active pane (joined wrapped lines)."""
        return self.tmux.run(
            ["capture-pane", "-p", "-J", "-S", "-", "-E", "-", "-t", _pane_target(target)]
        ).stdout

    def kill(self, sessions: list[SessionInfo]) -> list[SessionInfo]:
        """Kill owned sessions by ``$id`` in chained calls; returns exactly those this call killed.

        tmux stops a chain at its first failing command and names its target in the error; the
        commands before it succeeded, the failing one found nothing to kill (someone else did), and
        the chain resumes after it. So two cleaners racing never both claim the same kill.
        """
        pending = [s for s in sessions if s.owner == self.owner_tag and s.name != KEEPER]
        killed: list[SessionInfo] = []
        while pending:
            batch: list[SessionInfo] = []
            size = 0
            for session in pending:
                size += len(session.session_id) + 20
                if batch and size > MAX_CHAIN_BYTES:
                    break
                batch.append(session)
            result = self.tmux.run(*[["kill-session", "-t", s.session_id] for s in batch], check=False)
            if result.returncode == 0:
                killed += batch
                pending = pending[len(batch):]
                continue
            failed_at = next(
                (i for i, s in enumerate(batch) if result.stderr.strip().endswith(s.session_id)), None
            )
            if failed_at is None:  # no server, or an error we cannot place: nothing more to do
                if "no server running" not in result.stderr and "error connecting" not in result.stderr:
                    log.warning("tmux kill-session failed: %s", result.stderr.strip())
                break
            killed += batch[:failed_at]
            pending = pending[failed_at + 1:]
        return killed

    def kill_one(self, session: SessionInfo) -> bool:
        """Kill one owned session by ``$id``; False if it was already gone."""
        if session.owner != self.owner_tag or session.name == KEEPER:
            return False
        try:
            self.tmux.run(["kill-session", "-t", session.session_id])
            return True
        except SessionNotFound:
            return False


def _pane_target(target: str) -> str:
    """Pane-level commands need ``=name:`` or ``$id`` (``tmux-facts.md`` section 3)."""
    if target.startswith("$"):
        return target
    return f"={target}:"

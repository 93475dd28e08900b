"""The orchestrator's dedicated tmux server: start it, start project sessions, list, capture, kill.

Ownership: every project session gets ``@tmo_owner <tag>`` in the same command list that creates it.
Only sessions carrying this home's tag are ever listed as ours or killed, and always by exact target
(``$id`` or ``=name``), never by a bare name (prefix match) or an empty target (most recent session).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from tmux_orchestrator.errors import ServerNotRunning, SessionNotFound, TmuxError
from tmux_orchestrator.home import log_pipe_command
from tmux_orchestrator.naming import is_safe_session_name
from tmux_orchestrator.processes import is_running
from tmux_orchestrator.tmux.client import MAX_CHAIN_BYTES, Tmux

log = logging.getLogger(__name__)

#: The keeper session holds the server up (with ``exit-empty off``) and is never a project.
KEEPER = "_tmo_keep"
#: One line per session. The server's pid and start time come first: together they name the
#: server *instance*, and a session is only ever known by instance, ``$id`` and name together.
_FIELDS = (
    "#{pid}.#{start_time}\t#{session_id}\t#{@tmo_owner}\t#{@tmo_project}\t#{session_created}\t"
    "#{pane_pid}\t#{window_id}\t#{session_attached}\t#{session_name}"
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
    #: The server instance (``pid.start time``) the session lives on.
    instance: str = ""

    @property
    def target(self) -> str:
        """The exact target of this session."""
        return self.session_id

    @property
    def key(self) -> str:
        """Server instance, ``$id`` and name: what names this session and no other, ever."""
        return f"{self.instance or '?'}/{self.session_id}/{self.name}"

    def is_session(self, instance: str | None, session_id: str | None, name: str | None,
                   project_id: int | None = None) -> bool:
        """True if this is the session recorded as (``instance``, ``session_id``, ``name``) for
        project ``project_id``.

        All must agree: tmux numbers sessions from ``$0`` again after a restart, so an id alone may
        name another project's session, and a row's session name may have been edited by hand to
        another project's: the session's own ``@tmo_project`` tag must name the row's project. A
        part that was never recorded (a session started by an older release, or not recorded yet)
        is not compared, but the name always is.
        """
        if name != self.name:
            return False
        if project_id is not None and self.project_id is not None and project_id != self.project_id:
            return False
        if session_id and session_id != self.session_id:
            return False
        return not (instance and self.instance and instance != self.instance)


def _parse(line: str) -> SessionInfo | None:
    parts = line.split("\t", 8)
    if len(parts) != 9:
        return None
    instance, sid, owner, project, created, pane_pid, window_id, attached, name = parts
    return SessionInfo(
        instance=instance,
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
class SessionSpec:
    """What :meth:`OrchestratorServer.start_sessions` needs to start one project session."""

    name: str
    project_id: int
    cwd: str
    argv: list[str]
    log_path: Path


def _parse_started(line: str) -> StartedSession | None:
    """The ``#{session_id} #{window_id} #{pane_pid} #{pid}.#{start_time}`` line new-session printed."""
    parts = line.split()
    if len(parts) != 4 or not parts[2].isdigit():
        return None
    return StartedSession(parts[0], parts[1], int(parts[2]), parts[3])


@dataclass(frozen=True)
class StartedSession:
    """tmux ids of a freshly created session."""

    session_id: str
    window_id: str
    pane_pid: int
    #: The server instance (``pid.start time``) it was created on.
    instance: str = ""


@dataclass(frozen=True)
class ServerView:
    """One look at the server: :meth:`OrchestratorServer.view`."""

    #: Something answered on the socket.
    reachable: bool
    #: ``pid.start time`` of the server that answered (None with no session at all).
    instance: str | None
    #: Its keeper session exists.
    keeper: bool
    #: The raw listing, compared between reconcile passes to skip parsing when nothing changed.
    text: str
    #: The sessions carrying this home's tag (keeper excluded).
    owned: list[SessionInfo]


class OrchestratorServer:
    """This home's tmux server and the sessions it owns."""

    def __init__(self, tmux: Tmux, owner_tag: str) -> None:
        self.tmux = tmux
        self.owner_tag = owner_tag
        #: ``pid.start time`` of the server last seen answering on the socket.
        self.known_instance: str | None = None

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
        self.tmux.run(
            ["new-session", "-d", "-s", KEEPER, "sleep", "2147483647"],
            ["set-option", "-s", "@tmo_home", self.owner_tag],  # ownership mark (docs/security.md)
            ["set-option", "-s", "exit-empty", "off"],
            ["set-option", "-g", "remain-on-exit", "off"],
            ["set-option", "-g", "update-environment", ""],
            *_session_defaults(history_limit, window_size),
            ["set-option", "-t", f"={KEEPER}:", "@tmo_role", "keeper"],
        )
        log.info("started tmux server on %s", self.tmux.socket_path)
        return True

    def set_session_defaults(self, *, history_limit: int, window_size: str) -> None:
        """Change the scrollback length and window size of sessions started from now on (a
        reloaded config); running sessions keep theirs."""
        self.tmux.run(*_session_defaults(history_limit, window_size))

    def process_alive(self) -> bool:
        """True while the server process last seen on the socket runs (asked of the process, not
        of the socket or the keeper session, either of which may be gone while the server lives)."""
        pid = (self.known_instance or "").split(".", 1)[0]
        if not pid.isdigit():
            return self.is_running()
        return is_running(int(pid))

    def restore_keeper(self) -> None:
        """Create the keeper session again on a running server (someone killed only the keeper:
        the server and every project session are fine)."""
        self.tmux.run(
            ["new-session", "-d", "-s", KEEPER, "sleep", "2147483647"],
            ["set-option", "-t", f"={KEEPER}:", "@tmo_role", "keeper"],
        )

    def instance(self) -> str | None:
        """``pid.start time`` of the server answering on the socket, None if none answers."""
        try:
            lines = self.tmux.run(["list-sessions", "-F", "#{pid}.#{start_time}"]).lines
        except TmuxError:
            return None
        return lines[0] if lines else None
    def verify_owner(self) -> bool:
        """True if this home's server runs (marked ``@tmo_home``), False if none runs; raises
        :class:`~tmux_orchestrator.errors.ForeignServer` for any other server on the socket."""
        return self.tmux.check_owner(self.owner_tag)

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

    def view(self) -> ServerView:
        """What the server holds now, from one ``list-sessions`` call.

        ``reachable`` is False when nothing answers on the socket (a dead server, or a live one
        whose socket file was deleted: :class:`~tmux_orchestrator.tmux.guard.ServerGuard` tells
        them apart). A tmux failure other than "no server" raises: the caller must treat it as
        "unknown", never as "every session is gone".
        """
        try:
            result = self.tmux.run(["list-sessions", "-F", _FIELDS])
        except ServerNotRunning:
            return ServerView(False, None, False, "", [])
        text = result.stdout
        sessions = [s for s in map(_parse, text.splitlines()) if s is not None]
        instance = sessions[0].instance if sessions else None
        if instance:
            self.known_instance = instance
        keeper = any(s.name == KEEPER for s in sessions)
        return ServerView(True, instance, keeper, text,
                          [s for s in sessions if s.owner == self.owner_tag and s.name != KEEPER])

    def snapshot(self) -> tuple[bool, list[SessionInfo]]:
        """(server answers, owned sessions): :meth:`view` for callers that need no more."""
        view = self.view()
        return view.reachable, view.owned

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
        result = self.tmux.run(*self._start_commands(name, project_id, cwd, argv, log_path))
        started = _parse_started(result.lines[0] if result.lines else "")
        if started is None:
            raise TmuxError(f"unexpected new-session output {result.stdout!r}")
        return started

    def _start_commands(
        self, name: str, project_id: int, cwd: str, argv: list[str], log_path: Path
    ) -> list[list[str]]:
        """new-session, its two tags and its pipe-pane: one command list, so no output is missed."""
        pipe = log_pipe_command(log_path)  # no link (security.md); a marker once drained
        return [
            ["new-session", "-d", "-s", name, "-P", "-F",
             "#{session_id} #{window_id} #{pane_pid} #{pid}.#{start_time}",
             "-c", _format_literal(cwd), *argv],
            ["set-option", "-s", "@tmo_home", self.owner_tag],  # marks a server new-session started
            ["set-option", "-t", f"={name}:", "@tmo_owner", self.owner_tag],
            ["set-option", "-t", f"={name}:", "@tmo_project", str(project_id)],
            ["pipe-pane", "-t", f"={name}:", "-o", _format_literal(pipe)],
        ]

    def start_sessions(self, specs: list[SessionSpec]) -> list[StartedSession | TmuxError | None]:
        """Start many sessions, their command lists chained into as few tmux calls as fit.

        One tmux client start (and one fork of the daemon) then serves many sessions: when several
        slots free up at once the daemon starts their projects this way (about 2.5 ms a session
        instead of 6-9 ms, ``tmux-facts.md`` section 6). Per spec, in order: the started session,
        the error that refused it (an unsafe name), or None when it was not tried because an
        earlier command of the chain failed: tmux stops a chain at its first error, so the caller
        starts those one at a time with :meth:`start_session`, which reports their own errors.
        """
        results: list[StartedSession | TmuxError | None] = []
        pending = list(specs)
        while pending:
            batch: list[SessionSpec] = []
            commands: list[list[str]] = []
            size = 0
            for spec in pending:
                if not is_safe_session_name(spec.name):
                    if batch:
                        break
                    results.append(TmuxError(f"refusing unsafe session name {spec.name!r}"))
                    batch = [spec]
                    break
                cmds = self._start_commands(spec.name, spec.project_id, spec.cwd, spec.argv, spec.log_path)
                words = sum(len(w.encode()) + 3 for c in cmds for w in c)
                if batch and size + words > MAX_CHAIN_BYTES:
                    break
                batch.append(spec)
                commands += cmds
                size += words
            pending = pending[len(batch):]
            if not commands:
                continue
            result = self.tmux.run(*commands, check=False)
            started = [_parse_started(line) for line in result.lines]
            if result.returncode == 0 and len(started) == len(batch) and None not in started:
                results += started
                continue
            # tmux ran the chain up to a failing command. Every session that printed its ids
            # exists; the last one may lack its tags or pipe (if one of those failed): give them
            # again (set-option is idempotent, `pipe-pane -o` opens no second pipe) or kill it.
            done = len(started)
            results += started[: max(0, done - 1)]
            if done:
                last, spec = started[-1], batch[done - 1]
                try:
                    if last is None:
                        raise TmuxError(f"unexpected new-session output {result.stdout!r}")
                    self.tmux.run(*self._start_commands(spec.name, spec.project_id, spec.cwd,
                                                        spec.argv, spec.log_path)[1:])
                    results.append(last)
                except TmuxError as exc:
                    if last is not None:
                        self.tmux.run(["kill-session", "-t", last.session_id], check=False)
                    results.append(exc)
            results += [None] * (len(batch) - done + len(pending))
            break
        return results

    def capture(self, target: str) -> str:
        """Whole scrollback and screen of the session's active pane (joined wrapped lines)."""
        return self.tmux.run(
            ["capture-pane", "-p", "-J", "-S", "-", "-E", "-", "-t", _pane_target(target)]
        ).stdout

    def capture_many(self, targets: list[str]) -> dict[str, str]:
        """:meth:`capture` of many sessions (``$id`` targets) in chained calls; gone ones are left out.

        Each capture is followed by a ``display-message`` printing a random marker and the target,
        so one client's output splits back into the sessions (a chained ``save-buffer`` per
        session costs a round trip through the client each: 0.55 s for 500 sessions against
        0.07 s this way). tmux stops a chain at its first failure (a session already gone): the
        markers printed tell where, and the chain resumes after it.
        """
        marker = f"tmo-capture-{secrets.token_hex(8)}"
        out: dict[str, str] = {}
        pending = list(targets)
        while pending:
            batch: list[str] = []
            size = 0
            for target in pending:
                size += 2 * len(target) + len(marker) + 60
                if batch and size > MAX_CHAIN_BYTES:
                    break
                batch.append(target)
            commands = [cmd for t in batch for cmd in (
                ["capture-pane", "-p", "-J", "-S", "-", "-E", "-", "-t", _pane_target(t)],
                ["display-message", "-p", f"{marker} {t}"],
            )]
            result = self.tmux.run(*commands, check=False)
            done = 0
            lines: list[str] = []
            for line in result.stdout.split("\n"):
                if done < len(batch) and line == f"{marker} {batch[done]}":
                    out[batch[done]] = "".join(f"{x}\n" for x in lines)
                    lines = []
                    done += 1
                else:
                    lines.append(line)
            if result.returncode == 0 or done >= len(batch):
                pending = pending[len(batch):]
            elif "no server running" in result.stderr or "error connecting" in result.stderr:
                break
            else:
                pending = pending[done + 1:]  # batch[done] failed (gone): go on after it
        return out

    def pane_of(self, session_id: str) -> str:
        """The ``%id`` of the (only) pane of session ``$id``, resolved once: every later command
        targets the pane itself (a name is resolved again on every command)."""
        pane = self.tmux.run(["display-message", "-p", "-t", session_id, "#{pane_id}"]).stdout.strip()
        if not pane.startswith("%"):
            raise TmuxError(f"tmux named no pane for session {session_id}")
        return pane

    def screen(self, pane_id: str, *, lines: int | None = None) -> str:
        """The pane's text now, without colours: its visible screen, or with ``lines`` its last
        ``lines`` lines (scrollback included); blank lines at the end are left out."""
        command = ["capture-pane", "-p", "-J", "-t", pane_id]
        if lines is not None:
            command[2:2] = ["-S", str(-lines)]
        text = self.tmux.run(command).stdout.rstrip("\n").split("\n")
        while text and not text[-1].strip():
            text.pop()
        if lines is not None:
            text = text[-lines:]
        return "".join(f"{line}\n" for line in text)

    def paste(self, pane_id: str, data: bytes) -> None:
        """Paste ``data`` into the pane as one bracketed paste (when the program asked for them).

        The bytes reach a buffer of their own through tmux's stdin (never argv: a trailing ``;``
        or a leading ``-`` would be read by tmux), and ``paste-buffer -d`` deletes the buffer: a
        paste is not typed key by key, so ``/`` or ``@`` cannot open an agent's picker.
        """
        name = f"tmo-{secrets.token_hex(8)}"
        self.tmux.run(["load-buffer", "-b", name, "-"], stdin=data)
        try:
            self.tmux.run(["paste-buffer", "-p", "-d", "-b", name, "-t", pane_id])
        except TmuxError:
            self.tmux.run(["delete-buffer", "-b", name], check=False)
            raise

    def send_keys(self, pane_id: str, keys: list[str]) -> None:
        """Send tmux key names (``Enter``, ``C-c``) to the pane."""
        self.tmux.run(["send-keys", "-t", pane_id, *keys])

    def kill(self, sessions: list[SessionInfo], *, look: bool = True) -> list[SessionInfo]:
        """Kill owned sessions by ``$id`` in chained calls; returns exactly those this call killed.

        With ``look`` (the default) the server is listed first and only sessions found with the
        same instance, ``$id`` and name are killed; ``look=False`` when the caller has just listed
        them. tmux stops a chain at its first failing command and names its target in the error;
        the commands before it succeeded, the failing one found nothing to kill (someone else
        did), and the chain resumes after it. So two cleaners racing never both claim a kill.
        """
        pending = [s for s in sessions if s.owner == self.owner_tag and s.name != KEEPER]
        if look and pending:
            try:
                alive = {s.key for s in self.list_all()}
            except TmuxError:
                alive = set()
            pending = [s for s in pending if s.key in alive]
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
        """Kill one owned session (exact identity, see :meth:`kill`); False if it was already gone."""
        return bool(self.kill([session]))

    def activity(self) -> dict[str, int]:
        """``{$id: time of its last output}`` (Unix time, seconds) of every session."""
        out: dict[str, int] = {}
        for line in self.tmux.run(["list-sessions", "-F", "#{session_id} #{session_activity}"]).lines:
            sid, _, when = line.partition(" ")
            if when.isdigit():
                out[sid] = int(when)
        return out

    def repipe(self, name: str, log_path: Path) -> None:
        """Pipe the session's pane to ``log_path`` again (its log was deleted): the old pipe is
        closed, a new one opened, in one command list."""
        if not is_safe_session_name(name):
            raise TmuxError(f"refusing unsafe session name {name!r}")
        pipe = log_pipe_command(log_path)
        self.tmux.run(["pipe-pane", "-t", f"={name}:"], ["pipe-pane", "-t", f"={name}:", "-o",
                                                         _format_literal(pipe)])

    def has(self, session_id: str) -> bool:
        """True while a session ``$id`` exists on the server answering now (one cheap call)."""
        try:
            self.tmux.run(["has-session", "-t", session_id])
        except (SessionNotFound, ServerNotRunning):
            return False
        return True

    def exists(self, session: SessionInfo) -> bool:
        """True while ``session`` (instance, ``$id`` and name) is on the server.

        One ``has-session`` (a couple of ms whatever the number of sessions) answers the usual
        case, that it is gone; only when an id is found is the server listed to compare all three.
        Raises :class:`TmuxError` when tmux cannot answer.
        """
        try:
            self.tmux.run(["has-session", "-t", session.session_id])
        except (SessionNotFound, ServerNotRunning):
            return False
        return any(s.key == session.key for s in self.list_all())


def _pane_target(target: str) -> str:
    """Pane-level commands need ``=name:`` or ``$id`` (``tmux-facts.md`` section 3)."""
    if target.startswith("$"):
        return target
    return f"={target}:"


def _session_defaults(history_limit: int, window_size: str) -> list[list[str]]:
    """The global options that give new sessions their scrollback length and window size."""
    width, _, height = window_size.partition("x")
    return [["set-option", "-g", "history-limit", str(history_limit)],
            ["set-option", "-g", "default-size", f"{width or 200}x{height or 50}"]]

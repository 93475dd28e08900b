"""The public API: :class:`Orchestrator` (alias ``TmuxOrchestratorScheduler``).

The CLI and the daemon call this API; its method names keep the original scheduler's vocabulary
(``mark_project_complete``, ``get_next_project_atomic``, ``tmux_manager``, ``_find_lingering_sessions``).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tmux_orchestrator.config import Settings, load_settings
from tmux_orchestrator.errors import (
    InvalidBatch,
    InvalidTransition,
    OrchestratorError,
    TmuxError,
    UsageError,
)
from tmux_orchestrator.inputs import check_project, check_text
from tmux_orchestrator.processes import is_running
from tmux_orchestrator.project import Outcome, Project, ProjectStatus
from tmux_orchestrator.store import NewProject, open_store
from tmux_orchestrator.tmux import (
    OrchestratorServer,
    SessionInfo,
    Tmux,
    TmuxSessionManager,
    signal_group,
)
from tmux_orchestrator.wrapper import is_env_name

log = logging.getLogger(__name__)


@dataclass
class SessionRow:
    """An owned session, its project, and what it is to the queue."""

    session: SessionInfo
    #: ``running``, ``lingering`` or ``orphaned``.
    state: str
    project: Project | None
    reason: str

    @property
    def project_id(self) -> int | None:
        """Id of the session's project, if it has one."""
        return self.project.id if self.project else None

    @property
    def project_status(self) -> str | None:
        """Status of the session's project, if it has one."""
        return self.project.status.value if self.project else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "session_name": self.session.name,
            "session_id": self.session.session_id,
            "pane_pid": self.session.pane_pid,
            "created": self.session.created,
            "attached": self.session.attached,
            "project_id": self.project_id,
            "project_status": self.project_status,
            "state": self.state,
            "reason": self.reason,
        }


#: The keyword arguments of :meth:`Orchestrator.enqueue`, which ``enqueue_many`` items may hold.
_ENQUEUE_KEYS = frozenset({
    "command", "name", "priority", "project_path", "spec_path", "env", "max_retries", "retry_delay",
    "timeout", "idle_timeout",
})
#: Outcomes after which a project's retry policy applies (a human's ``fail`` or ``cancel`` is final).
RETRYABLE = frozenset(
    {Outcome.EXITED, Outcome.SIGNAL, Outcome.TIMEOUT, Outcome.IDLE, Outcome.LOST, Outcome.SPAWN_ERROR}
)
#: Longest delay between automatic retries, whatever the backoff says.
MAX_RETRY_DELAY = 3600.0


class Orchestrator:
    """A queue of projects, each run in its own tmux session on this home's dedicated server."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        home: Path | str | None = None,
        database_url: str | None = None,
        source: str | None = None,
        create: bool = True,
    ) -> None:
        self.settings = settings or load_settings(home, database_url)
        # create=False (read and diagnostic commands): make nothing, fail on a missing database.
        if create:
            self.settings.ensure_dirs()
        else:
            self.settings.check_dirs()
        self.store = open_store(self.settings, create=create)
        self.tmux = Tmux(self.settings.socket_path, owner_mark=self.settings.owner_tag,
                         private_dir=self.settings.socket_dir_private)
        self.server = OrchestratorServer(self.tmux, self.settings.owner_tag)
        #: Session operations restricted to sessions this orchestrator owns.
        self.tmux_manager = TmuxSessionManager(self.server)
        #: Recorded as the source of every change made through this object: ``api`` by default,
        #: ``hook`` inside a hook (``TMO_HOOK=1``), so hooks never fire on their own changes.
        self.source = source or ("hook" if os.environ.get("TMO_HOOK") == "1" else "api")
        self.host = socket.gethostname()

    def close(self) -> None:
        """Release the database connection."""
        self.store.close()

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- queue -------------------------------------------------------------------------------
    def enqueue(
        self,
        command: Sequence[str],
        *,
        name: str = "",
        priority: int = 0,
        project_path: str | Path | None = None,
        spec_path: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        max_retries: int = 0,
        retry_delay: float = 0.0,
        timeout: float | None = None,
        idle_timeout: float | None = None,
    ) -> Project:
        """Queue a project. Validates everything first: bad input changes nothing."""
        project = self.store.enqueue(
            self.new_project(
                command, name=name, priority=priority, project_path=project_path, spec_path=spec_path,
                env=env, max_retries=max_retries, retry_delay=retry_delay, timeout=timeout,
                idle_timeout=idle_timeout,
            ),
            source=self.source,
        )
        log.info("queued project %s (%s)", project.id, project.name,
                 extra={"project_id": project.id, "session_name": None})
        self.poke_daemon()
        return project

    def enqueue_many(self, projects: Sequence[Mapping[str, Any]]) -> list[Project]:
        """Queue many projects in one transaction: all of them, or (on any invalid one) none.

        Each item holds the keyword arguments of :meth:`enqueue` (``command`` required; ``name``,
        ``priority``, ``project_path``, ``spec_path``, ``env``, ``max_retries``, ``retry_delay``,
        ``timeout``, ``idle_timeout`` optional). Every item is validated before anything is written;
        if any is invalid, :class:`InvalidBatch` (a :class:`UsageError`) lists every invalid item
        with its position (1-based) and nothing is queued. Returns the
        queued projects in the order given. ``tmo add --from-file`` uses this.
        """
        news: list[NewProject] = []
        errors: list[tuple[int, str]] = []
        for number, item in enumerate(projects, start=1):
            unknown = set(item) - _ENQUEUE_KEYS
            if unknown:
                errors.append((number, f"unknown field(s) {', '.join(sorted(unknown))}"))
            elif "command" not in item:
                errors.append((number, "missing command"))
            else:
                try:
                    news.append(self.new_project(**item))
                except (UsageError, TypeError, ValueError) as exc:
                    errors.append((number, str(exc)))
        if errors:
            raise InvalidBatch(errors)
        queued = self.store.enqueue_many(news, source=self.source)
        if queued:
            log.info("queued %s projects (ids %s-%s)", len(queued), queued[0].id, queued[-1].id,
                     extra={"project_id": None, "session_name": None})
            self.poke_daemon()
        return queued

    def new_project(
        self,
        command: Sequence[str],
        *,
        name: str = "",
        priority: int = 0,
        project_path: str | Path | None = None,
        spec_path: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        max_retries: int = 0,
        retry_delay: float = 0.0,
        timeout: float | None = None,
        idle_timeout: float | None = None,
    ) -> NewProject:
        """Validate one project's fields (raises :class:`UsageError`) and return the row to insert."""
        if isinstance(command, (str, bytes)):
            raise UsageError("the command must be a list of words (argv), e.g. [\"make\", \"test\"]")
        argv = [str(a) for a in command]
        if not argv or not argv[0].strip():
            raise UsageError("missing command: give it after `--`, e.g. tmo add -- claude -p spec.md")
        check_project(argv, name=str(name), env={str(k): str(v) for k, v in dict(env or {}).items()},
                      project_path=None if project_path is None else str(project_path),
                      spec_path=None if spec_path is None else str(spec_path))
        directory = Path(project_path).expanduser() if project_path else Path.cwd()
        check_text(str(directory), "the directory (--dir)")  # the current one may be hostile too
        if not directory.is_dir():
            raise UsageError(f"directory {directory} does not exist; pass an existing --dir")
        spec: Path | None = None
        if spec_path:
            spec = Path(spec_path).expanduser()
            if not spec.is_file():
                raise UsageError(f"spec file {spec} does not exist; pass an existing --spec")
            spec = spec.resolve()
        for key, text in dict(env or {}).items():
            if not isinstance(key, str) or not is_env_name(key):
                raise UsageError(
                    f"invalid environment variable name {key!r}; use K=V with K in [A-Za-z_][A-Za-z0-9_]*"
                )
            if not isinstance(text, str):
                raise UsageError(f"environment variable {key}: the value must be a string")
        if isinstance(priority, bool) or not -(2**31) <= int(priority) < 2**31:
            raise UsageError("priority must be between -2147483648 and 2147483647")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise UsageError("--max-retries must be a whole number, 0 or more")
        for label, value in (("timeout", timeout), ("idle timeout", idle_timeout)):
            if value is not None and not value > 0:  # `not >`: NaN is refused too
                raise UsageError(f"{label} must be positive")
        if not isinstance(retry_delay, (int, float)) or not retry_delay >= 0 or retry_delay == float("inf"):
            raise UsageError("retry delay must be a finite number of seconds, 0 or more")
        return NewProject(
            command=argv,
            name=name or (spec.stem if spec else Path(argv[0]).name),
            priority=int(priority),
            project_path=str(directory.resolve()),
            spec_path=str(spec) if spec else None,
            env=dict(env or {}),
            max_retries=max_retries,
            retry_delay=retry_delay,
            timeout=timeout,
            idle_timeout=idle_timeout,
        )

    def get(self, project_id: int) -> Project:
        """The project ``project_id``; raises ``ProjectNotFound``."""
        return self.store.get(project_id)

    def list_projects(self, statuses: Sequence[ProjectStatus] | None = None) -> list[Project]:
        """Projects in queue order."""
        return self.store.list_projects(list(statuses) if statuses else None)

    def get_next_project_atomic(self) -> Project | None:
        """Claim the next queued project (status becomes ``processing``); None if none is due.

        Lingering sessions are cleaned first (pre-dequeue cleanup), and the daemon's concurrency
        limit is respected. The caller is responsible for starting the claimed project.
        """
        self.cleanup_lingering()
        limit = int(self.store.get_setting("concurrency", "1") or 1)
        return self.store.claim_next(host=self.host, max_processing=limit)

    # -- ending projects ---------------------------------------------------------------------
    def mark_project_complete(
        self,
        project_id: int,
        success: bool = True,
        *,
        reason: str | None = None,
        outcome: Outcome = Outcome.MANUAL,
    ) -> Project:
        """End a project and clean up its session. Safe to call twice.

        A running project becomes ``completed`` (or ``failed``), which writes its event. A project
        that is already ended, for instance by ``UPDATE project_queue SET status='completed'``, keeps
        its status; its session, if still alive, is saved and killed, with its events.
        """
        project = self.store.get(project_id)
        if project.status == ProjectStatus.PROCESSING:
            try:
                project = self.store.transition(
                    project_id,
                    ProjectStatus.COMPLETED if success else ProjectStatus.FAILED,
                    source=self.source,
                    outcome=outcome,
                    error_message=None if success else (reason or "marked failed"),
                    expected=ProjectStatus.PROCESSING,
                )
            except InvalidTransition:
                project = self.store.get(project_id)  # ended meanwhile by someone else
        elif project.status == ProjectStatus.QUEUED:
            raise InvalidTransition(
                project_id, "queued", "completed" if success else "failed (use `tmo cancel`)"
            )
        self.cleanup_session(project, reason="completed" if success else "failed")
        self.poke_daemon()
        return self.store.get(project_id)

    def fail(self, project_id: int, reason: str | None = None) -> Project:
        """End a running project as failed (``tmo fail``)."""
        return self.mark_project_complete(project_id, success=False, reason=reason)

    def cancel(self, project_id: int) -> Project:
        """Cancel a queued or running project; a running one's session is saved and killed."""
        project = self.store.get(project_id)
        if project.status not in (ProjectStatus.QUEUED, ProjectStatus.PROCESSING):
            raise InvalidTransition(project_id, project.status.value, "cancelled")
        project = self.store.transition(
            project_id,
            ProjectStatus.CANCELLED,
            source=self.source,
            outcome=Outcome.CANCELLED,
            error_message="cancelled",
        )
        self.cleanup_session(project, reason="cancelled")
        self.poke_daemon()
        return project

    def retry(self, project_id: int) -> Project:
        """Queue an ended project again (``tmo retry``); counts as a retry."""
        project = self.store.get(project_id)
        if not project.is_terminal:
            raise InvalidTransition(
                project_id, project.status.value, "queued (only ended projects can be retried)"
            )
        self.cleanup_session(project, reason="retried")
        self.store.count_retry(project_id)
        project = self.store.transition(project_id, ProjectStatus.QUEUED, source=self.source)
        self.poke_daemon()
        return project

    def requeue_after_failure(self, project: Project) -> Project:
        """Apply ``project``'s retry policy after an automatic failure; returns the new state."""
        if (
            project.status != ProjectStatus.FAILED
            or project.outcome not in RETRYABLE
            or project.retry_count >= project.max_retries
        ):
            return project
        delay = min(project.retry_delay * (2**project.retry_count), max(project.retry_delay, MAX_RETRY_DELAY))
        not_before = datetime.now(UTC) + timedelta(seconds=delay) if delay > 0 else None
        self.store.count_retry(project.id)
        try:
            project = self.store.transition(
                project.id,
                ProjectStatus.QUEUED,
                source=self.source,
                not_before=not_before,
                expected=ProjectStatus.FAILED,
            )
        except InvalidTransition:
            return self.store.get(project.id)
        log.info(
            "project %s will be retried (%s of %s) in %.0fs",
            project.id, project.retry_count, project.max_retries, delay,
            extra={"project_id": project.id, "session_name": project.session_name},
        )
        return project

    def remove(self, project_id: int) -> Project:
        """Delete an ended or queued project from the queue (its events and logs stay)."""
        project = self.store.get(project_id)
        if project.status == ProjectStatus.PROCESSING:
            raise InvalidTransition(project_id, "processing", "removed (cancel it first)")
        self.cleanup_session(project, reason="removed")
        return self.store.remove(project_id, source=self.source)

    # -- sessions ----------------------------------------------------------------------------
    def session_of(self, project: Project) -> SessionInfo | None:
        """The live owned session of ``project``'s current attempt, if any."""
        if not project.session_name:
            return None
        for session in self.server.list_owned():
            if session.session_id == project.session_id or session.name == project.session_name:
                return session
        return None

    def cleanup_session(self, project: Project, *, reason: str, grace: float | None = None) -> bool:
        """Save the output of ``project``'s session, then kill it: exactly once, whoever calls.

        The first caller to mark the session closed in the database does the work; everyone else
        returns False. The process group gets SIGTERM, up to ``grace`` seconds to end, then SIGKILL.
        """
        if not project.session_name or not self.store.close_session(project.id, project.session_name):
            return False
        try:
            session = self.session_of(project)
        except TmuxError as exc:
            log.warning("project %s: cannot list sessions (%s); reconcile will retry", project.id, exc,
                        extra={"project_id": project.id, "session_name": project.session_name})
            return False
        if session is None:
            return False
        self.kill_project_session(project, session, reason=reason, grace=grace)
        return True

    def kill_project_session(
        self, project: Project, session: SessionInfo, *, reason: str, grace: float | None = None,
        event: str = "session_killed",
    ) -> None:
        """Backup, SIGTERM the group, wait up to ``grace``, SIGKILL, kill the session, log events.

        When the caller runs inside that very session (an agent running ``tmo complete``), the work
        is done by a forked child in a new process session, so the SIGTERM and SIGHUP meant for the
        project do not cut the clean-up short.
        """
        if session.pane_pid and _in_session_of(session.pane_pid):
            child = os.fork()
            if child == 0:  # pragma: no cover - runs in the detached child
                code = 0
                try:
                    os.setsid()
                    self._kill_project_session(project, session, reason=reason, grace=grace, event=event)
                except BaseException:  # noqa: BLE001 - nothing to report to from here
                    code = 1
                finally:
                    os._exit(code)
            os.waitpid(child, 0)
            return
        self._kill_project_session(project, session, reason=reason, grace=grace, event=event)

    def _kill_project_session(
        self, project: Project, session: SessionInfo, *, reason: str, grace: float | None, event: str
    ) -> None:
        self.save_scrollback(project, session)
        pgid = session.pane_pid
        grace = self.settings.kill_grace if grace is None else grace
        if signal_group(pgid, signal.SIGTERM) and pgid:
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and is_running(pgid):
                time.sleep(0.005)
            # SIGKILL whatever is left of the group: the leader if it ignored SIGTERM, or
            # children it left behind (the group id stays reserved while any member lives).
            signal_group(pgid, signal.SIGKILL)
        self.server.kill_one(session)
        log.info(
            "killed session %s of project %s (%s)", session.name, project.id, reason,
            extra={"project_id": project.id, "session_name": session.name},
        )
        self.store.append_event(event, source=self.source, project=project, message=reason)

    def save_scrollback(self, project: Project, session: SessionInfo) -> Path | None:
        """Write the session's whole scrollback next to its pipe log; None if it could not."""
        path = self.settings.scrollback_path(project.id)
        try:
            text = self.server.capture(session.session_id)
        except TmuxError as exc:
            log.warning("project %s: scrollback not saved: %s", project.id, exc,
                        extra={"project_id": project.id, "session_name": session.name})
            return None
        path.write_text(text)
        self.store.append_event(
            "output_saved", source=self.source, project=project, message=f"{path} ({len(text)} bytes)"
        )
        return path

    def kill_sessions_batch(
        self, rows: Sequence[SessionRow], *, event: str | None = None, grace: float = 0.5
    ) -> list[SessionInfo]:
        """Save and kill many owned sessions with a few chained tmux calls.

        Scrollbacks are captured in a few chained calls (``capture_many``) and written to files;
        every process group gets SIGTERM and, together, up to ``grace`` seconds to end; then the
        sessions are killed by ``$id`` in one chain and what is left gets SIGKILL. Each session
        killed gets an ``output_saved`` event and ``event`` (default: ``lingering_cleaned`` for a
        project's session, ``session_killed`` for an orphan). Returns the sessions that are gone.
        """
        owned = [r for r in rows if r.session.owner == self.server.owner_tag]
        paths: dict[str, Path] = {}
        for row in owned:
            sid = row.session.session_id
            path = (
                self.settings.scrollback_path(row.project.id) if row.project
                else self.settings.logs_dir / f"orphan-{row.session.name}.scrollback.txt"
            )
            if (
                row.project is not None
                and row.project.session_name == row.session.name
                and row.project.session_closed_at is None
                and not self.store.close_session(row.project.id, row.session.name)
            ):
                continue  # another cleaner (daemon, CLI) claimed this session first
            paths[sid] = path
        owned = [r for r in owned if r.session.session_id in paths]
        saved: set[str] = set()
        if paths:
            for sid, text in self.server.capture_many(list(paths)).items():
                try:
                    paths[sid].write_text(text)
                    saved.add(sid)
                except OSError as exc:
                    log.warning("scrollback of %s not saved: %s", sid, exc)
        pids = [r.session.pane_pid for r in owned if r.session.pane_pid]
        for pid in pids:
            signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(is_running(p) for p in pids):
            time.sleep(0.01)
        # One look at what is left (with hundreds of sessions each listing costs the tmux server
        # tens of ms, more while it reaps the panes that just ended), kill that, and look again
        # only if some kill did not go through.
        left = {s.session_id for s in self.server.list_all()}
        targets = [r.session for r in owned if r.session.session_id in left]
        killed_now = self.server.kill(targets, look=False)
        for pid in pids:
            signal_group(pid, signal.SIGKILL)  # whatever of the group is left
        # A session may have ended by itself after SIGTERM: it is gone by our doing all the same
        # (each was claimed above), so what counts is that it no longer exists.
        alive = left if len(killed_now) < len(targets) else set()
        if alive:
            alive = {s.session_id for s in self.server.list_all()}
        killed = [r.session for r in owned if r.session.session_id not in alive]
        gone = {s.session_id for s in killed}
        events: list[tuple[str, Project | None, str | None, str | None]] = []
        for row in owned:
            sid = row.session.session_id
            if sid not in gone:
                continue
            if sid in saved:
                events.append(("output_saved", row.project, row.session.name, str(paths[sid])))
            kind = event or ("lingering_cleaned" if row.project is not None else "session_killed")
            events.append((kind, row.project, row.session.name, row.reason))
            log.info("killed %s session %s (%s)", row.state, row.session.name, row.reason,
                     extra={"project_id": row.project_id, "session_name": row.session.name})
        self.store.append_events(events, source=self.source)
        return killed

    def cancel_many(self, project_ids: Sequence[int]) -> list[tuple[int, Project | OrchestratorError]]:
        """Cancel many projects; running ones are saved and killed together in a few tmux calls.

        Returns, per id, the cancelled project or the error that kept it from being cancelled.
        """
        results: list[tuple[int, Project | OrchestratorError]] = []
        to_kill: list[Project] = []
        for project_id in project_ids:
            try:
                project = self.store.get(project_id)
                if project.status not in (ProjectStatus.QUEUED, ProjectStatus.PROCESSING):
                    raise InvalidTransition(project_id, project.status.value, "cancelled")
                project = self.store.transition(
                    project_id, ProjectStatus.CANCELLED, source=self.source,
                    outcome=Outcome.CANCELLED, error_message="cancelled",
                )
            except OrchestratorError as exc:
                results.append((project_id, exc))
                continue
            results.append((project_id, project))
            if project.session_name:
                to_kill.append(project)
        if to_kill:
            sessions = self.server.list_owned()
            by_id = {s.session_id: s for s in sessions}
            by_name = {s.name: s for s in sessions}
            rows = []
            for project in to_kill:
                session = by_id.get(project.session_id or "") or by_name.get(project.session_name or "")
                if session is not None:
                    rows.append(SessionRow(session, "running", project, "cancelled"))
                else:
                    self.store.close_session(project.id, project.session_name)
            self.kill_sessions_batch(rows, event="session_killed", grace=self.settings.kill_grace)
        self.poke_daemon()
        return results

    def _find_lingering_sessions(self, active_sessions: Sequence[str]) -> list[str]:
        """Names in ``active_sessions`` that belong to projects which are no longer running.

        A session is lingering when its project has ended (or was requeued), or when it belongs to
        an earlier attempt of its project. Sessions with no project at all are orphans, not
        lingering (see :meth:`find_orphaned_sessions`).
        """
        by_name = {s.name: s for s in self.server.list_owned()}
        lingering: list[str] = []
        for name in active_sessions:
            session = by_name.get(name)
            if session is None or session.project_id is None:
                continue
            try:
                project = self.store.get(session.project_id)
            except OrchestratorError:
                continue
            if project.status != ProjectStatus.PROCESSING or project.session_name != name:
                lingering.append(name)
        return lingering

    def cleanup_lingering(self) -> list[str]:
        """Kill lingering sessions now (``tmo cleanup`` and pre-dequeue cleanup)."""
        names = self._find_lingering_sessions(self.tmux_manager.get_active_sessions())
        killed: list[str] = []
        for session in self.server.list_owned():
            if session.name in names and session.project_id is not None:
                project = self.store.get(session.project_id)
                self.store.close_session(project.id, session.name)
                self.kill_project_session(project, session, reason="lingering", event="lingering_cleaned")
                killed.append(session.name)
        return killed

    # -- daemon ---------------------------------------------------------------------------
    def pause(self) -> None:
        """Stop claiming projects (running ones go on); survives daemon restarts."""
        self.store.set_setting("paused", "1")
        self.store.append_event("queue_paused", source=self.source)
        self.poke_daemon()

    def resume(self) -> None:
        """Claim projects again after :meth:`pause`."""
        self.store.set_setting("paused", "0")
        self.store.append_event("queue_resumed", source=self.source)
        self.poke_daemon()

    def is_paused(self) -> bool:
        """True while the queue is paused."""
        return self.store.get_setting("paused", "0") == "1"

    def poke_daemon(self) -> None:
        """Wake the daemon at once (it would notice the change within ``db_poll_interval``)."""
        fifo = self.settings.fifo_path
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return  # no daemon listening (ENXIO) or no FIFO yet
        try:
            os.write(fd, b"poke\n")
        except OSError:
            pass
        finally:
            os.close(fd)


def _in_session_of(pane_pid: int) -> bool:
    """True if this process belongs to the pane's process session or group (runs inside it)."""
    try:
        return os.getsid(0) == pane_pid or os.getpgid(0) == pane_pid
    except OSError:
        return False


#: The original scheduler's name, kept for its users.
TmuxOrchestratorScheduler = Orchestrator

"""Launching: claim the next projects and start each one in its own session.

A claim takes a slot only while no session of an earlier attempt is still open (see
:meth:`~tmux_orchestrator.store.base.Store.claim_next`). Between the claim and the session,
the project may be ended by someone else (``tmo cancel`` racing the claim): it is looked at again
just before its session is created, and the session's ids are recorded only if its attempt is still
running; otherwise the session just made is killed at once.

One bad row never stops the queue: a project whose stored values cannot run (a command that is not a
list of strings, text that is not UTF-8, a missing directory), or that fails to start for any other
reason, is failed with a message saying what is wrong, and the next one is started.
"""

from __future__ import annotations

import errno
import logging
import os

from tmux_orchestrator.cleanup import Cleaner, CleanupQueue, Target
from tmux_orchestrator.config import Settings
from tmux_orchestrator.errors import InvalidTransition, OrchestratorError, ServerNotRunning, TmuxError
from tmux_orchestrator.processes import is_running
from tmux_orchestrator.project import Outcome, Project, ProjectStatus
from tmux_orchestrator.retries import requeue_after_failure
from tmux_orchestrator.store.base import Store
from tmux_orchestrator.tmux import SessionInfo, SessionSpec, StartedSession
from tmux_orchestrator.tmux.guard import ServerGuard
from tmux_orchestrator.watch import Watcher
from tmux_orchestrator.wrapper import write_wrapper

log = logging.getLogger(__name__)

#: Most projects claimed and started in one go (one chained tmux call holds about 40).
LAUNCH_BATCH = 64


class Launcher:
    """Fills free slots with queued projects."""

    def __init__(self, *, store: Store, settings: Settings, guard: ServerGuard, watcher: Watcher,
                 cleaner: Cleaner, cleanups: CleanupQueue, source: str = "daemon") -> None:
        self.store = store
        self.settings = settings
        self.guard = guard
        self.server = guard.server
        self.watcher = watcher
        self.cleaner = cleaner
        self.cleanups = cleanups
        self.source = source
        #: Claimed projects that could not be given back yet: id -> (project, why).
        self._unclaimed: dict[int, tuple[Project, str]] = {}
        #: Rows that could not even be failed (the database refused): never claimed again by us.
        self.skipped: set[int] = set()

    def claim(self, concurrency: int, limit: int = LAUNCH_BATCH) -> list[Project]:
        """Claim up to ``limit`` queued projects for free slots (none while no server answers:
        raises :class:`TmuxError`, and the daemon tries again after a backoff)."""
        for given_back, why in list(self._unclaimed.values()):
            self._unclaim(given_back, why)
        self._ensure_server()
        claimed: list[Project] = []
        while len(claimed) < limit:
            project = self.store.claim_next(host=self.settings.host, max_processing=concurrency,
                                            runner=self.settings.runner, skip=frozenset(self.skipped),
                                            labels=self.settings.labels)
            if project is None:
                break
            claimed.append(project)
        return claimed

    def launch(self, projects: list[Project]) -> None:
        """Create the sessions of claimed projects with as few tmux calls as fit."""
        specs: list[SessionSpec] = []
        ready: list[Project] = []
        deferred: Deferred | None = None
        still = self.store.attempts([p.id for p in projects])
        for project in projects:
            if still.get(project.id) != (ProjectStatus.PROCESSING.value, project.attempt):
                # Ended (cancelled) between its claim and now: it never gets a session.
                self.store.close_session(project.id, project.session_name)
                log.info("project %s ended before its session was created", project.id,
                         extra={"project_id": project.id, "session_name": project.session_name})
                continue
            try:
                specs.append(self._spec(project))
                ready.append(project)
            except Deferred as exc:
                deferred = deferred or exc
                self._unclaim(project, f"not started: {exc}")
            except CannotRun as exc:
                self._spawn_failed(project, str(exc), retry=exc.retry)
            except Exception as exc:
                log.exception("project %s: cannot prepare its start", project.id)
                self._spawn_failed(project, f"cannot start: {exc}", retry=False)
        if not specs:
            if deferred is not None:
                raise deferred
            return
        try:
            self._ensure_server()
        except TmuxError as exc:
            # No server to start them on: they never started, so they go back to the queue as
            # they were; the daemon tries again once the server answers.
            for project in ready:
                self._unclaim(project, f"not started: {exc}")
            raise
        try:
            results = self.server.start_sessions(specs)
        except TmuxError as exc:
            results = [exc] * len(specs)
        except OSError as exc:  # its pipe log could not be made (a full disk, ...)
            for project in ready:
                self._unclaim(project, f"not started: {exc.strerror or exc}")
            raise Deferred(f"cannot start sessions: {exc.strerror or exc}") from exc
        for project, spec, result in zip(ready, specs, results, strict=True):
            if result is None:  # not tried: an earlier command of the chain failed
                result = self._start_one(spec)
            if isinstance(result, ServerNotRunning):
                self._unclaim(project, f"not started: {result}")
            elif isinstance(result, TmuxError):
                self._spawn_failed(project, f"tmux could not start the session: {result}")
            else:
                self._started(project, result)
        if deferred is not None:
            raise deferred

    def _start_one(self, spec: SessionSpec) -> StartedSession | TmuxError:
        try:
            return self.server.start_session(name=spec.name, project_id=spec.project_id, cwd=spec.cwd,
                                             argv=spec.argv, log_path=spec.log_path)
        except TmuxError as exc:
            return exc

    def _spec(self, project: Project) -> SessionSpec:
        """The session of ``project``; raises :class:`CannotRun` naming what keeps it from running."""
        problems = project.runnable_problems
        if problems:
            raise CannotRun(f"cannot run: {'; '.join(problems)}; fix the row or `tmo remove {project.id}`",
                            retry=False)
        path = project.project_path or str(self.settings.home)
        if not os.path.isdir(path):
            raise CannotRun(f"directory {path} does not exist")
        assert project.session_name is not None
        try:
            # A marker left from an earlier attempt (or planted) must not end this one at once.
            self.settings.marker_path(project.id).unlink(missing_ok=True)
            self.settings.logs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            script = write_wrapper(self.settings, project)
        except UnicodeEncodeError as exc:
            raise CannotRun(f"cannot run: its command or environment is not valid UTF-8 ({exc.reason})",
                            retry=False) from exc
        except OSError as exc:
            if exc.errno in TRANSIENT:
                raise Deferred(f"cannot write its wrapper: {exc.strerror or exc}") from exc
            raise CannotRun(f"cannot write its wrapper: {exc.strerror or exc}") from exc
        return SessionSpec(name=project.session_name, project_id=project.id, cwd=path,
                           argv=["/bin/sh", str(script)], log_path=self.settings.log_path(project.id))

    def _ensure_server(self) -> None:
        """Make sure our server answers before sessions are created on it: a ``new-session`` on a
        missing socket would start a second server while the first lives on unreachable. A dead
        server is not restarted here: reconcile does that (recording the loss of what ran on it,
        with a backoff if it keeps dying); :class:`ServerNotRunning` asks the daemon for it."""
        pid = (self.server.known_instance or "").split(".", 1)[0]
        if pid.isdigit() and is_running(int(pid)) and self.guard.socket_path.exists():
            return
        look = self.guard.look()
        if look.state == "dead":
            raise ServerNotRunning("the tmux server is not running; reconcile restarts it")
        if look.state == "unknown":
            raise TmuxError("the tmux server does not answer on its socket")

    def _started(self, project: Project, started: StartedSession) -> None:
        """Record the ids of a project's new session and watch it; if the project ended
        meanwhile, kill the session just made."""
        project.session_id, project.window_id, project.pane_pid = (
            started.session_id, started.window_id, started.pane_pid)
        project.server_instance = started.instance or project.server_instance
        recorded = self.store.record_session(
            project.id, session_id=started.session_id, window_id=started.window_id,
            pane_pid=started.pane_pid, instance=started.instance or None, attempt=project.attempt,
        )
        if not recorded:
            log.info("project %s ended while its session %s was being created: killing it", project.id,
                     project.session_name,
                     extra={"project_id": project.id, "session_name": project.session_name})
            session = SessionInfo(session_id=started.session_id, name=project.session_name or "",
                                  owner=self.server.owner_tag, project_id=project.id, created=0,
                                  pane_pid=started.pane_pid, window_id=started.window_id, attached=False,
                                  instance=started.instance)
            try:
                current = self.store.get(project.id)
            except OrchestratorError:
                current = project
            target = Target.of_session(session, current, reason="ended before its session started")
            target.current = current.session_name == project.session_name
            self.cleanups.submit([target])
            return
        self.watcher.track(project)
        log.info("started session %s (%s) for project %s: %s", project.session_name, started.session_id,
                 project.id, " ".join(project.command)[:200],
                 extra={"project_id": project.id, "session_name": project.session_name})

    def _unclaim(self, project: Project, why: str) -> None:
        """Give back a claimed project whose session was never created (not a retry, not a
        failure: nothing ran). If even that cannot be written, it is tried again before the next
        claim."""
        try:
            self.store.close_session(project.id, project.session_name)
            self.store.transition(project.id, ProjectStatus.QUEUED, source=self.source, error_message=why,
                                  expected=ProjectStatus.PROCESSING)
        except InvalidTransition:
            pass  # ended meanwhile (cancelled): nothing to give back
        except OrchestratorError as exc:
            log.error("project %s cannot be given back to the queue yet: %s", project.id, exc,
                      extra={"project_id": project.id, "session_name": None})
            self._unclaimed[project.id] = (project, why)
            return
        self._unclaimed.pop(project.id, None)

    def _spawn_failed(self, project: Project, message: str, *, retry: bool = True) -> None:
        """Fail a claimed project that could not start (quarantine: the queue goes on)."""
        log.error("project %s: %s", project.id, message,
                  extra={"project_id": project.id, "session_name": project.session_name})
        try:
            self.store.close_session(project.id, project.session_name)
            failed = self.store.transition(
                project.id, ProjectStatus.FAILED, source=self.source, outcome=Outcome.SPAWN_ERROR,
                error_message=message, expected=ProjectStatus.PROCESSING,
            )
        except InvalidTransition:
            return
        except OrchestratorError as exc:
            log.error("project %s cannot be failed either (%s); it is skipped until the daemon restarts",
                      project.id, exc, extra={"project_id": project.id, "session_name": None})
            self.skipped.add(project.id)
            return
        if retry:
            requeue_after_failure(self.store, failed, source=self.source)


#: errno values of a fault that passes (a full disk, an I/O error): the project is not to blame,
#: so it is given back to the queue, not failed.
TRANSIENT = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.ENOMEM, errno.EMFILE,
                       errno.ENFILE, errno.EAGAIN, errno.EINTR})


class Deferred(OrchestratorError):
    """Projects could not be started for a reason that passes (a full disk): they were given back
    to the queue, and the daemon waits (its step backs off) before it claims again."""


class CannotRun(Exception):
    """A claimed project cannot be started; the message says why."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        #: Whether its retry policy applies (a row that can never run is not retried).
        self.retry = retry

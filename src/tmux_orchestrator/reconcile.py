"""Reconcile: make tmux match the database, which is the truth.

Runs before the daemon claims anything after a start, then every ``reconcile_interval`` seconds:

* **adopted** - a ``processing`` row whose session is alive (after a daemon restart) is watched again,
  neither restarted nor failed;
* **finished late** - a ``processing`` row whose wrapper left an exit file while the daemon was down
  is finished with that real exit code;
* **lost** - a ``processing`` row whose session is gone with no exit recorded becomes failed with
  outcome ``lost``, but only once the absence has been seen twice (a tmux error is "unknown", never
  "missing");
* **lingering** - an owned session whose project has ended (or belongs to an older attempt) is saved
  and killed;
* **orphaned** - an owned session with no project is reported, then killed or kept by policy.

Sessions without this home's ownership tag, and other tmux servers, are never looked at.
"""

from __future__ import annotations

import logging
import signal
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from tmux_orchestrator.errors import (
    InvalidTransition,
    ProjectNotFound,
    TmuxError,
)
from tmux_orchestrator.orchestrator import Orchestrator, SessionRow
from tmux_orchestrator.processes import stop_project_processes
from tmux_orchestrator.project import Outcome, Project, ProjectStatus
from tmux_orchestrator.store.sqlite import SqliteStore
from tmux_orchestrator.tmux import SessionInfo, signal_group
from tmux_orchestrator.wrapper import read_exit_file

if TYPE_CHECKING:
    from tmux_orchestrator.daemon import Daemon

log = logging.getLogger(__name__)

#: A session closed this recently may still be on its way out by itself: not lingering yet.
LINGER_GRACE = timedelta(seconds=2)
#: Exit code of a command killed by SIGHUP: what its terminal closing (server death) gives.
HANGUP_CODE = 128 + signal.SIGHUP
#: Server restarts within this many seconds count towards the crash-loop backoff.
RESTART_WINDOW = 60.0


def classify(owned: list[SessionInfo], store: SqliteStore) -> list[SessionRow]:
    """Sort owned sessions into running, lingering (project ended or older attempt) and orphaned."""
    rows = store.find_by_session([s.name for s in owned])
    out: list[SessionRow] = []
    for session in owned:
        project = rows.get(session.name)
        if project is None and session.project_id is not None:
            try:
                project = store.get(session.project_id)
            except ProjectNotFound:
                project = None
        if project is None:
            out.append(SessionRow(session, "orphaned", None, "no project owns it"))
        elif project.session_name != session.name:
            out.append(SessionRow(session, "lingering", project,
                                  f"older attempt of project {project.id}"))
        elif project.status == ProjectStatus.PROCESSING:
            out.append(SessionRow(session, "running", project, "project is running"))
        else:
            out.append(SessionRow(session, "lingering", project,
                                  f"project {project.id} is {project.status.value}"))
    return out


def classify_sessions(orch: Orchestrator) -> list[SessionRow]:
    """:func:`classify` for every owned session on ``orch``'s server."""
    return classify(orch.server.list_owned(), orch.store)


class Reconciler:
    """Compares rows with owned sessions and drives the difference to zero."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.reported_orphans: set[str] = set()
        self.inflight: set[str] = set()
        self.server_restarts: list[float] = []
        self.retry_server_at = 0.0
        self.last_duration = 0.0
        #: Passes run so far, and whether the last one was skipped because nothing had changed.
        self.passes = 0
        self.last_skipped = False
        self.server_was_down = False
        #: The (sessions, running projects, last event) state of the last pass that found nothing.
        self._settled: tuple[str, frozenset[int], int] | None = None

    @property
    def orch(self) -> Orchestrator:
        """The daemon's orchestrator."""
        return self.daemon.orch

    # -- listing ------------------------------------------------------------------------------
    def _list(self) -> tuple[bool, list[SessionInfo]]:
        """(server alive, owned sessions). Raises TmuxError when tmux cannot answer."""
        return self.daemon.server.snapshot()

    # -- start-up ----------------------------------------------------------------------------
    def startup(self, *, rebooted: bool = False, server_was_down: bool = False) -> None:
        """Before the first claim: adopt, finish or lose every ``processing`` row, then clean up.

        After a reboot (``rebooted``), running projects whose end was not recorded are requeued or
        failed as lost, as ``reboot_policy`` says; a plain restart never takes that path. When the
        tmux server had died while no daemon ran (``server_was_down``), a project whose command
        ended by the hang-up of its terminal (code 129) was killed with the server: it is lost.
        """
        self.server_was_down = server_was_down
        store = self.daemon.store
        settings = self.daemon.settings
        rows = store.list_projects([ProjectStatus.PROCESSING])
        _, owned = self._list()
        missing = self._adopt(rows, {s.name: s for s in owned})
        if rebooted:
            store.append_event(
                "reboot_detected", source="daemon",
                message=f"{len(missing)} running project(s); policy {settings.reboot_policy}"
                + (", queue paused" if settings.pause_after_reboot else ""),
            )
            log.warning("reboot detected: %s project(s) were running", len(missing))
            if settings.pause_after_reboot:
                self.orch.pause()
                self.daemon.paused = True
            for project in missing:
                if settings.reboot_policy == "requeue":
                    self._requeue(project, "requeued after a reboot")
                else:
                    self.lose(project, "the machine rebooted")
            missing = []
        if missing:
            time.sleep(0.2)  # confirm the absence with a second look
            _, owned = self._list()
            for project in self._adopt(missing, {s.name: s for s in owned}):
                if project.session_id is None:
                    # Claimed, but the daemon died before the session existed: it never ran.
                    self._requeue(project, "its session was never started")
                else:
                    self.lose(project, "its session was gone when the daemon started")
        self._close_unclosed(owned)
        self.run()

    def _requeue(self, project: Project, why: str) -> None:
        store = self.daemon.store
        store.close_session(project.id, project.session_name)
        try:
            store.transition(project.id, ProjectStatus.QUEUED, source="daemon", error_message=why,
                             expected=ProjectStatus.PROCESSING)
        except InvalidTransition:
            return
        log.info("project %s %s", project.id, why,
                 extra={"project_id": project.id, "session_name": project.session_name})

    def _adopt(self, rows: list[Project], by_name: dict[str, SessionInfo]) -> list[Project]:
        missing: list[Project] = []
        for project in rows:
            code = read_exit_file(self.daemon.settings.exit_path(project.id, project.attempt))
            if code == HANGUP_CODE and self.server_was_down:
                self.daemon.settings.exit_path(project.id, project.attempt).unlink(missing_ok=True)
                self.lose(project, "the tmux server died while the daemon was away")
                continue
            if code is not None:
                log.info("project %s ended while the daemon was away (code %s)", project.id, code,
                         extra={"project_id": project.id, "session_name": project.session_name})
                self.daemon.finish(project, code)
                continue
            session = by_name.get(project.session_name or "")
            if session is None:
                missing.append(project)
                continue
            if project.session_id != session.session_id and session.pane_pid:
                self.daemon.store.record_session(
                    project.id, session_id=session.session_id, window_id=session.window_id,
                    pane_pid=session.pane_pid,
                )
            self.daemon.track(project)
            log.info("adopted running session %s of project %s", session.name, project.id,
                     extra={"project_id": project.id, "session_name": session.name})
        return missing

    def _close_unclosed(self, owned: list[SessionInfo]) -> None:
        """Rows that ended while their session was open and whose session is now gone: close."""
        alive = {s.name for s in owned}
        for project in self.daemon.store.open_sessions():
            if project.status != ProjectStatus.PROCESSING and project.session_name not in alive:
                self.daemon.store.close_session(project.id, project.session_name)

    # -- periodic pass -----------------------------------------------------------------------
    def run(self) -> None:
        """One reconcile pass."""
        started = time.perf_counter()
        # With a thousand sessions a full pass costs tens of ms; when neither tmux nor the queue
        # changed since a pass that found nothing to do, there is nothing to find. The listing is
        # compared as text, and parsed only when it changed (this runs every 2 s on an idle daemon).
        try:
            alive, fingerprint = self.daemon.server.fingerprint()
        except TmuxError as exc:
            log.warning("reconcile skipped: tmux did not answer (%s)", exc)
            return
        if not alive:
            self._server_lost()
            return
        state = (fingerprint, frozenset(self.daemon.running), self.daemon.store.last_event_id())
        if state == self._settled:
            self.last_duration = time.perf_counter() - started
            self.last_skipped = True
            self.passes += 1
            return
        owned = self.daemon.server.owned_in(fingerprint)
        by_name = {s.name: s for s in owned}
        pending = self._check_running(by_name)
        pending = self._check_sessions(owned) or pending
        if self.daemon.store.count_unclosed_ended():
            self._close_unclosed(owned)
            pending = True
        self._settled = None if pending else state
        self.last_duration = time.perf_counter() - started
        self.last_skipped = False
        self.passes += 1

    def _check_running(self, by_name: dict[str, SessionInfo]) -> bool:
        """Finish or lose running projects whose session is gone; True if any was missing."""
        missing_any = False
        for project_id, running in list(self.daemon.running.items()):
            if running.project.session_name in by_name:
                running.missing = 0
                continue
            missing_any = True
            running.missing += 1
            if running.missing < 2:
                continue
            project = running.project
            code = read_exit_file(self.daemon.settings.exit_path(project.id, project.attempt))
            try:
                current = self.daemon.store.get(project_id)
            except ProjectNotFound:
                self.daemon.running.pop(project_id, None)
                continue
            if code is not None:
                self.daemon.finish(current, code)
            else:
                self.lose(current, "its session vanished without reporting an exit code")
        return missing_any

    def _check_sessions(self, owned: list[SessionInfo]) -> bool:
        """Adopt, clean up or report owned sessions; True if any was not simply running."""
        now = datetime.now(UTC)
        pending = False
        for row in classify(owned, self.daemon.store):
            session, project = row.session, row.project
            pending = pending or row.state != "running"
            if project is None:
                self._orphan(session)
                continue
            if row.state == "running":
                if project.id not in self.daemon.running and project.id not in self.daemon.killing:
                    self.daemon.track(project)
                    log.info("adopted session %s of project %s", session.name, project.id,
                             extra={"project_id": project.id, "session_name": session.name})
                continue
            if project.id in self.daemon.killing or session.session_id in self.inflight:
                continue
            current = project.session_name == session.name
            if current and project.session_closed_at is None:
                self.daemon.cleanup_async(project, reason=f"{project.status.value} (found by reconcile)")
            elif not current or (
                project.session_closed_at is not None and now - project.session_closed_at > LINGER_GRACE
            ):
                self._kill_lingering(project, session)
        return pending

    def _kill_lingering(self, project: Project, session: SessionInfo) -> None:
        self.inflight.add(session.session_id)
        log.info("lingering session %s of %s project %s: killing", session.name,
                 project.status.value, project.id,
                 extra={"project_id": project.id, "session_name": session.name})

        def job() -> None:
            try:
                self.orch.kill_project_session(
                    project, session, reason=f"lingering ({project.status.value})",
                    event="lingering_cleaned",
                )
            finally:
                self.inflight.discard(session.session_id)

        self.daemon.workers.submit(job)

    def _orphan(self, session: SessionInfo) -> None:
        store = self.daemon.store
        policy = self.daemon.settings.orphan_policy
        if session.session_id not in self.reported_orphans:
            self.reported_orphans.add(session.session_id)
            store.append_event(
                "orphan_found", source="daemon", session_name=session.name,
                message=f"owned session {session.session_id} has no project (policy: {policy})",
            )
            log.warning("orphaned session %s (%s): %s", session.name, session.session_id, policy,
                        extra={"project_id": None, "session_name": session.name})
        if policy == "kill":
            # kill-session first: it makes the kill (and so its event) ours; then SIGTERM whatever
            # of the group ignored the hang-up.
            killed = self.daemon.server.kill_one(session)
            signal_group(session.pane_pid, signal.SIGTERM)
            if killed:
                store.append_event(
                    "session_killed", source="daemon", session_name=session.name, message="orphan",
                )

    # -- failures ----------------------------------------------------------------------------
    def lose(self, project: Project, why: str) -> None:
        """Fail a running project whose session is gone with no recorded end (outcome ``lost``)."""
        self.daemon.running.pop(project.id, None)
        try:
            failed = self.daemon.store.transition(
                project.id, ProjectStatus.FAILED, source="daemon", outcome=Outcome.LOST,
                error_message=f"lost: {why}", expected=ProjectStatus.PROCESSING,
            )
        except InvalidTransition:
            return
        self.daemon.store.close_session(project.id, project.session_name)
        # Whatever of the attempt still runs without its session must not live on (or run twice
        # once the project is retried).
        settings = self.daemon.settings
        self.daemon.workers.submit(
            lambda: stop_project_processes(project.pane_pid, project.id, settings.home, settings.kill_grace)
        )
        run_dir = self.daemon.settings.run_dir
        for suffix in ("exit", "sh"):
            (run_dir / f"{project.id}-{project.attempt}.{suffix}").unlink(missing_ok=True)
        log.warning("project %s lost: %s", project.id, why,
                    extra={"project_id": project.id, "session_name": project.session_name})
        self.orch.requeue_after_failure(failed)

    def _server_lost(self) -> None:
        """The tmux server is gone: every running project is lost; restart it, with backoff."""
        now = time.monotonic()
        if self.daemon.running:
            log.error("the tmux server is gone; %s running project(s) lost", len(self.daemon.running))
        for project_id in list(self.daemon.running):
            try:
                project = self.daemon.store.get(project_id)
            except ProjectNotFound:
                self.daemon.running.pop(project_id, None)
                continue
            self.lose(project, "the tmux server died")
        if now < self.retry_server_at:
            return
        self.server_restarts = [t for t in self.server_restarts if now - t < RESTART_WINDOW]
        self.server_restarts.append(now)
        # Crash loop: back off 1, 2, 4 ... 60 s once the server died 3 times within a minute.
        if len(self.server_restarts) >= 3:
            delay = min(60.0, 2.0 ** (len(self.server_restarts) - 3))
            self.retry_server_at = now + delay
            log.warning("tmux server keeps dying; next restart attempt in %.0fs", delay)
        try:
            self.daemon.server.ensure_running(
                history_limit=self.daemon.settings.history_limit,
                window_size=self.daemon.settings.window_size,
            )
        except TmuxError as exc:
            log.error("cannot restart the tmux server: %s", exc)
            return
        self.daemon.store.append_event("server_started", source="daemon",
                                       message=str(self.daemon.settings.socket_path))


"""Reconcile: make tmux match the database, which is the truth.

Runs before the daemon claims anything after a start, then every ``reconcile_interval`` seconds. It
looks only at this daemon's own projects (claimed by this host and home) and at sessions carrying
this home's tag on its own server; another daemon's projects are never judged by our tmux server.

* **adopted** - a ``processing`` row whose session is alive (after a daemon restart) is watched again;
* **finished late** - a ``processing`` row whose wrapper left an exit file while the daemon was down
  is finished with that real exit code;
* **lost** - a ``processing`` row whose session is gone with no exit recorded becomes failed with
  outcome ``lost`` once the absence has been seen twice (a tmux error is "unknown", never
  "missing"; a lost keeper or socket is repaired, not taken for a dead server);
* **never started** - a row claimed by a daemon that died before its session existed (no session,
  no ``started`` marker from the wrapper) is queued again; one whose wrapper did start is lost;
* **lingering** - an owned session whose project has ended (or an older attempt's) is cleaned up;
* **orphaned** - an owned session with no project is reported, then killed or kept by policy;
* **closed** - an ended row whose session is gone has what is left of its processes stopped, and its
  session closed, which frees its slot.

Every clean-up goes through :mod:`tmux_orchestrator.cleanup`, so whoever else is cleaning the same
session (the CLI, another pass) it happens once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tmux_orchestrator.cleanup import CleanupQueue, Target, owner_gone
from tmux_orchestrator.config import Settings
from tmux_orchestrator.errors import InvalidTransition, OrchestratorError, ProjectNotFound, TmuxError
from tmux_orchestrator.project import Project, ProjectStatus
from tmux_orchestrator.store.base import Store
from tmux_orchestrator.timestamps import format_epoch
from tmux_orchestrator.tmux import SessionInfo
from tmux_orchestrator.tmux.guard import Look, ServerGuard
from tmux_orchestrator.watch import HANGUP_CODE, Watcher

log = logging.getLogger(__name__)

#: Server restarts within this many seconds count towards the crash-loop backoff.
RESTART_WINDOW = 60.0


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
            "created": format_epoch(self.session.created) if self.session.created else None,
            "attached": self.session.attached,
            "project_id": self.project_id,
            "project_status": self.project_status,
            "state": self.state,
            "reason": self.reason,
        }


def classify(owned: list[SessionInfo], store: Store) -> list[SessionRow]:
    """Sort owned sessions into running, lingering (project ended, or an older attempt) and orphaned."""
    rows = store.find_by_session([s.name for s in owned])
    out: list[SessionRow] = []
    for session in owned:
        # The session's own @tmo_project tag names its project; its name only when it has no tag
        # (a row's session name may have been edited to another project's).
        project = rows.get(session.name)
        if session.project_id is not None and (project is None or project.id != session.project_id):
            try:
                project = store.get(session.project_id)
            except ProjectNotFound:
                project = None
        if project is None:
            out.append(SessionRow(session, "orphaned", None, "no project owns it"))
        elif not session.is_session(project.server_instance, project.session_id, project.session_name,
                                    project.id):
            out.append(SessionRow(session, "lingering", project, f"older attempt of project {project.id}"))
        elif project.status == ProjectStatus.PROCESSING:
            out.append(SessionRow(session, "running", project, "project is running"))
        else:
            out.append(SessionRow(session, "lingering", project,
                                  f"project {project.id} is {project.status.value}"))
    return out


def classify_sessions(orch: Any) -> list[SessionRow]:
    """:func:`classify` for every owned session on ``orch``'s server (an ``Orchestrator``)."""
    return classify(orch.server.list_owned(), orch.store)


def is_ours(project: Project, settings: Settings) -> bool:
    """True if ``project`` runs (or ran) on this home's tmux server: claimed by this home's daemon,
    whatever host name it had then (rows of older releases, with no runner: by host)."""
    if project.runner is not None:
        return project.runner == settings.runner or project.runner.endswith(f":{settings.home_key}")
    return project.host in (None, settings.host)


class Reconciler:
    """Compares this daemon's rows with its owned sessions and drives the difference to zero."""

    def __init__(self, *, store: Store, settings: Settings, guard: ServerGuard, watcher: Watcher,
                 cleanups: CleanupQueue, event: Callable[[str, str], None]) -> None:
        self.store = store
        self.settings = settings
        self.guard = guard
        self.server = guard.server
        self.watcher = watcher
        self.cleanups = cleanups
        #: Records a daemon event (kind, message).
        self.event = event
        self.reported_orphans: set[str] = set()
        #: processing rows nobody watches, by id: how many passes saw them so.
        self._unwatched: dict[int, int] = {}
        self.server_restarts: list[float] = []
        self.retry_server_at = 0.0
        self.last_duration = 0.0
        #: Passes run so far, and whether the last one was skipped because nothing had changed.
        self.passes = 0
        self.last_skipped = False
        self.server_was_down = False
        #: The state of the last pass that found nothing to do.
        self._settled: tuple[str, frozenset[int], int] | None = None

    @property
    def settled(self) -> bool:
        """True when the last pass found nothing to do (every session matches its row)."""
        return self._settled is not None

    # -- looking ------------------------------------------------------------------------------
    def look(self) -> Look:
        """Look at the server, recording what was repaired on the way."""
        look = self.guard.look()
        for kind in self.guard.take_repairs():
            self.event(kind, str(self.settings.socket_path))
        return look

    def start_server(self) -> None:
        """Start this home's server (it is dead or was never started)."""
        self.server.ensure_running(history_limit=self.settings.history_limit,
                                   window_size=self.settings.window_size)
        self.guard.look()

    # -- start-up ----------------------------------------------------------------------------
    def startup(self, *, rebooted: bool = False) -> None:
        """Before the first claim: adopt, finish or lose every ``processing`` row, then clean up.

        After a reboot (``rebooted``), running projects whose end was not recorded are requeued or
        failed as lost, as ``reboot_policy`` says; a plain restart never takes that path. When the
        tmux server had died while no daemon ran, a project whose command ended by the hang-up of
        its terminal (code 129) was killed with the server: it is lost.
        """
        look = self.look()
        if look.state == "unknown":
            raise TmuxError("the tmux server of this home does not answer on its socket "
                            f"{self.settings.socket_path}; see `tmo doctor`")
        self.server_was_down = look.state == "dead"
        if self.server_was_down:
            self.start_server()
            look = self.look()
        rows = [p for p in self.store.list_projects([ProjectStatus.PROCESSING]) if is_ours(p, self.settings)]
        missing = self._adopt(rows, look.view.owned if look.view else [])
        if rebooted:
            self.event("reboot_detected",
                       f"{len(missing)} running project(s); policy {self.settings.reboot_policy}"
                       + (", queue paused" if self.settings.pause_after_reboot else ""))
            log.warning("reboot detected: %s project(s) were running", len(missing))
            for project in missing:
                if self.settings.reboot_policy == "requeue":
                    self._requeue(project, "requeued after a reboot")
                else:
                    self.watcher.lose(project, "the machine rebooted")
            missing = []
        if missing:
            time.sleep(0.2)  # confirm the absence with a second look
            look = self.look()
            for project in self._adopt(missing, look.view.owned if look.view else []):
                if not self._ran(project):
                    # Claimed, but the daemon died before the session existed: it never ran.
                    self._requeue(project, "its session was never started")
                else:
                    self.watcher.lose(project, "its session was gone when the daemon started")
        self.run()

    def _ran(self, project: Project) -> bool:
        """True if the attempt's session was recorded or its wrapper left its started marker."""
        if project.session_id is not None:
            return True
        return self.settings.started_path(project.id, project.attempt).exists()

    def _requeue(self, project: Project, why: str) -> None:
        self.store.close_session(project.id, project.session_name)
        try:
            self.store.transition(project.id, ProjectStatus.QUEUED, source="daemon", error_message=why,
                                  expected=ProjectStatus.PROCESSING)
        except InvalidTransition:
            return
        log.info("project %s %s", project.id, why,
                 extra={"project_id": project.id, "session_name": project.session_name})

    def _adopt(self, rows: list[Project], owned: list[SessionInfo]) -> list[Project]:
        """Watch rows whose session lives, finish those that left an exit code; the rest."""
        missing: list[Project] = []
        for project in rows:
            code = self.watcher.exit_code_of(project)
            if code == HANGUP_CODE and self.server_was_down:
                self.watcher.lose(project, "the tmux server died while the daemon was away")
                continue
            if code is not None:
                log.info("project %s ended while the daemon was away (code %s)", project.id, code,
                         extra={"project_id": project.id, "session_name": project.session_name})
                self.watcher.finish(project, code)
                continue
            session = find_session(project, owned)
            if session is None:
                missing.append(project)
                continue
            if project.session_id != session.session_id or project.server_instance != session.instance:
                # Started by a daemon that died before recording it (or by an older release).
                self.store.record_session(project.id, session_id=session.session_id,
                                          window_id=session.window_id, pane_pid=session.pane_pid or 0,
                                          instance=session.instance)
                project.session_id, project.server_instance = session.session_id, session.instance
                project.pane_pid, project.window_id = session.pane_pid, session.window_id
            self.watcher.track(project)
            log.info("adopted running session %s of project %s", session.name, project.id,
                     extra={"project_id": project.id, "session_name": session.name})
        return missing

    # -- periodic pass -----------------------------------------------------------------------
    def run(self) -> None:
        """One reconcile pass."""
        started = time.perf_counter()
        look = self.look()
        if look.state == "unknown":
            log.warning("reconcile skipped: the tmux server does not answer")
            return
        if look.state == "dead":
            self._server_lost()
            return
        assert look.view is not None
        # With a thousand sessions a full pass costs tens of ms; when neither tmux nor the queue
        # changed since a pass that found nothing to do, there is nothing to find.
        state = (look.view.text, frozenset(self.watcher.running), self.store.last_event_id())
        if state == self._settled and self.cleanups.idle():
            self.last_duration = time.perf_counter() - started
            self.last_skipped = True
            self.passes += 1
            return
        owned = look.view.owned
        pending = self._check_running(owned)
        pending = self._check_sessions(owned) or pending
        pending = self._check_open_rows(owned) or pending
        pending = self._check_unwatched(owned) or pending
        self._drop_stale_claims(owned)
        self._settled = None if pending else state
        self.last_duration = time.perf_counter() - started
        self.last_skipped = False
        self.passes += 1

    def _check_running(self, owned: list[SessionInfo]) -> bool:
        """Finish or lose watched projects whose session is gone; True if any was missing."""
        missing_any = False
        for project_id, running in list(self.watcher.running.items()):
            project = running.project
            if find_session(project, owned) is not None:
                running.missing = 0
                continue
            missing_any = True
            running.missing += 1
            if running.missing < 2 or (project.id, project.attempt) in self.watcher.pending_exits:
                continue
            code = self.watcher.exit_code_of(project)
            try:
                current = self.store.get(project_id)
            except ProjectNotFound:
                self.watcher.running.pop(project_id, None)
                continue
            if code is not None:
                self.watcher.finish(current, code)
            else:
                self.watcher.lose(current, "its session vanished without reporting an exit code")
        return missing_any

    def _check_sessions(self, owned: list[SessionInfo]) -> bool:
        """Adopt, clean up or report owned sessions; True if any was not simply running."""
        pending = False
        lingering: list[Target] = []
        for row in classify(owned, self.store):
            session, project = row.session, row.project
            pending = pending or row.state != "running"
            if project is None:
                self._orphan(session)
                continue
            if row.state == "running":
                if (project.id not in self.watcher.running and is_ours(project, self.settings)
                        and not self.cleanups.busy_project(project.id)):
                    self.watcher.track(project)
                    log.info("adopted session %s of project %s", session.name, project.id,
                             extra={"project_id": project.id, "session_name": session.name})
                continue
            target = Target.of_session(session, project, reason=f"lingering ({row.reason})",
                                       kind="lingering_cleaned")
            if not self.cleanups.busy(target.key):
                lingering.append(target)
        if lingering:
            self.cleanups.submit(lingering)
        return pending

    def _check_unwatched(self, owned: list[SessionInfo]) -> bool:
        """``processing`` rows of ours that nobody watches and that have no session (set by hand
        with SQL, say): after a second look, finished with the code the attempt left, queued again
        if it never started, or lost."""
        pending = False
        seen: dict[int, int] = {}
        for project in self.store.list_projects([ProjectStatus.PROCESSING]):
            if (project.id in self.watcher.running or not is_ours(project, self.settings)
                    or self.cleanups.busy_project(project.id) or find_session(project, owned) is not None):
                continue
            pending = True
            seen[project.id] = self._unwatched.get(project.id, 0) + 1
            if seen[project.id] < 2:
                continue
            del seen[project.id]
            code = self.watcher.exit_code_of(project)
            if code is not None:
                self.watcher.finish(project, code)
            elif not self._ran(project):
                self._requeue(project, "it was processing without a session (set by hand?)")
            else:
                self.watcher.lose(project, "its session is gone and no daemon watched it")
        self._unwatched = seen
        return pending

    def _check_open_rows(self, owned: list[SessionInfo]) -> bool:
        """Ended rows whose session is gone but not closed: stop what is left, then close."""
        listed = {s.name for s in owned}
        targets: list[Target] = []
        for project in self.store.open_sessions():
            if (project.status == ProjectStatus.PROCESSING or project.session_name in listed
                    or not is_ours(project, self.settings) or self.cleanups.busy_project(project.id)):
                continue
            if project.session_id is None and not self._ran(project):
                self.store.close_session(project.id, project.session_name)  # never had a session
                continue
            target = Target.of_project(project, None, reason=f"{project.status.value}: session gone")
            target.trusted_group = False
            targets.append(target)
        if targets:
            self.cleanups.submit(targets)
        return bool(targets)

    def _drop_stale_claims(self, owned: list[SessionInfo]) -> None:
        """Forget claims left by a cleaner that died after its session was gone (an orphan's, or
        one whose row was closed meanwhile); a claim on an open row is taken over instead."""
        listed = {s.key for s in owned}
        stale: list[str] = []
        for claim in self.store.claims():
            if claim["session_key"] in listed or self.cleanups.busy(claim["session_key"]):
                continue
            if not owner_gone(claim["owner"]):
                continue
            if claim["project_id"] is not None:
                try:
                    row = self.store.get(int(claim["project_id"]))
                except ProjectNotFound:
                    row = None
                if (row is not None and row.session_name == claim["session_name"]
                        and row.session_closed_at is None):
                    continue
            stale.append(claim["session_key"])
        if stale:
            self.store.drop_claims(stale)

    def _orphan(self, session: SessionInfo) -> None:
        policy = self.settings.orphan_policy
        if session.key not in self.reported_orphans:
            self.reported_orphans.add(session.key)
            self.store.append_event(
                "orphan_found", source="daemon", session_name=session.name,
                message=f"owned session {session.session_id} has no project (policy: {policy})",
            )
            log.warning("orphaned session %s (%s): %s", session.name, session.session_id, policy,
                        extra={"project_id": None, "session_name": session.name})
        if policy == "kill":
            target = Target.of_session(session, None, reason="orphan")
            if not self.cleanups.busy(target.key):
                self.cleanups.submit([target])

    # -- failures ----------------------------------------------------------------------------
    def _server_lost(self) -> None:
        """The tmux server process is gone: every running project is lost; restart it, with backoff."""
        now = time.monotonic()
        if self.watcher.running:
            log.error("the tmux server is gone; %s running project(s) lost", len(self.watcher.running))
        for project_id in list(self.watcher.running):
            try:
                project = self.store.get(project_id)
            except ProjectNotFound:
                self.watcher.running.pop(project_id, None)
                continue
            self.watcher.lose(project, "the tmux server died")
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
            self.start_server()
        except (TmuxError, OrchestratorError) as exc:
            log.error("cannot restart the tmux server: %s", exc)
            return
        self.event("server_started", str(self.settings.socket_path))


def find_session(project: Project, owned: list[SessionInfo]) -> SessionInfo | None:
    """The live session of ``project``'s current attempt: same instance, ``$id`` and name, or for
    an attempt whose ids were never recorded, the owned session with its name and project tag."""
    for session in owned:
        if project.session_id is None:
            if session.name == project.session_name and session.project_id == project.id:
                return session
        elif session.is_session(project.server_instance, project.session_id, project.session_name,
                                project.id):
            return session
    return None

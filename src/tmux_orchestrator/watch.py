"""End detection: how the daemon learns that a running project ended, and records it.

A project ends by one of these, each noticed here:

* its command exits: the wrapper writes ``exit <id> <attempt> <code>`` into the FIFO (0.5 ms);
* it writes its marker file (``$TMO_DONE_FILE``);
* its ``--timeout`` or ``--idle-timeout`` passes;
* someone else ends it: ``tmo complete``/``cancel``, the API, a hand-written SQL change (the
  events table, read after a cursor whenever ``PRAGMA data_version`` moved);
* its session vanishes with no exit recorded (reconcile calls :meth:`Watcher.lose`).

Every end is written to the database first; an exit that cannot be written (a full disk, a locked
database) is kept in memory and written again on the next wake-up, never lost. Then the session
goes through the one clean-up engine (:mod:`tmux_orchestrator.cleanup`): a project that exited by
itself is settled inline in a few milliseconds, anything that must be killed on a worker thread.
"""

from __future__ import annotations

import heapq
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from tmux_orchestrator.agent_state import AgentState, StateSource
from tmux_orchestrator.cleanup import Cleaner, CleanupQueue, Target, remove_run_files
from tmux_orchestrator.config import Settings
from tmux_orchestrator.errors import InvalidTransition, OrchestratorError, ProjectNotFound, TmuxError
from tmux_orchestrator.home import read_marker
from tmux_orchestrator.project import Outcome, Project, ProjectStatus, outcome_for_exit
from tmux_orchestrator.retries import requeue_after_failure
from tmux_orchestrator.store.base import Store
from tmux_orchestrator.tmux import OrchestratorServer, SessionInfo
from tmux_orchestrator.wrapper import ExitMessage, exit_option, parse_fifo_line, parse_marker, read_exit_file

if TYPE_CHECKING:
    from tmux_orchestrator.metrics import DaemonMetrics

log = logging.getLogger(__name__)

#: Exit code of a command killed by SIGHUP: what its terminal closing (server death) gives.
HANGUP_CODE = 128 + signal.SIGHUP
#: Status events that may concern a running project.
STATUS_KINDS = ["queued", "started", "completed", "failed", "cancelled", "retried", "requeued", "removed"]


def describe_exit(code: int) -> str:
    """``exited with code 3`` or ``killed by SIGTERM``."""
    if code > 128:
        try:
            return f"killed by {signal.Signals(code - 128).name}"
        except ValueError:
            pass
    return f"exited with code {code}"


@dataclass
class Running:
    """What the daemon tracks for a project whose session runs."""

    project: Project
    deadline: float | None = None
    idle_timeout: float | None = None
    log_size: int = -1
    last_output: float = field(default_factory=time.monotonic)
    missing: int = 0
    #: The agent state its output activity last gave (``check_idle``); None before any.
    activity_state: AgentState | None = None


def session_of_row(project: Project, owner_tag: str) -> SessionInfo | None:
    """The session a row recorded, as a :class:`SessionInfo` (None if none was recorded)."""
    if not project.session_name or not project.session_id:
        return None
    return SessionInfo(session_id=project.session_id, name=project.session_name, owner=owner_tag,
                       project_id=project.id, created=0, pane_pid=project.pane_pid,
                       window_id=project.window_id or "", attached=False,
                       instance=project.server_instance or "")


class Watcher:
    """The daemon's running projects, and every way it learns that one ended."""

    def __init__(self, *, store: Store, settings: Settings, server: OrchestratorServer,
                 cleaner: Cleaner, cleanups: CleanupQueue, metrics: DaemonMetrics,
                 source: str = "daemon") -> None:
        self.store = store
        self.settings = settings
        self.server = server
        self.cleaner = cleaner
        self.cleanups = cleanups
        self.metrics = metrics
        self.source = source
        self.running: dict[int, Running] = {}
        #: (monotonic deadline, project id, attempt) of running projects with a timeout.
        self._deadlines: list[tuple[float, int, int]] = []
        #: Exits read from the FIFO and not written to the database yet: (id, attempt) -> (code, when).
        self.pending_exits: dict[tuple[int, int], tuple[int, float]] = {}
        #: Projects stopped while the database was out of reach (fencing), to be recorded lost
        #: once it answers: id -> (the project as it ran, why, what was done to its session).
        self.fenced: dict[int, tuple[Project, str, Target]] = {}
        self._exits_failures = 0
        self._exits_retry_at = 0.0
        self._fifo_buffer = b""
        self.event_cursor = 0
        self._run_dir_mtime = 0.0
        self._run_dir = str(settings.run_dir)  # stat()ed on every wake-up: no Path objects

    # -- the running set -----------------------------------------------------------------------
    def track(self, project: Project) -> None:
        """Watch a running project (just started or adopted after a restart)."""
        deadline = None
        if project.timeout:
            elapsed = 0.0
            if project.started_at is not None:
                elapsed = max(0.0, (datetime.now(UTC) - project.started_at).total_seconds())
            deadline = time.monotonic() + project.timeout - elapsed
        self.running[project.id] = Running(project=project, deadline=deadline,
                                           idle_timeout=project.idle_timeout)
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, project.id, project.attempt))

    def next_deadline(self) -> float | None:
        """Monotonic time of the earliest timeout, if any."""
        return self._deadlines[0][0] if self._deadlines else None

    def target(self, project: Project, *, reason: str, kind: str = "session_killed") -> Target:
        """The clean-up target of ``project``'s current session, as the daemon knows it."""
        target = Target.of_project(project, session_of_row(project, self.server.owner_tag),
                                   reason=reason, kind=kind)
        target.trusted_group = project.id in self.running or target.session is not None
        return target

    # -- the FIFO ------------------------------------------------------------------------------
    def read_fifo(self, fd: int) -> None:
        """Read whatever the wrappers (and CLI pokes) wrote, and handle the exits."""
        try:
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                self._fifo_buffer += chunk
        except BlockingIOError:
            pass
        *lines, self._fifo_buffer = self._fifo_buffer.split(b"\n")
        received = time.time()  # the wrapper wrote ~0.5 ms before: the end, for metrics
        for raw in lines:
            try:
                message = parse_fifo_line(raw.decode(errors="replace"))
            except ValueError:  # anyone who can write the FIFO can write garbage: ignore it
                message = None
            if message is not None:
                self.pending_exits[(message.project_id, message.attempt)] = (message.exit_code, received)
        self.apply_exits()

    def apply_exits(self) -> None:
        """Record the exits read so far; one that cannot be written stays pending (not lost) and
        is tried again after a backoff (0.2 s doubling to 5 s, one log line each time)."""
        if self.pending_exits and time.monotonic() < self._exits_retry_at:
            return
        for key, (code, received) in list(self.pending_exits.items()):
            try:
                self.on_exit(ExitMessage(key[0], key[1], code), received)
            except OrchestratorError as exc:
                self._exits_failures += 1
                delay = min(5.0, 0.2 * 2 ** (self._exits_failures - 1))
                self._exits_retry_at = time.monotonic() + delay
                log.error("project %s: cannot record its end yet (%s); trying again in %.1fs", key[0],
                          exc, delay, extra={"project_id": key[0], "session_name": None})
                return
            self.pending_exits.pop(key, None)
        self._exits_failures = 0

    def on_exit(self, message: ExitMessage, received: float | None = None) -> None:
        """A wrapper reported its command's exit code."""
        try:
            project = self.store.get(message.project_id)
        except ProjectNotFound:
            return
        if project.attempt != message.attempt:
            return  # an older attempt's late report: its own clean-up closes it
        was_running = project.status == ProjectStatus.PROCESSING
        self.finish(project, message.exit_code,
                    ended_at=datetime.fromtimestamp(received, UTC) if received else None)
        self.metrics.end_detected("exit", received if was_running else None)

    def exit_code_of(self, project: Project) -> int | None:
        """The exit code ``project``'s current attempt left: in its exit file, or, when no file
        could hold it (a full disk, a deleted run directory), in the tmux server's memory (the
        wrapper's fallback, :func:`~tmux_orchestrator.wrapper.exit_option`). None if neither."""
        code = read_exit_file(self.settings.exit_path(project.id, project.attempt))
        if code is not None:
            return code
        option = exit_option(project.id, project.attempt)
        try:
            text = self.server.tmux.run(["show-options", "-sqv", option], check=False).stdout.strip()
        except TmuxError:
            return None
        if not text.lstrip("-").isdigit():
            return None
        self.server.tmux.run(["set-option", "-su", option], check=False)
        return int(text)

    # -- ends --------------------------------------------------------------------------------
    def finish(self, project: Project, exit_code: int, *, ended_at: datetime | None = None) -> Project:
        """Record that ``project``'s command exited with ``exit_code``, and settle its session.

        The command is gone, so its process group and session end by themselves within a few
        milliseconds: that is confirmed first, and then the end and the closed session are
        written in one transaction (the slot is free in the same commit that frees it). What is
        left behind (a child that ignores the hang-up) is stopped by the clean-up engine.
        """
        watched = self.running.pop(project.id, None)
        # The session this daemon started and watched, if it did (the row's ids may have been
        # edited since); else the one the row records.
        mine = watched is not None and watched.project.attempt == project.attempt
        target = self.target(watched.project if mine and watched else project,
                             reason=f"exited ({describe_exit(exit_code)})")
        target.project = project
        target.trusted_group = mine or target.session is not None
        open_session = project.session_closed_at is None and bool(project.session_name)
        gone = open_session and not self.cleanups.busy(target.key) and self.cleaner.exited_and_gone(target)
        ended_here = False
        if project.status == ProjectStatus.PROCESSING:
            outcome = outcome_for_exit(exit_code)
            if exit_code == HANGUP_CODE and not self.server.process_alive():
                outcome = Outcome.LOST  # the tmux server died under it
            try:
                project = self.store.transition(
                    project.id, ProjectStatus.COMPLETED if exit_code == 0 else ProjectStatus.FAILED,
                    source=self.source, outcome=outcome, exit_code=exit_code,
                    error_message=None if exit_code == 0 else describe_exit(exit_code),
                    expected=ProjectStatus.PROCESSING, close_session=gone, ended_at=ended_at,
                )
                ended_here = True
            except InvalidTransition:
                project = self.store.get(project.id)
            except OrchestratorError:
                if watched is not None:
                    self.running[project.id] = watched  # not recorded: still ours to watch
                raise
        elif project.outcome in (Outcome.TIMEOUT, Outcome.IDLE):
            # Ended by the daemon for running too long or too quietly: how the command died
            # (143 = SIGTERM, 137 = SIGKILL) is worth keeping. After a manual end, a cancel or a
            # marker it would only be the echo of our own kill, so it is not recorded.
            self.store.set_exit_code(project.id, exit_code)
        if ended_here:
            log.info("project %s %s (%s) in session %s", project.id, project.status.value,
                     describe_exit(exit_code), project.session_name,
                     extra={"project_id": project.id, "session_name": project.session_name})
        if open_session and project.attempt == target.attempt:
            if gone:
                if not ended_here:
                    self.store.close_session(project.id, target.name)
                remove_run_files(self.settings, project.id, project.attempt)
            elif not self.cleanups.busy(target.key):
                self.cleanups.submit([target])
        if ended_here and project.status == ProjectStatus.FAILED:
            requeue_after_failure(self.store, project, source=self.source)
        return project

    def end_running(self, project_id: int, status: ProjectStatus, *, outcome: Outcome,
                    message: str | None, reason: str) -> None:
        """End a running project by the daemon's decision (timeout, idle, marker) and stop it."""
        running = self.running.pop(project_id, None)
        if running is None:
            return
        try:
            project = self.store.transition(project_id, status, source=self.source, outcome=outcome,
                                            error_message=message, expected=ProjectStatus.PROCESSING)
        except InvalidTransition:
            project = self.store.get(project_id)
        except OrchestratorError:
            self.running[project_id] = running  # not recorded: try again on the next wake-up
            if running.deadline is not None:
                heapq.heappush(self._deadlines, (time.monotonic() + 1.0, project_id, running.project.attempt))
            raise
        log.info("project %s: %s -> %s", project_id, reason, project.status.value,
                 extra={"project_id": project_id, "session_name": project.session_name})
        self.cleanups.submit([self.target(project if project.attempt == running.project.attempt
                                          else running.project, reason=reason)])
        if project.status == ProjectStatus.FAILED:
            requeue_after_failure(self.store, project, source=self.source)

    def lose(self, project: Project, why: str) -> None:
        """Fail a running project whose session is gone with no recorded end (outcome ``lost``),
        and stop whatever of it still runs without its session."""
        self.running.pop(project.id, None)
        try:
            failed = self.store.transition(
                project.id, ProjectStatus.FAILED, source=self.source, outcome=Outcome.LOST,
                error_message=f"lost: {why}", expected=ProjectStatus.PROCESSING,
            )
        except InvalidTransition:
            return
        log.warning("project %s lost: %s", project.id, why,
                    extra={"project_id": project.id, "session_name": project.session_name})
        target = Target.of_project(failed, None, reason=f"lost: {why}")
        target.trusted_group = False  # its session is gone: leftovers are found by environment
        self.cleanups.submit([target])
        requeue_after_failure(self.store, failed, source=self.source)

    def fence_all(self, why: str) -> None:
        """Stop every running project now, without the database (see :mod:`membership`). Safe to
        call from another thread while the loop is stuck in a database call: it only reads the
        running set; the loop records what was stopped (:meth:`record_fenced`)."""
        running = dict(self.running)  # one atomic copy
        targets = []
        for project_id, watched in running.items():
            if project_id in self.fenced:
                continue
            target = self.target(watched.project, reason=why)
            targets.append(target)
            self.fenced[project_id] = (watched.project, why, target)
        if targets:
            self.cleaner.stop_offline(targets)

    def record_fenced(self) -> None:
        """The database answers again: record the projects fencing stopped as lost (unless the
        other hosts already did), so their retry policy applies."""
        for project_id, (project, why, target) in list(self.fenced.items()):
            try:
                current = self.store.get(project_id)
            except ProjectNotFound:
                current = None
            # the kill that fencing did, now that it can be written down
            self.store.append_events(self.cleaner.kill_events(target), source=self.source)
            if (current is not None and current.status == ProjectStatus.PROCESSING
                    and current.attempt == project.attempt):
                self.lose(current, why)
            else:
                self.running.pop(project_id, None)
            self.fenced.pop(project_id, None)

    def ended_elsewhere(self, project_id: int, why: str) -> bool:
        """A running project was ended by someone else (CLI, API, SQL): clean its session up.

        The event that brought us here may be older than the running attempt (a ``queued`` event
        read only after the project was claimed), so the row decides: as long as it still says
        ``processing`` for the same attempt, nothing has ended. Returns True if it had ended.
        """
        running = self.running.get(project_id)
        if running is None:
            return False
        project: Project | None
        try:
            project = self.store.get(project_id)
        except ProjectNotFound:
            project = None  # deleted by hand while running: still clean up
        if (project is not None and project.status == ProjectStatus.PROCESSING
                and project.attempt == running.project.attempt):
            return False
        self.running.pop(project_id, None)
        log.info("project %s %s", project_id, why,
                 extra={"project_id": project_id, "session_name": running.project.session_name})
        # The session is the one this daemon started and watched (the row's ids may have been
        # edited since); the row, if it is still there, says how the project ended.
        target = self.target(running.project, reason=why)
        # still the row's own session, not closed yet (a dead host's rows are closed for it: its
        # sessions are then stopped without freeing a slot twice)
        target.current = (project is not None and project.attempt == running.project.attempt
                          and project.session_closed_at is None)
        if project is not None:
            target.project = project
        target.trusted_group = True
        self.cleanups.submit([target])
        return True

    # -- wake sources ------------------------------------------------------------------------
    def check_database(self) -> None:
        """Status events written by others since the cursor: ends of running projects."""
        while True:
            batch = self.store.events_after(self.event_cursor, kinds=STATUS_KINDS, limit=10000)
            for event in batch:
                self.event_cursor = max(self.event_cursor, event.id)
                if (
                    event.project_id in self.running
                    and event.new_status != ProjectStatus.PROCESSING.value
                    and self.ended_elsewhere(event.project_id,
                                             f"{event.new_status or event.kind} by {event.source}")
                ):
                    self.metrics.end_detected("database", event.at.timestamp())
            if len(batch) < 10000:
                break

    def check_markers(self) -> None:
        """Marker files written since the last look (the run directory's mtime moved)."""
        if not self.running:
            return
        try:
            mtime = os.stat(self._run_dir).st_mtime
        except OSError:
            return
        if mtime == self._run_dir_mtime:
            return
        self._run_dir_mtime = mtime
        for project_id in list(self.running):
            path = self.settings.marker_path(project_id)
            text = read_marker(path)  # a link or anything but a file of ours is no marker
            if text is None:
                continue
            ended_at = self.metrics.file_time(path)
            path.unlink(missing_ok=True)
            marker = parse_marker(text)
            self.end_running(
                project_id, ProjectStatus.COMPLETED if marker.success else ProjectStatus.FAILED,
                outcome=Outcome.MARKER, message=marker.message if not marker.success else None,
                reason="marker file",
            )
            self.metrics.end_detected("marker", ended_at)

    def check_deadlines(self, now: float) -> None:
        """End projects whose ``--timeout`` passed (a heap: O(1) per wake-up)."""
        while self._deadlines and self._deadlines[0][0] <= now:
            _, project_id, attempt = heapq.heappop(self._deadlines)
            running = self.running.get(project_id)
            if running is None or running.project.attempt != attempt:
                continue  # ended meanwhile, or an older attempt's deadline
            self.end_running(
                project_id, ProjectStatus.FAILED, outcome=Outcome.TIMEOUT,
                message=f"timed out after {running.project.timeout:g}s", reason="timeout",
            )

    def check_idle(self, now: float) -> None:
        """End projects that printed nothing for their ``--idle-timeout`` (unless their agent is
        ``waiting`` for an answer and ``idle_timeout_waiting`` is off); reopen a pipe log that
        was deleted (its output would be lost, and its size could not tell activity any more).

        The log's size tells activity cheaply; before a project is ended, tmux's own record of the
        session's last activity is asked too (one call for all the candidates), so a log that could
        not grow (a full disk) never ends a project that is busy printing.
        """
        candidates: dict[int, Running] = {}
        for project_id, running in list(self.running.items()):
            path = self.settings.log_path(project_id)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                self._reopen_log(running)
                running.last_output = now
                continue
            except OSError:
                continue
            changed = size != running.log_size
            grew = changed and running.log_size != -1  # -1: the first look, nothing to compare
            if changed:
                running.log_size = size
                running.last_output = now
            self._note_activity(running, grew, now)
            if (not changed and running.idle_timeout is not None
                    and now - running.last_output >= running.idle_timeout):
                candidates[project_id] = running
        if not candidates:
            return
        try:
            activity = self.server.activity()
        except TmuxError:
            activity = {}
        wall = time.time()
        for project_id, running in candidates.items():
            last = activity.get(running.project.session_id or "")
            if last is not None and wall - last < (running.idle_timeout or 0):
                running.last_output = now - (wall - last)
                continue
            if not self.settings.idle_timeout_waiting and self._waits(running):
                running.last_output = now  # time spent waiting for an answer does not count
                continue
            self.end_running(
                project_id, ProjectStatus.FAILED, outcome=Outcome.IDLE,
                message=f"no output for {running.idle_timeout:g}s", reason="idle timeout",
            )

    def _waits(self, running: Running) -> bool:
        """Whether the project's agent is ``waiting`` for input now (read from its row: ``tmo state``
        writes it there, not to the daemon's copy)."""
        try:
            project = self.store.get(running.project.id)
        except OrchestratorError:
            return False
        return project.attempt == running.project.attempt and project.agent_state == AgentState.WAITING

    def _note_activity(self, running: Running, grew: bool, now: float) -> None:
        """The activity source of the agent state: ``working`` when the log grew since the last look,
        ``idle`` after ``agent_idle_after`` seconds without output. Written only on a change; the
        store ignores it once the agent reported its state itself."""
        if grew:
            state = AgentState.WORKING
        elif now - running.last_output >= self.settings.agent_idle_after:
            state = AgentState.IDLE
        else:
            return
        if state == running.activity_state:
            return
        project = running.project
        try:
            self.store.set_agent_state(project.id, state, attempt=project.attempt,
                                       decided_by=StateSource.ACTIVITY, source=self.source)
        except OrchestratorError as exc:  # tried again on the next look
            log.warning("project %s: cannot record its agent state: %s", project.id, exc,
                        extra={"project_id": project.id})
            return
        running.activity_state = state

    def _reopen_log(self, running: Running) -> None:
        """The project's pipe log is gone (its directory was deleted): pipe the pane to a new one."""
        project = running.project
        if not project.session_name:
            return
        path = self.settings.log_path(project.id)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.server.repipe(project.session_name, path)
        except (OSError, TmuxError) as exc:
            log.warning("project %s: cannot reopen its log %s: %s", project.id, path, exc,
                        extra={"project_id": project.id, "session_name": project.session_name})
            return
        log.warning("project %s: its log %s was deleted; its output goes to a new one from now on",
                    project.id, path, extra={"project_id": project.id, "session_name": project.session_name})
        running.log_size = -1

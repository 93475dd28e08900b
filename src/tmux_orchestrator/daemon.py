"""The daemon: claim -> start -> watch -> finish -> clean up -> next, driven by events.

It sleeps in one ``select`` and wakes on:

* the FIFO: ``exit <id> <attempt> <code>`` from a project's wrapper 0.5 ms after the command ends,
  and ``poke`` from CLI commands that changed the queue;
* a database change made by another process (``PRAGMA data_version``, checked every
  ``db_poll_interval``, 20 ms by default: a few microseconds per check);
* timers: project timeouts, retry delays and the reconcile pass (every ``reconcile_interval``).

There is no fixed sleep on the hot path: when a project ends, the next one is claimed and its
session created in the same wake-up. Killing sessions (which may wait for a process group to end)
runs on worker threads so it never delays a hand-off.

Signals only set a flag (``procrastinate``'s and rq's rule): the first SIGTERM/SIGINT stops claiming
and exits, leaving running sessions alone (a restarted daemon adopts them); a second one exits at once.
"""

from __future__ import annotations

import heapq
import logging
import os
import queue
import selectors
import signal
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING

from tmux_orchestrator import __version__
from tmux_orchestrator.boot import boot_id
from tmux_orchestrator.errors import (
    InvalidTransition,
    OrchestratorError,
    ProjectNotFound,
    ServerNotRunning,
    TmuxError,
)
from tmux_orchestrator.lock import DaemonLock
from tmux_orchestrator.orchestrator import Orchestrator
from tmux_orchestrator.project import Outcome, Project, ProjectStatus, outcome_for_exit
from tmux_orchestrator.reconcile import HANGUP_CODE, Reconciler
from tmux_orchestrator.retention import ACTIVE, prune_logs
from tmux_orchestrator.store.sqlite import now_text, to_text
from tmux_orchestrator.tmux import SessionSpec, StartedSession, check_tmux
from tmux_orchestrator.wrapper import (
    ExitMessage,
    parse_fifo_line,
    parse_marker,
    write_wrapper,
)

if TYPE_CHECKING:
    from tmux_orchestrator.dispatch import Dispatcher
    from tmux_orchestrator.metrics import DaemonMetrics

log = logging.getLogger(__name__)

#: With nothing happening for IDLE_AFTER seconds, the database is polled every IDLE_POLL seconds
#: instead of every ``db_poll_interval`` (see ``Daemon._timeout``).
IDLE_AFTER = 1.0
IDLE_POLL = 0.1
#: Most projects claimed and started in one go (one chained tmux call holds about 40).
LAUNCH_BATCH = 64
#: Status events that may concern a running project or free a slot.
_STATUS_KINDS = ["queued", "started", "completed", "failed", "cancelled", "retried", "requeued", "removed"]


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


class Workers:
    """A few daemon threads for slow side work (killing sessions); never blocks shutdown."""

    def __init__(self, count: int, on_error: Callable[[BaseException], None]) -> None:
        self._queue: queue.Queue[Callable[[], object]] = queue.Queue()
        self._on_error = on_error
        for n in range(count):
            threading.Thread(target=self._work, name=f"tmo-worker-{n}", daemon=True).start()

    def submit(self, job: Callable[[], object]) -> None:
        """Run ``job`` on a worker thread."""
        self._queue.put(job)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                job()
            except BaseException as exc:  # noqa: BLE001 - a worker must survive any job
                self._on_error(exc)


class Daemon:
    """Runs the queue of one home until stopped."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        *,
        concurrency: int | None = None,
        install_signal_handlers: bool = True,
        ready_fd: int | None = None,
        metrics: DaemonMetrics | None = None,
    ) -> None:
        self.orch = orchestrator
        self.settings = orchestrator.settings
        self.store = orchestrator.store
        self.server = orchestrator.server
        self.lock = DaemonLock(self.settings.lock_path)
        self.requested_concurrency = concurrency
        self.install_signal_handlers = install_signal_handlers
        self.ready_fd = ready_fd
        self.running: dict[int, Running] = {}
        #: (monotonic deadline, project id, attempt) of running projects with a timeout.
        self._deadlines: list[tuple[float, int, int]] = []
        self.killing: set[int] = set()
        self._killing_lock = threading.Lock()
        self.stopping = False
        self._signals = 0
        self._fifo_fd = -1
        self._fifo_buffer = b""
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._event_cursor = 0
        self._token = -1
        self._run_dir_mtime = 0.0
        self._run_dir = str(self.settings.run_dir)  # stat()ed on every wake-up: no Path objects
        self._next_reconcile = 0.0
        self._next_prune = 0.0
        self.concurrency = 1
        self.paused = False
        #: Set whenever something may have freed a slot or queued a project.
        self._claim_needed = True
        #: Monotonic time of the last wake-up with something to do (FIFO, poke, database change).
        self._active_at = time.monotonic()
        #: Monotonic time at which a delayed (retrying) project becomes due.
        self._next_due: float | None = None
        self.reconciler = Reconciler(self)
        #: Prometheus metrics (served with ``--metrics``) and the event dispatcher (hooks, ...).
        # Imported here: prometheus_client and the delivery modules only matter to a running daemon,
        # and every `tmo` command imports this module.
        from tmux_orchestrator.metrics import DaemonMetrics

        self.metrics = metrics or DaemonMetrics()
        self.dispatcher: Dispatcher | None = None

    # -- life cycle --------------------------------------------------------------------------
    def run(self) -> int:
        """Run until a signal or :meth:`stop`; returns the process exit code."""
        self.lock.acquire()
        try:
            self._start()
            self._loop()
        finally:
            self._shutdown()
        return 0

    def stop(self) -> None:
        """Ask the loop to finish (thread-safe)."""
        self.stopping = True
        self._wake()

    def _start(self) -> None:
        check_tmux()
        self.settings.ensure_dirs()
        if self.install_signal_handlers:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
        if self.requested_concurrency is not None:
            self.store.set_setting("concurrency", str(self.requested_concurrency))
        self.concurrency = int(self.store.get_setting("concurrency", "1") or 1)
        self.paused = self.store.get_setting("paused", "0") == "1"
        self._open_fifo()
        self.orch.source = "daemon"
        self.workers = Workers(4, lambda exc: log.error("worker failed: %s", exc, exc_info=exc))
        server_was_down = self.server.ensure_running(
            history_limit=self.settings.history_limit, window_size=self.settings.window_size
        )
        for key, value in (
            ("daemon.pid", str(os.getpid())),
            ("daemon.host", self.orch.host),
            ("daemon.started_at", now_text()),
            ("daemon.version", __version__),
        ):
            self.store.set_setting(key, value)
        from tmux_orchestrator.dispatch import Dispatcher

        self.dispatcher = Dispatcher(self.settings, self.metrics).start()
        self._event_cursor = self.store.last_event_id()
        current_boot = boot_id()
        previous_boot = self.store.get_setting("boot_id")
        self.store.set_setting("boot_id", current_boot)
        self.reconciler.startup(
            rebooted=previous_boot is not None and previous_boot != current_boot,
            server_was_down=server_was_down,
        )
        self._prune_logs()
        self.store.append_event(
            "daemon_started", source="daemon",
            message=f"pid {os.getpid()}, concurrency {self.concurrency}, socket {self.settings.socket_path}",
        )
        self._event_cursor = self.store.last_event_id()
        self._token = self.store.changes_token()
        log.info(
            "daemon started: pid %s, home %s, concurrency %s, tmux socket %s",
            os.getpid(), self.settings.home, self.concurrency, self.settings.socket_path,
        )
        if self.ready_fd is not None:
            try:
                os.write(self.ready_fd, b"ready\n")
                os.close(self.ready_fd)
            except OSError:
                pass
            self.ready_fd = None

    def _shutdown(self) -> None:
        try:
            if self._fifo_fd >= 0:
                self.store.append_event(
                    "daemon_stopped", source="daemon",
                    message=f"pid {os.getpid()}, {len(self.running)} session(s) left running",
                )
                self.store.set_setting("daemon.pid", "")
                log.info("daemon stopped; %s running session(s) left alone", len(self.running))
        except OrchestratorError as exc:
            log.warning("could not record daemon stop: %s", exc)
        finally:
            if self.dispatcher is not None:
                self.dispatcher.stop()
            if self._fifo_fd >= 0:
                os.close(self._fifo_fd)
                self._fifo_fd = -1
            self.lock.release()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            os._exit(1)  # second signal: leave at once (sessions live on; restart adopts them)
        log.info("received %s: stopping (running sessions are left alone)", signal.Signals(signum).name)
        self.stop()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def _open_fifo(self) -> None:
        path = self.settings.fifo_path
        try:
            if not stat.S_ISFIFO(os.stat(path).st_mode):
                os.unlink(path)
                os.mkfifo(path, 0o600)
        except FileNotFoundError:
            os.mkfifo(path, 0o600)
        # O_RDWR: the open never blocks and the FIFO never reports EOF when writers come and go.
        self._fifo_fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)

    # -- the loop ----------------------------------------------------------------------------
    def _loop(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._fifo_fd, selectors.EVENT_READ, "fifo")
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._next_reconcile = time.monotonic() + self.settings.reconcile_interval
        self._fill_slots()
        while not self.stopping:
            for key, _ in selector.select(self._timeout()):
                self._active_at = time.monotonic()
                self._claim_needed = True
                if key.data == "fifo":
                    self._read_fifo()
                else:
                    try:
                        while os.read(self._wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
            if self.stopping:
                break
            self._tick()
        selector.close()

    def _timeout(self) -> float:
        now = time.monotonic()
        # The database is polled every db_poll_interval (20 ms) while things happen, and every
        # IDLE_POLL (100 ms) once nothing has for IDLE_AFTER: each wake-up of an idle daemon costs
        # 50-150 us of CPU on a small VM, and 50 a second were most of its idle CPU. Changes made
        # with the CLI or API poke the FIFO and wake it at once; only hand-written SQL made while
        # it is idle waits for the slower poll. Timeouts and retry delays still wake it on time.
        poll = self.settings.db_poll_interval
        if now - self._active_at >= IDLE_AFTER:
            poll = max(poll, IDLE_POLL)
        wake = min(now + poll, self._next_reconcile)
        if self._deadlines:
            wake = min(wake, self._deadlines[0][0])
        if self._next_due is not None:
            wake = min(wake, self._next_due)
        return max(0.0, wake - now)

    def _tick(self) -> None:
        """Everything the loop does on a wake-up; each step is cheap when there is nothing to do."""
        try:
            self._check_database()
            self._check_markers()
            now = time.monotonic()
            self._check_deadlines(now)
            if now >= self._next_prune:
                self._prune_logs()
            if now >= self._next_reconcile:
                started = time.perf_counter()
                self.reconciler.run()
                self.metrics.reconciled(time.perf_counter() - started)
                self._check_idle(now)
                self._claim_needed = True
                self._next_reconcile = time.monotonic() + self.settings.reconcile_interval
            self._fill_slots()
        except OrchestratorError as exc:
            log.error("daemon step failed: %s", exc)

    # -- wake sources ------------------------------------------------------------------------
    def _read_fifo(self) -> None:
        try:
            while True:
                chunk = os.read(self._fifo_fd, 65536)
                if not chunk:
                    break
                self._fifo_buffer += chunk
        except BlockingIOError:
            pass
        *lines, self._fifo_buffer = self._fifo_buffer.split(b"\n")
        for raw in lines:
            try:
                message = parse_fifo_line(raw.decode(errors="replace"))
            except ValueError:  # anyone who can write the FIFO can write garbage: ignore it
                message = None
            if message is not None:
                try:
                    self.on_exit(message)
                except OrchestratorError as exc:
                    log.error("project %s: cannot record its end: %s", message.project_id, exc,
                              extra={"project_id": message.project_id, "session_name": None})

    def _check_database(self) -> None:
        token = self.store.changes_token()
        if token == self._token:
            return
        self._token = token
        self._active_at = time.monotonic()
        self._claim_needed = True
        while True:
            batch = self.store.events_after(self._event_cursor, kinds=_STATUS_KINDS, limit=10000)
            for event in batch:
                self._event_cursor = max(self._event_cursor, event.id)
                if (
                    event.project_id in self.running
                    and event.new_status != ProjectStatus.PROCESSING.value
                    and self._ended_elsewhere(event.project_id, f"{event.new_status or event.kind} "
                                              f"by {event.source}")
                ):
                    self.metrics.end_detected("database", event.at.timestamp())
            if len(batch) < 10000:
                break
        paused = self.store.get_setting("paused", "0") == "1"
        if paused != self.paused:
            self.paused = paused
            log.info("queue %s", "paused" if paused else "resumed")
        self.concurrency = int(self.store.get_setting("concurrency", str(self.concurrency)) or 1)

    def _ended_elsewhere(self, project_id: int, why: str) -> bool:
        """A running project was ended by someone else (CLI, API, SQL): clean its session up.

        The event that brought us here may be older than the running attempt (a ``queued`` event
        read only after the project was claimed), so the row decides: as long as it still says
        ``processing`` for the same attempt, nothing has ended. Returns True if it had ended.
        """
        running = self.running.get(project_id)
        if running is None:
            return False
        try:
            project = self.store.get(project_id)
        except ProjectNotFound:
            project = running.project  # deleted by hand while running: still clean up
        else:
            if project.status == ProjectStatus.PROCESSING and project.attempt == running.project.attempt:
                return False
        self.running.pop(project_id, None)
        log.info("project %s %s", project_id, why,
                 extra={"project_id": project_id, "session_name": project.session_name})
        self.cleanup_async(running.project if project.session_name is None else project, reason=why)
        return True

    def cleanup_async(self, project: Project, *, reason: str, grace: float | None = None) -> None:
        """Save and kill ``project``'s session on a worker thread, then wake the loop."""
        with self._killing_lock:
            if project.id in self.killing:
                return
            self.killing.add(project.id)

        def job() -> None:
            try:
                self.orch.cleanup_session(project, reason=reason, grace=grace)
            finally:
                with self._killing_lock:
                    self.killing.discard(project.id)
                self._wake()

        self.workers.submit(job)

    def _check_markers(self) -> None:
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
            try:
                text = path.read_text(errors="replace")
            except FileNotFoundError:
                continue
            except OSError:
                continue
            ended_at = self.metrics.file_time(path)
            path.unlink(missing_ok=True)
            marker = parse_marker(text)
            self.end_running(
                project_id,
                ProjectStatus.COMPLETED if marker.success else ProjectStatus.FAILED,
                outcome=Outcome.MARKER,
                message=marker.message if not marker.success else None,
                reason="marker file",
            )
            self.metrics.end_detected("marker", ended_at)

    def _check_deadlines(self, now: float) -> None:
        # A heap keeps this O(1) per wake-up with a thousand running projects.
        while self._deadlines and self._deadlines[0][0] <= now:
            _, project_id, attempt = heapq.heappop(self._deadlines)
            running = self.running.get(project_id)
            if running is None or running.project.attempt != attempt:
                continue  # ended meanwhile, or an older attempt's deadline
            self.end_running(
                project_id, ProjectStatus.FAILED, outcome=Outcome.TIMEOUT,
                message=f"timed out after {running.project.timeout:g}s", reason="timeout",
            )

    def _check_idle(self, now: float) -> None:
        for project_id, running in list(self.running.items()):
            if running.idle_timeout is None:
                continue
            try:
                size = self.settings.log_path(project_id).stat().st_size
            except OSError:
                size = 0
            if size != running.log_size:
                running.log_size = size
                running.last_output = now
            elif now - running.last_output >= running.idle_timeout:
                self.end_running(
                    project_id, ProjectStatus.FAILED, outcome=Outcome.IDLE,
                    message=f"no output for {running.idle_timeout:g}s", reason="idle timeout",
                )

    # -- project transitions -----------------------------------------------------------------
    def end_running(
        self, project_id: int, status: ProjectStatus, *, outcome: Outcome, message: str | None,
        reason: str,
    ) -> None:
        """End a running project by the daemon's decision and kill its session."""
        running = self.running.pop(project_id, None)
        if running is None:
            return
        try:
            project = self.store.transition(
                project_id, status, source="daemon", outcome=outcome, error_message=message,
                expected=ProjectStatus.PROCESSING,
            )
        except InvalidTransition:
            project = self.store.get(project_id)
        log.info("project %s: %s -> %s", project_id, reason, project.status.value,
                 extra={"project_id": project_id, "session_name": project.session_name})
        self.cleanup_async(project, reason=reason)
        if project.status == ProjectStatus.FAILED:
            self.orch.requeue_after_failure(project)

    def on_exit(self, message: ExitMessage) -> None:
        """A wrapper reported its command's exit code."""
        received = time.time()  # the wrapper wrote its line ~0.5 ms before: the end, for metrics
        try:
            project = self.store.get(message.project_id)
        except ProjectNotFound:
            return
        exit_file = self.settings.exit_path(message.project_id, message.attempt)
        if project.attempt != message.attempt:
            exit_file.unlink(missing_ok=True)
            return
        was_running = project.status == ProjectStatus.PROCESSING
        self.finish(project, message.exit_code)
        self.metrics.end_detected("exit", received if was_running else None)

    def finish(self, project: Project, exit_code: int) -> Project:
        """Record that ``project``'s command exited with ``exit_code``; its session closes itself."""
        self.running.pop(project.id, None)
        ended_here = False
        if project.status == ProjectStatus.PROCESSING:
            outcome = outcome_for_exit(exit_code)
            if exit_code == HANGUP_CODE and not self.server.is_running():
                outcome = Outcome.LOST  # the tmux server died under it
            try:
                project = self.store.transition(
                    project.id,
                    ProjectStatus.COMPLETED if exit_code == 0 else ProjectStatus.FAILED,
                    source="daemon",
                    outcome=outcome,
                    exit_code=exit_code,
                    error_message=None if exit_code == 0 else describe_exit(exit_code),
                    expected=ProjectStatus.PROCESSING,
                )
                ended_here = True
            except InvalidTransition:
                project = self.store.get(project.id)
        if ended_here:
            # The command is gone, so the session ends by itself: mark it closed, no kill.
            self.store.close_session(project.id, project.session_name)
            log.info(
                "project %s %s (%s) in session %s", project.id, project.status.value,
                describe_exit(exit_code), project.session_name,
                extra={"project_id": project.id, "session_name": project.session_name},
            )
            if project.status == ProjectStatus.FAILED:
                self.orch.requeue_after_failure(project)
        elif project.outcome in (Outcome.TIMEOUT, Outcome.IDLE):
            # Ended by the daemon for running too long or too quietly: how the command died
            # (143 = SIGTERM, 137 = SIGKILL) is worth keeping. After a manual end, a cancel or a
            # marker it would only be the echo of our own kill, so it is not recorded.
            self.store.set_exit_code(project.id, exit_code)
        self.settings.exit_path(project.id, project.attempt).unlink(missing_ok=True)
        (self.settings.run_dir / f"{project.id}-{project.attempt}.sh").unlink(missing_ok=True)
        return project

    def _prune_logs(self) -> None:
        """Apply log retention (at start, then hourly)."""
        self._next_prune = time.monotonic() + 3600
        active = {p.id for p in self.store.list_projects(list(ACTIVE))}
        try:
            prune_logs(self.settings, active)
        except OSError as exc:
            log.warning("log retention failed: %s", exc)

    def _fill_slots(self) -> None:
        if self._next_due is not None and time.monotonic() >= self._next_due:
            self._next_due = None
            self._claim_needed = True
        if not self._claim_needed:
            return
        self._claim_needed = False
        while not self.stopping and not self.paused and len(self.running) < self.concurrency:
            # Claim the free slots first, then start the sessions together: with many slots free
            # (a burst of ends, a fresh queue) one chained tmux call starts them. At most
            # LAUNCH_BATCH at a time, so ends and changes are still handled every few hundred ms
            # while a thousand sessions start.
            claimed: list[Project] = []
            exhausted = False
            while len(self.running) + len(claimed) < self.concurrency and len(claimed) < LAUNCH_BATCH:
                project = self.store.claim_next(host=self.orch.host, max_processing=self.concurrency)
                if project is None:
                    exhausted = True
                    break
                claimed.append(project)
            if len(claimed) == 1:
                self.launch(claimed[0])
            elif claimed:
                self.launch_many(claimed)
            if exhausted:
                due = self.store.next_due()
                if due is not None:
                    self._next_due = time.monotonic() + max(0.0, due)
                return
            if len(claimed) == LAUNCH_BATCH:
                self._claim_needed = True  # more to start: after one turn of the loop
                self._wake()
                return

    def launch_many(self, projects: list[Project]) -> None:
        """Create the sessions of several claimed projects with as few tmux calls as fit."""
        specs: list[SessionSpec] = []
        ready: list[Project] = []
        for project in projects:
            path = project.project_path or str(self.settings.home)
            if not os.path.isdir(path):
                self._spawn_failed(project, f"directory {path} does not exist")
                continue
            assert project.session_name is not None
            script = write_wrapper(self.settings, project)
            specs.append(SessionSpec(name=project.session_name, project_id=project.id, cwd=path,
                                     argv=["/bin/sh", str(script)],
                                     log_path=self.settings.log_path(project.id)))
            ready.append(project)
        try:
            results = self.server.start_sessions(specs)
        except TmuxError:
            results = [None] * len(ready)
        for project, result in zip(ready, results, strict=True):
            if result is None:
                self.launch(project)  # not tried: one at a time, with its own error handling
            elif isinstance(result, TmuxError):
                self._spawn_failed(project, f"tmux could not start the session: {result}")
            else:
                self._started(project, result)

    def launch(self, project: Project) -> None:
        """Create the session of a claimed project."""
        path = project.project_path or str(self.settings.home)
        if not os.path.isdir(path):
            self._spawn_failed(project, f"directory {path} does not exist")
            return
        script = write_wrapper(self.settings, project)
        assert project.session_name is not None
        argv = ["/bin/sh", str(script)]
        log_path = self.settings.log_path(project.id)
        try:
            try:
                started = self.server.start_session(
                    name=project.session_name, project_id=project.id, cwd=path, argv=argv,
                    log_path=log_path,
                )
            except ServerNotRunning:
                self.server.ensure_running(
                    history_limit=self.settings.history_limit, window_size=self.settings.window_size
                )
                started = self.server.start_session(
                    name=project.session_name, project_id=project.id, cwd=path, argv=argv,
                    log_path=log_path,
                )
        except TmuxError as exc:
            self._spawn_failed(project, f"tmux could not start the session: {exc}")
            return
        self._started(project, started)

    def _started(self, project: Project, started: StartedSession) -> None:
        """Record the ids of a project's new session and watch it."""
        self.store.record_session(
            project.id, session_id=started.session_id, window_id=started.window_id,
            pane_pid=started.pane_pid,
        )
        project.session_id, project.window_id, project.pane_pid = (
            started.session_id, started.window_id, started.pane_pid,
        )
        self.track(project)
        log.info(
            "started session %s (%s) for project %s: %s", project.session_name, started.session_id,
            project.id, " ".join(project.command)[:200],
            extra={"project_id": project.id, "session_name": project.session_name},
        )

    def track(self, project: Project) -> None:
        """Watch a running project (just started or adopted after a restart)."""
        deadline = None
        if project.timeout:
            elapsed = 0.0
            if project.started_at is not None:
                elapsed = max(0.0, (datetime.now(UTC) - project.started_at).total_seconds())
            deadline = time.monotonic() + project.timeout - elapsed
        self.running[project.id] = Running(
            project=project, deadline=deadline, idle_timeout=project.idle_timeout
        )
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, project.id, project.attempt))

    def _spawn_failed(self, project: Project, message: str) -> None:
        log.error("project %s: %s", project.id, message,
                  extra={"project_id": project.id, "session_name": project.session_name})
        self.store.close_session(project.id)
        failed = self.store.transition(
            project.id, ProjectStatus.FAILED, source="daemon", outcome=Outcome.SPAWN_ERROR,
            error_message=message, expected=ProjectStatus.PROCESSING,
        )
        self.orch.requeue_after_failure(failed)


__all__ = ["Daemon", "describe_exit", "to_text"]

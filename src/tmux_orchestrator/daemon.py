"""The daemon: claim -> start -> watch -> finish -> clean up -> next, driven by events.

It sleeps in one ``select`` and wakes on:

* the FIFO: ``exit <id> <attempt> <code>`` from a project's wrapper 0.5 ms after the command ends,
  and ``poke`` from CLI commands that changed the queue;
* a database change made by another process (``PRAGMA data_version``, checked every
  ``db_poll_interval``, 20 ms by default: a few microseconds per check);
* timers: project timeouts, retry delays and the reconcile pass (every ``reconcile_interval``);
* a clean-up that finished on a worker thread (a slot is free once the old session is gone).

The work is split by concern: :mod:`~tmux_orchestrator.watch` notices ends and records them,
:mod:`~tmux_orchestrator.launch` claims and starts, :mod:`~tmux_orchestrator.cleanup` stops and
removes sessions, :mod:`~tmux_orchestrator.reconcile` keeps tmux equal to the database. This module
holds them together: the loop, the locks and the life cycle.

Nothing that goes wrong with one step or one row stops the loop: the step is logged, retried after
a backoff, and every other step goes on. Signals only set a flag (``procrastinate``'s and rq's
rule): the first SIGTERM/SIGINT stops claiming and exits, leaving running sessions alone (a
restarted daemon adopts them); a second one exits at once. SIGHUP reloads config.toml
(:mod:`~tmux_orchestrator.reload`); a file that does not load never stops the daemon.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

from tmux_orchestrator import __version__
from tmux_orchestrator.boot import boot_id
from tmux_orchestrator.cleanup import Cleaner, CleanupQueue
from tmux_orchestrator.config import load_settings
from tmux_orchestrator.errors import DatabaseInUse, OrchestratorError, ServerNotRunning, TmuxError
from tmux_orchestrator.home import open_fifo
from tmux_orchestrator.launch import LAUNCH_BATCH, Launcher
from tmux_orchestrator.lock import DaemonLock
from tmux_orchestrator.membership import Membership
from tmux_orchestrator.orchestrator import Orchestrator
from tmux_orchestrator.project import Project
from tmux_orchestrator.reconcile import Reconciler
from tmux_orchestrator.redact import redact
from tmux_orchestrator.reload import LoadedConfig, apply, compare
from tmux_orchestrator.retention import ACTIVE, prune_logs
from tmux_orchestrator.retries import requeue_after_failure
from tmux_orchestrator.sending import MessageSender
from tmux_orchestrator.store.rows import now_text, to_text
from tmux_orchestrator.tmux import check_tmux
from tmux_orchestrator.tmux.guard import ServerGuard
from tmux_orchestrator.watch import Running, Watcher, describe_exit

if TYPE_CHECKING:
    from tmux_orchestrator.dispatch import Dispatcher
    from tmux_orchestrator.metrics import DaemonMetrics

log = logging.getLogger(__name__)

#: With nothing happening for IDLE_AFTER seconds, the database is polled every IDLE_POLL seconds
#: instead of every ``db_poll_interval`` (see ``Daemon._timeout``).
IDLE_AFTER = 1.0
IDLE_POLL = 0.1
#: How often a database that notifies of its changes is polled all the same (notifications are a
#: hint: one lost with a broken connection must not leave a change unseen for long).
NOTIFIED_POLL = 1.0
#: Longest pause after a failing step (a full disk, a locked database): 0.1, 0.2, 0.4 ... 5 s.
MAX_BACKOFF = 5.0


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
        self.membership = Membership(self.store, self.settings)
        self.requested_concurrency = concurrency
        self.install_signal_handlers = install_signal_handlers
        self.ready_fd = ready_fd
        self.stopping = False
        self.exit_code = 0
        self._signals = 0
        #: Set by SIGHUP: the loop reloads config.toml on its next turn.
        self._reload_wanted = False
        #: What config the daemon runs with (written to ``daemon.config.json`` once it started).
        self.loaded: LoadedConfig | None = None
        self._fifo_fd = -1
        self._fifo_inode = -1
        self._selector: selectors.BaseSelector | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._token = -1
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
        #: The database's change notification socket, if it has one (:meth:`Store.change_fd`).
        self._change_fd: int | None = None
        self._fence_lock = threading.Lock()
        #: The lease was lost and taken again: no claims until reconcile stopped what was taken.
        self._fencing = False
        #: Failing steps: name -> (failures in a row, monotonic time before which it is not retried).
        self._backoff: dict[str, tuple[int, float]] = {}
        # Imported here: prometheus_client and the delivery modules only matter to a running daemon.
        from tmux_orchestrator.metrics import DaemonMetrics

        self.metrics = metrics or DaemonMetrics()
        self.dispatcher: Dispatcher | None = None
        self.cleaner = Cleaner(self.store, self.server, self.settings, source="daemon")
        self.cleanups = CleanupQueue(self.cleaner, self._cleaned,
                                     on_error=lambda exc: log.error("clean-up failed: %s", exc, exc_info=exc))
        self.guard = ServerGuard(self.server)
        self.watcher = Watcher(store=self.store, settings=self.settings, server=self.server,
                               cleaner=self.cleaner, cleanups=self.cleanups, metrics=self.metrics)
        self.launcher = Launcher(store=self.store, settings=self.settings, guard=self.guard,
                                 watcher=self.watcher, cleaner=self.cleaner, cleanups=self.cleanups)
        self.reconciler = Reconciler(store=self.store, settings=self.settings, guard=self.guard,
                                     watcher=self.watcher, cleanups=self.cleanups, event=self._event)
        self.sender = MessageSender(store=self.store, server=self.server, settings=self.settings,
                                    running=lambda: {i: r.project for i, r in list(self.running.items())})

    @property
    def running(self) -> dict[int, Running]:
        """The projects this daemon watches, by id."""
        return self.watcher.running

    def launch(self, project: Project) -> None:
        """Create the session of one claimed project (see :class:`~tmux_orchestrator.launch.Launcher`)."""
        self.launcher.launch([project])

    # -- life cycle --------------------------------------------------------------------------
    def run(self) -> int:
        """Run until a signal or :meth:`stop`; returns the process exit code."""
        if self.install_signal_handlers:
            # Before the lock: once it is held, `tmo daemon reload` may send SIGHUP, whose default
            # action would end the daemon.
            signal.signal(signal.SIGHUP, self._on_hup)
        self.lock.acquire()
        try:
            self._start()
            self._loop()
        finally:
            self._shutdown()
        return self.exit_code

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
        self.membership.join(self.requested_concurrency)
        self._read_controls()
        self._open_fifo()
        self.orch.source = "daemon"
        self.guard.known = self.store.get_setting(self._server_key)
        for key, value in (
            ("daemon.pid", str(os.getpid())),
            ("daemon.host", self.membership.name),
            ("daemon.started_at", now_text()),
            ("daemon.version", __version__),
        ):
            self.store.set_setting(key, value)
        from tmux_orchestrator.dispatch import Dispatcher

        dispatcher = Dispatcher(self.settings, self.metrics)
        self.membership.elect()  # one host delivers events, and only while its lease is fresh
        dispatcher.entitled = self.membership.may_deliver
        self.dispatcher = dispatcher.start()  # kept only once started: stop() joins its threads
        self.watcher.event_cursor = self.store.last_event_id()
        # Each host has its own boot id (an older database kept one, for its one host).
        current_boot = boot_id()
        boot_key = f"boot_id.{self.membership.name}"
        previous_boot = self.store.get_setting(boot_key) or self.store.get_setting("boot_id")
        self.store.set_setting(boot_key, current_boot)
        rebooted = previous_boot is not None and previous_boot != current_boot
        if rebooted and self.settings.pause_after_reboot:
            self.orch.pause()
            self.paused = True
        self.reconciler.startup(rebooted=rebooted)
        self.sender.start()  # after startup: it knows which projects run here
        if self.store.is_shared():
            threading.Thread(target=self._watch_lease, name="tmo-lease-watch", daemon=True).start()
        self._remember_server()
        self._prune_logs()
        self._event("daemon_started", f"pid {os.getpid()}, concurrency {self.concurrency}, "
                                      f"socket {self.settings.socket_path}")
        self.watcher.event_cursor = self.store.last_event_id()
        self._token = self.store.changes_token()
        self.loaded = LoadedConfig.started(os.getpid(), self.settings)
        self._save_loaded()
        log.info("daemon started: pid %s, home %s, concurrency %s, tmux socket %s",
                 os.getpid(), self.settings.home, self.concurrency, self.settings.socket_path)
        if self.ready_fd is not None:
            try:
                os.write(self.ready_fd, b"ready\n")
                os.close(self.ready_fd)
            except OSError:
                pass
            self.ready_fd = None

    @property
    def _server_key(self) -> str:
        return f"tmux.server.{self.settings.runner}"

    def _remember_server(self) -> None:
        """Keep the server's pid and start time for the next daemon (which may find its socket
        deleted and must not take that for a dead server)."""
        known = self.server.known_instance
        if known and known != self.store.get_setting(self._server_key):
            self.store.set_setting(self._server_key, known)

    def _shutdown(self) -> None:
        try:
            if self._fifo_fd >= 0 and self.exit_code == 0:
                stopping = self.cleanups.in_flight()
                left = f"{len(self.running)} session(s) left running"
                if stopping:
                    left += f", {stopping} clean-up(s) unfinished (the next daemon finishes them)"
                self._event("daemon_stopped", f"pid {os.getpid()}, {left}")
                self.store.set_setting("daemon.pid", "")
                log.info("daemon stopped; %s", left)
            if self.exit_code == 0:
                self.membership.leave()
        except OrchestratorError as exc:
            log.warning("could not record daemon stop: %s", exc)
        finally:
            self.sender.stop()
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

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._reload_wanted = True
        self._wake()

    # -- reloading config.toml ------------------------------------------------------------------
    def reload_config(self) -> bool:
        """Read config.toml again and apply it (SIGHUP, ``tmo daemon reload``); see
        :mod:`tmux_orchestrator.reload`. A file that does not load changes nothing: the daemon goes
        on with the config it had, and says why. Returns True when the new config was taken."""
        from tmux_orchestrator.dispatch import check_delivery_secrets

        try:
            new = load_settings(self.settings.home)
            check_delivery_secrets(new)  # its tables must load, and a secret they need be set
        except OrchestratorError as exc:
            why = redact(str(exc))
            log.error("config.toml not reloaded, going on with the config loaded before: %s", why)
            self._event("config_reload_failed", why)
            if self.loaded is not None:
                self.loaded.failed(why)
            self._save_loaded()
            return False
        change = compare(self.settings, new)
        apply(self.settings, new)
        summary = change.summary()
        if change.delivery:
            try:
                self._restart_delivery()
            except (OrchestratorError, OSError) as exc:  # e.g. the database is out of reach
                log.error("event delivery did not restart: %s; the next reload tries again", exc)
                summary += f"; event delivery did not restart ({redact(str(exc))})"
        if {"history_limit", "window_size"} & set(change.applied):
            try:
                self.server.set_session_defaults(history_limit=self.settings.history_limit,
                                                 window_size=self.settings.window_size)
            except TmuxError as exc:  # no server yet: it starts with the new values
                log.debug("session defaults not set on the server: %s", exc)
        log.info("config.toml reloaded: %s", summary)
        self._event("config_reloaded", summary)
        if self.loaded is not None:
            self.loaded.reloaded(self.settings, change)
        self._save_loaded()
        return True

    def _restart_delivery(self) -> None:
        """Stop the delivery threads and start them on the new config, never side by side: each
        channel goes on from its saved cursor, so nothing is skipped, and at most the event in
        flight is delivered again (at least once, as across a daemon restart). Stopping waits up to
        the drain time for a running hook. The metrics server and its counters stay."""
        from tmux_orchestrator.dispatch import Dispatcher

        new = Dispatcher(self.settings, self.metrics)
        old, self.dispatcher = self.dispatcher, None
        metrics_from = None
        if old is not None:
            old.stop(keep_metrics=True)
            metrics_from = old.metrics_cursor
        new.entitled = self.membership.may_deliver
        self.dispatcher = new.start(metrics_from=metrics_from)

    def _save_loaded(self) -> None:
        if self.loaded is None:
            return
        try:
            self.loaded.save(self.settings)
        except OSError as exc:  # status and doctor cannot tell; the daemon goes on
            log.warning("cannot write %s: %s", self.settings.home / "daemon.config.json", exc)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def _cleaned(self) -> None:
        """A clean-up finished on a worker: a slot may be free."""
        self._claim_needed = True
        self._wake()

    def _event(self, kind: str, message: str) -> None:
        self.store.append_event(kind, source="daemon", message=message)

    # -- the FIFO ------------------------------------------------------------------------------
    def _open_fifo(self) -> None:
        # O_RDWR: the open never blocks and the FIFO never reports EOF when writers come and go;
        # whatever else stands at its path (a planted link) is removed, never followed.
        fd = open_fifo(self.settings.fifo_path)
        if self._fifo_fd >= 0:
            if self._selector is not None:
                self._selector.unregister(self._fifo_fd)
            os.close(self._fifo_fd)
        self._fifo_fd = fd
        self._fifo_inode = os.fstat(fd).st_ino
        if self._selector is not None:
            self._selector.register(fd, selectors.EVENT_READ, "fifo")

    def _check_fifo(self) -> None:
        """The run directory or the FIFO was deleted (a tmp cleaner, a user): make them again, or
        every project that ends from now on could not report its exit."""
        try:
            if os.stat(self.settings.fifo_path).st_ino == self._fifo_inode:
                return
        except FileNotFoundError:
            pass
        if not self._check_home():
            return
        log.warning("%s was missing; creating it again", self.settings.fifo_path)
        self.settings.ensure_dirs()
        self._open_fifo()
        self._event("run_dir_restored", str(self.settings.run_dir))

    def _check_home(self) -> bool:
        """False, and the daemon stops (exit code 1), when its home was deleted or replaced: its
        lock file (and, on SQLite, its database) are then files nobody else can see, and living on
        it would record projects nobody can read while another daemon may take the new home. The
        projects keep running, as after `tmo daemon stop`."""
        if self.lock.still_ours():
            return True
        message = (f"the home {self.settings.home} was deleted or replaced under the daemon "
                   f"(its lock file {self.settings.lock_path} is gone); stopping")
        log.error(message)
        print(f"tmo: error: {message}", file=sys.stderr, flush=True)  # its log went with the home
        self.exit_code = 1
        self.stop()
        return False

    # -- the loop ----------------------------------------------------------------------------
    def _loop(self) -> None:
        selector = self._selector = selectors.DefaultSelector()
        selector.register(self._fifo_fd, selectors.EVENT_READ, "fifo")
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        # A database that notifies (PostgreSQL's LISTEN) wakes the loop on a change; one that does
        # not (SQLite) is polled. The notification is only a hint: the poll stays, slower.
        self._change_fd = self.store.change_fd()
        if self._change_fd is not None:
            selector.register(self._change_fd, selectors.EVENT_READ, "database")
        self._next_reconcile = time.monotonic() + self.settings.reconcile_interval
        self._step("fill slots", self._fill_slots)
        while not self.stopping:
            for key, _ in selector.select(self._timeout()):
                self._active_at = time.monotonic()
                self._claim_needed = True
                if key.data == "fifo":
                    self._step("read exits", lambda: self.watcher.read_fifo(self._fifo_fd))
                elif key.data == "wake":
                    try:
                        while os.read(self._wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
            if self.stopping:
                break
            self._tick()
        selector.close()
        self._selector = None

    def _timeout(self) -> float:
        now = time.monotonic()
        # The database is polled every db_poll_interval (20 ms) while things happen, and every
        # IDLE_POLL (100 ms) once nothing has for IDLE_AFTER: each wake-up of an idle daemon costs
        # 50-150 us of CPU on a small VM, and 50 a second were most of its idle CPU. Changes made
        # with the CLI or API poke the FIFO and wake it at once; only hand-written SQL made while
        # it is idle waits for the slower poll. Timeouts and retry delays still wake it on time.
        poll = self.settings.db_poll_interval
        if self._change_fd is not None:
            poll = max(poll, NOTIFIED_POLL)
        elif now - self._active_at >= IDLE_AFTER:
            poll = max(poll, IDLE_POLL)
        wake = min(now + poll, self._next_reconcile)
        deadline = self.watcher.next_deadline()
        if deadline is not None:
            wake = min(wake, deadline)
        if self._next_due is not None:
            wake = min(wake, self._next_due)
        if self.watcher.pending_exits:
            wake = min(wake, now + 0.2)
        return max(0.0, wake - now)

    def _step(self, name: str, fn: Callable[[], object]) -> None:
        """Run one step of the loop; a failure is logged and the step retried after a backoff
        (0.1 s doubling to 5 s), while every other step goes on."""
        failures, not_before = self._backoff.get(name, (0, 0.0))
        if failures and time.monotonic() < not_before:
            return
        try:
            fn()
        except Exception as exc:
            failures += 1
            delay = min(MAX_BACKOFF, 0.1 * 2 ** (failures - 1))
            self._backoff[name] = (failures, time.monotonic() + delay)
            expected = isinstance(exc, (OrchestratorError, OSError))
            log.error("%s failed (%s time(s) in a row): %s; trying again in %.1fs", name, failures, exc,
                      delay, exc_info=None if expected else exc)
            return
        if failures:
            log.info("%s works again after %s failure(s)", name, failures)
            self._backoff.pop(name, None)

    def _tick(self) -> None:
        """Everything the loop does on a wake-up; each step is cheap when there is nothing to do."""
        if self._reload_wanted:
            self._reload_wanted = False
            self._step("reload the config", self.reload_config)
        if time.monotonic() - self.membership.last_beat > self.settings.host_lease / 2:
            # Back from a long pause (a suspended machine, a stopped process) or a database out of
            # reach: before anything else, learn whether this host still holds its lease.
            self._step("renew the lease", self._heartbeat)
        self._step("check the run directory", self._check_fifo)
        if self.watcher.pending_exits:
            self._step("record exits", self.watcher.apply_exits)
        self._step("check the database", self._check_database)
        self._step("check markers", self.watcher.check_markers)
        now = time.monotonic()
        self._step("check timeouts", lambda: self.watcher.check_deadlines(now))
        if now >= self._next_prune:
            self._step("log retention", self._prune_logs)
        if now >= self._next_reconcile:
            self._next_reconcile = now + self.settings.reconcile_interval
            self._step("check the home", self._check_home)
            if self.stopping:
                return
            self._step("renew the lease", self._heartbeat)
            self._step("expire dead hosts", self._expire_hosts)
            started = time.perf_counter()
            self._step("reconcile", self.reconciler.run)
            self._step("elect the dispatcher", self._elect)
            self.metrics.reconciled(time.perf_counter() - started)
            self._step("remember the server", self._remember_server)
            self._step("check idle projects", lambda: self.watcher.check_idle(now))
            self._claim_needed = True
        self._step("fill slots", self._fill_slots)

    def _heartbeat(self) -> None:
        """Renew this host's lease; fence when it had been lost (see :mod:`membership`)."""
        try:
            renewed = self.membership.beat()
        except DatabaseInUse as exc:
            log.error("%s; stopping without touching any session", exc)
            self.exit_code = 1
            self.stop()
            return
        except OrchestratorError:
            if self.store.is_shared() and self.membership.silent_too_long() and self.watcher.running:
                self._fence_offline()  # (the watchdog does it too, if this loop hangs in the call)
            raise
        if self.watcher.fenced:
            self.watcher.record_fenced()
        if not renewed:
            # The other hosts declared this one dead and took its projects: nothing is claimed
            # until reconcile has stopped every session whose project is no longer ours.
            self._fencing = True
            self._next_reconcile = time.monotonic()
            self._token = -1  # read the changes made meanwhile at once
            self._event("host_fenced", f"host {self.membership.name} lost its lease; stopping what was "
                                       "taken from it before claiming again")

    def _fence_offline(self) -> None:
        """The shared database has been out of reach for half the lease: the other hosts may soon
        run this host's projects again, so its sessions are stopped now, without the database."""
        with self._fence_lock:  # the loop and the watchdog thread may both get here
            silent = time.monotonic() - self.membership.last_beat
            unfenced = set(self.watcher.running) - set(self.watcher.fenced)
            if not unfenced:
                return
            log.error("no heartbeat for %.0fs: stopping %s running session(s) before the other hosts "
                      "may run them again", silent, len(unfenced))
            self.watcher.fence_all(f"fenced: the database was out of reach for {silent:.0f}s")

    def _watch_lease(self) -> None:
        """A thread that fences this host when its lease has not been renewed for half the lease,
        also while the loop hangs in a call to a database that stopped answering (a partition
        that drops packets leaves a call waiting for minutes)."""
        while not self.stopping:
            time.sleep(1.0)
            if self.membership.silent_too_long() and self.watcher.running:
                try:
                    self._fence_offline()
                except Exception as exc:
                    log.error("fencing failed: %s", exc, exc_info=exc)

    def _expire_hosts(self) -> None:
        for project in self.membership.expire_others():
            requeue_after_failure(self.store, project, source="daemon")

    def _elect(self) -> None:
        if self.dispatcher is not None:
            was = self.membership.elected
            if self.membership.elect() != was:
                log.info("this host %s delivers events (hooks, webhooks, e-mails)",
                         "now" if self.membership.elected else "no longer")

    def _read_controls(self) -> None:
        """Concurrency and pause of this host, as stored (``tmo pause``, ``--concurrency``)."""
        self.concurrency, self.paused = self.membership.controls()

    def _check_database(self) -> None:
        token = self.store.changes_token()
        fd = self.store.change_fd()
        if fd != self._change_fd and self._selector is not None:
            # the notification connection was made again (it broke): watch the new one
            if self._change_fd is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(self._change_fd)
            if fd is not None:
                self._selector.register(fd, selectors.EVENT_READ, "database")
            self._change_fd = fd
        if token == self._token:
            return
        self._token = token
        self._active_at = time.monotonic()
        self._claim_needed = True
        self.sender.wake()
        self.watcher.check_database()
        paused = self.paused
        self._read_controls()
        if paused != self.paused:
            log.info("queue %s", "paused" if self.paused else "resumed")

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
        if not self._claim_needed or self.stopping or self.paused:
            return
        if self.watcher.fenced or (self.store.is_shared() and self.membership.silent_too_long()):
            return  # nothing new while this host may have been declared dead
        if self._fencing:
            if not (self.reconciler.settled and self.cleanups.idle()):
                return
            self._fencing = False
            log.info("host %s fenced: nothing taken from it runs here any more", self.membership.name)
        self._claim_needed = False
        if len(self.running) >= self.concurrency:
            return
        # Claim the free slots first, then start the sessions together: with many slots free
        # (a burst of ends, a fresh queue) one chained tmux call starts them. At most
        # LAUNCH_BATCH at a time, so ends and changes are still handled every few hundred ms
        # while a thousand sessions start.
        try:
            claimed = self.launcher.claim(self.concurrency)
            if claimed:
                self.launcher.launch(claimed)
        except ServerNotRunning:
            # The server died: reconcile records what was lost and restarts it, now rather than at
            # its next pass, unless it is backing off a server that keeps dying. The reconcile
            # pass asks for the next claim.
            soon = max(time.monotonic(), self.reconciler.retry_server_at)
            self._next_reconcile = min(self._next_reconcile, soon)
            return
        if len(claimed) == LAUNCH_BATCH:
            self._claim_needed = True  # more to start: after one turn of the loop
            self._wake()
            return
        due = self.store.next_due()
        if due is not None:
            self._next_due = time.monotonic() + max(0.0, due)


__all__ = ["Daemon", "describe_exit", "to_text"]

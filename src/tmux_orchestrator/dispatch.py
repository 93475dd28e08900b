"""The dispatcher: delivers events to hooks, webhooks and e-mails, and feeds the metrics.

It runs inside the daemon process but outside its loop, on threads of its own, with its own
database connection, so nothing it does (a slow hook, a dead endpoint, an SMTP timeout) can delay a
hand-off:

* one **poller** thread watches ``PRAGMA data_version`` (every ``db_poll_interval``), wakes the
  channels when another connection committed, counts new events into the metrics and keeps
  end-detection samples for ``tmo stats``;
* one **channel** thread per ``[[hooks]]``, ``[[webhooks]]`` and ``[[emails]]`` table reads the
  events after its own cursor, in id order, and delivers the ones it wants.

Delivery is at least once. Each channel's cursor (``cursor.<hook|webhook|email>.<name>`` in the
``settings`` table) moves past an event only after it was delivered or finally failed, so a crash
neither skips an event nor repeats more than the one in flight. A new channel starts at the end of
the log as it is when the daemon first runs it. Delivery failures are logged and recorded as
``hook_failed``/``webhook_failed``/``email_failed`` events; see :mod:`tmux_orchestrator.hooks` for
why they cannot loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from tmux_orchestrator.durations import format_duration
from tmux_orchestrator.errors import ConfigError, OrchestratorError
from tmux_orchestrator.hooks import (
    DELIVERY_KINDS,
    Breaker,
    HookSpec,
    end_hook,
    hook_environment,
    run_hook,
)
from tmux_orchestrator.notify import EmailSpec, SmtpSettings, email_delay, send_email
from tmux_orchestrator.project import Outcome, Project, ProjectStatus
from tmux_orchestrator.redact import add_secret, redact
from tmux_orchestrator.stats import write_end_detection
from tmux_orchestrator.store import open_store
from tmux_orchestrator.store.base import Event
from tmux_orchestrator.tmux import OrchestratorServer, Tmux
from tmux_orchestrator.webhooks import WebhookSpec, post

if TYPE_CHECKING:
    from tmux_orchestrator.config import Settings
    from tmux_orchestrator.metrics import DaemonMetrics
    from tmux_orchestrator.store.base import Store

log = logging.getLogger(__name__)

#: Events a channel reads per query.
BATCH = 200
#: Seconds a stopping daemon gives the channels to deliver what is pending.
DRAIN = 2.0
#: A cursor moved only past unwanted events is saved at most this often.
LAZY_SAVE = 5.0


@dataclass(frozen=True)
class DeliveryConfig:
    """Hooks, webhooks and e-mails of ``config.toml``, validated."""

    hooks: tuple[HookSpec, ...] = ()
    webhooks: tuple[WebhookSpec, ...] = ()
    emails: tuple[EmailSpec, ...] = ()
    smtp: SmtpSettings | None = None
    #: Hook processes running at once, over all hooks.
    hook_concurrency: int = 4
    #: ``ADDRESS:PORT`` to serve metrics on (``metrics = "..."``; the ``--metrics`` flag wins).
    metrics: str | None = None

    def with_secrets(self, environ: Mapping[str, str]) -> DeliveryConfig:
        """Read ``secret_env``/``password_env`` from ``environ``: only the daemon does, so every other
        command works in a shell without them. Raises :class:`ConfigError` naming a missing one.
        Every secret is also hidden from then on in log lines and delivery events (``redact``)."""
        webhooks = tuple(w.with_secret(environ) for w in self.webhooks)
        smtp = self.smtp.with_password(environ) if self.smtp is not None else None
        for webhook in webhooks:
            for secret in webhook.secrets():
                add_secret(secret)
        if smtp is not None:
            add_secret(smtp.password)
        return replace(self, webhooks=webhooks, smtp=smtp)


def check_delivery_secrets(settings: Settings, environ: Mapping[str, str] | None = None) -> None:
    """Fail (:class:`ConfigError`) before a daemon starts if a secret its delivery needs is not set."""
    try:
        load_delivery(settings.extra).with_secrets(os.environ if environ is None else environ)
    except ConfigError as exc:
        raise ConfigError(f"{settings.config_path}: {exc}") from exc


def load_delivery(extra: Mapping[str, Any]) -> DeliveryConfig:
    """Read ``[[hooks]]``, ``[[webhooks]]``, ``[smtp]``, ``[[emails]]``, ``hook_concurrency`` and
    ``metrics`` from the raw config values; raises :class:`ConfigError` naming what is wrong."""
    def tables(key: str) -> list[Any]:
        value = extra.get(key, [])
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be written as [[{key}]] tables")
        return value

    hooks = tuple(HookSpec.read(raw, i) for i, raw in enumerate(tables("hooks")))
    webhooks = tuple(WebhookSpec.read(raw, i) for i, raw in enumerate(tables("webhooks")))
    emails = tuple(EmailSpec.read(raw, i) for i, raw in enumerate(tables("emails")))
    for what, keys in (("[[hooks]] name", [h.name for h in hooks]),
                       ("[[webhooks]] name (or url)", [w.identity for w in webhooks]),
                       ("[[emails]] name (or to)", [e.label for e in emails])):
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ConfigError(f"{what} {duplicates[0]!r} is used twice; each needs its own")
    smtp = SmtpSettings.read(extra["smtp"]) if "smtp" in extra else None
    if emails and smtp is None:
        raise ConfigError("[[emails]] need an [smtp] table (host, port, from, ...)")
    concurrency = extra.get("hook_concurrency", 4)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigError(f"hook_concurrency must be an integer >= 1, not {concurrency!r}")
    metrics = extra.get("metrics")
    if metrics is not None and not isinstance(metrics, str):
        raise ConfigError(f"metrics must be \"ADDRESS:PORT\", not {metrics!r}")
    return DeliveryConfig(hooks, webhooks, emails, smtp, concurrency, metrics)


def _about(event: Event) -> Project | None:
    """The event's project as the event saw it, for the failure event that refers to it."""
    if event.project_id is None:
        return None
    status_text = event.new_status or event.old_status or ProjectStatus.QUEUED.value
    status = ProjectStatus(status_text) if status_text in set(ProjectStatus) else ProjectStatus.QUEUED
    outcome = Outcome(event.outcome) if event.outcome in set(Outcome) else None
    return Project(id=event.project_id, name=event.project_name or "", status=status, command=[],
                   outcome=outcome, exit_code=event.exit_code, session_name=event.session_name)


class Channel(threading.Thread):
    """One delivery target: reads events after its cursor and delivers those it wants, in order."""

    #: ``hook``, ``webhook`` or ``email``: names the cursor key prefix and the failure event.
    channel = ""

    def __init__(self, dispatcher: Dispatcher, label: str, cursor_key: str,
                 kinds: frozenset[str]) -> None:
        super().__init__(name=f"tmo-{self.channel}-{label}"[:60], daemon=True)
        self.dispatcher = dispatcher
        self.label = label
        self.cursor_key = cursor_key
        self.kinds = None if "*" in kinds else sorted(kinds)
        self.cursor = 0
        #: The event being delivered (for the give-up rule of :meth:`run`).
        self.current: int | None = None
        #: Whether this host delivered on the last look (see :attr:`Dispatcher.entitled`).
        self._active = True
        self._saved = -1
        self._saved_at = 0.0

    @property
    def store(self) -> Store:
        """The dispatcher's connection."""
        return self.dispatcher.store

    def wants(self, event: Event) -> bool:
        """Whether this channel delivers ``event``."""
        raise NotImplementedError

    def deliver(self, event: Event) -> bool:
        """Deliver ``event`` (retrying as configured). True when done with it, delivered or finally
        failed; False when the daemon stops before it was (it is delivered again next time)."""
        raise NotImplementedError

    def run(self) -> None:
        """Deliver until the daemon stops; an error never ends the channel for good.

        A database error (a full disk, a lock) is waited out with backoff. An event whose delivery
        raises the same unexpected error three times in a row is given up with a ``*_failed``
        event, so one bad event cannot stop every later one.
        """
        failures = 0
        failed_at: int | None = None
        while True:
            try:
                self._deliver_all()
                return
            except Exception as exc:
                expected = isinstance(exc, (OrchestratorError, OSError))
                current = self.current
                failures = failures + 1 if current == failed_at else 1
                failed_at = current
                delay = min(60.0, 2.0 ** (failures - 1))
                log.error("%s %s: delivery failed (%s); going on in %.0fs", self.channel, self.label,
                          exc, delay, exc_info=None if expected else exc)
                if current is not None and failures >= 3 and not expected:
                    self._give_up(current, f"{type(exc).__name__}: {exc}")
                    failures, failed_at = 0, None
                if self.dispatcher.stopping.wait(delay):
                    return
            finally:
                with contextlib.suppress(Exception):
                    self._save(force=True)

    def _deliver_all(self) -> None:
        stored = self.store.get_setting(self.cursor_key)
        if stored is not None and stored.isdigit():
            self.cursor = int(stored)
        elif not self.cursor:
            self.cursor = self.dispatcher.start_id
            self._save(force=True)
        generation = -1
        while True:
            stopping = self.dispatcher.stopping.is_set()
            self._catch_up()
            if stopping:
                break
            generation = self.dispatcher.wait_change(generation)

    def _give_up(self, event_id: int, error: str) -> None:
        """Skip event ``event_id`` for good, saying so."""
        for event in self.store.events_after(event_id - 1, limit=1):
            if event.id == event_id:
                self.failed(event, f"gave up: {error}")
        self.cursor = max(self.cursor, event_id)
        self.current = None
        self._save(force=True)

    def _catch_up(self) -> None:
        if not self.dispatcher.entitled():
            self._active = False  # another host delivers: its cursor moves, ours is read again
            return
        if not self._active:
            stored = self.store.get_setting(self.cursor_key)
            if stored is not None and stored.isdigit():
                self.cursor = self._saved = int(stored)
            self._active = True
        while not self.dispatcher.aborting():
            top = self.store.last_event_id()
            batch = self.store.events_after(self.cursor, limit=BATCH, kinds=self.kinds)
            for event in batch:
                if self.dispatcher.aborting():
                    return
                if not self.dispatcher.entitled():
                    self._active = False  # stepped down mid-batch: the next dispatcher goes on
                    return
                if self.wants(event):
                    self.current = event.id
                    if not self.deliver(event):
                        return
                    self.current = None
                    self.cursor = event.id
                    self._save(force=True)
                else:
                    self.cursor = event.id
            if len(batch) < BATCH:
                # Every event up to `top` was committed before the query, and SQLite commits ids
                # in order, so nothing this channel wants is left below it.
                self.cursor = max(self.cursor, top)
                self._save()
                return

    def _save(self, *, force: bool = False) -> None:
        if self.cursor == self._saved:
            return
        if force or time.monotonic() - self._saved_at >= LAZY_SAVE:
            self.store.set_setting(self.cursor_key, str(self.cursor))
            self._saved, self._saved_at = self.cursor, time.monotonic()

    def failed(self, event: Event, error: str) -> None:
        """Log a final delivery failure and record it (unless it was about a delivery failure)."""
        message = f"{self.channel} {self.label} failed on event #{event.id} ({event.kind}): {error}"
        log.warning("%s", message, extra={"project_id": event.project_id,
                                          "session_name": event.session_name})
        if event.kind not in DELIVERY_KINDS:
            self.dispatcher.record(f"{self.channel}_failed", event, message)

    def pause(self, seconds: float) -> bool:
        """Wait before the next attempt; False when the daemon stops meanwhile."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.dispatcher.aborting():
                return False
            self.dispatcher.stopping.wait(min(0.1, max(0.0, deadline - time.monotonic())))
        return not self.dispatcher.aborting()


class HookChannel(Channel):
    """Runs one ``[[hooks]]`` command per wanted event."""

    channel = "hook"

    def __init__(self, dispatcher: Dispatcher, spec: HookSpec) -> None:
        super().__init__(dispatcher, spec.name, spec.cursor_key, spec.route.kinds)
        self.spec = spec
        self.breaker = Breaker(spec.max_runs, spec.max_runs_window)
        self.proc: subprocess.Popen[bytes] | None = None

    def wants(self, event: Event) -> bool:
        return self.spec.wants(event)

    def _running(self, proc: subprocess.Popen[bytes] | None) -> None:
        self.proc = proc

    def deliver(self, event: Event) -> bool:
        spec = self.spec
        allowed, first_skip = self.breaker.allow(event.project_id)
        if not allowed:
            if first_skip:
                message = (
                    f"hook {spec.name} ran {spec.max_runs} times for this project within "
                    f"{format_duration(spec.max_runs_window)}; skipped until that rate drops "
                    f"(first skipped: event #{event.id} {event.kind})"
                )
                log.warning("%s", message, extra={"project_id": event.project_id})
                self.dispatcher.record("hook_suppressed", event, message)
            return True
        settings = self.dispatcher.settings
        env = hook_environment(spec, event, home=settings.home, database_url=settings.database_url)
        for attempt in range(1, spec.max_attempts + 1):
            with self.dispatcher.hook_slot() as ok:
                if not ok:
                    return False
                result = run_hook(spec, event, env, cwd=settings.home, on_start=self._running)
            if result.ok:
                log.debug("hook %s ran on event #%s (%s) in %.3fs", spec.name, event.id, event.kind,
                          result.seconds)
                return True
            if self.dispatcher.aborting():
                return False  # ended by the stop, not by itself: run it again next time
            if attempt < spec.max_attempts and not self.pause(2.0 ** (attempt - 1)):
                return False
        output = f"; output: {result.output[-500:]}" if result.output else ""
        self.failed(event, result.error + output)
        return True


class WebhookChannel(Channel):
    """POSTs wanted events to one ``[[webhooks]]`` URL."""

    channel = "webhook"

    def __init__(self, dispatcher: Dispatcher, spec: WebhookSpec) -> None:
        super().__init__(dispatcher, spec.label, spec.cursor_key, spec.route.kinds)
        self.spec = spec

    def wants(self, event: Event) -> bool:
        return self.spec.route.matches(event)

    def deliver(self, event: Event) -> bool:
        spec = self.spec
        for attempt in range(1, spec.max_attempts + 1):
            result = post(spec, event)
            if result.ok:
                return True
            if self.dispatcher.aborting():
                return False
            log.info("webhook %s: event #%s attempt %s of %s failed: %s", spec.label, event.id,
                     attempt, spec.max_attempts, result.error)
            if not result.retry:
                break
            if attempt < spec.max_attempts and not self.pause(spec.delay(attempt)):
                return False
        self.failed(event, f"{result.error} after {attempt} attempt(s)")
        return True


class EmailChannel(Channel):
    """Mails wanted events to the recipients of one ``[[emails]]`` table."""

    channel = "email"

    def __init__(self, dispatcher: Dispatcher, spec: EmailSpec, smtp: SmtpSettings) -> None:
        super().__init__(dispatcher, spec.label, spec.cursor_key, spec.route.kinds)
        self.spec = spec
        self.smtp = smtp

    def wants(self, event: Event) -> bool:
        return self.spec.route.matches(event)

    def deliver(self, event: Event) -> bool:
        import smtplib

        error = ""
        for attempt in range(1, self.spec.max_attempts + 1):
            try:
                send_email(self.spec, self.smtp, event)
                return True
            except (smtplib.SMTPException, OSError) as exc:
                error = str(exc) or type(exc).__name__
            if self.dispatcher.aborting():
                return False
            if attempt < self.spec.max_attempts and not self.pause(email_delay(self.spec, attempt)):
                return False
        self.failed(event, f"{error} after {self.spec.max_attempts} attempt(s)")
        return True


class Dispatcher:
    """Runs the delivery channels and the metrics feed of one daemon; see the module docstring."""

    def __init__(self, settings: Settings, metrics: DaemonMetrics,
                 config: DeliveryConfig | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.config = (config or load_delivery(settings.extra)).with_secrets(os.environ)
        self.store: Store = open_store(settings)
        self.stopping = threading.Event()
        #: Whether this host may deliver now, asked before every event: the daemon makes it
        #: :meth:`Membership.may_deliver` (one elected host, while its lease is fresh).
        self.entitled: Callable[[], bool] = lambda: True
        self.start_id = 0
        self._drain_until = 0.0
        self._generation = 0
        self._changed = threading.Condition()
        self._hook_slots = threading.BoundedSemaphore(self.config.hook_concurrency)
        self._dirty = threading.Event()
        self._metrics_cursor = 0
        self.channels: list[Channel] = [HookChannel(self, h) for h in self.config.hooks]
        self.channels += [WebhookChannel(self, w) for w in self.config.webhooks]
        if self.config.smtp is not None:
            self.channels += [EmailChannel(self, e, self.config.smtp) for e in self.config.emails]
        self._poller = threading.Thread(target=self._poll, name="tmo-dispatch", daemon=True)

    def start(self, *, metrics_from: int | None = None) -> Dispatcher:
        """Serve metrics (if asked), then start the poller and every channel. ``metrics_from``:
        the event after which to count metrics (a restarted delivery goes on where the last one
        stopped; default: from now)."""
        tmux = Tmux(self.settings.socket_path, owner_mark=self.settings.owner_tag,
                    private_dir=self.settings.socket_dir_private)
        self.metrics.attach(self.store, OrchestratorServer(tmux, self.settings.owner_tag))
        self.metrics.serve()
        if self.metrics.url:
            self.store.set_setting("daemon.metrics_url", self.metrics.url)
        self.start_id = self.store.last_event_id()
        self._metrics_cursor = self.start_id if metrics_from is None else metrics_from
        self._poller.start()
        for channel in self.channels:
            channel.start()
        if self.channels:
            log.info("delivering events to %s", ", ".join(f"{c.channel} {c.label}" for c in self.channels))
        return self

    @property
    def metrics_cursor(self) -> int:
        """The last event counted into the metrics."""
        return self._metrics_cursor

    def stop(self, drain: float = DRAIN, *, keep_metrics: bool = False) -> None:
        """Deliver what is pending for up to ``drain`` seconds, then stop (running hooks are ended;
        what was not delivered is delivered by the next daemon, or the next dispatcher).
        ``keep_metrics``: the metrics server goes on (a reload starts a new dispatcher)."""
        self._drain_until = time.monotonic() + drain
        self.stopping.set()
        self._bump()
        for thread in [*self.channels, self._poller]:
            thread.join(max(0.0, self._drain_until - time.monotonic()))
        for channel in self.channels:
            if isinstance(channel, HookChannel) and channel.proc is not None:
                end_hook(channel.proc)
        alive = False
        for thread in [*self.channels, self._poller]:
            thread.join(2.0)
            alive = alive or thread.is_alive()
        if not keep_metrics:
            self.metrics.close()
            with contextlib.suppress(OrchestratorError):
                self.store.set_setting("daemon.metrics_url", "")
        if not alive:  # a thread stuck in a network call may still use the connection
            self.store.close()

    def aborting(self) -> bool:
        """True once the daemon stops and the drain time is over."""
        return self.stopping.is_set() and time.monotonic() >= self._drain_until

    # -- wake-ups ----------------------------------------------------------------------------
    def _bump(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def wait_change(self, seen: int, timeout: float = 1.0) -> int:
        """Block until the database changed after generation ``seen`` (or ``timeout``)."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._generation != seen or self.stopping.is_set(), timeout=timeout
            )
            return self._generation

    @contextlib.contextmanager
    def hook_slot(self) -> Iterator[bool]:
        """One of the ``hook_concurrency`` slots; yields False when the daemon stops first."""
        while not self._hook_slots.acquire(timeout=0.1):
            if self.aborting():
                yield False
                return
        try:
            yield True
        finally:
            self._hook_slots.release()

    def record(self, kind: str, event: Event, message: str) -> None:
        """Write a delivery event about ``event`` and wake the channels (our own writes do not
        move our connection's ``data_version``)."""
        self.store.append_event(kind, source="daemon", project=_about(event), message=redact(message))
        self._dirty.set()
        self._bump()

    # -- the poller --------------------------------------------------------------------------
    def _poll(self) -> None:
        """Wake the channels and feed the metrics; errors are logged and waited out, never fatal."""
        failures = 0
        while not self.stopping.is_set():
            try:
                self._poll_until_stopped()
                return
            except Exception as exc:
                failures += 1
                delay = min(60.0, 2.0 ** (failures - 1))
                log.error("event dispatcher failed (%s); going on in %.0fs", exc, delay,
                          exc_info=None if isinstance(exc, (OrchestratorError, OSError)) else exc)
                self.stopping.wait(delay)

    def _poll_until_stopped(self) -> None:
        interval = self.settings.db_poll_interval if self.channels else max(
            0.1, self.settings.db_poll_interval)
        token = -1
        next_save = 0.0
        while True:
            current = self.store.changes_token()
            if current != token or self._dirty.is_set():
                token = current
                self._dirty.clear()
                self._bump()
                self._feed_metrics()
            if time.monotonic() >= next_save or self.stopping.is_set():
                samples = self.metrics.take_samples()
                if samples:
                    write_end_detection(self.store, samples)
                next_save = time.monotonic() + 0.5
            if self.stopping.is_set():
                return
            self.stopping.wait(interval)

    def _feed_metrics(self) -> None:
        while True:
            batch = self.store.events_after(self._metrics_cursor, limit=1000)
            for event in batch:
                self.metrics.observe_event(event)
                self._metrics_cursor = event.id
            if len(batch) < 1000:
                return

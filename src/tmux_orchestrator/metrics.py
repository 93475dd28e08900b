"""Prometheus metrics of the daemon (``tmo daemon run --metrics ADDRESS:PORT``).

Built on the standard ``prometheus_client`` library, in a registry of its own (never the global
one, so several daemons can live in one process, as in tests). Three kinds of sources:

* the daemon's loop calls :meth:`DaemonMetrics.end_detected` and :meth:`DaemonMetrics.reconciled`
  (cheap: a histogram observation);
* the dispatcher thread feeds every new event to :meth:`DaemonMetrics.observe_event`, which counts
  starts, ends by outcome, cleaned lingering sessions, delivery failures and hand-off latencies, with
  the definitions of :mod:`tmux_orchestrator.stats` (so ``tmo stats`` agrees);
* projects by status and owned sessions are read at scrape time, on the HTTP server's thread, from
  the dispatcher's own database connection and one ``tmux list-sessions``.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric

from tmux_orchestrator.errors import OrchestratorError, UsageError
from tmux_orchestrator.stats import END_KINDS, HandoffTracker
from tmux_orchestrator.store.base import Event, Store
from tmux_orchestrator.tmux import OrchestratorServer

log = logging.getLogger(__name__)

#: Histogram buckets for latencies that should be milliseconds (hand-off, end detection).
FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)
#: Histogram buckets of a reconcile pass.
RECONCILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


def parse_address(text: str) -> tuple[str, int]:
    """``(host, port)`` from ``ADDRESS:PORT``, ``[::1]:PORT`` or ``:PORT`` (= 127.0.0.1)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"invalid metrics address {text!r}: use ADDRESS:PORT, e.g. 127.0.0.1:9108")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _SilentHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Scrapes are not worth a log line."""


class _ScrapeCollector:
    """Gauges read at scrape time: projects by status, owned sessions."""

    def __init__(self) -> None:
        self.store: Store | None = None
        self.server: OrchestratorServer | None = None

    def collect(self) -> Iterator[Metric]:
        if self.store is not None:
            projects = GaugeMetricFamily("tmo_projects", "Projects by status.", labels=["status"])
            try:
                for status, count in self.store.counts().items():
                    projects.add_metric([status], count)
            except OrchestratorError as exc:
                log.warning("metrics: cannot count projects: %s", exc)
            yield projects
        if self.server is not None:
            try:
                owned = len(self.server.list_owned())
            except OrchestratorError as exc:
                log.warning("metrics: cannot list sessions: %s", exc)
            else:
                yield GaugeMetricFamily("tmo_owned_sessions", "tmux sessions this home owns.",
                                        value=owned)


class DaemonMetrics:
    """The daemon's metrics; serves them over HTTP when given an address."""

    def __init__(self, address: str | None = None) -> None:
        self.address = parse_address(address) if address else None
        self.registry = CollectorRegistry()
        r = self.registry
        self.starts = Counter("tmo_project_starts", "Projects started.", registry=r)
        self.ends = Counter("tmo_project_ends", "Projects ended, by status and outcome.",
                            ["status", "outcome"], registry=r)
        self.events = Counter("tmo_events", "Events recorded, by kind.", ["kind"], registry=r)
        self.lingering = Counter("tmo_lingering_sessions_cleaned", "Lingering sessions cleaned.",
                                 registry=r)
        self.failures = Counter("tmo_delivery_failures", "Hook, webhook and e-mail failures.",
                                ["channel"], registry=r)
        self.suppressed = Counter("tmo_hooks_suppressed", "Hook runs skipped by the circuit breaker.",
                                  registry=r)
        self.handoff = Histogram("tmo_handoff_seconds", "From a slot opening to the next start.",
                                 buckets=FAST_BUCKETS, registry=r)
        self.end_detection = Histogram("tmo_end_detection_seconds",
                                       "From a project's end to the daemon recording it.", ["via"],
                                       buckets=FAST_BUCKETS, registry=r)
        self.reconcile = Histogram("tmo_reconcile_seconds", "Duration of reconcile passes.",
                                   buckets=RECONCILE_BUCKETS, registry=r)
        self._scrape = _ScrapeCollector()
        r.register(self._scrape)
        self._handoffs = HandoffTracker()
        self._samples: list[tuple[str, float, float]] = []
        self._lock = threading.Lock()
        self._httpd: WSGIServer | None = None
        #: ``http://host:port/metrics`` once serving.
        self.url: str | None = None

    # -- called by the daemon's loop ------------------------------------------------------------
    def end_detected(self, via: str, ended_at: float | None) -> None:
        """A project's end (at unix time ``ended_at``; None: unknown) has just been recorded.

        ``via`` says how the daemon learnt of it: ``exit`` (the wrapper's push; ``ended_at`` is when
        its line arrived), ``marker`` (its marker file) or ``database`` (a change committed by
        another writer: CLI, API, SQL).
        """
        if ended_at is None:
            return
        now = time.time()
        seconds = max(0.0, now - ended_at)
        self.end_detection.labels(via).observe(seconds)
        with self._lock:
            self._samples.append((via, seconds, now))

    @staticmethod
    def file_time(path: Path) -> float | None:
        """Modification time of ``path`` (an exit or marker file: when the project ended)."""
        try:
            return path.stat().st_mtime
        except OSError:
            return None

    def reconciled(self, seconds: float) -> None:
        """A reconcile pass took ``seconds``."""
        self.reconcile.observe(seconds)

    # -- called by the dispatcher thread ---------------------------------------------------------
    def observe_event(self, event: Event) -> None:
        """Count one new event (in id order)."""
        self.events.labels(event.kind).inc()
        if event.kind == "started":
            self.starts.inc()
        elif event.kind in END_KINDS:
            self.ends.labels(event.kind, event.outcome or "unknown").inc()
        elif event.kind == "lingering_cleaned":
            self.lingering.inc()
        elif event.kind.endswith("_failed") and event.kind.split("_")[0] in ("hook", "webhook", "email"):
            self.failures.labels(event.kind.split("_")[0]).inc()
        elif event.kind == "hook_suppressed":
            self.suppressed.inc()
        latency = self._handoffs.feed(event)
        if latency is not None:
            self.handoff.observe(latency)

    def take_samples(self) -> list[tuple[str, float, float]]:
        """End-detection samples since the last call (the dispatcher keeps them for ``tmo stats``)."""
        with self._lock:
            samples, self._samples = self._samples, []
        return samples

    # -- serving --------------------------------------------------------------------------------
    def attach(self, store: Store, server: OrchestratorServer) -> None:
        """Where scrape-time gauges come from (the dispatcher's connection, this home's server)."""
        self._scrape.store = store
        self._scrape.server = server

    def serve(self) -> None:
        """Start the HTTP server (``/metrics``) on a thread, if an address was given."""
        if self.address is None or self._httpd is not None:
            return
        host, port = self.address
        server_class = type("MetricsServer", (_Server,), {
            "address_family": socket.AF_INET6 if ":" in host else socket.AF_INET,
        })
        try:
            self._httpd = make_server(host, port, make_wsgi_app(self.registry), server_class,
                                      handler_class=_SilentHandler)
        except OSError as exc:
            raise UsageError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
        bound_host, bound_port = str(self._httpd.server_address[0]), int(self._httpd.server_address[1])
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"http://{shown}:{bound_port}/metrics"
        threading.Thread(target=self._httpd.serve_forever, name="tmo-metrics", daemon=True).start()
        log.info("serving metrics on %s", self.url)

    def close(self) -> None:
        """Stop the HTTP server."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

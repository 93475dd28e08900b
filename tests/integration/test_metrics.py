"""Prometheus metrics: `tmo daemon run --metrics` scraped over real HTTP, and the counting rules."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tmux_orchestrator.config import Settings
from tmux_orchestrator.errors import UsageError
from tmux_orchestrator.metrics import DaemonMetrics, parse_address
from tmux_orchestrator.orchestrator import Orchestrator
from tmux_orchestrator.project import ProjectStatus
from tmux_orchestrator.store.base import Event
from tmux_orchestrator.testing import retry_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample of the endpoint, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


@pytest.fixture
def metrics_daemon(tmo_settings: Settings) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``tmo daemon run --metrics 127.0.0.1:0`` as a child process; yields it and its metrics URL."""
    tmo_settings.config_path.write_text("""
reconcile_interval = "0.2s"
[[hooks]]
name = "fails"
on = ["completed"]
command = "exit 1"
""")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tmux_orchestrator", "daemon", "run", "--quiet",
         "--metrics", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    probe = Orchestrator(tmo_settings)
    try:
        def url() -> str | None:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            return probe.store.get_setting("daemon.metrics_url") or None
        found = retry_until(url, timeout=20, message="the metrics endpoint")
        assert found is not None
        yield proc, found
    finally:
        probe.close()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        if proc.stderr is not None:
            proc.stderr.close()


def test_daemon_metrics_serve_queue_state_counters_and_latency_histograms(
    metrics_daemon: tuple[subprocess.Popen[bytes], str], orchestrator: Orchestrator, tmp_path: Path,
) -> None:
    proc, url = metrics_daemon
    orchestrator.pause()
    ids = [orchestrator.enqueue(["true"], project_path=tmp_path).id for _ in range(3)]
    orchestrator.resume()
    retry_until(lambda: all(orchestrator.get(i).status == ProjectStatus.COMPLETED for i in ids),
                message="three projects to complete")
    running = orchestrator.enqueue(["sleep", "600"], project_path=tmp_path)
    retry_until(lambda: orchestrator.get(running.id).session_id, message="the sleeper's session")

    def settled() -> Samples | None:
        samples = scrape(url)
        done = samples.get(("tmo_delivery_failures_total", (("channel", "hook"),))) == 3
        return samples if done and samples.get(("tmo_reconcile_seconds_count", ()), 0) >= 1 else None
    samples = retry_until(settled, message="the hook failures and a reconcile pass to be counted")
    assert samples is not None

    assert samples[("tmo_projects", (("status", "completed"),))] == 3
    assert samples[("tmo_projects", (("status", "processing"),))] == 1
    assert samples[("tmo_owned_sessions", ())] == 1
    assert samples[("tmo_project_starts_total", ())] == 4
    assert samples[("tmo_project_ends_total", (("outcome", "exited"), ("status", "completed")))] == 3
    assert samples[("tmo_handoff_seconds_count", ())] == 3, "the resume and two ends hand off"
    assert samples[("tmo_end_detection_seconds_count", (("via", "exit"),))] == 3
    assert samples[("tmo_lingering_sessions_cleaned_total", ())] == 0
    assert ("tmo_handoff_seconds_bucket", (("le", "+Inf"),)) in samples
    orchestrator.cancel(running.id)
    assert proc.poll() is None


def test_a_busy_metrics_port_stops_the_daemon_with_a_clear_error(
    tmo_settings: Settings, tmp_path: Path,
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "tmux_orchestrator", "daemon", "run", "--quiet",
             "--metrics", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
        )
    assert result.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def ev(event_id: int, kind: str, **fields: object) -> Event:
    return Event(id=event_id, at=datetime.now(UTC), kind=kind, source="daemon", **fields)  # type: ignore[arg-type]


def test_events_are_counted_by_kind_outcome_and_channel() -> None:
    metrics = DaemonMetrics()
    for event in (
        ev(1, "started", project_id=1), ev(2, "failed", project_id=1, outcome="timeout"),
        ev(3, "lingering_cleaned", project_id=1), ev(4, "webhook_failed", project_id=1),
        ev(5, "email_failed"), ev(6, "hook_suppressed", project_id=1),
    ):
        metrics.observe_event(event)
    value = metrics.registry.get_sample_value
    assert value("tmo_project_starts_total") == 1
    assert value("tmo_project_ends_total", {"status": "failed", "outcome": "timeout"}) == 1
    assert value("tmo_lingering_sessions_cleaned_total") == 1
    assert value("tmo_delivery_failures_total", {"channel": "webhook"}) == 1
    assert value("tmo_delivery_failures_total", {"channel": "email"}) == 1
    assert value("tmo_hooks_suppressed_total") == 1
    assert value("tmo_events_total", {"kind": "started"}) == 1


def test_metrics_addresses_are_parsed_with_clear_errors() -> None:
    assert parse_address("127.0.0.1:9108") == ("127.0.0.1", 9108)
    assert parse_address("[::1]:9108") == ("::1", 9108)
    assert parse_address(":9108") == ("127.0.0.1", 9108)
    for bad in ("9108", "host:port", "127.0.0.1:99999"):
        with pytest.raises(UsageError, match="ADDRESS:PORT"):
            parse_address(bad)


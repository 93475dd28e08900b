"""`tmo stats [--json]`: the queue's summary from the database, with no daemon or metrics server."""

from __future__ import annotations

from typing import Any

from acceptance.support import DaemonControl, Tmo
from tmux_orchestrator.config import load_settings
from tmux_orchestrator.orchestrator import Orchestrator
from tmux_orchestrator.testing import retry_until


def test_stats_summarize_a_finished_queue_after_the_daemon_stopped(tmo: Tmo, daemon: DaemonControl) -> None:
    tmo.ok("pause")
    ids = [tmo.add("true"), tmo.add("true"), tmo.add("sh", "-c", "exit 2")]
    daemon.start()
    tmo.ok("resume")
    for project_id in ids:
        tmo.wait_status(project_id, "completed", "failed")

    def end_detection_kept() -> dict[str, Any] | None:
        data = tmo.json("stats")
        return data if data["end_detection_seconds"]["samples"] == 3 else None
    retry_until(end_detection_kept, timeout=15, interval=0.1, message="end-detection samples")
    tmo.ok("daemon", "stop")

    data = tmo.json("stats")
    assert data["projects"] == {"queued": 0, "processing": 0, "completed": 2, "failed": 1, "cancelled": 0}
    assert data["starts"] == 3
    assert data["ends"] == {"completed/exited": 2, "failed/exited": 1}
    assert data["handoff_seconds"]["samples"] == 3, "the resume and two ends each handed off"
    assert 0 <= data["handoff_seconds"]["median"] <= data["handoff_seconds"]["p99"] < 5
    assert data["end_detection_by_via"]["exit"]["samples"] == 3
    assert data["delivery_failures"] == {
        "hook_failed": 0, "hook_suppressed": 0, "webhook_failed": 0, "email_failed": 0}

    text = tmo.ok("stats")
    assert "projects:       0 queued, 0 processing, 2 completed, 1 failed, 0 cancelled" in text
    assert "starts:         3" in text
    assert "ends:           2 completed/exited, 1 failed/exited" in text
    assert "hand-off:       median " in text and "(3 samples)" in text


def test_stats_on_an_empty_home_say_there_is_nothing_yet(tmo: Tmo) -> None:
    result = tmo("stats")  # no database yet: said, and none created
    assert result.returncode == 1 and "no database at" in result.stderr
    assert not (tmo.home / "tmo.db").exists()
    Orchestrator(load_settings(tmo.home)).close()  # an empty database
    data = tmo.json("stats")
    assert data["starts"] == 0 and data["ends"] == {} and data["events"] == 0
    assert data["handoff_seconds"] == {"samples": 0, "median": None, "p99": None}
    text = tmo.ok("stats")
    assert "hand-off:       no samples yet" in text
    assert "ends:           none" in text

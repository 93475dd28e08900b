"""Requirement 7: `UPDATE project_queue SET status='completed'` by hand, with sqlite3, ends a project
the same way as any other path: its session is killed, events are recorded, the next one starts."""

from __future__ import annotations

import time
from typing import Any

from acceptance.support import DaemonControl, Tmo, poll, run_sql, wait_session
from tmux_orchestrator.testing import retry_until


def _events_of(tmo: Tmo, project_id: int) -> list[dict[str, Any]]:
    return [e for e in tmo.events() if e["project_id"] == project_id]


def test_sql_completion_with_the_daemon_running_kills_the_session_and_starts_the_next(
    tmo: Tmo, daemon: DaemonControl
) -> None:
    long = tmo.add("sleep", "600", options=["--name", "long"])
    following = tmo.add("sh", "-c", "echo next", options=["--name", "next"])
    daemon.start("--concurrency", "1")
    session = wait_session(tmo, long)
    assert tmo.status_of(following) == "queued"

    run_sql(tmo.home, f"UPDATE project_queue SET status='completed' WHERE id={long};")
    updated = time.monotonic()
    retry_until(lambda: session not in tmo.tmux_session_names(), timeout=2,
                message="the session of the SQL-completed project to vanish")
    assert time.monotonic() - updated < 2.0

    def recorded() -> list[dict[str, Any]] | None:
        events = _events_of(tmo, long)
        return events if any(e["kind"] == "session_killed" for e in events) else None
    events = poll(recorded, timeout=5, message="a session_killed event")
    completed = [e for e in events if e["kind"] == "completed"]
    assert len(completed) == 1, completed
    assert completed[0]["source"] == "sql"
    assert completed[0]["old_status"] == "processing"
    assert tmo.project(long)["status"] == "completed"

    nxt = tmo.wait_status(following, "completed", "failed", timeout=5)
    assert nxt["status"] == "completed"
    assert [e["project_id"] for e in tmo.events() if e["kind"] == "started"] == [long, following]


def test_sql_completion_while_the_daemon_is_stopped_is_cleaned_up_at_the_next_start(
    tmo: Tmo, daemon: DaemonControl
) -> None:
    long = tmo.add("sleep", "600", options=["--name", "long"])
    following = tmo.add("sh", "-c", "echo next", options=["--name", "next"])
    daemon.start("--concurrency", "1")
    session = wait_session(tmo, long)
    tmo.ok("daemon", "stop")
    assert session in tmo.tmux_session_names(), "stopping the daemon must leave the session alone"

    run_sql(tmo.home, f"UPDATE project_queue SET status='completed' WHERE id={long};")
    assert session in tmo.tmux_session_names(), "with no daemon nothing should have touched tmux"
    completed = [e for e in _events_of(tmo, long) if e["kind"] == "completed"]
    assert len(completed) == 1
    assert completed[0]["source"] == "sql"

    daemon.start()
    retry_until(lambda: session not in tmo.tmux_session_names(), timeout=5,
                message="the lingering session to be killed after the start")

    def killed() -> list[dict[str, Any]] | None:
        events = [e for e in _events_of(tmo, long) if e["kind"] in ("session_killed", "lingering_cleaned")]
        return events or None
    kills = poll(killed, timeout=5, message="an event for the killed lingering session")
    assert len(kills) == 1, kills
    assert kills[0]["session_name"] == session
    assert len([e for e in _events_of(tmo, long) if e["kind"] == "completed"]) == 1, "no second event"
    assert tmo.wait_status(following, "completed", timeout=10)["status"] == "completed"

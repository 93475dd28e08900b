"""Requirement 5: the queue runs projects one after another in priority order and cleans up."""

from __future__ import annotations

import itertools
import subprocess
from datetime import datetime

from acceptance.support import DaemonControl, Tmo, add_gated, poll, wait_session
from tmux_orchestrator.testing import retry_until


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_three_projects_run_one_after_another_in_priority_then_fifo_order(
    tmo: Tmo, daemon: DaemonControl
) -> None:
    script = "echo output-of-{0}; sleep 0.2"
    low_first = tmo.add("sh", "-c", script.format("low-first"), options=["--name", "low-first"])
    high = tmo.add("sh", "-c", script.format("high"), options=["--name", "high", "--priority", "5"])
    low_second = tmo.add("sh", "-c", script.format("low-second"), options=["--name", "low-second"])
    daemon.start("--concurrency", "1")

    def all_ended() -> list[dict[str, object]] | None:
        projects = tmo.projects()
        return projects if all(p["status"] == "completed" for p in projects) else None
    retry_until(all_ended, timeout=20, interval=0.1, message="all three projects to complete")

    ran = sorted((tmo.project(i) for i in (low_first, high, low_second)),
                 key=lambda p: _when(p["started_at"]))
    assert [p["id"] for p in ran] == [high, low_first, low_second], [p["name"] for p in ran]
    for earlier, later in itertools.pairwise(ran):
        assert _when(earlier["completed_at"]) <= _when(later["started_at"]), (
            f"project {later['id']} started before project {earlier['id']} ended"
        )
    started = [e["project_id"] for e in tmo.events() if e["kind"] == "started"]
    assert started == [high, low_first, low_second]


def test_each_session_vanishes_when_its_project_ends(tmo: Tmo, daemon: DaemonControl) -> None:
    first, first_gate = add_gated(tmo, "first")
    second, second_gate = add_gated(tmo, "second")
    daemon.start()
    first_session = wait_session(tmo, first)
    assert tmo.session_names() == {first_session}
    first_gate.touch()
    second_session = wait_session(tmo, second)
    retry_until(lambda: first_session not in tmo.tmux_session_names(), timeout=2,
                message="the first project's session to vanish")
    assert tmo.session_names() == {second_session}
    second_gate.touch()
    tmo.wait_status(second, "completed")
    retry_until(lambda: tmo.sessions() == [], timeout=5, message="no owned session to be left")
    assert not {first_session, second_session} & tmo.tmux_session_names()


def test_logs_shows_a_projects_output(tmo: Tmo, daemon: DaemonControl) -> None:
    project_id = tmo.add("sh", "-c", "echo hello-from-the-project; echo second-line")
    daemon.start()
    tmo.wait_status(project_id, "completed")

    def logged() -> str | None:
        out = tmo.ok("logs", str(project_id))
        return out if "second-line" in out else None
    # The pipe to the log may trail the exit by a moment; poll for it, never sleep.
    out = poll(logged, timeout=5, message="the output in `tmo logs`")
    assert "hello-from-the-project" in out


def test_logs_follow_returns_after_the_project_ends_with_its_output(
    tmo: Tmo, daemon: DaemonControl
) -> None:
    project_id, gate = add_gated(tmo, "followed")
    daemon.start()
    wait_session(tmo, project_id)
    follower = tmo.popen("logs", str(project_id), "--follow")
    retry_until(lambda: "started-followed" in tmo.ok("logs", str(project_id)), timeout=5,
                message="the project's first line")
    assert follower.poll() is None, "`tmo logs --follow` returned while the project still ran"
    gate.touch()
    try:
        out, err = follower.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        raise AssertionError("`tmo logs --follow` did not return after the project ended") from None
    assert follower.returncode == 0, err
    assert "started-followed" in out
    assert "finished-followed" in out
    assert tmo.status_of(project_id) == "completed"


def test_exit_0_completes_and_exit_7_fails_with_exit_code_7(tmo: Tmo, daemon: DaemonControl) -> None:
    good = tmo.add("sh", "-c", "exit 0", options=["--name", "good"])
    bad = tmo.add("sh", "-c", "exit 7", options=["--name", "bad"])
    daemon.start()
    tmo.wait_status(good, "completed", "failed")
    tmo.wait_status(bad, "completed", "failed")
    listed = {p["id"]: p for p in tmo.projects()}
    assert listed[good]["status"] == "completed"
    assert listed[good]["exit_code"] == 0
    assert listed[bad]["status"] == "failed"
    assert listed[bad]["exit_code"] == 7
    assert listed[bad]["error_message"] and "7" in listed[bad]["error_message"]
    assert tmo.projects("--status", "failed") == [listed[bad]]

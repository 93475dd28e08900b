"""Requirement 6: ending projects by hand: complete (from inside), fail, cancel, retry, remove."""

from __future__ import annotations

from acceptance.support import TMO, DaemonControl, Tmo, wait_session
from tmux_orchestrator.testing import retry_until


def _session_gone(tmo: Tmo, session: str, timeout: float = 5.0) -> None:
    retry_until(lambda: session not in tmo.tmux_session_names(), timeout=timeout,
                message=f"session {session} to vanish")


def test_complete_from_inside_the_session_completes_it_as_manual_and_kills_the_session(
    tmo: Tmo, daemon: DaemonControl
) -> None:
    # The project itself says it is done (no id: TMO_PROJECT_ID from its environment), then idles.
    project_id = tmo.add("sh", "-c", f"echo agent-working; '{TMO}' complete; sleep 60",
                         options=["--name", "agent"])
    assert "TMO_PROJECT_ID" not in tmo.env
    daemon.start()
    done = tmo.wait_status(project_id, "completed", "failed", "cancelled")
    assert done["status"] == "completed"
    assert done["outcome"] == "manual"
    assert done["session_name"]
    _session_gone(tmo, done["session_name"])
    retry_until(lambda: tmo.sessions() == [], timeout=5, message="no owned session left")
    events = [e for e in tmo.events() if e["project_id"] == project_id]
    completed = [e for e in events if e["kind"] == "completed"]
    assert len(completed) == 1
    assert completed[0]["source"] == "cli"
    assert [e["kind"] for e in events].count("session_killed") == 1, "the kill must be recorded once"


def test_fail_with_reason_from_outside_fails_it_and_kills_the_session(
    tmo: Tmo, daemon: DaemonControl
) -> None:
    project_id = tmo.add("sleep", "600")
    daemon.start()
    session = wait_session(tmo, project_id)
    out = tmo.ok("fail", str(project_id), "--reason", "x")
    assert "failed" in out
    project = tmo.project(project_id)
    assert project["status"] == "failed"
    assert project["error_message"] == "x"
    assert project["outcome"] == "manual"
    _session_gone(tmo, session)
    assert tmo.projects("--status", "failed")[0]["error_message"] == "x"


def test_cancel_a_queued_and_a_running_project(tmo: Tmo, daemon: DaemonControl) -> None:
    running = tmo.add("sleep", "600", options=["--name", "running"])
    queued = tmo.add("sleep", "600", options=["--name", "waiting"])
    daemon.start("--concurrency", "1")
    session = wait_session(tmo, running)
    assert tmo.status_of(queued) == "queued"

    tmo.ok("cancel", str(queued))
    cancelled = tmo.project(queued)
    assert cancelled["status"] == "cancelled"
    assert cancelled["started_at"] is None
    assert tmo.status_of(running) == "processing"

    tmo.ok("cancel", str(running))
    assert tmo.status_of(running) == "cancelled"
    _session_gone(tmo, session)
    assert tmo.project(queued)["started_at"] is None, "a cancelled project must never start"
    kinds = [(e["kind"], e["project_id"]) for e in tmo.events()]
    assert ("cancelled", queued) in kinds
    assert ("cancelled", running) in kinds


def test_retry_reruns_a_failed_project(tmo: Tmo, daemon: DaemonControl) -> None:
    work = tmo.home / "retry-work"
    work.mkdir()
    # Fails the first time, succeeds the second.
    script = "if [ -e ran-once ]; then echo second-run; exit 0; fi; touch ran-once; echo first-run; exit 7"
    project_id = tmo.add("sh", "-c", script, options=["--dir", str(work)])
    daemon.start()
    failed = tmo.wait_status(project_id, "failed")
    assert failed["exit_code"] == 7

    out = tmo.ok("retry", str(project_id))
    assert "queued" in out
    done = tmo.wait_status(project_id, "completed")
    assert done["exit_code"] == 0
    assert done["attempt"] == failed["attempt"] + 1
    kinds = [e["kind"] for e in tmo.events() if e["project_id"] == project_id]
    assert kinds.count("started") == 2
    assert "retried" in kinds
    retry_until(lambda: "second-run" in tmo.ok("logs", str(project_id)), timeout=5,
                message="the second run's output")


def test_remove_deletes_a_project(tmo: Tmo, daemon: DaemonControl) -> None:
    keep = tmo.add("echo", "kept")
    gone = tmo.add("echo", "removed")
    daemon.start()
    tmo.wait_status(gone, "completed")
    tmo.ok("remove", str(gone))
    assert [p["id"] for p in tmo.projects()] == [keep]
    shown = tmo("show", str(gone))
    assert shown.returncode == 1
    assert "no project" in shown.stderr
    assert ("removed", gone) in [(e["kind"], e["project_id"]) for e in tmo.events()]


def test_remove_deletes_a_queued_project_before_it_runs(tmo: Tmo) -> None:
    project_id = tmo.add("echo", "never")
    tmo.ok("remove", str(project_id))
    assert tmo.projects() == []

"""Requirement 4: the daemon's life cycle, driven through `tmo daemon ...` and real signals."""

from __future__ import annotations

import os
import signal
import time

from acceptance.support import DaemonControl, Tmo, add_gated, pid_alive, wait_session
from tmux_orchestrator.testing import retry_until


def test_daemon_start_returns_once_ready(tmo: Tmo, daemon: DaemonControl) -> None:
    pid = daemon.start()
    # no polling: the very next status call must already see it running
    result = tmo("daemon", "status", "--json")
    assert result.returncode == 0, result.stderr
    status = daemon.status()
    assert status["running"] is True
    assert status["pid"] == pid
    assert status["started_at"]
    assert pid_alive(pid)
    assert any(e["kind"] == "daemon_started" for e in tmo.events())


def test_second_daemon_start_leaves_the_running_one_and_names_it(tmo: Tmo, daemon: DaemonControl) -> None:
    pid = daemon.start()
    second = tmo("daemon", "start")
    assert second.returncode == 0, second.stderr  # idempotent, like `systemctl start`
    assert "Traceback" not in second.stderr
    assert f"pid {pid}" in second.stdout, second.stdout
    assert daemon.pid() == pid
    assert pid_alive(pid)


def test_foreground_daemon_run_refuses_naming_the_running_pid(tmo: Tmo, daemon: DaemonControl) -> None:
    pid = daemon.start()
    proc = daemon.run()
    code = proc.wait(timeout=15)
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    assert code != 0
    assert "Traceback" not in stderr
    assert f"pid {pid}" in stderr, stderr
    assert daemon.pid() == pid


def test_daemon_stop_stops_it(tmo: Tmo, daemon: DaemonControl) -> None:
    pid = daemon.start()
    out = tmo.ok("daemon", "stop")
    assert str(pid) in out
    assert tmo("daemon", "status").returncode == 3
    retry_until(lambda: not pid_alive(pid), timeout=5, message=f"daemon pid {pid} to exit")
    assert daemon.status()["running"] is False


def test_sigterm_to_daemon_run_exits_0_within_a_second_leaving_the_session_alive(
    tmo: Tmo, daemon: DaemonControl
) -> None:
    project_id, _gate = add_gated(tmo, "survivor")
    proc = daemon.run_ready()
    session = wait_session(tmo, project_id)
    started = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    code = proc.wait(timeout=5)
    elapsed = time.monotonic() - started
    assert code == 0
    assert elapsed < 1.0, f"daemon took {elapsed:.2f}s to exit after SIGTERM"
    assert session in tmo.tmux_session_names()
    assert tmo.status_of(project_id) == "processing"
    assert daemon.status()["running"] is False


def test_restarted_daemon_adopts_a_running_project_which_still_completes(
    tmo: Tmo, daemon: DaemonControl
) -> None:
    project_id, gate = add_gated(tmo, "adopted")
    proc = daemon.run_ready()
    session = wait_session(tmo, project_id)
    before = tmo.project(project_id)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=5) == 0

    daemon.start()
    adopted = tmo.project(project_id)
    assert adopted["status"] == "processing"
    assert adopted["attempt"] == before["attempt"], "the project was restarted, not adopted"
    assert adopted["started_at"] == before["started_at"]
    assert session in tmo.tmux_session_names()

    gate.touch()
    done = tmo.wait_status(project_id, "completed", "failed")
    assert done["status"] == "completed"
    assert done["exit_code"] == 0
    assert done["outcome"] == "exited"
    retry_until(lambda: session not in tmo.tmux_session_names(), timeout=5,
                message="the adopted project's session to vanish")
    completed = [e for e in tmo.events() if e["kind"] == "completed" and e["project_id"] == project_id]
    assert len(completed) == 1
    assert completed[0]["source"] == "daemon"


def test_sigkilled_daemon_leaves_no_lock_that_blocks_the_next_start(
    tmo: Tmo, daemon: DaemonControl
) -> None:
    old = daemon.start()
    os.kill(old, signal.SIGKILL)
    retry_until(lambda: not pid_alive(old), timeout=5, message="the killed daemon to die")
    assert (tmo.home / "daemon.lock").read_text().strip() == str(old), "lock should hold the dead pid"
    assert tmo("daemon", "status").returncode == 3

    new = daemon.start()
    assert new != old
    status = daemon.status()
    assert status["running"] is True
    assert status["pid"] == new


def test_concurrency_is_stored_and_shown_by_status(tmo: Tmo, daemon: DaemonControl) -> None:
    daemon.start("--concurrency", "3")
    assert daemon.status()["concurrency"] == 3
    tmo.ok("daemon", "stop")
    assert daemon.status()["concurrency"] == 3, "the stored value is shown even when stopped"
    daemon.start()
    assert daemon.status()["concurrency"] == 3, "a start without --concurrency keeps the stored value"


def _run_together(tmo: Tmo, *args: str) -> list[tuple[int, str, str]]:
    """Run ``tmo args`` twice as concurrent processes; (exit code, stdout, stderr) of each."""
    procs = [tmo.popen(*args) for _ in range(2)]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=60)
        results.append((proc.returncode, stdout.strip(), stderr.strip()))
    return results


def test_two_concurrent_daemon_starts_both_succeed_naming_one_daemon(
        tmo: Tmo, daemon: DaemonControl) -> None:
    """The start that loses the race for the lock reports the winner, as a second start does."""
    for _ in range(5):
        results = _run_together(tmo, "daemon", "start")
        assert [code for code, _, _ in results] == [0, 0], results
        assert not any(stderr for _, _, stderr in results), results
        started = [out for _, out, _ in results if out.startswith("daemon started (pid ")]
        assert len(started) == 1, results
        pid = daemon.pid()
        assert pid is not None and f"(pid {pid})" in started[0]
        daemon.pids.add(pid)
        assert f"daemon already running (pid {pid})" in [out for _, out, _ in results], results
        tmo.ok("daemon", "stop")


def test_two_concurrent_daemon_stops_stop_it_once(tmo: Tmo, daemon: DaemonControl) -> None:
    """One stop stops the daemon; the other finds none running. Both exit 0."""
    for _ in range(5):
        pid = daemon.start()
        results = sorted(_run_together(tmo, "daemon", "stop"))
        assert [code for code, _, _ in results] == [0, 0], results
        assert [out.split(" (")[0] for _, out, _ in results] == ["daemon not running", "daemon stopped"]
        assert f"daemon stopped (pid {pid})" in [out for _, out, _ in results]

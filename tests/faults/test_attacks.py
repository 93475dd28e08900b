"""What an adversarial tester found by attacking the built product from outside, one test each."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from acceptance.support import DaemonControl, Tmo, pid_alive, run_sql, wait_session
from faults.support import Ledger, cleanup_counts
from tmux_orchestrator.testing import retry_until

STUBBORN = 'trap "" TERM; while :; do sleep 0.1; done'


def _attempt_pids(home: Path, project: int, attempt: int) -> list[int]:
    """Live processes carrying the attempt's TMO_* marks, found in /proc by the test itself."""
    marks = {f"TMO_PROJECT_ID={project}".encode(), f"TMO_ATTEMPT={attempt}".encode(),
             f"TMO_HOME={home}".encode()}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = set((entry / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if marks <= environ and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def test_non_utf8_text_in_rows_stops_nothing(tmo: Tmo, daemon: DaemonControl) -> None:
    daemon.start("--concurrency", "2")
    first = tmo.add("true", options=["--name", "first"])
    tmo.wait_status(first, "completed")
    run_sql(tmo.home, "INSERT INTO project_queue (name, command) VALUES (CAST(X'fffe41' AS TEXT), "
                      "'[\"true\"]')")
    run_sql(tmo.home, "INSERT INTO project_queue (name, command, env) VALUES ('bad-env', '[\"true\"]', "
                      "CAST(X'7b2241223a2022ff227d' AS TEXT))")
    after = tmo.add("true", options=["--name", "after"])
    assert tmo.wait_status(after, "completed", "failed", timeout=30)["status"] == "completed"
    for args in (["list"], ["list", "--json"], ["events"], ["show", "2"], ["show", "3", "--json"],
                 ["stats"]):
        result = tmo(*args)
        assert result.returncode == 0, (args, result.stderr)
        assert "Traceback" not in result.stderr
    listed = tmo("list").stdout
    assert "\\xff" in listed, listed  # shown, escaped
    bad_env = tmo.wait_status(3, "failed", timeout=30)
    assert bad_env["outcome"] == "spawn_error" and "env" in bad_env["error_message"], bad_env
    tmo.ok("daemon", "stop")
    daemon.start()  # a daemon starts with such rows in the queue


def test_a_running_row_cannot_be_deleted_while_its_session_is_open(tmo: Tmo, daemon: DaemonControl) -> None:
    ledger = Ledger(tmo.home / "ledger")
    first = tmo.add(*ledger.command("stubborn", limit=1), options=["--name", "a"])
    second = tmo.add(*ledger.command("sleep:0.2", limit=1), options=["--name", "b"])
    daemon.start("--concurrency", "1")
    wait_session(tmo, first)
    cancelling = tmo.popen("cancel", str(first))
    time.sleep(0.6)  # inside the 5 s grace of the process that ignores SIGTERM
    removed = tmo("remove", str(first))
    assert removed.returncode == 1 and "still being stopped" in removed.stderr, removed.stderr
    statement = f"DELETE FROM project_queue WHERE id={first}"
    deleted = subprocess.run(["sqlite3", "-cmd", ".timeout 10000", str(tmo.home / "tmo.db"), statement],
                             capture_output=True, text=True, check=False)
    assert deleted.returncode != 0 and "cannot be deleted" in deleted.stderr, deleted.stderr
    assert cancelling.wait(30) == 0
    tmo.wait_status(second, "completed", timeout=30)
    assert ledger.violations() == []
    tmo.ok("remove", str(first))  # once closed, it goes


@pytest.mark.parametrize("how", ["cancel", "server"])
def test_a_process_that_left_its_group_is_stopped_too(tmo: Tmo, daemon: DaemonControl, how: str) -> None:
    project = tmo.add("sh", "-c", f"setsid sh -c '{STUBBORN}' & sleep 1000",
                      options=["--name", "escape", "--max-retries", "1"])
    daemon.start()
    wait_session(tmo, project)
    retry_until(lambda: len(_attempt_pids(tmo.home, project, 1)) >= 3, timeout=10,
                message="the escaped process to run")
    if how == "cancel":
        tmo.ok("cancel", str(project))
    else:
        server = tmo.server_pid()
        assert server is not None
        os.kill(server, 9)
    retry_until(lambda: not _attempt_pids(tmo.home, project, 1), timeout=30,
                message="every process of attempt 1 to be stopped")
    if how == "server":
        # the retry runs only once attempt 1 is gone, and never beside it
        retry_until(lambda: _attempt_pids(tmo.home, project, 2), timeout=30, message="attempt 2 to run")
        assert not _attempt_pids(tmo.home, project, 1)
        # and attempt 2's escaped process goes with its cancel (it would outlive the test's server)
        tmo.ok("cancel", str(project))
        retry_until(lambda: not _attempt_pids(tmo.home, project, 2), timeout=30,
                    message="every process of attempt 2 to be stopped")


def test_no_kill_event_for_a_session_killed_from_outside_after_a_takeover(
    tmo: Tmo, daemon: DaemonControl
) -> None:
    project = tmo.add("sh", "-c", STUBBORN, options=["--name", "outside"])
    pid = daemon.start()
    session = wait_session(tmo, project)
    run_sql(tmo.home, f"UPDATE project_queue SET status='cancelled' WHERE id={project}")
    retry_until(lambda: any(e["kind"] == "output_saved" for e in tmo.events()), timeout=10,
                message="the daemon's clean-up to start")
    os.kill(pid, 9)  # the cleaner dies in its grace
    retry_until(lambda: not pid_alive(pid), message="the daemon to die")
    assert tmo.tmux("kill-session", "-t", f"={session}").returncode == 0  # someone else kills it
    retry_until(lambda: not _attempt_pids(tmo.home, project, 1), timeout=10, message="its processes to go")
    daemon.start()
    retry_until(lambda: tmo.project(project)["session_closed_at"] is not None, timeout=20,
                message="the session to be closed")
    time.sleep(3.0)
    kinds = [e["kind"] for e in tmo.events() if e["project_id"] == project]
    assert not {"session_killed", "lingering_cleaned", "processes_killed"} & set(kinds), kinds
    assert cleanup_counts(tmo, project)[session]["backup"] == 1


def test_a_hand_edited_session_name_never_reaches_another_project(tmo: Tmo, daemon: DaemonControl) -> None:
    daemon.start("--concurrency", "2")
    victim = tmo.add("sleep", "1000", options=["--name", "d"])
    edited = tmo.add("sleep", "1000", options=["--name", "e"])
    victim_session = wait_session(tmo, victim)
    wait_session(tmo, edited)
    victim_id = tmo.project(victim)["session_id"]
    run_sql(tmo.home, f"UPDATE project_queue SET session_name='{victim_session}', session_id='{victim_id}' "
                      f"WHERE id={edited}")
    tmo.ok("complete", str(edited))
    time.sleep(3.0)
    assert tmo.status_of(victim) == "processing"
    assert victim_session in tmo.tmux_session_names()
    assert [e for e in tmo.events() if e["project_id"] == victim and e["kind"] != "queued"
            and e["kind"] != "started"] == []
    assert not _attempt_pids(tmo.home, edited, 1), "the edited project's own process must be stopped"
    assert not [e for e in tmo.events() if e["kind"] == "kill_unconfirmed"]
    retry_until(lambda: tmo.project(edited)["session_closed_at"] is not None, timeout=10,
                message="the edited project's session to be closed")


def test_a_full_home_disk_fails_no_project(small_home: Path, tmo_home: Path) -> None:
    home = small_home / "home"
    home.mkdir(mode=0o700)
    tmo = Tmo(home)
    tmo.env["TMO_DATABASE_URL"] = f"sqlite:///{tmo_home / 'elsewhere.db'}"
    control = DaemonControl(tmo)
    try:
        pid = control.start()
        filler = small_home / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, check=False)
        ids = [tmo.add("true", options=["--name", f"n{n}", "--max-retries", "2"]) for n in range(3)]
        time.sleep(3.0)
        assert all(tmo.status_of(i) == "queued" for i in ids), [tmo.project(i) for i in ids]
        assert pid_alive(pid)
        filler.unlink()
        for project in ids:
            done = tmo.wait_status(project, "completed", "failed", timeout=30)
            assert (done["status"], done["retry_count"]) == ("completed", 0), done
    finally:
        control.stop_all()
        tmo.end_server()


def test_a_status_a_hand_edit_forced_in_is_shown(tmo: Tmo) -> None:
    tmo.add("true", options=["--name", "fine"])
    run_sql(tmo.home, "PRAGMA ignore_check_constraints=1; INSERT INTO project_queue (name, command, status) "
                      "VALUES ('w', '[\"true\"]', 'FAILED')")
    for args in (["show", "2"], ["show", "2", "--json"], ["list"], ["stats"]):
        result = tmo(*args)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (args, result.stderr)
    assert "FAILED" in tmo("list").stdout
    assert json.loads(tmo.ok("show", "2", "--json"))["status"] == "FAILED"


def test_a_bad_concurrency_setting_is_no_traceback(tmo: Tmo, daemon: DaemonControl) -> None:
    daemon.start()
    run_sql(tmo.home, "INSERT OR REPLACE INTO settings (key, value) VALUES ('concurrency', 'abc')")
    for args in (["daemon", "status"], ["daemon", "status", "--json"]):
        result = tmo(*args)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (args, result.stderr)
    project = tmo.add("true")
    assert tmo.wait_status(project, "completed", "failed", timeout=20)["status"] == "completed"


def test_an_absurd_duration_is_refused_at_add(tmo: Tmo) -> None:
    for option in ("--retry-delay", "--timeout", "--idle-timeout"):
        result = tmo("add", option, "99999999999999999999d", "--", "true")
        assert result.returncode == 2, (option, result.stderr)
        assert "at most" in result.stderr and "Traceback" not in result.stderr


def test_a_database_with_two_names_is_refused(tmo: Tmo, daemon: DaemonControl) -> None:
    database = tmo.home / "one.db"
    tmo.env["TMO_DATABASE_URL"] = f"sqlite:///{database}"
    tmo.add("true")
    os.link(database, tmo.home / "two.db")
    other_home = Path(tempfile.mkdtemp(prefix="tmo-link-"))
    other = Tmo(other_home)
    other.env["TMO_DATABASE_URL"] = f"sqlite:///{tmo.home / 'two.db'}"
    try:
        for runner in (tmo, other):
            result = runner("list")
            assert result.returncode != 0 and "hard links" in result.stderr, result.stderr
    finally:
        DaemonControl(other).stop_all()
        other.end_server()
        shutil.rmtree(other_home, ignore_errors=True)


def test_fail_on_a_completed_project_says_it_changed_nothing(tmo: Tmo, daemon: DaemonControl) -> None:
    daemon.start()
    project = tmo.add("true")
    tmo.wait_status(project, "completed")
    result = tmo("fail", str(project))
    assert result.returncode == 1 and "already ended as completed" in result.stderr, result.stderr
    assert tmo.status_of(project) == "completed"
    assert tmo("complete", str(project)).returncode == 0  # what it already is: fine

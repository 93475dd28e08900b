"""Break 6: I/O faults. A failed backup never stops a kill; missing directories come back; a full
disk delays what the daemon records but loses nothing, and the daemon outlives it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from acceptance.support import DaemonControl, Tmo, pid_alive, run_sql, wait_session
from tmux_orchestrator.testing import retry_until


@pytest.mark.parametrize("verb", ["fail", "cancel"])
def test_a_failed_backup_is_an_event_and_the_session_is_killed(
    tmo: Tmo, daemon: DaemonControl, verb: str
) -> None:
    project = tmo.add("sleep", "600", options=["--name", "unsaved"])
    daemon.start()
    session = wait_session(tmo, project)
    # The backup cannot be written: a directory stands where its file goes.
    for path in (tmo.home / "logs").iterdir():
        if path.name.startswith(f"{project}") and "scrollback" in path.name:
            path.unlink()
    blockers = [tmo.home / "logs" / f"{project}.scrollback.txt",
                tmo.home / "logs" / f"{project}-1.scrollback.txt"]
    for blocker in blockers:
        blocker.mkdir()
    result = tmo(verb, str(project))
    assert "Traceback" not in result.stderr
    retry_until(lambda: session not in tmo.tmux_session_names(), timeout=15,
                message="the session to be killed despite the failed backup")
    kinds = [e["kind"] for e in tmo.events() if e["project_id"] == project]
    assert "backup_failed" in kinds, kinds
    assert kinds.count("session_killed") == 1, kinds
    assert "output_saved" not in kinds


def test_a_deleted_run_directory_loses_no_exit(tmo: Tmo, daemon: DaemonControl) -> None:
    work = tmo.home / "work"
    work.mkdir()
    project = tmo.add("sh", "-c", "while [ ! -e gate ]; do sleep 0.05; done; exit 0",
                      options=["--dir", str(work), "--name", "gated"])
    pid = daemon.start()
    wait_session(tmo, project)
    shutil.rmtree(tmo.home / "run")
    time.sleep(1.0)
    (work / "gate").touch()
    ended = tmo.wait_status(project, "completed", "failed", timeout=15)
    assert (ended["status"], ended["outcome"], ended["exit_code"]) == ("completed", "exited", 0), ended
    assert pid_alive(pid)
    later = tmo.add("true", options=["--name", "later"])
    assert tmo.wait_status(later, "completed", "failed", timeout=15)["status"] == "completed"


def test_deleted_logs_directory_is_recreated(tmo: Tmo, daemon: DaemonControl) -> None:
    daemon.start()
    first = tmo.add("echo", "one")
    tmo.wait_status(first, "completed", timeout=15)
    shutil.rmtree(tmo.home / "logs")
    # Queued by hand, so no `tmo` command recreates the directory before the daemon needs it.
    run_sql(tmo.home, "INSERT INTO project_queue (name, command, project_path) "
                      f"VALUES ('two', '[\"echo\", \"two\"]', '{tmo.home}')")
    second = 2
    assert tmo.wait_status(second, "completed", "failed", timeout=15)["status"] == "completed"
    assert "two" in tmo.ok("logs", str(second))


def test_a_daemon_whose_home_was_deleted_stops_and_the_next_one_starts_afresh(
    tmo: Tmo, daemon: DaemonControl
) -> None:
    # `rm -rf $TMO_HOME` (or a tmp cleaner) under a running daemon: its lock and database are
    # files nobody can see any more. Living on, it wrote to a database that no longer exists and
    # made the home's directories again, while a second daemon could take the new home's lock.
    pid = daemon.start()
    server = tmo.server_pid()
    assert server is not None
    try:
        shutil.rmtree(tmo.home, ignore_errors=True)  # the daemon may make run/ again meanwhile
        retry_until(lambda: not pid_alive(pid), timeout=15, message="the daemon to stop")
        assert not (tmo.home / "tmo.db").exists()  # it wrote no new database there either
        tmo.home.mkdir(mode=0o700, exist_ok=True)
        daemon.start()
        project = tmo.add("true", options=["--name", "afresh"])
        assert tmo.wait_status(project, "completed", "failed", timeout=15)["status"] == "completed"
    finally:
        if pid_alive(server):  # the old server's socket went with the home: end it by pid
            os.kill(server, signal.SIGKILL)


def test_a_full_disk_delays_but_loses_nothing(small_disk: Path, daemon: DaemonControl) -> None:
    home = small_disk / "home"
    home.mkdir(mode=0o700)
    tmo = Tmo(home)
    control = DaemonControl(tmo)
    work = small_disk / "work"
    work.mkdir()
    try:
        project = tmo.add("sh", "-c", "while [ ! -e gate ]; do sleep 0.05; done; exit 0",
                          options=["--dir", str(work), "--name", "full"])
        pid = control.start()
        wait_session(tmo, project)
        filler = small_disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True,
                       check=False)
        (work / "gate").touch()  # it exits 0 while nothing can be written
        time.sleep(3.0)
        assert pid_alive(pid), "the daemon died of a full disk"
        filler.unlink()
        ended = tmo.wait_status(project, "completed", "failed", timeout=30)
        assert (ended["status"], ended["exit_code"]) == ("completed", 0), ended
        assert pid_alive(pid)
        later = tmo.add("true", options=["--name", "later"])
        assert tmo.wait_status(later, "completed", "failed", timeout=30)["status"] == "completed"
    finally:
        control.stop_all()
        tmo.end_server()

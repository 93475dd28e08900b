"""What the second adversarial round found (after the fixes of the first), one test each."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from acceptance.support import DaemonControl, Tmo, pid_alive, run_sql, wait_session
from tmux_orchestrator.testing import retry_until


def test_a_process_that_only_copies_the_marks_is_not_the_projects(tmo: Tmo, daemon: DaemonControl) -> None:
    # A process of the same user, older than the project, that carries its TMO_* values.
    env = {**tmo.env, "TMO_PROJECT_ID": "1", "TMO_ATTEMPT": "1"}
    bystander = subprocess.Popen(["sleep", "600"], env=env, start_new_session=True,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        time.sleep(1.1)  # older than the attempt by more than the clocks' rounding
        daemon.start()
        project = tmo.add("sleep", "600", options=["--name", "real"])
        assert project == 1
        session = wait_session(tmo, project)
        tmo.ok("cancel", str(project))
        retry_until(lambda: session not in tmo.tmux_session_names(), timeout=20, message="the cancel")
        time.sleep(1.0)
        assert bystander.poll() is None, "an older process that only carries the marks was killed"
    finally:
        bystander.kill()
        bystander.wait(10)


def test_an_exit_during_a_full_disk_survives_a_daemon_kill(small_disk: Path) -> None:
    home = small_disk / "home"
    home.mkdir(mode=0o700)
    tmo = Tmo(home)
    control = DaemonControl(tmo)
    runs = Path(tempfile.mkdtemp(prefix="tmo-runs-")) / "runs"
    work = small_disk / "work"
    work.mkdir()
    try:
        project = tmo.add("sh", "-c", f"echo run >> {runs}; while [ ! -e gate ]; do sleep 0.05; done; exit 0",
                          options=["--dir", str(work), "--max-retries", "1"])
        pid = control.start()
        wait_session(tmo, project)
        filler = small_disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, check=False)
        (work / "gate").touch()  # it exits 0 while nothing can be written, the database included
        time.sleep(2.0)
        os.kill(pid, signal.SIGKILL)  # and the daemon dies before it could record it
        retry_until(lambda: not pid_alive(pid), message="the daemon to die")
        filler.unlink()
        control.start()
        ended = tmo.wait_status(project, "failed", "completed", timeout=30)
        time.sleep(3.0)
        assert (ended["status"], ended["exit_code"], ended["attempt"]) == ("completed", 0, 1), ended
        assert runs.read_text().splitlines() == ["run"], "it ran twice"
        assert [e for e in tmo.events() if e["outcome"] == "lost"] == []
    finally:
        control.stop_all()
        tmo.end_server()


def test_an_exit_just_after_run_was_deleted_is_not_lost(tmo: Tmo, daemon: DaemonControl) -> None:
    runs = tmo.home / "runs"
    work = tmo.home / "work"
    work.mkdir()
    project = tmo.add("sh", "-c", f"echo run >> {runs}; while [ ! -e gate ]; do sleep 0.01; done; exit 0",
                      options=["--dir", str(work), "--max-retries", "1"])
    daemon.start()
    wait_session(tmo, project)
    subprocess.run(["rm", "-rf", str(tmo.home / "run")], check=True)
    (work / "gate").touch()
    ended = tmo.wait_status(project, "completed", "failed", timeout=30)
    time.sleep(3.0)
    assert (ended["status"], ended["outcome"], ended["exit_code"]) == ("completed", "exited", 0), ended
    assert runs.read_text().splitlines() == ["run"]


def test_a_deleted_logs_directory_neither_loses_output_nor_fakes_idleness(
    tmo: Tmo, daemon: DaemonControl
) -> None:
    project = tmo.add("sh", "-c", "while :; do echo tick; sleep 0.5; done",
                      options=["--idle-timeout", "5s", "--name", "ticker"])
    daemon.start()
    wait_session(tmo, project)
    time.sleep(1.0)
    subprocess.run(["rm", "-rf", str(tmo.home / "logs")], check=True)
    time.sleep(9.0)
    assert tmo.status_of(project) == "processing"
    assert "tick" in tmo.ok("logs", str(project)), "the output after the deletion was lost"


def test_a_hand_written_processing_row_is_reconciled(tmo: Tmo, daemon: DaemonControl) -> None:
    daemon.start("--concurrency", "1")
    tmo.ok("pause")
    phantom = tmo.add("true", options=["--name", "phantom"])
    run_sql(tmo.home, f"UPDATE project_queue SET status='processing' WHERE id={phantom}")
    real = tmo.add("true", options=["--name", "real"])
    tmo.ok("resume")
    assert tmo.wait_status(real, "completed", "failed", timeout=30)["status"] == "completed"
    assert tmo.wait_status(phantom, "completed", "failed", timeout=30)["status"] == "completed"


def test_a_blob_in_the_events_table_is_no_traceback(tmo: Tmo) -> None:
    tmo.add("true")
    run_sql(tmo.home, "INSERT INTO events (kind, source, message) VALUES ('failed', 'sql', X'41ff')")
    for args in (["events", "--json"], ["events"], ["events", "--json", "--last", "0"]):
        result = tmo(*args)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (args, result.stderr)


def test_a_junk_delay_fails_its_row_with_a_message(tmo: Tmo, daemon: DaemonControl) -> None:
    project = tmo.add("true", options=["--name", "junk-delay"])
    run_sql(tmo.home, f"UPDATE project_queue SET not_before='x' WHERE id={project}")
    daemon.start()
    ended = tmo.wait_status(project, "failed", "completed", timeout=30)
    assert ended["outcome"] == "spawn_error" and "not_before" in ended["error_message"], ended
    assert "Traceback" not in (tmo.home / "scheduler.log").read_text()


def test_deeply_nested_json_in_a_batch_is_one_line(tmo: Tmo) -> None:
    batch = tmo.home / "batch.jsonl"
    batch.write_text('{"command": ' + "[" * 100000 + "]" * 100000 + "}\n")
    result = tmo("add", "--from-file", str(batch))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_run_files_are_private_whatever_the_umask(tmo: Tmo, daemon: DaemonControl) -> None:
    old = os.umask(0o022)
    try:
        daemon.start()
        project = tmo.add("sleep", "600")
        wait_session(tmo, project)
    finally:
        os.umask(old)
    started = tmo.home / "run" / f"{project}-1.started"
    retry_until(started.exists, message="the started marker")
    assert stat.S_IMODE(started.stat().st_mode) == 0o600


def test_names_with_invisible_characters_are_refused(tmo: Tmo) -> None:
    for name in ("a\u202eb", "zero\u200bwidth"):
        result = tmo("add", "--name", name, "--", "true")
        assert result.returncode == 2, result.stderr
        assert "invisible" in result.stderr or "control" in result.stderr, result.stderr

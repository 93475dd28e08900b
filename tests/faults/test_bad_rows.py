"""Break 5: one bad row never stops the queue.

What can never run is refused at ``tmo add``; what still goes wrong with one row (a hand edit, a row
written by another program) fails that project with a message saying what is wrong, and the daemon
and every other project go on. Stored values that do not parse are shown, not a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess

from acceptance.support import TMO, DaemonControl, Tmo, db_snapshot, pid_alive, run_sql
from tmux_orchestrator.testing import retry_until


def test_a_non_utf8_argument_is_refused_at_add(tmo: Tmo) -> None:
    before = db_snapshot(tmo.home)
    result = subprocess.run([os.fsencode(TMO), b"add", b"--", b"printf", b"\xff"], capture_output=True,
                            env={k.encode(): v.encode() for k, v in tmo.env.items()}, cwd=tmo.home,
                            timeout=60, check=False)
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "UTF-8" in stderr
    assert db_snapshot(tmo.home).rows == before.rows


def test_rows_that_cannot_run_are_failed_and_the_rest_run(tmo: Tmo, daemon: DaemonControl) -> None:
    good_before = tmo.add("true", options=["--name", "good-before"])
    bad_command = tmo.add("true", options=["--name", "bad-command"])
    bad_bytes = tmo.add("true", options=["--name", "bad-bytes"])
    bad_env = tmo.add("true", options=["--name", "bad-env"])
    good_after = tmo.add("true", options=["--name", "good-after"])
    # Hand edits no validation saw: a command that is not a JSON list, one that holds a lone
    # surrogate (what a non-UTF-8 byte becomes), an environment value that is not a string.
    run_sql(tmo.home, f"UPDATE project_queue SET command='printf hi' WHERE id={bad_command}")
    run_sql(tmo.home, "UPDATE project_queue SET command='[\"printf\", \"\\udcff\"]' "
                      f"WHERE id={bad_bytes}")
    run_sql(tmo.home, f"UPDATE project_queue SET env='{{\"A\": 1}}' WHERE id={bad_env}")
    pid = daemon.start("--concurrency", "2")
    for project in (good_before, good_after):
        assert tmo.wait_status(project, "completed", "failed", timeout=30)["status"] == "completed"
    for project in (bad_command, bad_bytes, bad_env):
        ended = tmo.wait_status(project, "completed", "failed", timeout=30)
        assert ended["status"] == "failed", ended
        assert ended["outcome"] == "spawn_error", ended
        assert ended["error_message"], ended
    assert pid_alive(pid), "the daemon died"
    late = tmo.add("true", options=["--name", "late"])
    assert tmo.wait_status(late, "completed", "failed", timeout=30)["status"] == "completed"


def test_a_hand_typo_in_a_timestamp_is_shown_not_a_traceback(tmo: Tmo, daemon: DaemonControl) -> None:
    project = tmo.add("true", options=["--name", "typo"])
    run_sql(tmo.home, f"UPDATE project_queue SET enqueued_at='yesterday' WHERE id={project}")
    for args in (["list"], ["list", "--json"], ["show", str(project)], ["show", str(project), "--json"]):
        result = tmo(*args)
        assert result.returncode == 0, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert "yesterday" in result.stdout, (args, result.stdout)
    pid = daemon.start()
    assert tmo.wait_status(project, "completed", "failed", timeout=30)["status"] == "completed"
    assert pid_alive(pid)
    shown = json.loads(tmo.ok("show", str(project), "--json"))
    assert shown["enqueued_at"] == "yesterday"


def test_a_bad_row_in_a_batch_does_not_requeue_its_neighbours(tmo: Tmo, daemon: DaemonControl) -> None:
    ledger = tmo.home / "runs"
    ids = [tmo.add("sh", "-c", f'echo "$TMO_PROJECT_ID" >> {ledger}', options=["--name", f"n{n}"])
           for n in range(6)]
    run_sql(tmo.home, f"UPDATE project_queue SET command='oops' WHERE id={ids[2]}")
    daemon.start("--concurrency", "6")
    retry_until(lambda: all(tmo.status_of(i) in ("completed", "failed") for i in ids), timeout=30,
                message="every project to end")
    runs = ledger.read_text().split()
    assert sorted(runs) == sorted(str(i) for i in ids if i != ids[2]), runs
    assert tmo.status_of(ids[2]) == "failed"

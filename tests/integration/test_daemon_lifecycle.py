"""A real daemon (in a thread) running projects in sessions on the test's private tmux server."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from tmo_helpers import (
    all_sessions,
    db_path,
    events,
    kinds,
    new_owned_session,
    new_untagged_session,
    pid_alive,
    sql,
    start_project_session,
    wait_file,
    wait_project,
    wait_reconcile_passes,
    wait_running,
    wait_status,
)

from tmux_orchestrator.config import Settings
from tmux_orchestrator.orchestrator import Orchestrator
from tmux_orchestrator.project import Outcome, Project, ProjectStatus
from tmux_orchestrator.testing import DaemonThread, retry_until
from tmux_orchestrator.tmux import KEEPER, Tmux

S = ProjectStatus
DaemonFactory = Callable[..., DaemonThread]


def _running(orch: Orchestrator, project_id: int, timeout: float = 10.0) -> Project:
    return wait_running(orch, project_id, timeout)


def _gone(orch: Orchestrator, session_name: str | None, timeout: float = 10.0) -> None:
    assert session_name
    retry_until(lambda: session_name not in all_sessions(orch), timeout=timeout,
                message=f"session {session_name} to be gone")


def _log_numbers(path: Path) -> list[int]:
    text = path.read_bytes().decode(errors="replace") if path.exists() else ""
    return [int(line) for line in text.replace("\r", "").split("\n") if line.strip().isdigit()]


def _until_file(path: Path, timeout: float = 10.0) -> str:
    return wait_file(path, timeout)


# -- running a project -------------------------------------------------------------------------


def test_project_runs_in_own_session_in_its_dir_with_tmo_env(
    orchestrator: Orchestrator, daemon_factory: DaemonFactory, tmo_settings: Settings, tmp_path: Path
) -> None:
    daemon_factory()
    work = tmp_path / "work dir"
    work.mkdir()
    project = orchestrator.enqueue(
        ["sh", "-c", "env > env.txt; pwd > pwd.txt; exec sleep 600"], name="env probe",
        project_path=work, env={"MY_VAR": "a b $c"},
    )
    running = _running(orchestrator, project.id)
    assert _until_file(work / "pwd.txt").strip() == str(work)
    env = dict(line.split("=", 1) for line in (work / "env.txt").read_text().splitlines() if "=" in line)
    assert env["TMO_PROJECT_ID"] == str(project.id)
    assert env["TMO_HOME"] == str(tmo_settings.home)
    assert env["TMO_SESSION_NAME"] == running.session_name
    assert env["MY_VAR"] == "a b $c"
    assert env["TMUX"].startswith(str(tmo_settings.socket_path) + ",")  # our server, not the default
    [session] = orchestrator.server.list_owned()
    assert session.name == running.session_name == f"env-probe-{project.id}"
    assert session.session_id == running.session_id
    assert session.project_id == project.id
    assert running.attempt == 1 and running.started_at is not None


def test_exit_codes_decide_status_and_outcome(
    orchestrator: Orchestrator, daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    daemon_factory()
    ok = orchestrator.enqueue(["sh", "-c", "exit 0"], name="ok", project_path=tmp_path)
    bad = orchestrator.enqueue(["sh", "-c", "exit 3"], name="bad", project_path=tmp_path)
    done = wait_status(orchestrator, ok.id, S.COMPLETED)
    failed = wait_status(orchestrator, bad.id, S.FAILED)
    assert (done.outcome, done.exit_code, done.error_message) == (Outcome.EXITED, 0, None)
    assert (failed.outcome, failed.exit_code) == (Outcome.EXITED, 3)
    assert failed.error_message == "exited with code 3"
    for project in (done, failed):
        # closed once its process group and session are confirmed gone, a moment after the end
        retry_until(lambda p=project: orchestrator.get(p.id).session_closed_at is not None,  # type: ignore[misc]
                    message="the session to be closed")
        _gone(orchestrator, project.session_name)
    # exactly one event per status change, no kill needed for a session that ended by itself
    assert kinds(orchestrator.store, ok.id) == ["queued", "started", "completed"]
    assert kinds(orchestrator.store, bad.id) == ["queued", "started", "failed"]
    [event] = events(orchestrator.store, bad.id, "failed")
    assert (event.source, event.outcome, event.exit_code) == ("daemon", "exited", 3)


def test_output_log_is_complete(
    orchestrator: Orchestrator, daemon_factory: DaemonFactory, tmo_settings: Settings, tmp_path: Path
) -> None:
    daemon_factory()
    project = orchestrator.enqueue(["seq", "1", "20000"], project_path=tmp_path)
    wait_status(orchestrator, project.id, S.COMPLETED)
    log_path = tmo_settings.log_path(project.id)
    retry_until(lambda: _log_numbers(log_path)[-1:] == [20000], message="the last line in the log")
    assert _log_numbers(log_path) == list(range(1, 20001))


def test_next_project_starts_right_after(
    orchestrator: Orchestrator, daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    daemon_factory()
    first = orchestrator.enqueue(["sh", "-c", "sleep 0.3"], name="first", project_path=tmp_path)
    second = orchestrator.enqueue(["sleep", "600"], name="second", project_path=tmp_path)
    done = wait_status(orchestrator, first.id, S.COMPLETED)
    nxt = _running(orchestrator, second.id, timeout=3)
    assert done.completed_at is not None and nxt.started_at is not None
    assert nxt.started_at >= done.completed_at
    assert (nxt.started_at - done.completed_at).total_seconds() < 1.0


def test_concurrency_two_runs_two_at_once(
    orchestrator: Orchestrator, daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    # enqueued before the daemon starts: see test_found_bugs.py for enqueues racing a claim
    ids = [orchestrator.enqueue(["sleep", "600"], name=f"c{i}", project_path=tmp_path).id for i in range(3)]
    daemon_factory(concurrency=2)
    a = _running(orchestrator, ids[0])
    b = _running(orchestrator, ids[1])
    assert a.session_name != b.session_name
    assert orchestrator.get(ids[2]).status == S.QUEUED
    assert orchestrator.store.counts()["processing"] == 2
    orchestrator.cancel(ids[0])
    _running(orchestrator, ids[2])
    assert orchestrator.store.counts()["processing"] == 2


# -- ending a running project from outside -----------------------------------------------------


def test_sql_update_to_completed_or_failed_kills_the_running_session(
    orchestrator: Orchestrator, daemon_factory: DaemonFactory, tmo_settings: Settings, tmp_path: Path
) -> None:
    to_complete = orchestrator.enqueue(["sleep", "600"], name="complete-me", project_path=tmp_path)
    to_fail = orchestrator.enqueue(["sleep", "600"], name="fail-me", project_path=tmp_path)
    daemon_factory(concurrency=2)
    a = _running(orchestrator, to_complete.id)
    b = _running(orchestrator, to_fail.id)
    sql(tmo_settings, "UPDATE project_queue SET status='completed' WHERE id=?", [a.id])
    sql(tmo_settings, "UPDATE project_queue SET status='failed' WHERE id=?", [b.id])
    _gone(orchestrator, a.session_name)
    _gone(orchestrator, b.session_name)
    for project, status in ((a, S.COMPLETED), (b, S.FAILED)):
        final = orchestrator.get(project.id)
        assert final.status == status and final.outcome == Outcome.MANUAL
        got = events(orchestrator.store, project.id)
        assert [(e.kind, e.source) for e in got if e.kind == status.value] == [(status.value, "sql")]
        retry_until(lambda p=project: len(events(orchestrator.store, p.id, "session_killed")) == 1,  # type: ignore[misc]
                    message="session_killed event")
        assert project.pane_pid is not None
        retry_until(lambda p=project: not pid_alive(p.pane_pid or 0), message="pane process to end")  # type: ignore[misc]


def test_sql_update_to_queued_kills_session_and_runs_it_again(
    orchestrator: Orchestrator, daemon_factory: DaemonFactory, tmo_settings: Settings, tmp_path: Path
) -> None:
    daemon_factory()
    project = orchestrator.enqueue(["sh", "-c", "echo run >> runs.txt; exec sleep 600"], name="again",
                                   project_path=tmp_path)
    first = _running(orchestrator, project.id)
    _until_file(tmp_path / "runs.txt")
    sql(tmo_settings, "UPDATE project_queue SET status='queued' WHERE id=?", [project.id])
    _gone(orchestrator, first.session_name)
    second = wait_project(orchestrator, project.id, lambda p: p.attempt == 2 and p.status == S.PROCESSING,
                          message="second attempt")
    assert second.session_name == f"again-{project.id}-r2"
    _running(orchestrator, project.id)
    retry_until(lambda: (tmp_path / "runs.txt").read_text() == "run\nrun\n", message="second run")
    got = kinds(orchestrator.store, project.id)
    assert got[:3] == ["queued", "started", "requeued"]
    assert got.count("requeued") == 1 and got.count("started") == 2
    assert [e.source for e in events(orchestrator.store, project.id, "requeued")] == ["sql"]


def test_marker_file_ends_project(
    orchestrator: Orchestrator, daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    bad = orchestrator.enqueue(
        ["sh", "-c", "printf 'failed: the reason' > \"$TMO_DONE_FILE\"; exec sleep 600"],
        name="marker-bad", project_path=tmp_path,
    )
    good = orchestrator.enqueue(["sh", "-c", "echo done > \"$TMO_DONE_FILE\"; exec sleep 600"],
                                name="marker-good", project_path=tmp_path)
    daemon_factory(concurrency=2)
    failed = wait_status(orchestrator, bad.id, S.FAILED)
    completed = wait_status(orchestrator, good.id, S.COMPLETED)
    assert (failed.outcome, failed.error_message) == (Outcome.MARKER, "the reason")
    assert (completed.outcome, completed.error_message) == (Outcome.MARKER, None)
    _gone(orchestrator, failed.session_name)
    _gone(orchestrator, completed.session_name)


def test_timeout_sends_term_to_the_process_group(
    orchestrator: Orchestrator, daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    daemon_factory()
    project = orchestrator.enqueue(
        ["sh", "-c", "trap 'echo term > got_term; exit 0' TERM; while :; do sleep 0.05; done"],
        project_path=tmp_path, timeout=1.0,
    )
    failed = wait_status(orchestrator, project.id, S.FAILED)
    assert failed.outcome == Outcome.TIMEOUT
    assert failed.error_message == "timed out after 1s"
    assert failed.started_at is not None and failed.completed_at is not None
    assert (failed.completed_at - failed.started_at).total_seconds() >= 0.9
    assert _until_file(tmp_path / "got_term") == "term\n"
    _gone(orchestrator, failed.session_name)
    assert len(events(orchestrator.store, project.id, "failed")) == 1


def test_timeout_kills_a_term_ignoring_group_after_kill_grace(
    orchestrator: Orchestrator, daemon_factory: DaemonFactory, tmo_settings: Settings, tmp_path: Path
) -> None:
    tmo_settings.kill_grace = 1.0
    daemon_factory()
    project = orchestrator.enqueue(
        ["sh", "-c",
         "trap '' TERM; echo $$ > pid.txt; while :; do date +%s.%N >> tick.txt; sleep 0.05; done"],
        project_path=tmp_path, timeout=0.5,
    )
    pid = int(_until_file(tmp_path / "pid.txt"))
    failed = wait_status(orchestrator, project.id, S.FAILED)
    assert failed.outcome == Outcome.TIMEOUT and failed.completed_at is not None
    retry_until(lambda: not pid_alive(pid), timeout=10, message="the TERM-ignoring command to be killed")
    _gone(orchestrator, failed.session_name)
    ticks = [t for t in (tmp_path / "tick.txt").read_text().splitlines() if t.strip()]
    last_tick = datetime.fromtimestamp(float(ticks[-1]), UTC)  # appended: a kill cannot blank it
    # it survived SIGTERM for most of kill_grace, so SIGKILL is what ended it
    assert (last_tick - failed.completed_at).total_seconds() >= 0.5


def test_idle_timeout_ends_a_silent_project_only(
    orchestrator: Orchestrator, daemon_factory: DaemonFactory, tmo_settings: Settings, tmp_path: Path
) -> None:
    tmo_settings.reconcile_interval = 0.1
    silent = orchestrator.enqueue(["sh", "-c", "echo once; exec sleep 600"], name="silent",
                                  project_path=tmp_path, idle_timeout=0.6)
    chatty = orchestrator.enqueue(["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do "
                                   "echo tick $i; sleep 0.1; done"],
                                  name="chatty", project_path=tmp_path, idle_timeout=0.6)
    daemon_factory(concurrency=2)
    failed = wait_status(orchestrator, silent.id, S.FAILED)
    assert failed.outcome == Outcome.IDLE
    assert failed.error_message == "no output for 0.6s"
    _gone(orchestrator, failed.session_name)
    done = wait_status(orchestrator, chatty.id, S.COMPLETED)
    assert done.outcome == Outcome.EXITED


def test_cancel_running_project(
    orchestrator: Orchestrator, daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    daemon_factory()
    project = orchestrator.enqueue(["sleep", "600"], project_path=tmp_path)
    waiting = orchestrator.enqueue(["sleep", "600"], name="waiting", project_path=tmp_path)
    running = _running(orchestrator, project.id)
    cancelled = orchestrator.cancel(project.id)
    assert cancelled.status == S.CANCELLED and cancelled.outcome == Outcome.CANCELLED
    _gone(orchestrator, running.session_name)
    _running(orchestrator, waiting.id)
    got = kinds(orchestrator.store, project.id)
    assert got.count("cancelled") == 1
    retry_until(lambda: kinds(orchestrator.store, project.id).count("session_killed") == 1,
                message="one session_killed event")
    assert orchestrator.get(project.id).status == S.CANCELLED


def test_retries_until_max_retries_then_fails(
    orchestrator: Orchestrator, daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    daemon_factory()
    project = orchestrator.enqueue(["sh", "-c", "echo run >> runs.txt; exit 5"], project_path=tmp_path,
                                   max_retries=2, retry_delay=0.05)
    final = wait_project(orchestrator, project.id, lambda p: p.status == S.FAILED and p.attempt == 3,
                         message="third attempt to fail")
    assert final.retry_count == 2
    assert final.exit_code == 5
    assert final.error_message == "exited with code 5"
    assert (tmp_path / "runs.txt").read_text() == "run\n" * 3
    got = kinds(orchestrator.store, project.id)
    assert got.count("failed") == 3 and got.count("retried") == 2 and got.count("started") == 3
    # and it stays failed: no fourth attempt
    assert orchestrator.store.next_due() is None
    assert orchestrator.get(project.id).status == S.FAILED


def test_session_killed_from_outside_fails_project_its_command_ends_and_next_starts(
    orchestrator: Orchestrator, daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    # wrapper.py: HUP is not trapped, so a session killed from outside takes its command with it
    # and, with no exit code recorded, the project is reported lost.
    daemon_factory()
    victim = orchestrator.enqueue(["sh", "-c", "echo $$ > pid.txt; exec sleep 600"], name="victim",
                                  project_path=tmp_path)
    nxt = orchestrator.enqueue(["sleep", "600"], name="next", project_path=tmp_path)
    running = _running(orchestrator, victim.id)
    command_pid = int(_until_file(tmp_path / "pid.txt"))
    assert running.session_id is not None
    orchestrator.tmux.run(["kill-session", "-t", running.session_id])
    failed = wait_status(orchestrator, victim.id, S.FAILED)
    assert failed.outcome == Outcome.LOST
    assert failed.completed_at is not None
    retry_until(lambda: not pid_alive(command_pid), timeout=5, message="the command to end with its session")
    _running(orchestrator, nxt.id)


def test_command_does_not_outlive_a_dead_tmux_server_into_its_retry(
    orchestrator: Orchestrator, daemon_factory: DaemonFactory, tmo_settings: Settings, tmp_path: Path
) -> None:
    tmo_settings.reconcile_interval = 0.1
    daemon_factory()
    project = orchestrator.enqueue(["sh", "-c", "echo $$ >> pids.txt; exec sleep 600"], project_path=tmp_path,
                                   max_retries=1)
    _running(orchestrator, project.id)
    first_pid = int(_until_file(tmp_path / "pids.txt").split()[0])
    server_pid = orchestrator.tmux.server_pid()
    assert server_pid is not None
    os.kill(server_pid, signal.SIGTERM)  # our own test server dies, by its pid
    retried = wait_project(orchestrator, project.id, lambda p: p.attempt == 2, message="the retry")
    assert retried.retry_count == 1
    assert [e.outcome for e in events(orchestrator.store, project.id, "failed")] == ["lost"]
    # the first attempt's command must not keep running next to the second one
    retry_until(lambda: not pid_alive(first_pid), timeout=5, message="attempt 1's command to end")
    _running(orchestrator, project.id)


def _daemon_in_claim(daemon: DaemonThread) -> bool:
    frame = sys._current_frames().get(daemon.thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == "claim_next":
            return True
        frame = frame.f_back
    return False


def test_project_claimed_right_after_enqueue_is_not_killed_by_its_own_queued_event(
    orchestrator: Orchestrator, daemon_factory: DaemonFactory, tmo_settings: Settings, tmp_path: Path
) -> None:
    tmo_settings.reconcile_interval = 0.1
    daemon = daemon_factory(concurrency=2)
    conn = sqlite3.connect(db_path(tmo_settings), timeout=30, isolation_level=None)
    try:
        # Hold the write lock while a project is inserted, so the daemon's claim has to wait for it:
        # the row becomes visible to the claim but its 'queued' event is read only afterwards.
        conn.execute("BEGIN IMMEDIATE")
        cur = conn.execute(
            "INSERT INTO project_queue (name, command, project_path) VALUES ('racer', ?, ?)",
            (json.dumps(["sleep", "600"]), str(tmp_path)),
        )
        project_id = int(cur.lastrowid or 0)
        orchestrator.poke_daemon()
        retry_until(lambda: _daemon_in_claim(daemon), message="the daemon to wait in claim_next")
        conn.execute("COMMIT")
    finally:
        conn.close()
    running = _running(orchestrator, project_id)
    wait_reconcile_passes(daemon, 2)
    assert orchestrator.get(project_id).status == S.PROCESSING, kinds(orchestrator.store, project_id)
    assert running.session_name in all_sessions(orchestrator)
    assert "session_killed" not in kinds(orchestrator.store, project_id)


def test_burst_of_enqueues_with_free_slots_all_keep_running(
    orchestrator: Orchestrator, daemon_factory: DaemonFactory, tmo_settings: Settings, tmp_path: Path
) -> None:
    tmo_settings.reconcile_interval = 0.1
    daemon = daemon_factory(concurrency=6)
    ids = [orchestrator.enqueue(["sleep", "600"], name=f"burst{i}", project_path=tmp_path).id
           for i in range(6)]
    for project_id in ids:
        _running(orchestrator, project_id)
    wait_reconcile_passes(daemon, 2)
    assert {orchestrator.get(i).status for i in ids} == {S.PROCESSING}
    assert len(orchestrator.server.list_owned()) == 6


# -- reconcile ---------------------------------------------------------------------------------


def test_reconcile_kills_lingering_sessions(
    orchestrator: Orchestrator, daemon_factory: DaemonFactory, tmo_settings: Settings, tmp_path: Path
) -> None:
    # A completed project whose session is still alive though its clean-up was claimed long ago
    # (a crashed cleaner): found by the start-up reconcile.
    project = orchestrator.enqueue(["sleep", "600"], name="linger", project_path=tmp_path)
    claimed = orchestrator.store.claim_next(host=orchestrator.host, max_processing=1)
    assert claimed is not None
    start_project_session(orchestrator, claimed, tmp_path)
    sql(tmo_settings, "UPDATE project_queue SET status='completed', "
        "session_closed_at='2000-01-01 00:00:00.000' WHERE id=?", [project.id])
    assert claimed.session_name in all_sessions(orchestrator)
    daemon_factory()
    _gone(orchestrator, claimed.session_name)
    retry_until(lambda: len(events(orchestrator.store, project.id, "lingering_cleaned")) == 1,
                message="lingering_cleaned event")
    # and by the periodic pass: a session of an older attempt of that project
    new_owned_session(orchestrator, f"linger-{project.id}-old", project_id=project.id)
    _gone(orchestrator, f"linger-{project.id}-old")
    retry_until(lambda: len(events(orchestrator.store, project.id, "lingering_cleaned")) == 2,
                message="second lingering_cleaned event")
    assert orchestrator.get(project.id).status == S.COMPLETED


def test_orphan_is_reported_and_killed_others_survive(
    orchestrator: Orchestrator, daemon_factory: DaemonFactory, foreign_tmux: Tmux, tmp_path: Path
) -> None:
    new_owned_session(orchestrator, "orphan-before")
    new_untagged_session(orchestrator, "users-own")
    daemon_factory()
    _gone(orchestrator, "orphan-before")
    new_owned_session(orchestrator, "orphan-after")
    _gone(orchestrator, "orphan-after")
    found = events(orchestrator.store, kind="orphan_found")
    assert sorted(str(e.session_name) for e in found) == ["orphan-after", "orphan-before"]
    assert all(e.source == "daemon" for e in found)
    # a project runs and ends meanwhile; untagged and foreign sessions are never touched
    project = orchestrator.enqueue(["true"], project_path=tmp_path)
    wait_status(orchestrator, project.id, S.COMPLETED)
    assert set(all_sessions(orchestrator)) == {KEEPER, "users-own"}
    assert foreign_tmux.run(["list-sessions", "-F", "#{session_name}"]).lines == ["job1"]


def test_orphan_policy_keep_reports_once_and_keeps_session(
    orchestrator: Orchestrator, daemon_factory: DaemonFactory, tmo_settings: Settings
) -> None:
    tmo_settings.orphan_policy = "keep"
    tmo_settings.reconcile_interval = 0.1
    new_owned_session(orchestrator, "kept-orphan")
    daemon = daemon_factory()
    retry_until(lambda: events(orchestrator.store, kind="orphan_found"), message="orphan_found event")
    wait_reconcile_passes(daemon, 2)
    assert "kept-orphan" in all_sessions(orchestrator)
    assert len(events(orchestrator.store, kind="orphan_found")) == 1
    assert events(orchestrator.store, kind="session_killed") == []


# -- restarts ----------------------------------------------------------------------------------

WAIT_FOR_GO = ["sh", "-c", "while [ ! -e go ]; do sleep 0.05; done; exit 7"]


def test_restart_adopts_running_session(
    orchestrator: Orchestrator, daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    first = daemon_factory()
    project = orchestrator.enqueue(WAIT_FOR_GO, name="adopt", project_path=tmp_path)
    before = _running(orchestrator, project.id)
    first.stop()
    # the session outlives the daemon
    assert before.session_name in all_sessions(orchestrator)
    assert orchestrator.get(project.id).status == S.PROCESSING
    second = daemon_factory()
    assert project.id in second.daemon.running
    after = orchestrator.get(project.id)
    assert after.status == S.PROCESSING
    assert (after.session_id, after.session_name, after.pane_pid, after.attempt) == (
        before.session_id, before.session_name, before.pane_pid, 1,
    )
    assert before.pane_pid is not None and pid_alive(before.pane_pid)
    assert kinds(orchestrator.store, project.id).count("started") == 1
    (tmp_path / "go").touch()
    failed = wait_status(orchestrator, project.id, S.FAILED)
    assert (failed.outcome, failed.exit_code) == (Outcome.EXITED, 7)


def test_restart_finishes_project_that_exited_while_no_daemon_ran(
    orchestrator: Orchestrator, daemon_factory: DaemonFactory, tmo_settings: Settings, tmp_path: Path
) -> None:
    first = daemon_factory()
    project = orchestrator.enqueue(WAIT_FOR_GO, name="while-down", project_path=tmp_path)
    running = _running(orchestrator, project.id)
    first.stop()
    later = orchestrator.enqueue(["sleep", "600"], name="later", project_path=tmp_path)
    (tmp_path / "go").touch()
    exit_file = tmo_settings.exit_path(project.id, 1)
    retry_until(exit_file.exists, message="the wrapper's exit file")
    _gone(orchestrator, running.session_name)
    assert orchestrator.get(project.id).status == S.PROCESSING  # nobody recorded the end yet
    daemon_factory()
    failed = wait_status(orchestrator, project.id, S.FAILED)
    assert (failed.outcome, failed.exit_code) == (Outcome.EXITED, 7)
    assert failed.error_message == "exited with code 7"
    assert not exit_file.exists()
    assert kinds(orchestrator.store, project.id).count("failed") == 1
    _running(orchestrator, later.id)


def test_restart_loses_project_whose_session_vanished_without_exit_code(
    orchestrator: Orchestrator, daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    first = daemon_factory()
    project = orchestrator.enqueue(["sleep", "600"], name="lost", project_path=tmp_path)
    running = _running(orchestrator, project.id)
    first.stop()
    assert running.pane_pid is not None
    # the whole process group dies by SIGKILL: the wrapper cannot report anything
    os.killpg(running.pane_pid, 9)
    _gone(orchestrator, running.session_name)
    daemon_factory()
    failed = wait_status(orchestrator, project.id, S.FAILED)
    assert failed.outcome == Outcome.LOST
    assert failed.error_message is not None and failed.error_message.startswith("lost:")

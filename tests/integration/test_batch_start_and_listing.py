"""Batched session starts (``start_sessions``, ``Daemon.launch_many``), the reconcile fingerprint and
the lean, index-ordered listing (``list_columns``) used by ``tmo list``."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

from tmo_helpers import db_path, new_owned_session, sql

from tmux_orchestrator.errors import TmuxError
from tmux_orchestrator.orchestrator import Orchestrator
from tmux_orchestrator.project import ProjectStatus
from tmux_orchestrator.store.sqlite import _ORDER, _PROJECT_COLUMNS, iso_time
from tmux_orchestrator.testing import DaemonThread, retry_until
from tmux_orchestrator.timestamps import format_time
from tmux_orchestrator.tmux import SessionSpec, StartedSession


def _spec(orch: Orchestrator, tmp_path: Path, number: int, name: str | None = None) -> SessionSpec:
    return SessionSpec(name=name or f"batch-{number}", project_id=number, cwd=str(tmp_path),
                       argv=["sleep", "600"], log_path=orch.settings.log_path(number))


def test_start_sessions_starts_tags_and_pipes_every_session(
    orchestrator: Orchestrator, tmp_path: Path
) -> None:
    orchestrator.server.ensure_running()
    specs = [_spec(orchestrator, tmp_path, n) for n in range(1, 61)]  # more than one chained call
    results = orchestrator.server.start_sessions(specs)
    assert all(isinstance(r, StartedSession) for r in results)
    owned = {s.name: s for s in orchestrator.server.list_owned()}
    assert set(owned) == {s.name for s in specs}
    for spec, result in zip(specs, results, strict=True):
        assert isinstance(result, StartedSession)
        session = owned[spec.name]
        assert (session.session_id, session.pane_pid, session.project_id) == (
            result.session_id, result.pane_pid, spec.project_id)
        assert session.owner == orchestrator.settings.owner_tag
    pipes = orchestrator.tmux.run(["list-panes", "-a", "-F", "#{session_name} #{pane_pipe}"]).lines
    assert sum(1 for line in pipes if line.startswith("batch-") and line.endswith(" 1")) == 60


def test_start_sessions_stops_at_a_failure_and_reports_the_rest_untried(
    orchestrator: Orchestrator, tmp_path: Path
) -> None:
    orchestrator.server.ensure_running()
    new_owned_session(orchestrator, "taken")
    specs = [_spec(orchestrator, tmp_path, 1), _spec(orchestrator, tmp_path, 2),
             _spec(orchestrator, tmp_path, 3, name="taken"), _spec(orchestrator, tmp_path, 4),
             _spec(orchestrator, tmp_path, 5, name="bad name;rm")]
    results = orchestrator.server.start_sessions(specs)
    assert isinstance(results[0], StartedSession) and isinstance(results[1], StartedSession)
    assert results[2] is None and results[3] is None and results[4] is None  # not tried
    owned = {s.name for s in orchestrator.server.list_owned()}
    assert {"batch-1", "batch-2", "taken"} <= owned and "batch-4" not in owned
    # an unsafe name at the head of a batch is refused without running anything
    [refused, later] = orchestrator.server.start_sessions(
        [_spec(orchestrator, tmp_path, 6, name="bad name;rm"), _spec(orchestrator, tmp_path, 7)])
    assert isinstance(refused, TmuxError) and isinstance(later, StartedSession)


def test_daemon_starts_a_burst_of_projects_together(
    orchestrator: Orchestrator, tmp_path: Path, daemon_factory: Callable[..., DaemonThread]
) -> None:
    projects = orchestrator.enqueue_many(
        [{"command": ["sh", "-c", f"exit {n % 3}"], "project_path": tmp_path} for n in range(40)])
    daemon: DaemonThread = daemon_factory(concurrency=8)

    def ended() -> bool:
        return all(orchestrator.get(p.id).is_terminal for p in projects)

    retry_until(ended, timeout=60, message="40 projects to end")
    finals = [orchestrator.get(p.id) for p in projects]
    assert [p.exit_code for p in finals] == [n % 3 for n in range(40)]
    assert all(p.session_id and p.pane_pid for p in finals)
    assert {p.attempt for p in finals} == {1}
    retry_until(lambda: not orchestrator.server.list_owned(), message="sessions to close")
    assert not daemon.daemon.running


def test_daemon_batch_with_a_missing_directory_fails_only_that_project(
    orchestrator: Orchestrator, tmp_path: Path, daemon_factory: Callable[..., DaemonThread]
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    projects = orchestrator.enqueue_many(
        [{"command": ["true"], "project_path": tmp_path if n != 2 else gone} for n in range(5)])
    gone.rmdir()
    daemon_factory(concurrency=5)
    retry_until(lambda: all(orchestrator.get(p.id).is_terminal for p in projects), timeout=30,
                message="the batch to end")
    finals = [orchestrator.get(p.id) for p in projects]
    assert [p.status for p in finals] == [ProjectStatus.COMPLETED] * 2 + [ProjectStatus.FAILED] + [
        ProjectStatus.COMPLETED] * 2
    assert finals[2].outcome is not None and finals[2].outcome.value == "spawn_error"


def test_the_listing_text_changes_when_a_session_comes_or_goes(orchestrator: Orchestrator) -> None:
    server = orchestrator.server
    view = server.view()
    assert (view.reachable, view.text, view.instance) == (False, "", None)
    server.ensure_running()
    view = server.view()
    assert view.reachable and view.keeper and view.instance
    empty = view.text
    new_owned_session(orchestrator, "fp-1")
    one = server.view().text
    assert one != empty and "fp-1" in one
    assert server.view().text == one  # stable while nothing changes
    server.kill(server.list_owned())
    assert server.view().text == empty


def test_list_columns_keeps_the_queue_order(orchestrator: Orchestrator, tmp_path: Path) -> None:
    rng = random.Random(5)
    projects = orchestrator.enqueue_many(
        [{"command": ["true"], "priority": rng.choice([-1, 0, 0, 3]), "project_path": tmp_path}
         for _ in range(120)])
    path = db_path(orchestrator.settings)
    for project in projects:
        roll = rng.random()
        if roll < 0.15:
            sql(path, "UPDATE project_queue SET status='processing' WHERE id=?", (project.id,))
        elif roll < 0.5:
            sql(path, "UPDATE project_queue SET status='processing' WHERE id=?", (project.id,))
            sql(path, "UPDATE project_queue SET status=? WHERE id=?",
                (rng.choice(["cancelled", "failed", "completed"]), project.id))
    # hand-written timestamps of every form SQLite and Python may have written
    sql(path, "UPDATE project_queue SET enqueued_at='2020-01-02 03:04:05' WHERE id=?", (projects[7].id,))
    sql(path, "UPDATE project_queue SET enqueued_at='2020-01-02T03:04:05.5+00:00' WHERE id=?",
        (projects[8].id,))
    conn = sqlite3.connect(path)
    try:
        expected = [r[0] for r in conn.execute(f"SELECT id FROM project_queue {_ORDER}")]
        queued = [r[0] for r in conn.execute(
            f"SELECT id FROM project_queue WHERE status IN ('queued', 'cancelled') {_ORDER}")]
        rows = {r[0]: r for r in conn.execute(f"SELECT {_PROJECT_COLUMNS} FROM project_queue")}
    finally:
        conn.close()
    store = orchestrator.store
    assert [r[0] for r in store.list_columns(["id"])] == expected
    assert [p.id for p in store.list_projects()] == expected
    assert [r[0] for r in store.list_columns(
        ["id"], [ProjectStatus.QUEUED, ProjectStatus.CANCELLED])] == queued
    assert [r[0] for r in store.list_columns(["id"], None, 7)] == expected[:7]
    assert [r[0] for r in store.list_columns(["id"], [ProjectStatus.CANCELLED], 3)] == [
        i for i in expected if rows[i][2] == "cancelled"][:3]
    assert [r[0] for r in store.list_columns(["id"], [ProjectStatus.PROCESSING, ProjectStatus.FAILED])] == [
        i for i in expected if rows[i][2] in ("processing", "failed")]
    # the computed columns and the fast ISO form agree with the Project objects
    for (pid, age, runtime, enqueued), project in zip(
            store.list_columns(["id", "age_s", "runtime_s", "enqueued_at"]), store.list_projects(),
            strict=True):
        assert pid == project.id
        assert age is not None and age >= -1
        assert (runtime is None) == (project.started_at is None)
        assert project.enqueued_at is not None
        assert iso_time(enqueued) == format_time(project.enqueued_at)


def test_iso_time_is_the_output_format() -> None:
    from tmux_orchestrator.store.sqlite import parse_time

    for text in ["2026-11-25 21:13:31.177952", "2026-11-25 21:13:31.000000", "2026-11-25 21:13:31.123",
                 "2026-11-25 21:13:31", "2026-11-25T21:13:31+02:00"]:
        value = parse_time(text)
        assert value is not None
        assert iso_time(text) == format_time(value)
    assert iso_time(None) is None and iso_time("") is None
    assert iso_time("not a time") == "not a time"


def test_more_free_slots_than_one_batch_all_start(
    orchestrator: Orchestrator, tmp_path: Path, daemon_factory: Callable[..., DaemonThread]
) -> None:
    from tmux_orchestrator.launch import LAUNCH_BATCH

    count = LAUNCH_BATCH * 2 + 3
    projects = orchestrator.enqueue_many(
        [{"command": ["sleep", "60"], "project_path": tmp_path} for _ in range(count)])
    daemon = daemon_factory(concurrency=count)

    def all_started() -> bool:
        return all(orchestrator.get(p.id).session_id for p in projects)

    retry_until(all_started, timeout=90, interval=0.1, message=f"{count} sessions")
    assert len(orchestrator.server.list_owned()) == count
    assert len(daemon.daemon.running) == count
    results = orchestrator.cancel_many([p.id for p in projects])
    assert all(not isinstance(r, Exception) for _, r in results)
    retry_until(lambda: not orchestrator.server.list_owned(), timeout=60, message="sessions to go")


def test_capture_many_splits_every_scrollback_and_skips_gone_sessions(
    orchestrator: Orchestrator, tmp_path: Path
) -> None:
    server = orchestrator.server
    server.ensure_running()
    marker_like = "tmo-capture-0123456789abcdef $1"  # looks like a marker, is not ours
    for n in range(30):
        new_owned_session(orchestrator, f"cap-{n}",
                          command=("sh", "-c", f"echo line-{n}-a; echo '{marker_like}'; echo line-{n}-b; "
                                   "sleep 600"))
    owned = {s.name: s for s in server.list_owned()}
    retry_until(lambda: all(f"line-{n}-b" in server.capture(owned[f"cap-{n}"].session_id)
                            for n in range(30)), message="the sessions to print")
    gone = owned["cap-7"]
    server.kill([gone])
    targets = [owned[f"cap-{n}"].session_id for n in range(30)]
    captured = server.capture_many(targets)
    assert set(captured) == set(targets) - {gone.session_id}
    for n in range(30):
        sid = owned[f"cap-{n}"].session_id
        if sid == gone.session_id:
            continue
        assert captured[sid] == server.capture(sid)
        assert f"line-{n}-a\n{marker_like}\nline-{n}-b\n" in captured[sid]

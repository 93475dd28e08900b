"""The public Orchestrator API without a daemon: validation, ending projects, lingering sessions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from tmo_helpers import (
    all_sessions,
    events,
    kinds,
    new_owned_session,
    new_untagged_session,
    pid_alive,
    sql,
    start_project_session,
)

from tmux_orchestrator import TmuxOrchestratorScheduler
from tmux_orchestrator.errors import InvalidTransition, ProjectNotFound, UsageError
from tmux_orchestrator.orchestrator import Orchestrator
from tmux_orchestrator.project import Outcome, Project, ProjectStatus
from tmux_orchestrator.testing import retry_until

S = ProjectStatus


def _running(orch: Orchestrator, tmp_path: Path, *, name: str = "job", priority: int = 0,
             argv: tuple[str, ...] = ("sleep", "600")) -> Project:
    """Enqueue, claim and start a project the way the daemon would (no daemon runs)."""
    project = orch.enqueue(["sleep", "600"], name=name, priority=priority, project_path=tmp_path)
    orch.store.set_setting("concurrency", "100")
    claimed = orch.store.claim_next(host=orch.host, max_processing=100)
    assert claimed is not None and claimed.id == project.id
    start_project_session(orch, claimed, tmp_path, argv)
    return orch.get(project.id)


# -- enqueue -----------------------------------------------------------------------------------


def test_enqueue_stores_a_queued_project(orchestrator: Orchestrator, tmp_path: Path) -> None:
    spec = tmp_path / "feature-spec.md"
    spec.write_text("# spec")
    project = orchestrator.enqueue(["claude", "-p", spec.name], project_path=tmp_path, spec_path=spec,
                                   env={"API_KEY": "k"}, priority=3, max_retries=2, timeout=60)
    assert project.status == S.QUEUED
    assert project.name == "feature-spec"
    assert project.project_path == str(tmp_path.resolve())
    assert project.spec_path == str(spec.resolve())
    assert project.env == {"API_KEY": "k"}
    assert (project.priority, project.max_retries, project.timeout) == (3, 2, 60)
    assert [(e.kind, e.source) for e in events(orchestrator.store, project.id)] == [("queued", "api")]


def test_the_api_captures_the_environment_only_when_asked(
    orchestrator: Orchestrator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOO", "from-process")
    monkeypatch.setenv("TMUX", "/tmp/someone-elses-tmux,1,0")
    plain = orchestrator.enqueue(["true"], project_path=tmp_path, env={"A": "1"})
    assert plain.env == {"A": "1"}
    asked = orchestrator.enqueue(["true"], project_path=tmp_path, env={"FOO": "explicit"},
                                 capture_env=True)
    assert asked.env["FOO"] == "explicit" and asked.env["PATH"] == os.environ["PATH"]
    assert "TMUX" not in asked.env
    given = orchestrator.enqueue(["true"], project_path=tmp_path, capture_env={"ONLY": "this", "PWD": "/"})
    assert given.env == {"ONLY": "this"}
    many = orchestrator.enqueue_many([{"command": ["true"], "project_path": tmp_path},
                                      {"command": ["true"], "project_path": tmp_path, "env": {"FOO": "x"}}],
                                     capture_env=True)
    assert [p.env["FOO"] for p in many] == ["from-process", "x"]


def test_enqueue_default_name_and_directory(orchestrator: Orchestrator, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    project = orchestrator.enqueue(["/usr/bin/env", "true"])
    assert project.name == "env"
    assert project.project_path == str(tmp_path.resolve())


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ([], {}, "missing command"),
        ([""], {}, "missing command"),
        (["  "], {}, "missing command"),
        (["true"], {"project_path": "/does/not/exist"}, "does not exist"),
        (["true"], {"spec_path": "/does/not/exist.md"}, "spec file"),
        (["true"], {"env": {"1BAD": "x"}}, "environment variable"),
        (["true"], {"env": {"A-B": "x"}}, "environment variable"),
        (["true"], {"env": {"A=B": "x"}}, "environment variable"),
        (["true"], {"env": {"": "x"}}, "environment variable"),
        (["true"], {"env": {"HAS SPACE": "x"}}, "environment variable"),
        (["true"], {"max_retries": -1}, "max_retries"),
        (["true"], {"project_path": "/tmp/x\ny"}, "the directory contains a control character"),
        (["true"], {"spec_path": "/tmp/x\ny"}, "the spec file contains a control character"),
        (["true"], {"timeout": 0}, "timeout"),
        (["true"], {"timeout": -5}, "timeout"),
        (["true"], {"idle_timeout": 0}, "idle timeout"),
    ],
)
def test_enqueue_validation_errors_change_nothing(
    orchestrator: Orchestrator, args: list[str], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError, match=message) as raised:
        orchestrator.enqueue(args, **kwargs)
    # The API speaks Python: no CLI flag, no `--`, no `tmo add` (the CLI gives its own hints).
    assert "--" not in str(raised.value) and "tmo " not in str(raised.value), raised.value
    assert orchestrator.list_projects() == []
    assert orchestrator.store.last_event_id() == 0
    assert sum(orchestrator.store.counts().values()) == 0


def test_enqueue_rejects_a_file_as_directory(orchestrator: Orchestrator, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(UsageError, match=f"^{not_a_dir} is not a directory$"):
        orchestrator.enqueue(["true"], project_path=not_a_dir)
    assert orchestrator.store.last_event_id() == 0


def test_original_name_is_an_alias() -> None:
    assert TmuxOrchestratorScheduler is Orchestrator


# -- get_next_project_atomic -------------------------------------------------------------------


def test_get_next_project_atomic_respects_priority_and_concurrency(orchestrator: Orchestrator) -> None:
    low = orchestrator.enqueue(["true"], name="low", priority=0)
    high = orchestrator.enqueue(["true"], name="high", priority=10)
    mid = orchestrator.enqueue(["true"], name="mid", priority=5)
    first = orchestrator.get_next_project_atomic()
    assert first is not None and first.id == high.id and first.status == S.PROCESSING
    assert orchestrator.get_next_project_atomic() is None  # concurrency defaults to 1
    orchestrator.store.set_setting("concurrency", "3")
    second = orchestrator.get_next_project_atomic()
    third = orchestrator.get_next_project_atomic()
    assert second is not None and second.id == mid.id
    assert third is not None and third.id == low.id
    assert orchestrator.get_next_project_atomic() is None


def test_get_next_project_atomic_cleans_lingering_sessions_first(
    orchestrator: Orchestrator, tmp_path: Path
) -> None:
    done = _running(orchestrator, tmp_path, name="done")
    sql(orchestrator.settings, "UPDATE project_queue SET status = 'completed' WHERE id = ?", [done.id])
    waiting = orchestrator.enqueue(["true"], name="waiting")
    claimed = orchestrator.get_next_project_atomic()
    assert claimed is not None and claimed.id == waiting.id
    assert done.session_name not in all_sessions(orchestrator)
    assert len(events(orchestrator.store, done.id, "lingering_cleaned")) == 1


# -- mark_project_complete ---------------------------------------------------------------------


def test_mark_project_complete_kills_session_and_writes_events_once(
    orchestrator: Orchestrator, tmp_path: Path
) -> None:
    project = _running(orchestrator, tmp_path, argv=("sh", "-c", "echo visible-output; exec sleep 600"))
    assert project.session_name is not None and project.pane_pid is not None
    retry_until(lambda: "visible-output" in orchestrator.server.capture(project.session_name or ""),
                message="output on screen")
    done = orchestrator.mark_project_complete(project.id)
    assert done.status == S.COMPLETED
    assert done.outcome == Outcome.MANUAL
    assert done.completed_at is not None and done.session_closed_at is not None
    assert project.session_name not in all_sessions(orchestrator)
    retry_until(lambda: not pid_alive(project.pane_pid or 0), message="the pane process to end")
    after = kinds(orchestrator.store, project.id)
    assert after.count("completed") == 1
    assert after.count("output_saved") == 1
    assert after.count("session_killed") == 1
    assert "visible-output" in orchestrator.settings.scrollback_path(project.id, 1).read_text()
    last = orchestrator.store.last_event_id()
    again = orchestrator.mark_project_complete(project.id)
    assert again.status == S.COMPLETED
    assert orchestrator.store.last_event_id() == last


def test_mark_project_complete_failure_records_reason(orchestrator: Orchestrator, tmp_path: Path) -> None:
    project = _running(orchestrator, tmp_path)
    failed = orchestrator.mark_project_complete(project.id, success=False, reason="tests red")
    assert failed.status == S.FAILED
    assert failed.error_message == "tests red"
    assert failed.outcome == Outcome.MANUAL
    assert project.session_name not in all_sessions(orchestrator)
    [event] = events(orchestrator.store, project.id, "failed")
    assert event.message == "tests red" and event.source == "api"


def test_fail_is_mark_complete_with_failure(orchestrator: Orchestrator, tmp_path: Path) -> None:
    project = _running(orchestrator, tmp_path)
    assert orchestrator.fail(project.id, "nope").status == S.FAILED
    assert project.session_name not in all_sessions(orchestrator)


def test_mark_project_complete_after_sql_completion_still_kills_session(
    orchestrator: Orchestrator, tmp_path: Path
) -> None:
    project = _running(orchestrator, tmp_path)
    sql(orchestrator.settings, "UPDATE project_queue SET status = 'completed' WHERE id = ?", [project.id])
    assert project.session_name in all_sessions(orchestrator)
    done = orchestrator.mark_project_complete(project.id)
    assert done.status == S.COMPLETED and done.outcome == Outcome.MANUAL
    assert project.session_name not in all_sessions(orchestrator)
    got = events(orchestrator.store, project.id)
    assert [(e.kind, e.source) for e in got if e.kind == "completed"] == [("completed", "sql")]
    assert [e.kind for e in got].count("session_killed") == 1
    assert [e.kind for e in got].count("output_saved") == 1


def test_mark_project_complete_on_queued_project_is_refused(orchestrator: Orchestrator) -> None:
    project = orchestrator.enqueue(["true"])
    before = orchestrator.store.last_event_id()
    with pytest.raises(InvalidTransition):
        orchestrator.mark_project_complete(project.id)
    assert orchestrator.get(project.id).status == S.QUEUED
    assert orchestrator.store.last_event_id() == before


def test_mark_project_complete_unknown_project(orchestrator: Orchestrator) -> None:
    with pytest.raises(ProjectNotFound):
        orchestrator.mark_project_complete(404)


def test_mark_project_complete_leaves_other_sessions_alone(
    orchestrator: Orchestrator, tmp_path: Path
) -> None:
    orchestrator.store.set_setting("concurrency", "10")
    one = _running(orchestrator, tmp_path, name="job")
    ten = _running(orchestrator, tmp_path, name="job")
    new_untagged_session(orchestrator, str(one.session_name) + "0")  # a prefix-match trap
    orchestrator.mark_project_complete(one.id)
    alive = all_sessions(orchestrator)
    assert one.session_name not in alive
    assert ten.session_name in alive
    assert str(one.session_name) + "0" in alive


# -- cancel, retry, remove ---------------------------------------------------------------------


def test_cancel_running_project_kills_its_session(orchestrator: Orchestrator, tmp_path: Path) -> None:
    project = _running(orchestrator, tmp_path)
    cancelled = orchestrator.cancel(project.id)
    assert cancelled.status == S.CANCELLED and cancelled.outcome == Outcome.CANCELLED
    assert project.session_name not in all_sessions(orchestrator)
    assert kinds(orchestrator.store, project.id).count("session_killed") == 1
    with pytest.raises(InvalidTransition):
        orchestrator.cancel(project.id)


def test_cancel_queued_project(orchestrator: Orchestrator) -> None:
    project = orchestrator.enqueue(["true"])
    assert orchestrator.cancel(project.id).status == S.CANCELLED
    assert kinds(orchestrator.store, project.id) == ["queued", "cancelled"]


def test_retry_requeues_an_ended_project(orchestrator: Orchestrator, tmp_path: Path) -> None:
    project = _running(orchestrator, tmp_path)
    orchestrator.fail(project.id, "x")
    retried = orchestrator.retry(project.id)
    assert retried.status == S.QUEUED and retried.retry_count == 1
    assert kinds(orchestrator.store, project.id)[-1] == "retried"
    queued = orchestrator.enqueue(["true"])
    with pytest.raises(InvalidTransition):
        orchestrator.retry(queued.id)


def test_remove_refuses_running_and_removes_ended(orchestrator: Orchestrator, tmp_path: Path) -> None:
    project = _running(orchestrator, tmp_path)
    with pytest.raises(InvalidTransition):
        orchestrator.remove(project.id)
    assert project.session_name in all_sessions(orchestrator)
    orchestrator.cancel(project.id)
    orchestrator.remove(project.id)
    with pytest.raises(ProjectNotFound):
        orchestrator.get(project.id)
    assert kinds(orchestrator.store, project.id)[-1] == "removed"


# -- lingering sessions ------------------------------------------------------------------------


def test_find_lingering_sessions(orchestrator: Orchestrator, tmp_path: Path) -> None:
    orchestrator.store.set_setting("concurrency", "10")
    running = _running(orchestrator, tmp_path, name="running")
    ended = _running(orchestrator, tmp_path, name="ended")
    sql(orchestrator.settings, "UPDATE project_queue SET status = 'failed' WHERE id = ?", [ended.id])
    # an older attempt's session of the running project is lingering too
    new_owned_session(orchestrator, f"running-{running.id}-old", project_id=running.id)
    new_owned_session(orchestrator, "orphan")  # no project: an orphan, not lingering
    new_untagged_session(orchestrator, "foreign")
    names = [str(running.session_name), str(ended.session_name), f"running-{running.id}-old", "orphan",
             "foreign", "not-alive-at-all"]
    lingering = orchestrator._find_lingering_sessions(names)
    assert sorted(lingering) == sorted([str(ended.session_name), f"running-{running.id}-old"])
    from_live = orchestrator._find_lingering_sessions(orchestrator.tmux_manager.get_active_sessions())
    assert sorted(from_live) == sorted(lingering)


def test_cleanup_lingering_kills_only_lingering(orchestrator: Orchestrator, tmp_path: Path) -> None:
    orchestrator.store.set_setting("concurrency", "10")
    running = _running(orchestrator, tmp_path, name="running")
    ended = _running(orchestrator, tmp_path, name="ended")
    sql(orchestrator.settings, "UPDATE project_queue SET status = 'completed' WHERE id = ?", [ended.id])
    new_owned_session(orchestrator, "orphan")
    new_untagged_session(orchestrator, "foreign")
    assert orchestrator.cleanup_lingering() == [ended.session_name]
    alive = set(all_sessions(orchestrator))
    assert {str(running.session_name), "orphan", "foreign"} <= alive
    assert ended.session_name not in alive
    assert len(events(orchestrator.store, ended.id, "lingering_cleaned")) == 1
    assert orchestrator.get(ended.id).session_closed_at is not None
    assert orchestrator.cleanup_lingering() == []

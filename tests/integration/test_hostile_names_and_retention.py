"""Hostile project names run safely end to end; log retention keeps what it must."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tmo_helpers import all_sessions, wait_status

from tmux_orchestrator.config import Settings
from tmux_orchestrator.naming import is_safe_session_name
from tmux_orchestrator.orchestrator import Orchestrator
from tmux_orchestrator.project import ProjectStatus
from tmux_orchestrator.retention import prune_logs
from tmux_orchestrator.testing import DaemonThread, retry_until

HOSTILE = [
    "my project v1.2: final",
    "$HOME and $(touch dollar-ran)",
    "#{pid} #(touch hash-ran)",
    "quotes ' \" `touch tick-ran`",
    "ünïcødé 名前",
    "x" * 300,
    "job1",
    "job10",
]


def test_hostile_names_are_stored_as_given_and_run_in_safe_unique_sessions(
    orchestrator: Orchestrator, daemon_factory: Callable[..., DaemonThread], tmp_path: Path
) -> None:
    projects = [orchestrator.enqueue(["sleep", "30"], name=name, project_path=tmp_path)
                for name in HOSTILE]
    daemon_factory(concurrency=len(HOSTILE))
    retry_until(lambda: len(orchestrator.tmux_manager.get_active_sessions()) == len(HOSTILE),
                message="every project to run")
    names = set()
    for project, given in zip(projects, HOSTILE, strict=True):
        current = orchestrator.get(project.id)
        assert current.name == given  # stored exactly as given
        assert current.session_name and is_safe_session_name(current.session_name)
        assert current.session_name in all_sessions(orchestrator)
        names.add(current.session_name)
    assert len(names) == len(HOSTILE)
    # no command hidden in a name ever ran, on the server or anywhere else
    for marker in ("dollar-ran", "hash-ran", "tick-ran"):
        assert not (tmp_path / marker).exists()
        assert not (Path(os.getcwd()) / marker).exists()
    # ending `job1` never touches `job10`
    job1, job10 = projects[-2], projects[-1]
    orchestrator.mark_project_complete(job1.id)
    assert orchestrator.get(job10.id).status == ProjectStatus.PROCESSING
    assert orchestrator.get(job10.id).session_name in all_sessions(orchestrator)
    job1_session = orchestrator.get(job1.id).session_name or ""
    assert orchestrator.tmux_manager.kill_sessions_by_pattern(job1_session) == []
    orchestrator.cancel_many([p.id for p in projects])
    retry_until(lambda: not orchestrator.tmux_manager.get_active_sessions(), message="all cancelled")


def _touch(path: Path, age_days: float, size: int = 10) -> None:
    path.write_bytes(b"x" * size)
    old = time.time() - age_days * 86400
    os.utime(path, (old, old))


@pytest.mark.parametrize("days", [30.0])
def test_retention_by_age_keeps_active_projects_and_recent_logs(tmo_settings: Settings, days: float) -> None:
    tmo_settings.ensure_dirs()
    tmo_settings.log_retention_days = days
    logs = tmo_settings.logs_dir
    _touch(logs / "1.log", 40)
    _touch(logs / "1.scrollback.txt", 40)
    _touch(logs / "2.log", 40)  # old, but project 2 is still running
    _touch(logs / "3.log", 5)
    _touch(logs / "orphan-x.scrollback.txt", 45)
    _touch(logs / "notes.txt", 400)  # not ours: never touched
    removed = {p.name for p in prune_logs(tmo_settings, active_ids={2})}
    assert removed == {"1.log", "1.scrollback.txt", "orphan-x.scrollback.txt"}
    assert {p.name for p in logs.iterdir()} == {"2.log", "3.log", "notes.txt"}


def test_retention_by_size_removes_oldest_first(tmo_settings: Settings) -> None:
    tmo_settings.ensure_dirs()
    tmo_settings.log_retention_days = 0  # no age limit
    tmo_settings.log_retention_mb = 1.0
    logs = tmo_settings.logs_dir
    mb = 1024 * 1024
    _touch(logs / "1.log", 3, size=mb // 2)
    _touch(logs / "2.log", 2, size=mb // 2)
    _touch(logs / "3.log", 1, size=mb // 2)
    removed = [p.name for p in prune_logs(tmo_settings, active_ids=set())]
    assert removed == ["1.log"]  # 1.5 MB -> 1.0 MB by dropping the oldest
    assert prune_logs(tmo_settings, active_ids=set()) == []


def test_retention_removes_run_files_of_ended_projects_only(tmo_settings: Settings) -> None:
    tmo_settings.ensure_dirs()
    run = tmo_settings.run_dir
    for name in ("4-1.sh", "4-1.exit", "5-2.sh", "5-2.exit"):
        (run / name).write_text("x")
    prune_logs(tmo_settings, active_ids={5})
    assert sorted(p.name for p in run.iterdir()) == ["5-2.exit", "5-2.sh"]


def test_daemon_applies_retention_at_start(orchestrator: Orchestrator, tmo_settings: Settings) -> None:
    project = orchestrator.enqueue(["true"], project_path=tmo_settings.home)
    first = DaemonThread(tmo_settings).start()
    try:
        wait_status(orchestrator, project.id, ProjectStatus.COMPLETED)
    finally:
        first.stop()
    log = tmo_settings.log_path(project.id)
    retry_until(log.exists, message="the log")
    old = time.time() - 31 * 86400
    os.utime(log, (old, old))
    second = DaemonThread(tmo_settings).start()  # a restarted daemon prunes at start
    try:
        assert not log.exists()
    finally:
        second.stop()

"""Helpers shared by the integration tests (real tmux servers and SQLite files only)."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tmux_orchestrator.config import Settings
from tmux_orchestrator.orchestrator import Orchestrator
from tmux_orchestrator.processes import is_running
from tmux_orchestrator.project import Project, ProjectStatus
from tmux_orchestrator.store.base import Event, Store
from tmux_orchestrator.testing import DaemonThread, retry_until
from tmux_orchestrator.tmux.server import SessionInfo, StartedSession

#: The product's own zombie-aware check: one definition for product, tests and bench.
pid_alive = is_running


def db_path(settings: Settings) -> Path:
    path = settings.database_path
    assert path is not None
    return path


def sql(settings: Settings | Path, statement: str, params: Sequence[Any] = ()) -> int:
    """Run one hand-written statement from a separate connection (as a human would); rows changed."""
    path = settings if isinstance(settings, Path) else db_path(settings)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        return conn.execute(statement, tuple(params)).rowcount
    finally:
        conn.close()


def sql_cli(settings: Settings | Path, statement: str) -> subprocess.CompletedProcess[str]:
    """Run a statement with the ``sqlite3`` command-line shell in its own process."""
    path = settings if isinstance(settings, Path) else db_path(settings)
    return subprocess.run(
        ["sqlite3", "-cmd", ".timeout 30000", str(path), statement],
        capture_output=True, text=True, timeout=60,
    )


def events(store: Store, project_id: int | None = None, kind: str | None = None) -> list[Event]:
    return store.events_after(0, project_id=project_id, kinds=[kind] if kind else None, limit=100000)


def kinds(store: Store, project_id: int) -> list[str]:
    return [e.kind for e in events(store, project_id)]


def wait_project(orch: Orchestrator, project_id: int, predicate: Callable[[Project], bool], *,
                 message: str, timeout: float = 10.0) -> Project:
    """Poll the project until ``predicate`` holds; return it as it was then."""
    seen: list[Project] = []

    def check() -> bool:
        project = orch.get(project_id)
        if predicate(project):
            seen.append(project)
            return True
        return False

    retry_until(check, timeout=timeout, message=message)
    return seen[-1]


def wait_status(orch: Orchestrator, project_id: int, status: ProjectStatus, timeout: float = 10.0) -> Project:
    return wait_project(orch, project_id, lambda p: p.status == status, timeout=timeout,
                        message=f"project {project_id} to become {status.value}")


def wait_running(orch: Orchestrator, project_id: int, timeout: float = 10.0) -> Project:
    """Wait until the project is processing with its session recorded and alive."""
    return wait_project(
        orch, project_id,
        lambda p: p.status == ProjectStatus.PROCESSING and p.session_id is not None
        and p.session_name in all_sessions(orch),
        timeout=timeout, message=f"project {project_id} to run",
    )


def wait_file(path: Path, timeout: float = 10.0) -> str:
    """Wait until ``path`` holds at least one complete line; return its text."""
    retry_until(lambda: path.exists() and path.read_text().endswith("\n"), timeout=timeout,
                message=f"{path.name} to be written")
    return path.read_text()


def all_sessions(orch: Orchestrator) -> dict[str, SessionInfo]:
    """Every session on the orchestrator's server, owned or not, by name."""
    return {s.name: s for s in orch.server.list_all()}


def session_alive(orch: Orchestrator, name: str) -> bool:
    return name in all_sessions(orch)


def new_untagged_session(orch: Orchestrator, name: str, command: Sequence[str] = ("sleep", "600")) -> None:
    """A session on our server that this orchestrator does not own (someone else made it)."""
    orch.server.ensure_running()
    orch.tmux.run(["new-session", "-d", "-s", name, *command])


def new_owned_session(orch: Orchestrator, name: str, *, project_id: int | None = None,
                      command: Sequence[str] = ("sleep", "600")) -> None:
    """A session carrying our ownership tag, made by hand (no project unless ``project_id``)."""
    orch.server.ensure_running()
    commands: list[list[str]] = [
        ["new-session", "-d", "-s", name, *command],
        ["set-option", "-t", f"={name}:", "@tmo_owner", orch.settings.owner_tag],
    ]
    if project_id is not None:
        commands.append(["set-option", "-t", f"={name}:", "@tmo_project", str(project_id)])
    orch.tmux.run(*commands)


def start_project_session(orch: Orchestrator, project: Project, cwd: Path,
                          argv: Sequence[str] = ("sleep", "600")) -> StartedSession:
    """Start a claimed project's session the way the daemon does, without a daemon."""
    assert project.session_name is not None
    orch.server.ensure_running()
    started = orch.server.start_session(
        name=project.session_name, project_id=project.id, cwd=str(cwd), argv=list(argv),
        log_path=orch.settings.log_path(project.id),
    )
    orch.store.record_session(project.id, session_id=started.session_id, window_id=started.window_id,
                              pane_pid=started.pane_pid)
    return started


def wait_reconcile_passes(daemon: DaemonThread, passes: int = 2, timeout: float = 10.0) -> None:
    """Wait until the daemon has completed ``passes`` more reconcile passes (each re-arms its timer)."""
    for _ in range(passes):
        mark = daemon.daemon._next_reconcile
        retry_until(lambda mark=mark: daemon.daemon._next_reconcile > mark,  # type: ignore[misc]
                    timeout=timeout, message="a reconcile pass")

"""Product bugs found while writing the suite. Each test states the correct behaviour and fails today.

Nothing here is skipped or marked xfail on purpose: these tests are meant to be seen failing until
the product is fixed (see the module-level notes on each test for file, function and cause).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tmo_helpers import (
    all_sessions,
    events,
    new_owned_session,
    wait_status,
)

from tmux_orchestrator.config import Settings, load_settings
from tmux_orchestrator.durations import parse_duration
from tmux_orchestrator.errors import StoreError, TmuxError, UsageError
from tmux_orchestrator.naming import is_safe_session_name
from tmux_orchestrator.orchestrator import Orchestrator
from tmux_orchestrator.project import Project, ProjectStatus
from tmux_orchestrator.store.sqlite import SqliteStore
from tmux_orchestrator.testing import DaemonThread, retry_until
from tmux_orchestrator.wrapper import parse_fifo_line, read_exit_file, write_wrapper

S = ProjectStatus
DaemonFactory = Callable[..., DaemonThread]


# -- BUG 1: tmux/server.py OrchestratorServer.start_session passes ``cwd`` to ``new-session -c``
#    unescaped. tmux expands formats in -c: a directory containing '#' runs the project elsewhere,
#    and '#(...)' in a directory name runs a shell command on the tmux server.


@pytest.mark.parametrize("dirname", ["a#{session_name}b", "c#(touch pwned)d"])
def test_project_directory_with_hash_is_used_literally(
    orchestrator: Orchestrator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dirname: str
) -> None:
    monkeypatch.chdir(tmp_path)  # where tmux would fall back to (and where #(touch) would write)
    work = tmp_path / dirname
    work.mkdir()
    out = tmp_path / "pwd.txt"
    orchestrator.server.ensure_running()
    orchestrator.server.start_session(name="hash-1", project_id=1, cwd=str(work),
                                      argv=["sh", "-c", f"pwd > '{out}'"],
                                      log_path=orchestrator.settings.log_path(1))
    retry_until(lambda: out.exists() and out.read_text().endswith("\n"), message="pwd.txt")
    assert out.read_text().strip() == str(work)
    assert not (tmp_path / "pwned").exists()


# -- BUG 2: orchestrator.py Orchestrator.enqueue validates env names with str.isalpha/isalnum, which
#    accept non-ASCII letters ('é'). The wrapper then runs `export é=...`, which makes sh abort
#    (exit 2) before the command runs and before any exit code is written: the project is "lost".


def test_enqueue_rejects_non_ascii_env_names(orchestrator: Orchestrator) -> None:
    with pytest.raises(UsageError, match="environment variable"):
        orchestrator.enqueue(["true"], env={"é": "1"})
    assert orchestrator.list_projects() == []


def _wrap(
    tmp_path: Path, command: list[str], env: dict[str, str]
) -> tuple[Settings, subprocess.CompletedProcess[str]]:
    settings = load_settings(tmp_path / "home")
    settings.ensure_dirs()
    project = Project(id=1, name="w", status=S.PROCESSING, command=command, env=env, attempt=1,
                      session_name="w-1")
    script = write_wrapper(settings, project)
    result = subprocess.run(["/bin/sh", str(script)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=20)
    return settings, result


def test_wrapper_with_non_ascii_env_name_still_runs_and_reports(tmp_path: Path) -> None:
    settings, result = _wrap(tmp_path, ["sh", "-c", "echo ran > ran.txt"], {"é": "1"})
    assert (tmp_path / "ran.txt").exists(), result.stderr
    assert read_exit_file(settings.exit_path(1, 1)) == 0


# -- BUG 3: wrapper.py wrapper_script writes argv with shlex.join, which leaves words such as ``if``
#    or ``x=1`` unquoted. As the first word of a command line sh reads them as a reserved word or a
#    variable assignment: the script is a syntax error, or runs a different command.


@pytest.mark.parametrize("argv0", ["if", "done", "x=1"])
def test_wrapper_runs_first_argument_literally(tmp_path: Path, argv0: str) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    program = bindir / argv0
    program.write_text(f"#!/bin/sh\necho \"$0 $*\" > '{tmp_path}/ran.txt'\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    env = {"PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    settings, result = _wrap(tmp_path, [argv0, "arg"], env)
    assert (tmp_path / "ran.txt").exists(), result.stderr
    assert read_exit_file(settings.exit_path(1, 1)) == 0


# -- BUG 4: wrapper.py parse_fifo_line / read_exit_file check digits with str.lstrip("-").isdigit(),
#    which accepts '--1' and '²' that int() rejects: a ValueError instead of None. In the daemon the
#    ValueError escapes Daemon._read_fifo and ends the daemon loop.


@pytest.mark.parametrize("line", ["exit --1 1 0", "exit 1 1 --2", "exit ² 1 0", "exit 1 1 ¹"])
def test_parse_fifo_line_returns_none_for_malformed_numbers(line: str) -> None:
    assert parse_fifo_line(line) is None


@pytest.mark.parametrize("text", ["--5\n", "²\n"])
def test_read_exit_file_returns_none_for_malformed_numbers(tmp_path: Path, text: str) -> None:
    path = tmp_path / "1-1.exit"
    path.write_text(text)
    assert read_exit_file(path) is None


def test_garbage_on_the_fifo_does_not_stop_the_daemon(
    orchestrator: Orchestrator, daemon_factory: DaemonFactory, tmo_settings: Settings, tmp_path: Path
) -> None:
    daemon = daemon_factory()
    fd = os.open(tmo_settings.fifo_path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, b"exit --1 1 0\n")
    finally:
        os.close(fd)
    project = orchestrator.enqueue(["true"], project_path=tmp_path)
    wait_status(orchestrator, project.id, S.COMPLETED, timeout=5)
    assert daemon.thread.is_alive() and daemon.error is None


# -- BUG 5: naming.py is_safe_session_name uses ``^...$`` with re.match; ``$`` also matches before a
#    trailing newline, so 'job1\n' counts as safe. tmux stores it as 'job1\\n' and '=job1\n' cannot
#    find it.


def test_is_safe_session_name_rejects_trailing_newline() -> None:
    assert not is_safe_session_name("job1\n")


def test_start_session_refuses_name_with_trailing_newline(orchestrator: Orchestrator, tmp_path: Path) -> None:
    orchestrator.server.ensure_running()
    with pytest.raises(TmuxError, match="unsafe"):
        orchestrator.server.start_session(name="job1\n", project_id=1, cwd=str(tmp_path),
                                          argv=["sleep", "600"], log_path=tmp_path / "log")


# -- BUG 6: durations.py parse_duration accepts 'nan' (float('nan') parses, and nan < 0 is False).
#    A timeout of NaN never fires (now >= nan is always False) yet passes enqueue's `<= 0` check.


def test_parse_duration_rejects_nan() -> None:
    with pytest.raises(ValueError):
        parse_duration("nan")


# -- BUG 7: store/sqlite.py SqliteStore._setup switches the file to WAL (persistent, rewrites the
#    header and creates -wal/-shm files) before _migrate finds the tables of another program, so
#    "refusing" another program's SQLite database still modifies it. The connection is not closed
#    on that path either.


def test_opening_another_programs_sqlite_database_leaves_it_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('keep me')")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="another program"):
        SqliteStore(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


# -- BUG 8: reconcile.py Reconciler._orphan writes 'session_killed' only if kill-session itself
#    succeeded; the SIGTERM sent just before usually ends the pane first, so the orphan is killed
#    with no session_killed event (it depends on a race).


def test_killed_orphan_gets_a_session_killed_event(
    orchestrator: Orchestrator, daemon_factory: DaemonFactory
) -> None:
    new_owned_session(orchestrator, "orphan-x")
    daemon_factory()
    retry_until(lambda: "orphan-x" not in all_sessions(orchestrator), message="the orphan to be killed")
    assert [e.session_name for e in events(orchestrator.store, kind="orphan_found")] == ["orphan-x"]
    # recorded once the session and its processes are confirmed gone
    retry_until(lambda: [e.session_name for e in events(orchestrator.store, kind="session_killed")]
                == ["orphan-x"], message="the session_killed event")
    time.sleep(1.0)
    assert [e.session_name for e in events(orchestrator.store, kind="session_killed")] == ["orphan-x"]

"""Helpers and fixtures of the acceptance tests: the installed ``tmo`` CLI and daemon as real processes.

Every test gets its own ``TMO_HOME`` (the ``tmo_home`` fixture of :mod:`tmux_orchestrator.testing`,
which also ends that home's tmux server by pid afterwards). Nothing here mocks anything: ``tmo`` runs
as a subprocess with ``TMO_HOME`` in its environment, against real tmux and a real SQLite file.

Processes are only ever ended by the pid of a process the test started (a ``Popen`` it holds, or the
daemon of the test's own home, whose pid is read from ``tmo daemon status --json`` / ``daemon.lock``
and double-checked against ``/proc/<pid>/cmdline``).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import sqlite3
import subprocess
import sysconfig
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tmux_orchestrator.config import load_settings
from tmux_orchestrator.processes import is_running
from tmux_orchestrator.testing import retry_until

#: The product's own zombie-aware check: one definition for product, tests and bench.
pid_alive = is_running

T = TypeVar("T")


def poll(check: Callable[[], T | None], *, timeout: float = 10.0, interval: float = 0.05,
         message: str = "condition") -> T:
    """:func:`retry_until` for checks that return a value or None: returns the value."""
    value = retry_until(check, timeout=timeout, interval=interval, message=message)
    assert value is not None
    return value


def _find_tmo() -> str:
    """The installed ``tmo`` console script (the interpreter's own, else the one on PATH)."""
    scripts = sysconfig.get_path("scripts")
    found = shutil.which("tmo", path=scripts) or shutil.which("tmo")
    if found is None:
        raise RuntimeError("the `tmo` console script is not installed (pip install -e .)")
    return found


#: Absolute path of the installed ``tmo`` console script.
TMO = _find_tmo()

#: Variables of the surrounding environment that must not reach the ``tmo`` under test.
_DROPPED = ("TMUX", "TMUX_PANE", "TMO_PROJECT_ID", "TMO_DONE_FILE", "TMO_ATTEMPT", "TMO_DATABASE_URL")


def tmo_environment(home: Path) -> dict[str, str]:
    """The environment of every ``tmo`` run for ``home``: ours, minus other TMO_* and tmux vars."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMO_") and k not in _DROPPED}
    env["TMO_HOME"] = str(home)
    env["PATH"] = f"{Path(TMO).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def cmdline(pid: int) -> list[str]:
    """argv of ``pid`` (empty when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def end_pid(pid: int, *, grace: float = 5.0) -> None:
    """SIGTERM ``pid``, wait up to ``grace`` seconds, then SIGKILL it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.01)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.01)


# -- the database, read directly -----------------------------------------------------------------
@dataclass(frozen=True)
class DbSnapshot:
    """What a bad command must not change: every project row and the event log's size."""

    projects: int
    events: int
    last_event_id: int
    rows: tuple[tuple[Any, ...], ...]


def db_snapshot(home: Path) -> DbSnapshot:
    """Read ``$TMO_HOME/tmo.db`` read-only with sqlite3 (not through the package)."""
    path = home / "tmo.db"
    if not path.exists():
        return DbSnapshot(0, 0, 0, ())
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        rows = tuple(tuple(r) for r in conn.execute("SELECT * FROM project_queue ORDER BY id"))
        events = int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
        last = int(conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])
    finally:
        conn.close()
    return DbSnapshot(len(rows), events, last, rows)


def run_sql(home: Path, statement: str) -> None:
    """Run ``statement`` on the home's database as a user would: with the sqlite3 CLI if present."""
    path = home / "tmo.db"
    sqlite_cli = shutil.which("sqlite3")
    if sqlite_cli:
        # As the README tells users: without .timeout the CLI fails at once with "database is
        # locked" whenever the daemon is writing.
        result = subprocess.run([sqlite_cli, "-cmd", ".timeout 10000", str(path), statement],
                                capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 0, f"sqlite3 failed: {result.stderr}"
        return
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
    try:
        conn.execute(statement)
    finally:
        conn.close()


# -- the tmo runner ---------------------------------------------------------------------------------
class LineReader:
    """Reads a ``Popen``'s stdout lines on a thread, so a test can wait for one with a timeout."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self._stdout = proc.stdout
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stdout:
            self.lines.put((time.monotonic(), line.rstrip("\n")))

    def next_line(self, timeout: float) -> tuple[float, str]:
        """(arrival time, text) of the next line; fails the test after ``timeout`` seconds."""
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no output line within {timeout}s")


class Tmo:
    """Runs the installed ``tmo`` for one home; ``tmo(...)`` returns a text CompletedProcess."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = tmo_environment(home)
        settings = load_settings(home)
        self.socket_path = settings.socket_path
        self.owner_tag = settings.owner_tag
        self.popens: list[subprocess.Popen[str]] = []

    # -- running -------------------------------------------------------------------------------
    def __call__(self, *args: str, timeout: float = 60.0, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [TMO, *args], capture_output=True, text=True, timeout=timeout, check=False,
            cwd=str(cwd or self.home), env={**self.env, **(env or {})}, stdin=subprocess.DEVNULL,
        )

    def ok(self, *args: str, timeout: float = 60.0, cwd: Path | None = None,
           env: dict[str, str] | None = None) -> str:
        """Run ``tmo args`` (``env`` added to its environment) and insist on exit 0; returns stdout."""
        result = self(*args, timeout=timeout, cwd=cwd, env=env)
        assert result.returncode == 0, (
            f"tmo {' '.join(args)} exited {result.returncode}\nstdout: {result.stdout}\n"
            f"stderr: {result.stderr}"
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result.stdout

    def json(self, *args: str) -> Any:
        """Run ``tmo args --json`` (exit 0 expected) and parse its stdout."""
        return json.loads(self.ok(*args, "--json"))

    def popen(self, *args: str, stdout: int = subprocess.PIPE) -> subprocess.Popen[str]:
        """Start ``tmo args`` in the background; it is ended (by pid) at the end of the test."""
        proc = subprocess.Popen(
            [TMO, *args], stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=str(self.home),
            env=self.env, stdin=subprocess.DEVNULL,
        )
        self.popens.append(proc)
        return proc

    # -- queue helpers -------------------------------------------------------------------------
    def add(self, *command: str, options: Sequence[str] = (), cwd: Path | None = None,
            env: dict[str, str] | None = None) -> int:
        """``tmo add [options] -- command``; returns the printed id."""
        out = self.ok("add", *options, "--", *command, cwd=cwd, env=env)
        assert out.strip().isdigit(), f"tmo add printed {out!r}, not an id"
        return int(out.strip())

    def project(self, project_id: int) -> dict[str, Any]:
        """``tmo show ID --json``."""
        data = self.json("show", str(project_id))
        assert isinstance(data, dict)
        return data

    def env_of(self, project_id: int) -> dict[str, str]:
        """``tmo show ID --env --json``: the project's environment, values included."""
        data = self.json("show", str(project_id), "--env")
        assert isinstance(data, dict)
        return data

    def projects(self, *options: str) -> list[dict[str, Any]]:
        """``tmo list --json``."""
        data = self.json("list", *options)
        assert isinstance(data, list)
        return data

    def status_of(self, project_id: int) -> str:
        """The status of one project."""
        return str(self.project(project_id)["status"])

    def wait_status(self, project_id: int, *statuses: str, timeout: float = 15.0) -> dict[str, Any]:
        """Poll until the project has one of ``statuses``; returns its ``show --json``."""
        def check() -> dict[str, Any] | None:
            project = self.project(project_id)
            return project if project["status"] in statuses else None
        return poll(check, timeout=timeout, message=f"project {project_id} to become {'/'.join(statuses)}")

    def events(self) -> list[dict[str, Any]]:
        """Every event: ``tmo events --json --last 0`` (JSON lines)."""
        out = self.ok("events", "--json", "--last", "0")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def sessions(self) -> list[dict[str, Any]]:
        """``tmo sessions --json``: the owned sessions."""
        data = self.json("sessions")
        assert isinstance(data, list)
        return data

    def session_names(self) -> set[str]:
        """Names of the owned sessions."""
        return {str(s["session_name"]) for s in self.sessions()}

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run tmux against this home's dedicated server only (``-S`` its socket)."""
        return subprocess.run(
            ["tmux", "-S", str(self.socket_path), "-f", "/dev/null", *args], capture_output=True,
            text=True, timeout=30, check=False, env={k: v for k, v in self.env.items() if k != "TMUX"},
        )

    def tmux_session_names(self) -> set[str]:
        """Every session on this home's server, owned or not, straight from tmux."""
        result = self.tmux("list-sessions", "-F", "#{session_name}")
        return set(result.stdout.split()) if result.returncode == 0 else set()

    def server_pid(self) -> int | None:
        """Pid of this home's tmux server, None when none answers on its socket."""
        for args in (["display-message", "-p", "#{pid}"], ["list-sessions", "-F", "#{pid}"]):
            if not self.socket_path.exists():
                return None
            out = self.tmux(*args).stdout.split("\n", 1)[0].strip()
            if out.isdigit():
                return int(out)
        return None

    def end_server(self) -> None:
        """Teardown: end the process groups of this home's panes, then its tmux server, by pid.

        The panes go first: a project wrapper traps SIGHUP, so ending only the server would leave
        project commands running without a session. (``tmo_home`` ends the server as well, but it
        counts a zombie the init process has not reaped yet as running, which costs seconds.)
        """
        pid = self.server_pid()
        if pid is None:
            return
        panes = self.tmux("list-panes", "-a", "-F", "#{pane_pid}").stdout.split()
        for pane in (int(p) for p in panes if p.isdigit()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pane, signal.SIGKILL)
        end_pid(pid)

    def end_popens(self) -> None:
        """End every background ``tmo`` this test started, by its pid."""
        for proc in self.popens:
            if proc.poll() is None:
                end_pid(proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def tmo(tmo_home: Path) -> Iterator[Tmo]:
    """Run the installed ``tmo`` with ``TMO_HOME`` set to this test's home."""
    runner = Tmo(tmo_home)
    try:
        yield runner
    finally:
        runner.end_popens()
        end_home_daemons(tmo_home)
        runner.end_server()


def end_home_daemons(home: Path) -> None:
    """End every ``tmo daemon run`` of ``home`` (a fresh home of this test's own), by pid: one a test
    started with ``tmo daemon start`` and did not stop, or could not (a broken config.toml fails
    ``tmo daemon stop``) would outlive the test and its deleted home."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            argv = cmdline(int(entry.name))
            if "daemon" in argv and "run" in argv and str(home) in argv and pid_alive(int(entry.name)):
                end_pid(int(entry.name))


# -- the daemon -------------------------------------------------------------------------------------
_STARTED = re.compile(r"daemon started \(pid (\d+)\)")


class DaemonControl:
    """Starts this home's daemon the ways a user does, and remembers every pid it saw."""

    def __init__(self, tmo: Tmo) -> None:
        self.tmo = tmo
        self.pids: set[int] = set()

    def start(self, *options: str) -> int:
        """``tmo daemon start``; returns the pid it printed."""
        out = self.tmo.ok("daemon", "start", *options)
        match = _STARTED.search(out)
        assert match, f"`tmo daemon start` printed no pid: {out!r}"
        pid = int(match.group(1))
        self.pids.add(pid)
        return pid

    def run(self, *options: str) -> subprocess.Popen[str]:
        """``tmo daemon run`` in the foreground, as a child of the test."""
        proc = self.tmo.popen("daemon", "run", *options, stdout=subprocess.DEVNULL)
        self.pids.add(proc.pid)
        return proc

    def status(self) -> dict[str, Any]:
        """``tmo daemon status --json`` (exit 0 running, 3 stopped)."""
        result = self.tmo("daemon", "status", "--json")
        assert result.returncode in (0, 3), result.stderr
        data = json.loads(result.stdout)
        assert isinstance(data, dict)
        return data

    def pid(self) -> int | None:
        """Pid of the running daemon of this home, None when none runs."""
        data = self.status()
        return int(data["pid"]) if data["running"] and data["pid"] else None

    def starts(self) -> int:
        """How many ``daemon_started`` events the home has recorded so far."""
        return sum(1 for e in self.tmo.events() if e["kind"] == "daemon_started")

    def run_ready(self, *options: str, timeout: float = 15.0) -> subprocess.Popen[str]:
        """``tmo daemon run`` in the foreground; returns once it has recorded its start."""
        before = self.starts()
        proc = self.run(*options)

        def check() -> bool:
            assert proc.poll() is None, f"`tmo daemon run` exited early with {proc.returncode}"
            return self.starts() > before
        retry_until(check, timeout=timeout, interval=0.05, message="`tmo daemon run` to be ready")
        return proc

    def _lock_pid(self) -> int | None:
        try:
            text = (self.tmo.home / "daemon.lock").read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def _is_ours(self, pid: int) -> bool:
        """True if ``pid`` is a ``tmo daemon run`` this test started or one of this home's."""
        if any(p.pid == pid for p in self.tmo.popens):
            return True
        argv = cmdline(pid)
        return "daemon" in argv and "run" in argv and str(self.tmo.home) in argv

    def stop_all(self) -> None:
        """Teardown: end every daemon of this home by pid (SIGTERM, then SIGKILL)."""
        candidates = set(self.pids)
        lock_pid = self._lock_pid()  # read directly: `tmo daemon status` fails on a broken config
        if lock_pid is not None:
            candidates.add(lock_pid)
        with contextlib.suppress(Exception):
            running = self.pid()
            if running is not None:
                candidates.add(running)
        for pid in sorted(candidates):
            if pid_alive(pid) and self._is_ours(pid):
                end_pid(pid)


@pytest.fixture
def daemon(tmo: Tmo) -> Iterator[DaemonControl]:
    """Start daemons for this test's home; any still running at the end is stopped by pid."""
    control = DaemonControl(tmo)
    try:
        yield control
    finally:
        control.stop_all()


# -- projects that wait for the test ----------------------------------------------------------------
_GATED = "echo started-{tag}; while [ ! -e gate ]; do sleep 0.05; done; echo finished-{tag}"


def add_gated(tmo: Tmo, tag: str, options: Sequence[str] = ()) -> tuple[int, Path]:
    """Queue a project that prints ``started-<tag>``, waits until the test creates its gate file,
    prints ``finished-<tag>`` and exits 0. Returns (project id, gate path)."""
    work = tmo.home / f"work-{tag}"
    work.mkdir()
    project_id = tmo.add("sh", "-c", _GATED.format(tag=tag), options=["--dir", str(work), *options])
    return project_id, work / "gate"


def wait_session(tmo: Tmo, project_id: int, timeout: float = 15.0) -> str:
    """Poll until the project runs and its session is alive; returns the session name."""
    def check() -> str | None:
        project = tmo.project(project_id)
        name = project["session_name"]
        if project["status"] == "processing" and name and name in tmo.tmux_session_names():
            return str(name)
        return None
    return poll(check, timeout=timeout, message=f"project {project_id} to run in a live session")

"""A throw-away ``TMO_HOME`` running the real daemon as a subprocess, with its own tmux server.

:class:`BenchHome` creates a fresh temporary home, queues projects through the public API, starts
``tmo daemon start`` with ``TMO_HOME`` pointing at the home, and reads back what happened: the
project rows, the ``events`` table, ``scheduler.log`` and the timestamp files the projects wrote.

Teardown (always, also after an error or Ctrl-C): ``tmo daemon stop``; the daemon's pid is checked
and signalled directly if it did not stop; project process groups still running on *this* home's
tmux server (recognised by their wrapper path inside the home) are ended; then this home's tmux
server is ended by its pid. The user's default tmux server and every socket the bench did not create
are never contacted.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from bench.stats import percentile
from tmux_orchestrator import Orchestrator, load_settings
from tmux_orchestrator.config import Settings
from tmux_orchestrator.processes import is_running

#: The product's own zombie-aware check: one definition for product, tests and bench.
pid_alive = is_running

T = TypeVar("T")

#: Variables that must not leak from the caller's environment into the daemon under test.
_DROP_VARS = ("TMUX", "TMUX_PANE")
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) (.*)$")


class BenchError(RuntimeError):
    """The benchmark could not be run as intended (not a slow result: a broken run)."""


def scrub_environment() -> dict[str, str]:
    """Remove ``TMO_*`` (and ``TMUX``) from this process so every setting is the product default.

    Returns what was removed, for the record.
    """
    removed = {k: v for k, v in os.environ.items() if k.startswith("TMO_") or k in _DROP_VARS}
    for key in removed:
        del os.environ[key]
    return removed


def tmo_argv() -> list[str]:
    """How to call the installed CLI: the ``tmo`` console script of this interpreter, else ``tmo``
    on PATH, else ``python -m tmux_orchestrator``.

    The interpreter's own script comes first: a version manager's shim on PATH (pyenv's is a bash
    script that execs ``pyenv exec``) adds some 50 ms to every call, which is not the product's.
    """
    scripts = sysconfig.get_path("scripts")
    exe = shutil.which("tmo", path=scripts) or shutil.which("tmo")
    return [exe] if exe else [sys.executable, "-m", "tmux_orchestrator"]


def time_process(argv: list[str], *, env: dict[str, str], runs: int = 5, warmup: int = 1,
                 cwd: Path | None = None) -> dict[str, Any]:
    """Whole-process figures of ``argv``: ``warmup`` runs not counted, then ``runs`` counted ones.

    Per run the wall time (fork to reap), the user + system CPU the kernel accounted to it
    (``wait4``) and its peak RSS; output is read and thrown away (its size is kept). Medians are
    what to quote: the machine is shared.
    """
    walls: list[float] = []
    cpus: list[float] = []
    rss: list[int] = []
    out_bytes = 0
    codes: set[int] = set()
    for n in range(warmup + runs):
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        size = 0
        while chunk := proc.stdout.read(1 << 16):
            size += len(chunk)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
        if n < warmup:
            continue
        codes.add(proc.returncode)
        walls.append(wall * 1000)
        cpus.append((usage.ru_utime + usage.ru_stime) * 1000)
        rss.append(usage.ru_maxrss)
        out_bytes = size
    ordered = sorted(walls)
    return {
        "runs": runs,
        "wall_ms": {"median": round(percentile(ordered, 50), 1), "min": round(ordered[0], 1),
                    "max": round(ordered[-1], 1)},
        "cpu_ms_median": round(percentile(sorted(cpus), 50), 1),
        "peak_rss_kb_max": max(rss),
        "output_bytes": out_bytes,
        "exit_codes": sorted(codes),
        "samples_wall_ms": [round(w, 1) for w in walls],
    }


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds ``pid`` has used (Linux), None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[-1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def wait_until(check: Callable[[], T | None], *, timeout: float, interval: float = 0.005,
               what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; :class:`BenchError` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def wait_dead(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` has ended; True if it did."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def db_time(text: str | None) -> float | None:
    """A UTC timestamp column (``YYYY-MM-DD HH:MM:SS[.fff[fff]]``) as epoch seconds."""
    if not text:
        return None
    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    raise BenchError(f"unexpected timestamp {text!r} in the database")


@functools.lru_cache(maxsize=1)
def has_epochrealtime() -> bool:
    """True if ``bash`` is there and has ``$EPOCHREALTIME`` (bash >= 5): a clock read with no fork."""
    bash = shutil.which("bash")
    if bash is None:
        return False
    out = subprocess.run([bash, "-c", 'echo "${EPOCHREALTIME:-}"'], capture_output=True, text=True,
                         check=False).stdout.strip()
    return bool(re.fullmatch(r"\d+[.,]\d+", out))


def stamp(kind: str) -> str:
    """Shell code writing the wall clock to ``$TMO_HOME/bench/$TMO_PROJECT_ID.<kind>``."""
    target = f'"$TMO_HOME/bench/$TMO_PROJECT_ID.{kind}"'
    if has_epochrealtime():
        return f'printf %s "$EPOCHREALTIME" > {target}'
    return f"date +%s.%N > {target}"


def project_argv(*parts: str) -> list[str]:
    """A project command: shell ``parts`` joined with ``;`` run by bash (or sh without bash 5)."""
    shell = "bash" if has_epochrealtime() else "sh"
    return [shell, "-c", "; ".join(parts)]


@dataclass
class Row:
    """The columns of one ``project_queue`` row the benchmarks use (times as epoch seconds)."""

    id: int
    status: str
    outcome: str | None
    exit_code: int | None
    session_name: str | None
    session_id: str | None
    window_id: str | None
    pane_pid: int | None
    started_at: float | None
    completed_at: float | None
    session_closed_at: float | None


@dataclass
class Event:
    """One row of the ``events`` table (``at`` as epoch seconds, millisecond resolution)."""

    id: int
    at: float
    kind: str
    project_id: int | None
    source: str
    message: str | None


@dataclass
class LogLine:
    """One ``scheduler.log`` line (local time, millisecond resolution, truncated)."""

    at: float
    level: str
    message: str


class BenchHome:
    """A temporary home with the real daemon (a subprocess) and its own tmux server."""

    def __init__(self, label: str, *, keep: bool = False, database_url: str | None = None,
                 host: str | None = None) -> None:
        self.label = label
        self.keep = keep
        self.home = Path(tempfile.mkdtemp(prefix=f"tmo-bench-{label}-"))
        self.marks = self.home / "bench"
        self.marks.mkdir()
        self.settings: Settings = load_settings(self.home, database_url)
        self.env = {k: v for k, v in os.environ.items() if k not in _DROP_VARS}
        self.env["TMO_HOME"] = str(self.home)
        if database_url is not None:  # one host of a shared queue (bench.hosts)
            self.env["TMO_DATABASE_URL"] = database_url
        if host is not None:
            self.env["TMO_HOST"] = host
        self.orch = Orchestrator(self.settings, source="api")
        # the raw-SQL reader of the home's own SQLite file (a shared database is read through orch)
        self.db = sqlite3.connect(str(self.home / "tmo.db") if database_url is None else ":memory:",
                                  timeout=30, isolation_level=None)
        self.daemon_pid: int | None = None
        self.server_pid: int | None = None
        self.teardown_notes: list[str] = []
        self._cpu_start: dict[str, float | None] = {}

    # -- context -----------------------------------------------------------------------------
    def __enter__(self) -> BenchHome:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def socket(self) -> Path:
        """This home's tmux socket (as the product computes it)."""
        return self.settings.socket_path

    def tmux(self, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        """Run a tmux command against this home's server only."""
        return subprocess.run(
            ["tmux", "-S", str(self.socket), "-f", "/dev/null", *args],
            capture_output=True, text=True, env=self.env, timeout=timeout, check=False,
        )

    # -- queue -------------------------------------------------------------------------------
    def enqueue(self, argv: list[str], *, name: str) -> int:
        """Queue a project through the public API; returns its id."""
        return self.orch.enqueue(argv, name=name, project_path=self.home).id

    # -- daemon ------------------------------------------------------------------------------
    def start_daemon(self, concurrency: int = 1) -> None:
        """``tmo daemon start`` (returns once the daemon is ready); remember its and tmux's pid."""
        proc = subprocess.run(
            [*tmo_argv(), "daemon", "start", "--concurrency", str(concurrency)],
            capture_output=True, text=True, env=self.env, timeout=60, check=False,
        )
        match = re.search(r"pid (\d+)", proc.stdout)
        self.daemon_pid = int(match.group(1)) if match else self._status_pid()
        out = self.tmux("display-message", "-p", "-t", "=_tmo_keep:", "#{pid}").stdout.strip()
        self.server_pid = int(out) if out.isdigit() else None
        if proc.returncode != 0 or match is None:
            raise BenchError(f"tmo daemon start failed ({proc.returncode}): {proc.stdout} {proc.stderr}")
        if self.server_pid is None:
            raise BenchError(f"cannot find the pid of the tmux server on {self.socket}")
        self._cpu_start = {
            "daemon": cpu_seconds(self.daemon_pid) if self.daemon_pid else None,
            "tmux_server": cpu_seconds(self.server_pid),
        }

    def _status_pid(self) -> int | None:
        """The daemon pid ``tmo daemon status --json`` reports (after a failed start)."""
        proc = subprocess.run([*tmo_argv(), "daemon", "status", "--json"], capture_output=True,
                              text=True, env=self.env, timeout=60, check=False)
        try:
            pid = json.loads(proc.stdout).get("pid")
        except ValueError:
            return None
        return pid if isinstance(pid, int) else None

    def cpu_used(self) -> dict[str, float | None]:
        """CPU seconds the daemon and the tmux server used since :meth:`start_daemon`."""
        out: dict[str, float | None] = {}
        for name, pid in (("daemon", self.daemon_pid), ("tmux_server", self.server_pid)):
            before = self._cpu_start.get(name)
            now = cpu_seconds(pid) if pid else None
            out[name] = round(now - before, 3) if now is not None and before is not None else None
        return out

    def owned_sessions(self) -> list[str]:
        """Names of project sessions on this home's server (keeper excluded)."""
        result = self.tmux("list-sessions", "-F", "#{session_name}")
        return [n for n in result.stdout.split() if n and n != "_tmo_keep"]

    # -- reading results ---------------------------------------------------------------------
    def rows(self) -> dict[int, Row]:
        """Every project row by id."""
        cur = self.db.execute(
            "SELECT id, status, outcome, exit_code, session_name, session_id, window_id, pane_pid, "
            "started_at, completed_at, session_closed_at FROM project_queue"
        )
        return {
            r[0]: Row(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], db_time(r[8]), db_time(r[9]),
                      db_time(r[10]))
            for r in cur.fetchall()
        }

    def row(self, project_id: int) -> Row:
        """One project row."""
        return self.rows_where("id = ?", (project_id,))[0]

    def rows_where(self, where: str, params: tuple[Any, ...] = ()) -> list[Row]:
        """Rows matching a WHERE clause."""
        cur = self.db.execute(
            "SELECT id, status, outcome, exit_code, session_name, session_id, window_id, pane_pid, "
            f"started_at, completed_at, session_closed_at FROM project_queue WHERE {where}", params
        )
        return [Row(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], db_time(r[8]), db_time(r[9]),
                    db_time(r[10])) for r in cur.fetchall()]

    def count_not_terminal(self) -> int:
        """Projects still queued or processing."""
        return int(self.db.execute(
            "SELECT count(*) FROM project_queue WHERE status IN ('queued', 'processing')"
        ).fetchone()[0])

    def events(self, after: int = 0) -> list[Event]:
        """Events with an id above ``after``, oldest first."""
        cur = self.db.execute(
            "SELECT id, at, kind, project_id, source, message FROM events WHERE id > ? ORDER BY id",
            (after,),
        )
        out = []
        for r in cur.fetchall():
            at = db_time(r[1])
            assert at is not None
            out.append(Event(r[0], at, r[2], r[3], r[4], r[5]))
        return out

    def log_lines(self) -> list[LogLine]:
        """``scheduler.log`` parsed (its ``asctime`` is local time, truncated to milliseconds)."""
        out: list[LogLine] = []
        try:
            text = self.settings.scheduler_log.read_text(errors="replace")
        except OSError:
            return out
        for line in text.splitlines():
            match = _LOG_LINE.match(line)
            if match:
                at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                out.append(LogLine(at, match.group(2), match.group(3)))
        return out

    def mark(self, project_id: int, kind: str) -> float | None:
        """The timestamp a project wrote to ``bench/<id>.<kind>``, None if it wrote none."""
        try:
            text = (self.marks / f"{project_id}.{kind}").read_text().strip()
        except FileNotFoundError:
            return None
        return float(text.replace(",", ".")) if text else None

    # -- teardown ----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the daemon, end leftover project processes and this home's tmux server; clean up."""
        try:
            self._stop_daemon()
            self._end_projects()
            self._end_server()
        finally:
            with contextlib.suppress(Exception):
                self.db.close()
            with contextlib.suppress(Exception):
                self.orch.close()
            if not self.keep:
                shutil.rmtree(self.home, ignore_errors=True)

    def refresh_server_pid(self) -> None:
        """Remember the pid of the tmux server answering on this home's socket now (teardown ends
        it), after something other than :meth:`start_daemon` started or restarted it."""
        out = self.tmux("display-message", "-p", "-t", "=_tmo_keep:", "#{pid}").stdout.strip()
        if out.isdigit():
            self.server_pid = int(out)

    def close_daemon_only(self) -> None:
        """Stop the daemon (``tmo daemon stop``); its sessions and tmux server are left running."""
        self._stop_daemon()
        self.daemon_pid = None

    def _stop_daemon(self) -> None:
        pid = self.daemon_pid
        if pid is None or not pid_alive(pid):
            return
        subprocess.run([*tmo_argv(), "daemon", "stop"], capture_output=True, text=True,
                       env=self.env, timeout=60, check=False)
        if wait_dead(pid, 15):
            return
        self.teardown_notes.append(f"daemon {pid} ignored `tmo daemon stop`; sent SIGTERM/SIGKILL")
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if wait_dead(pid, 5):
                return

    def _end_projects(self) -> None:
        """SIGTERM, then SIGKILL, the process groups of panes whose wrapper lives in this home."""
        if self.server_pid is None or not pid_alive(self.server_pid):
            return
        result = self.tmux("list-panes", "-a", "-F", "#{pane_pid}")
        groups = []
        for word in result.stdout.split():
            if not word.isdigit():
                continue
            pid = int(word)
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            with contextlib.suppress(ProcessLookupError):
                if str(self.home) in cmdline and os.getpgid(pid) == pid:
                    groups.append(pid)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in groups:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, sig)
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and any(pid_alive(p) for p in groups):
                time.sleep(0.01)
        if groups:
            self.teardown_notes.append(f"ended {len(groups)} leftover project process group(s)")

    def _end_server(self) -> None:
        pid = self.server_pid
        if pid is not None and pid_alive(pid):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                if wait_dead(pid, 5):
                    break
        # tmux never removes its socket file; remove it if it lies outside the home.
        if self.server_pid is not None and not self.socket.is_relative_to(self.home):
            with contextlib.suppress(FileNotFoundError):
                self.socket.unlink()

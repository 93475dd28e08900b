"""pytest fixtures: a private home, tmux server and SQLite database per test; a fresh PostgreSQL
database per test (``postgres_url``).

Registered as a pytest plugin (entry point ``tmux_orchestrator``), so projects that build on
tmux-orchestrator can use them too. Every tmux server a fixture starts lives on a socket inside the
test's own temporary directory and is ended by its pid afterwards; the user's default tmux server is
never contacted. Every PostgreSQL database a fixture makes is dropped afterwards; a server that does
not answer fails the test (a skipped test would hide a broken CI).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest

from tmux_orchestrator.config import Settings, load_settings
from tmux_orchestrator.daemon import Daemon
from tmux_orchestrator.orchestrator import Orchestrator
from tmux_orchestrator.processes import is_running, marked_processes
from tmux_orchestrator.tmux import Tmux

T = TypeVar("T")

#: The variable naming the PostgreSQL server the tests use: a URL of a role that may create
#: databases, e.g. ``postgresql://postgres@127.0.0.1:5432/postgres`` (the default).
PG_ADMIN_URL_VARIABLE = "TMO_TEST_PG_URL"
DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def retry_until(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.01,
                message: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def end_tmux_server(socket_path: Path) -> None:
    """End the tmux server on ``socket_path`` and its panes' process groups, by pid.

    Never any other server: only the pid that answers on this socket is signalled.
    """
    tmux = Tmux(socket_path)
    if socket_path.exists():
        result = tmux.run(["list-panes", "-a", "-F", "#{pid} #{pane_pid}"], check=False)
        rows = [line.split() for line in result.stdout.splitlines() if len(line.split()) == 2]
        for _, pane_pid in rows:
            # Projects still running at the end of a test must not outlive it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pane_pid), signal.SIGKILL)
        pid = rows[0][0] if rows else ""
        if pid.isdigit():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGTERM)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and is_running(int(pid)):
                time.sleep(0.01)
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()


def end_marked_processes(home: Path) -> None:
    """SIGKILL every project process still carrying ``TMO_HOME=home`` (this test's own, fresh home):
    one that left its process group with ``setsid`` outlives its pane and its server."""
    for processes in (marked_processes(home) or {}).values():
        for pid, _ in processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def tmo_home() -> Iterator[Path]:
    """A fresh, short ``TMO_HOME`` (short so the tmux socket fits inside it)."""
    home = Path(tempfile.mkdtemp(prefix="tmo-test-"))
    settings = load_settings(home)
    try:
        yield home
    finally:
        end_tmux_server(settings.socket_path)
        end_marked_processes(home)
        import shutil

        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def tmo_settings(tmo_home: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings of the test's home (``TMO_HOME`` is exported for subprocesses too)."""
    monkeypatch.setenv("TMO_HOME", str(tmo_home))
    monkeypatch.delenv("TMO_DATABASE_URL", raising=False)
    monkeypatch.delenv("TMO_PROJECT_ID", raising=False)
    settings = load_settings(tmo_home)
    # kill_grace stays at its default (5 s): a shorter one once hid a double clean-up. Reconcile
    # runs more often than the default, so lingering and lost sessions are found sooner.
    settings.reconcile_interval = 0.5
    return settings


@pytest.fixture
def orchestrator(tmo_settings: Settings) -> Iterator[Orchestrator]:
    """An :class:`Orchestrator` on the test's home, database and private tmux server."""
    orch = Orchestrator(tmo_settings, source="api")
    try:
        yield orch
    finally:
        orch.close()


class DaemonThread:
    """A real :class:`Daemon` run in a thread of the test process (no signal handlers)."""

    def __init__(self, settings: Settings, concurrency: int = 1) -> None:
        self.orch = Orchestrator(settings, source="daemon")
        self.daemon = Daemon(self.orch, concurrency=concurrency, install_signal_handlers=False)
        self.thread = threading.Thread(target=self._run, name="tmo-daemon", daemon=True)
        self.error: BaseException | None = None
        self._ready = threading.Event()

    def _run(self) -> None:
        try:
            self.daemon.run()
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc
        finally:
            self._ready.set()

    def start(self) -> DaemonThread:
        """Start and wait until the daemon has done its start-up reconcile."""
        self.thread.start()
        retry_until(lambda: (self.daemon._fifo_fd >= 0 and self.daemon._token != -1) or self.error,
                    message="daemon start")
        if self.error:
            raise self.error
        return self

    def stop(self) -> None:
        """Stop the loop and wait for it (sessions are left running, as with SIGTERM)."""
        self.daemon.stop()
        self.thread.join(10)
        self.orch.close()
        if self.error:
            raise self.error


@pytest.fixture
def daemon_factory(tmo_settings: Settings) -> Iterator[Callable[..., DaemonThread]]:
    """Start in-process daemons on the test's home; all are stopped at the end of the test."""
    started: list[DaemonThread] = []

    def start(concurrency: int = 1) -> DaemonThread:
        daemon = DaemonThread(tmo_settings, concurrency).start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.thread.is_alive():
            daemon.stop()


def pg_admin_url() -> str:
    """The URL of the test PostgreSQL server (``$TMO_TEST_PG_URL``, else the local default)."""
    return os.environ.get(PG_ADMIN_URL_VARIABLE) or DEFAULT_PG_ADMIN_URL


@contextlib.contextmanager
def fresh_postgres_database(admin_url: str | None = None) -> Iterator[str]:
    """A new, empty database ``tmo_test_<hex>`` on the test server; yields its URL, drops it after.

    A server that does not answer fails the test, saying why and how to start one: the PostgreSQL
    half of a suite must never pass by being skipped.
    """
    import psycopg

    from tmux_orchestrator.redact import display_url

    admin_url = admin_url or pg_admin_url()
    name = f"tmo_test_{secrets.token_hex(6)}"
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL does not answer at {display_url(admin_url)}: {' '.join(str(exc).split())} "
                    f"(start it, e.g. `pg_ctlcluster --skip-systemctl-redirect 15 main start`, or point "
                    f"{PG_ADMIN_URL_VARIABLE} at a server where this role may create databases)",
                    pytrace=False)
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as admin:
            # FORCE: a connection a failed test left open must not keep the database alive.
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a fresh PostgreSQL database, dropped after the test (see
    :func:`fresh_postgres_database`)."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def foreign_tmux() -> Iterator[Tmux]:
    """A separate tmux server standing for the user's own, with an untagged session ``job1``."""
    directory = Path(tempfile.mkdtemp(prefix="tmo-foreign-"))
    tmux = Tmux(directory / "user.sock")
    tmux.run(["new-session", "-d", "-s", "job1", "sleep", "600"])
    try:
        yield tmux
    finally:
        end_tmux_server(tmux.socket_path)
        import shutil

        shutil.rmtree(directory, ignore_errors=True)

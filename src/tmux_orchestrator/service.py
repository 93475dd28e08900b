"""Controlling the daemon from outside: start in the background, stop, status (its systemd unit:
:mod:`tmux_orchestrator.systemd`); and stopping this home's tmux server once the daemon is stopped."""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tmux_orchestrator.config import Settings
from tmux_orchestrator.errors import (
    ConfigError,
    DaemonAlreadyRunning,
    DaemonError,
    DaemonNotRunning,
    ServerBusy,
)
from tmux_orchestrator.home import open_append, open_private, user_umask
from tmux_orchestrator.lock import DaemonLock
from tmux_orchestrator.processes import is_running

if TYPE_CHECKING:
    from tmux_orchestrator.orchestrator import Orchestrator
    from tmux_orchestrator.reload import LoadedConfig


@dataclass
class DaemonStatus:
    """What ``tmo daemon status`` reports."""

    running: bool
    pid: int | None
    home: str
    socket: str
    database: str
    concurrency: int
    paused: bool
    started_at: str | None
    counts: dict[str, int]
    metrics_url: str | None = None
    #: Whether config.toml changed since the daemon loaded it (None: no daemon, or one too old to say).
    config_changed: bool | None = None
    #: When the daemon loaded the config it runs with.
    config_loaded_at: str | None = None
    #: Why the daemon's last reload failed (it runs the config it had).
    config_reload_error: str | None = None
    #: Settings whose new value waits for a daemon restart.
    config_restart_needed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


def daemon_pid(settings: Settings) -> int | None:
    """Pid of the daemon of this home, None when none runs."""
    return DaemonLock(settings.lock_path).running_pid()


def start_daemon(settings: Settings, *, concurrency: int | None = None, log_json: bool = False,
                 log_level: str = "INFO", metrics: str | None = None, timeout: float = 20.0) -> int:
    """Start ``tmo daemon run`` in the background; return its pid once it is ready.

    ``concurrency``, ``log_json``, ``log_level`` and ``metrics`` (``ADDRESS:PORT``) are the options of
    ``tmo daemon run``. Raises :class:`DaemonAlreadyRunning` when this home's daemon runs.
    """
    pid = daemon_pid(settings)
    if pid is not None:
        raise DaemonAlreadyRunning(pid, str(settings.lock_path))
    settings.ensure_dirs()
    from tmux_orchestrator.dispatch import check_delivery_secrets  # imports the delivery modules

    check_delivery_secrets(settings)  # the daemon gets our environment: say it here, not in a log
    read_fd, write_fd = os.pipe()
    argv = [sys.executable, "-m", "tmux_orchestrator", "--home", str(settings.home),
            "daemon", "run", "--ready-fd", str(write_fd), "--quiet", "--log-level", log_level]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    if log_json:
        argv.append("--log-json")
    if metrics is not None:
        argv += ["--metrics", metrics]
    out_path = settings.home / "daemon.out"
    with os.fdopen(open_append(out_path, "daemon output file"), "ab") as out:
        start_offset = os.fstat(out.fileno()).st_size  # earlier starts' errors are not this one's
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, pass_fds=(write_fd,),
            start_new_session=True, env={**os.environ, "TMO_DATABASE_URL": settings.database_url},
            umask=user_umask(),  # the daemon makes its own files private; projects get this one
        )
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], timeout)
        answer = os.read(read_fd, 64) if ready else b""
    finally:
        os.close(read_fd)
    if b"ready" not in answer:
        if ready:  # the pipe closed unanswered: the daemon is exiting, its exit code follows
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        code = proc.poll()
        if code is None:
            proc.terminate()
        elif DaemonLock(settings.lock_path).is_held():
            # It lost the lock to a daemon started meanwhile (a concurrent `tmo daemon start`):
            # that one runs, as if it had been found running above.
            raise DaemonAlreadyRunning(_holder_pid(settings), str(settings.lock_path))
        tail = _tail(out_path, start=start_offset)
        raise DaemonError(
            f"the daemon did not start{'' if code is None else f' (exit code {code})'}: {tail}"
        )
    return proc.pid


def _holder_pid(settings: Settings, *, wait: float = 2.0) -> int | None:
    """Pid of the daemon holding this home's lock. One that has just taken it may not have written
    its pid yet (the file is empty or names an earlier daemon): it gets ``wait`` seconds to."""
    lock = DaemonLock(settings.lock_path)
    deadline = time.monotonic() + wait
    while (pid := lock.holder_pid()) is None or not is_running(pid):
        if time.monotonic() > deadline or not lock.is_held():
            break
        time.sleep(0.01)
    return pid


def stop_daemon(settings: Settings, *, timeout: float = 10.0) -> int:
    """Send SIGTERM to this home's daemon and wait until it has released its lock.

    Stops take turns: a concurrent second stop waits for the first, then finds no daemon
    (:class:`DaemonNotRunning`) rather than reporting the same stop.
    """
    lock = DaemonLock(settings.lock_path)
    with _one_at_a_time(settings.home):
        pid = lock.running_pid()
        if pid is None:
            raise DaemonNotRunning(
                f"no daemon is running for {settings.home} (start one with `tmo daemon start`)"
            )
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not lock.is_held():
                return pid
            time.sleep(0.02)
    raise DaemonError(f"daemon pid {pid} did not stop within {timeout:.0f}s")


@contextlib.contextmanager
def _one_at_a_time(home: Path) -> Iterator[None]:
    """Hold an ``flock`` on the home directory (not ``daemon.lock``: the daemon holds that one);
    a home that does not exist has no daemon to take turns over."""
    try:
        fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when closed, or when this process dies
        yield
    finally:
        os.close(fd)


def reload_daemon(settings: Settings, *, timeout: float = 10.0) -> LoadedConfig:
    """Send SIGHUP to this home's daemon and wait for its answer: the record of the config it runs
    with now. Raises :class:`DaemonNotRunning`, or :class:`ConfigError` (with the daemon's reason)
    when config.toml did not load and the daemon kept the config it had."""
    from tmux_orchestrator.reload import read_loaded

    pid = daemon_pid(settings)
    if pid is None:
        raise DaemonNotRunning(
            f"no daemon is running for {settings.home}, so there is nothing to reload "
            "(`tmo daemon start` reads config.toml)"
        )
    before = read_loaded(settings)
    # A daemon still starting has no record yet: its answer to this signal is reload number 1.
    seen = before.reloads if before is not None and before.pid == pid else 0
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        loaded = read_loaded(settings)
        if loaded is not None and loaded.pid == pid and loaded.reloads > seen:
            if loaded.error is not None:
                raise ConfigError(f"config.toml not reloaded: {loaded.error}; the daemon (pid {pid}) "
                                  f"kept the config it loaded at {loaded.loaded_at}")
            return loaded
        if daemon_pid(settings) != pid:
            raise DaemonError(f"the daemon (pid {pid}) stopped; see {settings.scheduler_log}")
        time.sleep(0.02)
    raise DaemonError(f"the daemon (pid {pid}) did not answer the reload within {timeout:.0f}s; "
                      f"see {settings.scheduler_log}")


def stop_server(orch: Orchestrator, *, force: bool = False, timeout: float = 5.0) -> int | None:
    """End this home's tmux server, the one its daemon started and that outlives the daemon.

    Returns the server's pid, or None when no server runs. Only a server marked as this home's
    (``@tmo_home``) on this home's socket is ever ended (:class:`ForeignServer` otherwise). Raises
    :class:`DaemonAlreadyRunning` while the daemon runs, and :class:`ServerBusy` while projects run
    in its sessions, unless ``force``: then their sessions end with the server, and the next daemon
    finds those projects lost (retried as their ``max_retries`` allow). The sessions of ended
    projects are saved and closed first, as ``tmo cleanup`` does.
    """
    from tmux_orchestrator.reconcile import classify_sessions

    lock = DaemonLock(orch.settings.lock_path)
    lock.acquire()  # refuses while the daemon runs, and keeps one from starting meanwhile
    try:
        if not orch.server.verify_owner():
            return None
        rows = classify_sessions(orch)
        running = sorted(r.project.id for r in rows if r.state == "running" and r.project is not None)
        if running and not force:
            raise ServerBusy(running)
        ended = [r for r in rows if r.state != "running"]
        if ended:
            orch.kill_sessions_batch(ended)
        pid = orch.tmux.server_pid()
        orch.server.kill_server()
        deadline = time.monotonic() + timeout
        while pid is not None and is_running(pid):
            if time.monotonic() > deadline:
                raise DaemonError(f"the tmux server (pid {pid}) did not exit within {timeout:.0f}s")
            time.sleep(0.01)
        return pid
    finally:
        lock.release()


def _tail(path: Path, lines: int = 3, *, start: int = 0) -> str:
    """The last ``lines`` lines written to ``path`` after offset ``start``, joined with `` | ``, without
    the daemon's own ``tmo: error:`` prefix (the caller's message has one already)."""
    try:
        with os.fdopen(open_private(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as fh:
            fh.seek(max(start, os.fstat(fh.fileno()).st_size - 65536))
            data = fh.read()
    except OSError:
        return "no output"
    text = data.decode(errors="replace").strip().splitlines()
    return " | ".join(line.removeprefix("tmo: error: ") for line in text[-lines:]) or "no output"

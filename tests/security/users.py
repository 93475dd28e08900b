"""Other local users for the security tests: throwaway accounts, and running commands (``tmo``
included) as them.

The tests run as root (we need to be, to make users). An account made here is removed at the end of
its test, after every process the test started as that user has been ended by its pid. ``tmo`` runs
as such a user with the system ``python3`` and ``PYTHONPATH`` (our interpreter may sit in root's
private home), so it is the code under test either way.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tmux_orchestrator.processes import is_running

_SRC = Path(__file__).resolve().parents[2] / "src"


@dataclass
class User:
    """A throwaway local account."""

    name: str
    uid: int
    gid: int
    #: Pids of long-lived processes started as this user (ended before the account goes).
    pids: list[int] = field(default_factory=list)

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run as this user (no supplementary groups, environment kept as given)."""
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--", *argv]

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as this user and wait for it."""
        return subprocess.run(
            self.argv(argv), capture_output=True, text=True, timeout=timeout, check=False,
            env=dict(env if env is not None else user_environment(self)), cwd=str(cwd or "/"),
            stdin=subprocess.DEVNULL,
        )

    def tmo(self, *args: str, env: Mapping[str, str],
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``tmo args`` as this user."""
        return self.run([python_for_users(), "-m", "tmux_orchestrator", *args], env=env, timeout=timeout)


def user_environment(user: User, **extra: str) -> dict[str, str]:
    """A plain environment for ``user`` (HOME in /tmp: the accounts have no home of their own)."""
    site = sysconfig.get_path("purelib")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": "/tmp",
        "SHELL": "/bin/sh",  # the accounts' own shell is nologin: tmux would run panes with it
        "USER": user.name, "LOGNAME": user.name, "PYTHONPATH": f"{_SRC}{os.pathsep}{site}",
    }
    env.update(extra)
    return env


def python_for_users() -> str:
    """An interpreter other users may run: ours, else the system's python3 (same minor version)."""
    for candidate in (sys.executable, f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"):
        if os.access(candidate, os.X_OK) and _others_may_run(candidate):
            return candidate
    pytest.skip(f"no python{sys.version_info[0]}.{sys.version_info[1]} that other users may run "
                "(ours is in a private directory): cannot run tmo as another user")


def _others_may_run(path: str) -> bool:
    real = Path(path).resolve()
    return all(os.stat(p).st_mode & 0o001 for p in [real, *real.parents])


def _make_user() -> User:
    name = f"tmo-t{secrets.token_hex(4)}"
    subprocess.run(["useradd", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True, timeout=60)
    entry = pwd.getpwnam(name)
    return User(name, entry.pw_uid, entry.pw_gid)


def _remove_user(user: User) -> None:
    for pid in user.pids:
        end_pid(pid)
    subprocess.run(["userdel", user.name], check=False, capture_output=True, timeout=60)


def end_pid(pid: int, grace: float = 5.0) -> None:
    """SIGTERM ``pid`` (a process this test started), then SIGKILL after ``grace``."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and is_running(pid):
        time.sleep(0.01)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def throwaway_user() -> Iterator[User]:
    """A new local account for the length of a test; skips (visibly) where none can be made."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a throwaway user (useradd)")
    if shutil.which("useradd") is None or shutil.which("setpriv") is None:
        pytest.skip("useradd or setpriv is not installed: cannot act as another local user")
    user = _make_user()
    try:
        yield user
    finally:
        _remove_user(user)


@contextlib.contextmanager
def shared_tmp() -> Iterator[Path]:
    """A directory like /tmp (mode 1777) that every user may create things in; removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="tmo-shared-"))
    os.chmod(path, 0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def tmux_as(user: User | None, socket: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Raw tmux on ``socket`` (as ``user``, or as us), outside the code under test."""
    argv = ["tmux", "-S", str(socket), "-f", "/dev/null", *args]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": "/tmp",
           "SHELL": "/bin/sh"}
    if user is None:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False, env=env)
    return user.run(argv, env=env)


def start_server(user: User | None, socket: Path, *commands: str) -> int:
    """Start a tmux server on ``socket`` (as ``user``) with a session ``bait``; returns its pid."""
    made = tmux_as(user, socket, "new-session", "-d", "-s", "bait", "sleep 600", *commands)
    assert made.returncode == 0, made.stderr
    pid = int(tmux_as(user, socket, "display-message", "-p", "-t", "=bait:", "#{pid}").stdout.strip())
    if user is not None:
        user.pids.append(pid)
    return pid


def end_server(socket: Path, user: User | None = None) -> None:
    """End whatever tmux server answers on ``socket`` (by its pid, panes first), if any. A server
    of another user must be asked as that user: tmux 3.3 lets no one else in, root included."""
    if not socket.exists():
        return
    rows = tmux_as(user, socket, "list-panes", "-a", "-F", "#{pid} #{pane_pid}").stdout.split("\n")
    pairs = [r.split() for r in rows if len(r.split()) == 2]
    for _, pane in pairs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(pane), signal.SIGKILL)
    if pairs:
        end_pid(int(pairs[0][0]))

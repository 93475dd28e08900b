"""One daemon per home: an ``flock`` on ``$TMO_HOME/daemon.lock``.

The kernel drops an flock when its holder dies, even by SIGKILL, so a crashed daemon never blocks
the next start. The lock file is never unlinked: unlinking a file another process may hold locked
lets a third process lock a new inode (the original scheduler's bug, ``origin-lessons.md`` 5.7).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from tmux_orchestrator.errors import DaemonAlreadyRunning


class DaemonLock:
    """The daemon lock of one home; holds the pid of its owner as text."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`DaemonAlreadyRunning` naming the holder's pid."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DaemonAlreadyRunning(self.holder_pid(), str(self.path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def holder_pid(self) -> int | None:
        """Pid written by the current or last holder."""
        try:
            text = self.path.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def is_held(self) -> bool:
        """True if some process (maybe this one) holds the lock now."""
        if self._fd is not None:
            return True
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def running_pid(self) -> int | None:
        """Pid of the running daemon, or None when no daemon holds the lock."""
        return self.holder_pid() if self.is_held() else None

"""One daemon per home: an ``flock`` on ``$TMO_HOME/daemon.lock``.

The kernel drops an flock when its holder dies, even by SIGKILL, so a crashed daemon never blocks
the next start. The lock file is never unlinked: unlinking a file another process may hold locked
lets a third process lock a new inode (the original scheduler's bug, ``origin-lessons.md`` 5.7).
Nor is it ever truncated or followed: it is opened with ``O_NOFOLLOW``, must be a regular file of
ours, and the pid is written over its first bytes (``pwrite``), so a link planted in its place can
neither be written through nor make us cut another file short.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from tmux_orchestrator.errors import DaemonAlreadyRunning
from tmux_orchestrator.home import open_owned, open_private, read_private

#: Characters the pid is padded to (a 64-bit pid has at most 19 digits).
_PID_WIDTH = 19


class DaemonLock:
    """The daemon lock of one home; holds the pid of its owner as text."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`DaemonAlreadyRunning` naming the holder's pid.

        Raises :class:`UnsafePath` for a lock file that is a link or not a regular file of ours.
        """
        fd = open_owned(self.path, os.O_RDWR | os.O_CREAT, "lock file")  # no link; 0600; ours
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DaemonAlreadyRunning(self.holder_pid(), str(self.path)) from None
        # Padded over the first bytes, never truncated: a longer old pid leaves no digits behind.
        os.pwrite(fd, f"{os.getpid():<{_PID_WIDTH}}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def still_ours(self) -> bool:
        """True while the lock file this process holds is still the one at its path: False once
        the home was deleted or replaced under it (``rm -rf``, a tmp cleaner), when a second
        daemon could take a new lock file there while this one holds a file nobody sees."""
        if self._fd is None:
            return False
        try:
            held, there = os.fstat(self._fd), os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return held.st_nlink > 0 and (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)

    def holder_pid(self) -> int | None:
        """Pid written by the current or last holder."""
        try:
            data = read_private(self.path, limit=_PID_WIDTH + 1)
        except OSError:
            return None
        text = (data or b"").decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None

    def is_held(self) -> bool:
        """True if some process (maybe this one) holds the lock now."""
        if self._fd is not None:
            return True
        try:
            fd = open_private(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return False
        except OSError:
            return False  # a link or an unreadable file: not a lock any daemon of ours holds
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

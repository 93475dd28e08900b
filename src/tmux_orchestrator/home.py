"""The state directory (``$TMO_HOME``): how files in it are opened.

Every file under the home is opened without following a symbolic link in its last component
(``O_NOFOLLOW``), created private (0600), and, where it must be new, exclusively (``O_EXCL``): a link
planted in the home can never make us write through it or read it as ours.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: Flags every open of a file in the home carries.
_SAFE = os.O_NOFOLLOW | os.O_CLOEXEC


def open_private(path: Path | str, flags: int, *, mode: int = 0o600) -> int:
    """``os.open`` that never follows a symlink in the last component; new files get ``mode``."""
    return os.open(path, flags | _SAFE, mode)


def write_private(path: Path | str, data: str | bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` (created 0600, truncated unless ``exclusive`` refuses an existing
    one). Raises ``OSError`` (``ELOOP`` for a symlink, ``EEXIST`` with ``exclusive``)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = open_private(path, flags)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data)


def read_private(path: Path | str, *, limit: int = 1 << 20) -> bytes | None:
    """At most ``limit`` bytes of the regular file ``path``; None if it does not exist.

    Raises ``OSError`` for a symlink (``ELOOP``) or anything that is not a regular file.
    """
    try:
        fd = open_private(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        return fh.read(limit)

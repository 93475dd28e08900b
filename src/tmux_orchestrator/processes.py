"""Finding and ending a project's own processes, by pid.

A project's processes are the members of its pane's process group. Before a signal is sent when no
tmux session vouches for the group any more (a lost project), each member is checked on Linux to
carry the project's ``TMO_PROJECT_ID`` and ``TMO_HOME`` in its environment, so a recycled process
group id can never make us signal someone else's process.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

_PROC = Path("/proc")
_HAS_PROC = (_PROC / "self" / "stat").exists()


def project_pids(pgid: int, project_id: int, home: Path) -> list[int] | None:
    """Pids in process group ``pgid`` that belong to the project; None where /proc is missing."""
    if not _HAS_PROC:
        return None
    marks = (f"TMO_PROJECT_ID={project_id}".encode(), f"TMO_HOME={home}".encode())
    found: list[int] = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
            fields = stat.rsplit(b")", 1)[1].split()
            if int(fields[2]) != pgid or fields[0] == b"Z":
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if all(mark in environ for mark in marks):
            found.append(int(entry.name))
    return found


def stop_project_processes(pgid: int | None, project_id: int, home: Path, grace: float) -> int:
    """SIGTERM the project's processes, SIGKILL those left after ``grace``; returns how many."""
    if not pgid or pgid <= 1:
        return 0
    pids = project_pids(pgid, project_id, home)
    if pids is None:  # no /proc (macOS): the group itself is the best handle we have
        try:
            os.killpg(pgid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            return 0
        time.sleep(min(grace, 1.0))
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return 1
    for pid in pids:
        _send(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        time.sleep(0.02)
        pids = [p for p in pids if is_running(p)]
    for pid in pids:
        _send(pid, signal.SIGKILL)
    return len(pids)


def _send(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def is_running(pid: int) -> bool:
    """True while ``pid`` runs. A zombie (dead, waiting for its parent, such as tmux or an init
    that is slow to reap) counts as ended."""
    if not _HAS_PROC:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        state = (_PROC / str(pid) / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        return True
    return state != b"Z"

"""Finding and ending a project's own processes, by pid.

A project's processes are the members of its pane's process group. Before a signal is sent when no
tmux session vouches for the group any more (a lost project), each member is checked on Linux to
carry the project's ``TMO_PROJECT_ID`` and ``TMO_HOME`` in its environment, so a recycled process
group id can never make us signal someone else's process.
"""

from __future__ import annotations

import os
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


def group_members(pgid: int) -> list[int] | None:
    """Live (not zombie) processes of process group ``pgid``; None where /proc is missing."""
    if not _HAS_PROC:
        return None
    found: list[int] = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] != b"Z":
            found.append(int(entry.name))
    return found


def group_exists(pgid: int) -> bool:
    """True while process group ``pgid`` has any member, zombies included (one syscall)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_alive(pgid: int | None) -> bool:
    """True while any process of group ``pgid`` runs (zombies count as ended).

    ``killpg(pgid, 0)`` answers in microseconds; only when it finds the group while its leader is
    gone (children left behind, or zombies nobody reaped yet) are the members looked up in /proc.
    """
    if not pgid or pgid <= 1 or not group_exists(pgid):
        return False
    if is_running(pgid):
        return True
    members = group_members(pgid)
    return True if members is None else bool(members)


def process_start(pid: int) -> str:
    """When ``pid`` started, in clock ticks since boot (``?`` without /proc): with the pid, names
    one process for good, as pids are reused."""
    if not _HAS_PROC:
        return "?"
    try:
        return (_PROC / str(pid) / "stat").read_bytes().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return "?"


def is_same_process(pid: int, start: str) -> bool:
    """True while the process ``pid`` that started at ``start`` (see :func:`process_start`) runs."""
    if not is_running(pid):
        return False
    return start == "?" or process_start(pid) in (start, "?")

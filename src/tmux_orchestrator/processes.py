"""Finding a project's own processes, by pid.

A project's processes are the members of its pane's process group, and any process that left the
group (``setsid``, a daemonising child) but still carries the attempt's ``TMO_PROJECT_ID``,
``TMO_ATTEMPT`` and ``TMO_HOME`` in its environment. When no tmux session vouches for the group any
more (a lost project), only processes carrying those marks are signalled, so a recycled process
group id can never make us signal someone else's process.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

_PROC = Path("/proc")
_HAS_PROC = (_PROC / "self" / "stat").exists()


def marked_processes(home: Path) -> dict[tuple[int, int], list[tuple[int, float]]] | None:
    """Live processes of this user that carry ``TMO_HOME=home``, by their ``(TMO_PROJECT_ID,
    TMO_ATTEMPT)``, in any process group, as ``(pid, start time)`` (Unix time; the caller drops
    those that started before the attempt did: the marks alone can be copied); this process
    excluded. One pass over /proc serves every project being cleaned up. None without /proc."""
    if not _HAS_PROC:
        return None
    home_mark = f"TMO_HOME={home}".encode()
    me, uid = os.getpid(), os.geteuid()
    found: dict[tuple[int, int], list[tuple[int, float]]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            environ = (entry / "environ").read_bytes()
            if home_mark not in environ:
                continue
            fields = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()
            if fields[0] == b"Z":
                continue
            started = _boot_time() + int(fields[19]) / _CLOCK_TICKS
        except (OSError, IndexError, ValueError):
            continue
        values = dict(item.split(b"=", 1) for item in environ.split(b"\0") if b"=" in item)
        if values.get(b"TMO_HOME") != home_mark[len(b"TMO_HOME="):]:
            continue
        project, attempt = values.get(b"TMO_PROJECT_ID", b""), values.get(b"TMO_ATTEMPT", b"")
        if project.isdigit() and attempt.isdigit():
            found.setdefault((int(project), int(attempt)), []).append((int(entry.name), started))
    return found


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@functools.cache
def _boot_time() -> float:
    """When the machine booted (Unix time), from /proc/stat: process start times count from it."""
    for line in (_PROC / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


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

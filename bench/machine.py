"""A description of the machine a benchmark ran on, stored with every result."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any


def _run(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable ({exc})"
    return (proc.stdout or proc.stderr).strip()


def cpu_model() -> str:
    """``model name`` from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def filesystem_of(path: Path) -> dict[str, str]:
    """Mount point, type and device of the file system holding ``path`` (from /proc/mounts)."""
    real = os.path.realpath(path)
    best: tuple[str, str, str] = ("", "unknown", "unknown")
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        device, mount, fstype = parts[0], parts[1].replace("\\040", " "), parts[2]
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best[0]):
            best = (mount, fstype, device)
    stat_type = _run(["stat", "-f", "-c", "%T", real]) if shutil.which("stat") else "unknown"
    return {"path": real, "mount": best[0], "type": best[1], "device": best[2], "stat_f_type": stat_type}


def tree_digest(package_dir: Path) -> str:
    """sha256 over the package's ``*.py`` files: pins the exact code measured, even uncommitted."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        digest.update(str(path.relative_to(package_dir)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def git_revision(repo: Path) -> dict[str, Any]:
    """Commit and dirty flag of the tree under test."""
    if not shutil.which("git") or not (repo / ".git").exists():
        return {"commit": None, "dirty": None}
    commit = _run(["git", "-C", str(repo), "rev-parse", "HEAD"])
    status = _run(["git", "-C", str(repo), "status", "--porcelain", "--", "src"])
    return {"commit": commit, "dirty_src": bool(status)}


def cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat (Linux)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_percent(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Share of all CPUs' time that was busy between two :func:`cpu_ticks` readings."""
    if before is None or after is None or after[1] == before[1]:
        return None
    return round(100.0 * (after[0] - before[0]) / (after[1] - before[1]), 1)


def describe(temp_dir: Path) -> dict[str, Any]:
    """CPU, kernel, tmux, Python, SQLite, temp file system and load at this moment."""
    try:
        load: list[float] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    bash = shutil.which("bash")
    return {
        "hostname": platform.node(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model(),
        "kernel": f"{platform.system()} {platform.release()}",
        "tmux": _run(["tmux", "-V"]),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "sqlite": sqlite3.sqlite_version,
        "bash": _run([bash, "-c", "echo $BASH_VERSION"]) if bash else None,
        "temp_dir_filesystem": filesystem_of(temp_dir),
        "load_average_at_start": load,
    }

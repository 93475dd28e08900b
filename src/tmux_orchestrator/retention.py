"""Removing old project logs: keep N days and/or N MB (``log_retention_days``/``log_retention_mb``)."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from tmux_orchestrator.config import Settings
from tmux_orchestrator.project import ProjectStatus

log = logging.getLogger(__name__)

_RUN_FILE = re.compile(r"^(\d+)-\d+\.(sh|started|exit|exit\.tmp)$")
# `<id>.log`, `<id>-<attempt>.scrollback.txt` (and `<id>.scrollback.txt` of older releases)
_LOG_FILE = re.compile(r"^(\d+)(\.log|(-\d+)?\.scrollback\.txt)$")


def prune_logs(settings: Settings, active_ids: set[int], *, now: float | None = None) -> list[Path]:
    """Delete logs of projects that are not queued or running, oldest first; return what went.

    A file goes when it is older than ``log_retention_days`` (by modification time), then more go,
    oldest first, while the logs directory holds more than ``log_retention_mb``. Files of projects in
    ``active_ids`` are never touched.
    """
    now = time.time() if now is None else now
    candidates: list[tuple[float, int, Path]] = []
    total = 0
    for path in settings.logs_dir.iterdir():
        try:
            info = path.stat()
        except OSError:
            continue
        total += info.st_size
        match = _LOG_FILE.match(path.name)
        orphan = path.name.startswith("orphan-")
        if (match and int(match.group(1)) not in active_ids) or orphan:
            candidates.append((info.st_mtime, info.st_size, path))
    candidates.sort()
    removed: list[Path] = []
    max_age = settings.log_retention_days * 86400
    max_bytes = settings.log_retention_mb * 1024 * 1024
    for mtime, size, path in candidates:
        too_old = max_age > 0 and now - mtime > max_age
        too_big = max_bytes > 0 and total > max_bytes
        if not (too_old or too_big):
            continue
        try:
            path.unlink()
        except OSError as exc:
            log.warning("cannot remove old log %s: %s", path, exc)
            continue
        total -= size
        removed.append(path)
    # Wrapper scripts and exit files of projects that are no longer queued or running.
    for path in settings.run_dir.glob("*-*.*"):
        match = _RUN_FILE.match(path.name)
        if match and int(match.group(1)) not in active_ids:
            path.unlink(missing_ok=True)
    if removed:
        log.info("log retention removed %s file(s)", len(removed))
    return removed


ACTIVE = (ProjectStatus.QUEUED, ProjectStatus.PROCESSING)

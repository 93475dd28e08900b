"""Logging set-up for the daemon: ``scheduler.log`` (rotating) and stderr.

``scheduler.log`` and its rotated files are private (0600) and never opened through a link, and every
line is passed through :func:`~tmux_orchestrator.redact.redact` (no password of a URL, no known secret).
"""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
import os
import stat
import sys
from pathlib import Path

from tmux_orchestrator.home import open_append
from tmux_orchestrator.redact import redact
from tmux_orchestrator.timestamps import format_epoch


class TextFormatter(logging.Formatter):
    """Lines of text whose time is in tmo's one format (:mod:`~tmux_orchestrator.timestamps`)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return format_epoch(record.created)


class JsonFormatter(TextFormatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("project_id", "session_name"):
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data)


class RedactingFormatter(logging.Formatter):
    """Formats with another formatter, then hides credentials (:func:`redact`)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log file opened 0600 without following links (rotation renames keep the mode)."""

    def _open(self) -> io.TextIOWrapper:
        fd = open_append(self.baseFilename, "log file")
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


def _tighten_rotated(log_file: Path) -> None:
    """Make rotated files of older versions (created with the umask) private."""
    for path in log_file.parent.glob(f"{log_file.name}.*"):
        try:
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and info.st_mode & 0o077:
                os.chmod(path, stat.S_IMODE(info.st_mode) & 0o700)
        except OSError:
            continue


def setup_logging(log_file: Path, *, level: str = "INFO", json_lines: bool = False,
                  stderr: bool = True) -> None:
    """Send the package's log records to ``log_file`` (10 MB x 5 files) and stderr."""
    root = logging.getLogger("tmux_orchestrator")
    root.setLevel(level.upper())
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    formatter: logging.Formatter = RedactingFormatter(
        JsonFormatter() if json_lines else TextFormatter("%(asctime)s %(levelname)s %(message)s")
    )
    _tighten_rotated(log_file)
    file_handler = PrivateRotatingFileHandler(
        log_file, maxBytes=10 * 1024 * 1024, backupCount=5, encoding="utf-8"
    )
    file_handler.setFormatter(formatter)
    root.addHandler(file_handler)
    if stderr:
        err = logging.StreamHandler(sys.stderr)
        err.setFormatter(formatter)
        root.addHandler(err)
    root.propagate = False

"""The one format of every time tmo prints, in JSON and in text.

ISO 8601 in UTC with microseconds and a ``+00:00`` offset: ``2026-12-01T17:10:47.123456+00:00``.

* ``+00:00`` rather than ``Z``: it is what :meth:`datetime.isoformat` writes, so what every JSON
  output of tmo (projects, events, hosts, stats) already printed; Python before 3.11 reads only
  this form back with :meth:`datetime.fromisoformat`, and PostgreSQL, ``date -d`` and JavaScript
  read it too.
* Always six fractional digits (``isoformat()`` alone drops them when they are zero): one width,
  so times sort as text, and nothing the database keeps (microseconds) is lost.
"""

from __future__ import annotations

from datetime import UTC, datetime


def format_time(value: datetime) -> str:
    """``value`` in the one output format; a naive datetime is taken as UTC (as stored)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def format_epoch(seconds: float) -> str:
    """Seconds since the epoch (what tmux and ``time.time()`` give) in the one output format."""
    return format_time(datetime.fromtimestamp(seconds, UTC))

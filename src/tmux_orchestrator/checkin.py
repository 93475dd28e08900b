"""Check-ins (``tmo checkin``): a text sent to a running project on a schedule, only while its agent
waits for input.

A check-in is a row of ``checkins`` tied to one attempt of a project; the status-change triggers
delete it when that attempt stops running (or the project is removed), so it lives exactly as long
as the project runs and survives daemon restarts. When one is due and none of its messages is
pending, the daemon running the project queues a message row marked ``when_waiting`` for it: the
message is delivered by the ordinary exactly-once path, and only once the agent is ``waiting`` or
``idle``. The next one is due ``every`` seconds after the last one was delivered (or failed), so an
agent that works for hours gets one check-in when it stops, not a backlog.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tmux_orchestrator.timestamps import format_time


@dataclass
class Checkin:
    """One row of ``checkins``, with what its messages say about it."""

    id: int
    project_id: int
    attempt: int
    #: Seconds between deliveries.
    every: float
    body: str
    created_at: datetime
    #: When its last message was delivered (or failed); None before the first.
    last_at: datetime | None = None
    #: One of its messages is queued or being delivered.
    pending: bool = False

    @property
    def due_at(self) -> datetime:
        """When the next message is due: ``every`` after the last one (or after it was added)."""
        return (self.last_at or self.created_at) + timedelta(seconds=self.every)

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON-ready values."""
        return {
            "id": self.id, "project_id": self.project_id, "attempt": self.attempt,
            "every": self.every, "body": self.body, "created_at": format_time(self.created_at),
            "last_at": format_time(self.last_at) if self.last_at else None,
            "due_at": format_time(self.due_at), "pending": self.pending,
        }


#: The columns :func:`~tmux_orchestrator.store.rows.row_to_checkin` reads, in SQL both backends run:
#: ``FROM checkins AS c`` follows.
CHECKIN_SELECT = (
    "SELECT c.id, c.project_id, c.attempt, c.every, c.body, c.created_at, "
    "(SELECT max(coalesce(m.delivered_at, m.created_at)) FROM messages AS m "
    "WHERE m.checkin_id = c.id AND m.status IN ('delivered', 'failed')), "
    "EXISTS (SELECT 1 FROM messages AS m "
    "WHERE m.checkin_id = c.id AND m.status IN ('queued', 'delivering')) "
    "FROM checkins AS c"
)

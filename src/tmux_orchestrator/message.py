"""A message sent to a running project's pane (``tmo send``): one row of the ``messages`` table.

The CLI or API writes the row (``queued``); the daemon of the host running the project delivers it
(``delivering`` -> ``delivered`` or ``failed``). ``delivering`` is written before anything reaches
the pane, so a daemon that dies mid-delivery leaves a row the next one fails instead of pasting the
text a second time.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from tmux_orchestrator.timestamps import format_time


class MessageKind(StrEnum):
    """What a message holds."""

    #: Text, pasted and then submitted with Enter.
    TEXT = "text"
    #: tmux key names (``C-c``, ``Enter``, ``Up``), sent as keys.
    KEYS = "keys"


class MessageStatus(StrEnum):
    """Where a message is in its delivery."""

    #: Written by ``tmo send``, not picked up yet.
    QUEUED = "queued"
    #: A daemon is pasting it now (or died doing so).
    DELIVERING = "delivering"
    #: Pasted and submitted (text) or sent (keys).
    DELIVERED = "delivered"
    #: Not delivered, or not known to be: ``reason`` says why.
    FAILED = "failed"


#: Statuses a message no longer leaves.
FINAL = frozenset({MessageStatus.DELIVERED, MessageStatus.FAILED})

#: The columns of ``messages``, in the order :func:`row_to_message` reads them.
MESSAGE_COLUMNS = ("id, project_id, attempt, kind, body, status, reason, created_at, delivered_at, "
                   "tries, when_waiting, checkin_id")


@dataclass
class Message:
    """One row of ``messages``."""

    id: int
    project_id: int
    attempt: int
    kind: MessageKind
    body: str
    status: MessageStatus
    reason: str | None = None
    created_at: datetime | None = None
    delivered_at: datetime | None = None
    tries: int = 0
    #: Held until the project's agent is ``waiting`` or ``idle`` (``tmo send --when-waiting``).
    when_waiting: bool = False
    #: The check-in it was sent for, if any (:mod:`~tmux_orchestrator.checkin`).
    checkin_id: int | None = None

    @property
    def keys(self) -> list[str]:
        """The key names of a ``keys`` message; ValueError for a body (written by hand) that is not
        a JSON list of names."""
        try:
            value = json.loads(self.body)
        except ValueError:
            value = None
        if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
            raise ValueError("its body is not a JSON list of key names")
        return value

    def _shown_body(self) -> str | list[str]:
        """The body for JSON: a keys message's list of names (as stored if it is not one)."""
        if self.kind == MessageKind.KEYS:
            with contextlib.suppress(ValueError):
                return self.keys
        return self.body

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON-ready values (keys as a list)."""
        return {
            "id": self.id, "project_id": self.project_id, "attempt": self.attempt,
            "kind": self.kind.value, "body": self._shown_body(),
            "status": self.status.value, "reason": self.reason,
            "created_at": format_time(self.created_at) if self.created_at else None,
            "delivered_at": format_time(self.delivered_at) if self.delivered_at else None,
            "tries": self.tries, "when_waiting": self.when_waiting, "checkin_id": self.checkin_id,
        }


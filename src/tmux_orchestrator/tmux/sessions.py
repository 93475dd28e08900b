"""``TmuxSessionManager``: the session operations users of the original scheduler know.

Every method sees and touches only sessions this orchestrator owns (``@tmo_owner`` tag) on its own
server. Names are matched exactly; patterns are globs over owned names only.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable
from typing import Any

from tmux_orchestrator.tmux.server import OrchestratorServer, SessionInfo

log = logging.getLogger(__name__)


class TmuxSessionManager:
    """Session operations restricted to owned sessions."""

    def __init__(self, server: OrchestratorServer,
                 stop: Callable[[list[SessionInfo]], list[SessionInfo]]) -> None:
        self.server = server
        #: Stops sessions through the one clean-up engine (saved, signalled, killed, recorded);
        #: returns those it stopped.
        self._stop = stop

    def get_active_sessions(self) -> list[str]:
        """Names of the owned sessions that are alive."""
        return [s.name for s in self.server.list_owned()]

    def is_session_alive(self, session_name: str) -> bool:
        """True if an owned session is named exactly ``session_name``."""
        return self.server.find_owned(session_name) is not None

    def get_session_info(self, session_name: str) -> dict[str, Any] | None:
        """Details of an owned session, or None if there is none by that exact name."""
        session = self.server.find_owned(session_name)
        if session is None:
            return None
        return {
            "name": session.name,
            "session_id": session.session_id,
            "window_id": session.window_id,
            "pane_pid": session.pane_pid,
            "project_id": session.project_id,
            "created": session.created,
            "attached": session.attached,
        }

    def kill_session(self, session_name: str) -> bool:
        """Stop the owned session ``session_name``: SIGTERM its process group, then kill it.

        Returns False (and touches nothing) when no owned session has exactly that name.
        """
        session = self.server.find_owned(session_name)
        if session is None:
            return False
        return bool(self._kill([session]))

    def kill_sessions_by_pattern(self, pattern: str) -> list[str]:
        """Kill owned sessions whose whole name matches the glob ``pattern``; returns their names.

        ``job1`` matches only ``job1``; write ``job1*`` to include ``job10``.
        """
        matched = [s for s in self.server.list_owned() if fnmatch.fnmatchcase(s.name, pattern)]
        return [s.name for s in self._kill(matched)]

    def _kill(self, sessions: list[SessionInfo]) -> list[SessionInfo]:
        killed = self._stop(sessions) if sessions else []
        for session in killed:
            log.info("killed session %s (%s)", session.name, session.session_id)
        return killed

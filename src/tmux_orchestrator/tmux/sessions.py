"""``TmuxSessionManager``: the session operations users of the original scheduler know.

Every method sees and touches only sessions this orchestrator owns (``@tmo_owner`` tag) on its own
server. Names are matched exactly; patterns are globs over owned names only.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import signal
from typing import Any

from tmux_orchestrator.tmux.server import OrchestratorServer, SessionInfo

log = logging.getLogger(__name__)


def signal_group(pgid: int | None, sig: int) -> bool:
    """Send ``sig`` to a project's process group; False if it no longer exists."""
    if not pgid or pgid <= 1:
        return False
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        log.warning("not allowed to signal process group %s", pgid)
        return False


class TmuxSessionManager:
    """Session operations restricted to owned sessions."""

    def __init__(self, server: OrchestratorServer) -> None:
        self.server = server

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
        # SIGTERM first gives the project a chance to end cleanly (an agent saving its state);
        # kill-session then closes whatever is left. A session counts as killed when it is gone.
        for session in sessions:
            signal_group(session.pane_pid, signal.SIGTERM)
        self.server.kill(sessions)
        alive = {s.session_id for s in self.server.list_all()}
        killed = [s for s in sessions if s.session_id not in alive]
        for session in killed:
            log.info("killed session %s (%s)", session.name, session.session_id)
        return killed

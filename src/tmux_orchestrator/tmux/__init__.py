"""tmux layer: one choke point for tmux calls, this home's server, and the session manager."""

from __future__ import annotations

from tmux_orchestrator.tmux.client import Tmux, check_tmux
from tmux_orchestrator.tmux.server import (
    KEEPER,
    OrchestratorServer,
    SessionInfo,
    SessionSpec,
    StartedSession,
)
from tmux_orchestrator.tmux.sessions import TmuxSessionManager

__all__ = [
    "KEEPER",
    "OrchestratorServer",
    "SessionInfo",
    "SessionSpec",
    "StartedSession",
    "Tmux",
    "TmuxSessionManager",
    "check_tmux",
]

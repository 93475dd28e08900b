"""tmux-orchestrator: a durable queue of long-running projects, each in its own tmux session.

>>> from tmux_orchestrator import Orchestrator
>>> orch = Orchestrator()                                  # doctest: +SKIP
>>> project = orch.enqueue(["claude", "-p", "spec.md"])    # doctest: +SKIP
>>> orch.mark_project_complete(project.id)                 # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

from tmux_orchestrator.config import Settings, load_settings
from tmux_orchestrator.errors import OrchestratorError
from tmux_orchestrator.orchestrator import Orchestrator, TmuxOrchestratorScheduler
from tmux_orchestrator.project import Outcome, Project, ProjectStatus
from tmux_orchestrator.tmux import TmuxSessionManager

__all__ = [
    "Orchestrator",
    "OrchestratorError",
    "Outcome",
    "Project",
    "ProjectStatus",
    "Settings",
    "TmuxOrchestratorScheduler",
    "TmuxSessionManager",
    "__version__",
    "load_settings",
]

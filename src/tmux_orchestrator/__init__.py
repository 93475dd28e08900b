"""tmux-orchestrator: a durable queue of long-running projects, each in its own tmux session.

>>> from tmux_orchestrator import Orchestrator
>>> orch = Orchestrator()                                  # doctest: +SKIP
>>> project = orch.enqueue(["claude", "-p", "spec.md"])    # doctest: +SKIP
>>> orch.mark_project_complete(project.id)                 # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

# typing.TYPE_CHECKING without importing typing: `tmo --version` loads only this module.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from tmux_orchestrator.config import Settings, load_settings
    from tmux_orchestrator.errors import OrchestratorError
    from tmux_orchestrator.orchestrator import Orchestrator, TmuxOrchestratorScheduler
    from tmux_orchestrator.project import Outcome, Project, ProjectStatus
    from tmux_orchestrator.tmux import TmuxSessionManager

#: Where each public name lives. They are imported on first access (PEP 562), so that importing a
#: submodule (every `tmo` command does) does not load the whole package: `tmo list` starts faster.
_LAZY = {
    "Orchestrator": "tmux_orchestrator.orchestrator",
    "TmuxOrchestratorScheduler": "tmux_orchestrator.orchestrator",
    "OrchestratorError": "tmux_orchestrator.errors",
    "Outcome": "tmux_orchestrator.project",
    "Project": "tmux_orchestrator.project",
    "ProjectStatus": "tmux_orchestrator.project",
    "Settings": "tmux_orchestrator.config",
    "load_settings": "tmux_orchestrator.config",
    "TmuxSessionManager": "tmux_orchestrator.tmux",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tmux_orchestrator' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})

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

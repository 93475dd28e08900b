"""``python -m tmux_orchestrator`` runs the ``tmo`` CLI."""

from tmux_orchestrator.cli import main

main()

"""``tmo``: the command line, thin over :class:`tmux_orchestrator.Orchestrator`.

Exit codes: 0 success, 1 failure (unknown project, refused change, daemon problem), 2 bad usage.
Every error is one line on stderr: ``tmo: error: <what was wrong and how to fix it>``.

This module stays tiny: every ``tmo`` process imports it first, and ``tmo --version`` (which
scripts call to check an install) is answered here before click and the rest are loaded. The click
group is :data:`cli` (``tmux_orchestrator.cli.app``), loaded on first use.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (a few ms at every start)
if TYPE_CHECKING:
    import click

__all__ = ["cli", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``tmo`` and ``tmux-orchestrator``."""
    args = sys.argv[1:] if argv is None else argv
    if args in (["--version"], ["-V"]):
        from tmux_orchestrator import __version__

        sys.stdout.write(f"tmo, version {__version__}\n")  # as click's version option says it
        sys.exit(0)
    from tmux_orchestrator.cli.entry import run

    run(argv)


def __getattr__(name: str) -> click.Group:
    if name == "cli":
        from tmux_orchestrator.cli.app import cli

        return cli
    raise AttributeError(f"module 'tmux_orchestrator.cli' has no attribute {name!r}")

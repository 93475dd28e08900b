"""``tmo``: the command line, thin over :class:`tmux_orchestrator.Orchestrator`.

Exit codes: 0 success, 1 failure (unknown project, refused change, daemon problem), 2 bad usage.
Every error is one line on stderr: ``tmo: error: <what was wrong and how to fix it>``.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import traceback

import click

# The command modules register their commands on ``cli`` when imported; ``cli`` (a LazyGroup)
# imports each one on first use (``COMMAND_MODULES`` in cli/app.py), so a command starts faster.
from tmux_orchestrator.cli.app import cli
from tmux_orchestrator.errors import OrchestratorError
from tmux_orchestrator.home import use_private_umask
from tmux_orchestrator.inputs import safe_text

__all__ = ["cli", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``tmo`` and ``tmux-orchestrator``."""
    use_private_umask()  # everything tmo creates is the user's alone (docs/security.md)
    try:
        code = cli.main(args=argv, prog_name="tmo", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("tmo: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except OrchestratorError as exc:
        click.echo(f"tmo: error: {safe_text(str(exc))}", err=True)  # it may quote hostile input
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(0)
    except (sqlite3.Error, OSError) as exc:
        click.echo(f"tmo: error: {safe_text(str(exc))}", err=True)
        if os.environ.get("TMO_DEBUG"):
            traceback.print_exc()
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)

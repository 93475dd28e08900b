"""Running the ``tmo`` command group: exit codes and the one-line errors (see :mod:`cli`)."""

from __future__ import annotations

import logging
import os
import sqlite3
import sys

import click

# The command modules register their commands on ``cli`` when imported; ``cli`` (a LazyGroup)
# imports each one on first use (``COMMAND_MODULES`` in cli/app.py), so a command starts faster.
from tmux_orchestrator.cli.app import cli
from tmux_orchestrator.errors import OrchestratorError
from tmux_orchestrator.home import use_private_umask
from tmux_orchestrator.inputs import safe_text

__all__ = ["configure_logging", "run"]

#: What click >= 8.2 raises for a group given no command (`tmo`, `tmo daemon`): it shows the help,
#: which stays as it is. Click 8.1 prints the help itself (and ``isinstance(x, ())`` is False).
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class _OneLine(logging.Formatter):
    """``tmo: warning: <message>``, like the CLI's own errors (no password of a URL, no secret)."""

    def format(self, record: logging.LogRecord) -> str:
        from tmux_orchestrator.redact import redact  # only when there is something to say

        return f"tmo: {record.levelname.lower()}: {redact(safe_text(record.getMessage()))}"


def configure_logging() -> None:
    """Show the library's warnings and errors on stderr, one line each (the library itself logs
    to a NullHandler). ``tmo daemon run`` replaces this with the daemon's logging."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(_OneLine())
    logging.getLogger("tmux_orchestrator").addHandler(handler)


def run(argv: list[str] | None = None) -> None:
    """Run ``tmo`` with ``argv`` (default: the process's arguments) and exit with its code."""
    use_private_umask()  # everything tmo creates is the user's alone (docs/security.md)
    configure_logging()
    try:
        code = cli.main(args=argv, prog_name="tmo", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("tmo: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        if isinstance(exc, _NO_ARGS_IS_HELP):
            exc.show()
        else:
            click.echo(f"tmo: error: {_one_line(exc)}", err=True)
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
            import traceback  # only here: it pulls in linecache and tokenize at every start

            traceback.print_exc()
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _one_line(exc: click.ClickException) -> str:
    """click's message for ``exc`` as one line, in tmo's words: no usage block, the command named,
    and where to read its help (click would print the usage, a "Try" line, then the message)."""
    # With "Did you mean ...?" when click has a suggestion.
    message = exc.format_message().strip().removesuffix(".")
    if message[1:2].islower():  # "Missing argument" as tmo writes it; "TMO_..." stays
        message = message[:1].lower() + message[1:]
    ctx = exc.ctx if isinstance(exc, click.UsageError) else None
    if ctx is not None and ctx.command.get_help_option(ctx) is not None:
        message = f"{message} (see `{ctx.command_path} --help`)"
    return safe_text(message)  # a value echoed back may hold control characters

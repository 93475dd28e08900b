"""The ``tmo`` command group and what every subcommand shares."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import click

from tmux_orchestrator import __version__
from tmux_orchestrator.config import Settings, load_settings
from tmux_orchestrator.orchestrator import Orchestrator


class Context:
    """Lazily built settings and orchestrator shared by the subcommands."""

    def __init__(self, home: str | None, database_url: str | None) -> None:
        self.home = home
        self.database_url = database_url
        self._settings: Settings | None = None
        self._orch: Orchestrator | None = None

    @property
    def settings(self) -> Settings:
        """Settings from flags, environment and config file."""
        if self._settings is None:
            self._settings = load_settings(self.home, self.database_url)
        return self._settings

    @property
    def orch(self) -> Orchestrator:
        """The orchestrator (opens the database on first use)."""
        if self._orch is None:
            # A change made from inside a hook is recorded as such, and never fires hooks again.
            source = "hook" if os.environ.get("TMO_HOOK") == "1" else "cli"
            self._orch = Orchestrator(self.settings, source=source)
        return self._orch


CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="tmo")
@click.option("--home", envvar="TMO_HOME", type=click.Path(file_okay=False),
              help="State directory: database, logs, tmux socket. [env: TMO_HOME]")
@click.option("--database-url", envvar="TMO_DATABASE_URL",
              help="sqlite:///PATH (default $TMO_HOME/tmo.db). [env: TMO_DATABASE_URL]")
@click.pass_context
def cli(ctx: click.Context, home: str | None, database_url: str | None) -> None:
    """Run a durable queue of long-running projects, each in its own tmux session.

    Queue a project with `tmo add -- COMMAND`, run the queue with `tmo daemon start`, watch it with
    `tmo list`, `tmo events --follow` and `tmo attach ID`.
    """
    ctx.obj = Context(home, database_url)
    ctx.call_on_close(lambda: ctx.obj._orch.close() if ctx.obj._orch else None)


pass_context = click.make_pass_decorator(Context)

#: A project id: a positive integer that fits the database's 64-bit ids.
PROJECT_ID = click.IntRange(min=1, max=2**63 - 1)
#: A priority: higher runs first.
PRIORITY = click.IntRange(min=-(2**31), max=2**31 - 1)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def print_json(data: Any) -> None:
    """Print ``data`` as JSON: indented for a terminal, compact (and much faster) for a pipe."""
    indent = 2 if sys.stdout.isatty() else None
    click.echo(json.dumps(data, indent=indent, default=str))


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print aligned columns (no colour, pipe-friendly); cells longer than 60 are cut."""
    text_rows = [["" if v is None else str(v) for v in row] for row in rows]
    text_rows = [[v if len(v) <= 60 else v[:57] + "..." for v in row] for row in text_rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        for i, value in enumerate(row):
            if len(value) > widths[i]:
                widths[i] = len(value)
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip()
             for row in [list(headers), *text_rows]]
    click.echo("\n".join(lines))


def project_id_from_env(value: int | None, what: str) -> int:
    """``value``, else ``$TMO_PROJECT_ID`` (set inside every project session)."""
    import os

    if value is not None:
        return value
    env = os.environ.get("TMO_PROJECT_ID", "")
    if env.isdigit():
        return int(env)
    raise click.UsageError(
        f"no project id given and TMO_PROJECT_ID is not set: run `tmo {what} ID`, "
        "or run it inside a project's session"
    )


def existing_dir(value: str | None) -> Path | None:
    """``value`` as a path (checked by the API, which gives the error)."""
    return Path(value) if value else None

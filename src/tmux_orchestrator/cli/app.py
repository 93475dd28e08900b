"""The ``tmo`` command group and what every subcommand shares."""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import click

from tmux_orchestrator import __version__
from tmux_orchestrator.config import Settings, load_settings
from tmux_orchestrator.inputs import safe_text

if TYPE_CHECKING:
    from tmux_orchestrator.orchestrator import Orchestrator
    from tmux_orchestrator.store.base import Store


class Context:
    """Lazily built settings and orchestrator shared by the subcommands."""

    def __init__(self, home: str | None, database_url: str | None) -> None:
        self.home = home
        self.database_url = database_url
        self._settings: Settings | None = None
        self._orch: Orchestrator | None = None
        self._store: Store | None = None

    @property
    def settings(self) -> Settings:
        """Settings from flags, environment and config file."""
        if self._settings is None:
            self._settings = load_settings(self.home, self.database_url)
        return self._settings

    def settings_without_config(self) -> Settings:
        """Settings with config.toml left unread, for the commands that must work when it does not
        load (``doctor`` reports it; ``daemon reload`` leaves judging it to the daemon)."""
        self._settings = load_settings(self.home, self.database_url, read_config=False)
        return self._settings

    @property
    def store(self) -> Store:
        """The database alone, for read-only commands (``tmo list``): the orchestrator's if it is
        open, else a store opened without importing the tmux and daemon layers. Creates nothing: a
        missing database is an error (``no database at ...``)."""
        if self._orch is not None:
            return self._orch.store
        if self._store is None:
            from tmux_orchestrator.store import open_store

            self.settings.check_dirs()
            self._store = open_store(self.settings, create=False)
        return self._store

    def close(self) -> None:
        """Release the database connection(s)."""
        if self._orch is not None:
            self._orch.close()
        if self._store is not None:
            self._store.close()

    @property
    def orch(self) -> Orchestrator:
        """The orchestrator (opens the database on first use, creating the home and database)."""
        return self._orchestrator(create=True)

    @property
    def existing(self) -> Orchestrator:
        """The orchestrator of an existing database: read, diagnostic and project commands
        (``show``, ``complete`` ...) create nothing and fail with ``no database at ...``."""
        return self._orchestrator(create=False)

    def _orchestrator(self, *, create: bool) -> Orchestrator:
        if self._orch is None:
            from tmux_orchestrator.orchestrator import Orchestrator  # lazy: see cli/__init__.py

            # A change made from inside a hook is recorded as such, and never fires hooks again.
            source = "hook" if os.environ.get("TMO_HOOK") == "1" else "cli"
            self._orch = Orchestrator(self.settings, source=source, create=create)
        return self._orch


CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

#: The modules that define subcommands, and their commands. A module is imported only when one of
#: its commands runs (or when all are listed, as by `tmo --help`): `tmo list` then loads neither
#: the daemon, the tmux layer nor the delivery modules, which was about half of its start-up time.
#: A command missing here is still found (every module is then imported); a module imported
#: eagerly in ``cli/__init__.py`` works as before.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "tmux_orchestrator.cli.projects": (
        "add", "list", "show", "complete", "fail", "cancel", "retry", "remove", "pause", "resume",
        "requeue",
    ),
    "tmux_orchestrator.cli.daemon": ("daemon",),
    "tmux_orchestrator.cli.sessions": ("sessions", "cleanup", "attach", "logs", "_cleanup"),
    "tmux_orchestrator.cli.events": ("events",),
    "tmux_orchestrator.cli.demo": ("demo",),
    "tmux_orchestrator.cli.doctor": ("doctor",),
    "tmux_orchestrator.cli.stats": ("stats",),
    "tmux_orchestrator.cli.hosts": ("hosts",),
    "tmux_orchestrator.cli.server": ("server",),
    "tmux_orchestrator.cli.messages": ("send", "peek"),
    "tmux_orchestrator.cli.checkins": ("checkin",),
    "tmux_orchestrator.cli.agent_state": ("state", "agent-hooks"),
}


class LazyGroup(click.Group):
    """A group whose subcommands are registered by importing their module on first use."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            for module, names in COMMAND_MODULES.items():
                if cmd_name in names:
                    importlib.import_module(module)
                    break
            if cmd_name not in self.commands:
                self.load_all()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self.load_all()
        return super().list_commands(ctx)

    @staticmethod
    def load_all() -> None:
        """Import every command module."""
        for module in COMMAND_MODULES:
            importlib.import_module(module)


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
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
    ctx.call_on_close(ctx.obj.close)


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
    """Print aligned columns (no colour, pipe-friendly); cells longer than 60 are cut, control
    characters shown as escapes (:func:`~tmux_orchestrator.inputs.safe_text`)."""
    # Column-wise and with one format string per line: `tmo list` prints 10,000 rows.
    text_rows = [["" if v is None else str(v) for v in row] for row in rows]
    columns = [list(col) for col in zip(*text_rows, strict=True)] if text_rows else []
    for col in columns:
        joined = "".join(col)  # one scan per column: escaping is rare, looking must be cheap
        if safe_text(joined) is not joined:
            col[:] = [safe_text(v) for v in col]
        if any(len(v) > 60 for v in col):
            col[:] = [v if len(v) <= 60 else v[:57] + "..." for v in col]
    widths = [len(h) for h in headers]
    for i, col in enumerate(columns):
        widths[i] = max(widths[i], *map(len, col))
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    body = zip(*columns, strict=True) if columns else iter(())
    click.echo("\n".join([line.format(*headers).rstrip(), *(line.format(*r).rstrip() for r in body)]))


def note_if_no_daemon(ctx: Context, waiting: str) -> None:
    """Say on stderr, in one line, that no daemon runs the queue, so ``waiting`` waits for one."""
    from tmux_orchestrator.lock import DaemonLock

    settings = ctx.settings
    if DaemonLock(settings.lock_path).is_held():
        return  # this home's daemon runs
    # or another home's daemon (another machine's) on a shared database: a live host. This home's
    # own row is left out: its lock is free, so a fresh heartbeat there is a daemon that just died.
    if any(host.is_alive(settings.host_lease) and host.runner != settings.runner
           for host in ctx.store.hosts()):
        return
    click.echo(f"tmo: no daemon is running: {waiting} until one starts (`tmo daemon start`)", err=True)


def project_id_from_env(value: int | None, what: str) -> int:
    """``value``, else ``$TMO_PROJECT_ID`` (set inside every project session)."""
    if value is not None:
        return value
    env = os.environ.get("TMO_PROJECT_ID", "")
    fix = f"run `tmo {what} ID`, or run it inside a project's session"
    if not env:
        raise click.UsageError(f"no project id given and TMO_PROJECT_ID is not set: {fix}")
    if not (env.isascii() and env.isdigit()):
        raise click.UsageError(
            f"no project id given and TMO_PROJECT_ID is {safe_text(env)!r}, not a number: {fix}")
    return int(env)

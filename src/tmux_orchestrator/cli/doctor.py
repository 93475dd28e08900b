"""``tmo doctor``: is everything this queue needs in place?"""

from __future__ import annotations

import shutil
import sys

import click

from tmux_orchestrator import __version__
from tmux_orchestrator.cli.app import Context, cli, json_option, pass_context, print_json
from tmux_orchestrator.errors import OrchestratorError
from tmux_orchestrator.service import daemon_pid
from tmux_orchestrator.tmux import check_tmux


@cli.command()
@json_option
@pass_context
def doctor(ctx: Context, as_json: bool) -> None:
    """Check tmux, the socket, the database and the daemon; exit 1 if something is wrong."""
    checks: list[tuple[str, bool, str]] = []
    settings = ctx.settings
    checks.append(("tmux-orchestrator", True, f"{__version__} (Python {sys.version.split()[0]})"))
    try:
        checks.append(("tmux", True, f"{check_tmux()} at {shutil.which('tmux')}"))
    except OrchestratorError as exc:
        checks.append(("tmux", False, str(exc)))
    checks.append(("home", True, str(settings.home)))
    try:
        store = ctx.orch.store
        counts = store.counts()
        checks.append(("database", True, f"{settings.database_url} (schema {store.schema_version()}, "
                       + ", ".join(f"{v} {k}" for k, v in counts.items() if v) + ")"))
    except OrchestratorError as exc:
        checks.append(("database", False, str(exc)))
        store = None
    socket_ok = False
    try:
        running = ctx.orch.server.is_running() if store else False
        owned = len(ctx.orch.server.list_owned()) if running else 0
        socket_ok = True
        checks.append(("tmux server", True, f"{settings.socket_path} "
                       + (f"(running, {owned} owned session(s))" if running else "(not running)")))
    except OrchestratorError as exc:
        checks.append(("tmux server", socket_ok, str(exc)))
    pid = daemon_pid(settings)
    checks.append(("daemon", True, f"running (pid {pid})" if pid else "not running"))
    if as_json:
        print_json({name: {"ok": ok, "detail": detail} for name, ok, detail in checks})
    else:
        for name, ok, detail in checks:
            click.echo(f"{'ok ' if ok else 'BAD'}  {name:<18} {detail}")
    if not all(ok for _, ok, _ in checks):
        raise click.exceptions.Exit(1)

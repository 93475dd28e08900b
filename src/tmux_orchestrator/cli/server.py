"""``tmo server stop``: this home's private tmux server."""

from __future__ import annotations

import click

from tmux_orchestrator.cli.app import Context, cli, pass_context
from tmux_orchestrator.errors import DaemonAlreadyRunning, DaemonError, OrchestratorError, ServerBusy
from tmux_orchestrator.service import stop_server


@cli.group()
def server() -> None:
    """This home's private tmux server (the daemon starts it; it outlives `tmo daemon stop`)."""


@server.command()
@click.option("--force", is_flag=True,
              help="Stop it even while projects run on it: they end with it, and the next daemon "
                   "finds them lost (retried as their --max-retries allow).")
@pass_context
def stop(ctx: Context, force: bool) -> None:
    """End this home's tmux server, after `tmo daemon stop`; exits 0 if none runs.

    Refused while the daemon runs, or while projects run in its sessions (unless --force). Only the
    server on this home's socket marked as this home's is ever ended.
    """
    socket = ctx.settings.socket_path
    if not socket.exists():  # nothing answers there (and a home never used has no database either)
        click.echo(f"tmux server not running (socket {socket})")
        return
    try:
        pid = stop_server(ctx.existing, force=force)
    except DaemonAlreadyRunning as exc:
        raise DaemonError(f"the daemon of this home runs (pid {exc.pid}): stop it first with "
                          "`tmo daemon stop`, then `tmo server stop`") from None
    except ServerBusy as exc:
        ids = " ".join(map(str, exc.project_ids))
        raise OrchestratorError(f"{exc}: cancel them first (`tmo cancel {ids}`), or stop it anyway "
                                "with `tmo server stop --force` (the next daemon finds them lost)") from None
    if pid is None:
        click.echo(f"tmux server not running (socket {socket})")
    else:
        click.echo(f"tmux server stopped (pid {pid}, socket {socket})")

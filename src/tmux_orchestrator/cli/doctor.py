"""``tmo doctor``: is everything this queue needs in place? It creates nothing."""

from __future__ import annotations

import shutil
import sys

import click

from tmux_orchestrator import __version__
from tmux_orchestrator.cli.app import Context, cli, json_option, pass_context, print_json
from tmux_orchestrator.config import Settings
from tmux_orchestrator.errors import ConfigError, NoDatabase, OrchestratorError, UnsafePath
from tmux_orchestrator.inputs import safe_text
from tmux_orchestrator.redact import redact_url
from tmux_orchestrator.reload import config_state
from tmux_orchestrator.service import daemon_pid
from tmux_orchestrator.tmux import OrchestratorServer, Tmux, check_tmux


@cli.command()
@json_option
@pass_context
def doctor(ctx: Context, as_json: bool) -> None:
    """Check tmux, the home, the database, the tmux server and the daemon; exit 1 if something is
    wrong. A database that does not exist yet is reported, not created."""
    checks: list[tuple[str, bool, str]] = []
    try:
        settings = ctx.settings
        config_error = None
    except UnsafePath:
        raise  # a home or file others control: refused in one line, as by every command
    except ConfigError as exc:  # reported as a check; the others still run, on the defaults
        config_error = str(exc)
        settings = ctx.settings_without_config()
    checks.append(("tmux-orchestrator", True, f"{__version__} (Python {sys.version.split()[0]})"))
    try:
        checks.append(("tmux", True, f"{check_tmux()} at {shutil.which('tmux')}"))
    except OrchestratorError as exc:
        checks.append(("tmux", False, str(exc)))
    try:
        exists = settings.check_dirs()
        checks.append(("home", True, f"{settings.home}{'' if exists else ' (not created yet)'}"))
    except OrchestratorError as exc:
        checks.append(("home", False, str(exc)))
    pid = daemon_pid(settings)
    checks.append(_config_check(settings, config_error, pid))
    url = redact_url(settings.database_url)
    try:
        store = ctx.existing.store
        counts = store.counts()
        checks.append(("database", True, f"{url} (schema {store.schema_version()}, "
                       + ", ".join(f"{v} {k}" for k, v in counts.items() if v) + ")"))
    except NoDatabase:  # not a fault: the state before the first `tmo add`
        checks.append(("database", True, f"{url}: none yet (`tmo add` or `tmo daemon start` creates it)"))
    except OrchestratorError as exc:
        checks.append(("database", False, str(exc)))
    # The server is checked on its own (no database needed), ownership mark first.
    server = OrchestratorServer(
        Tmux(settings.socket_path, owner_mark=settings.owner_tag, private_dir=settings.socket_dir_private),
        settings.owner_tag,
    )
    try:
        running = server.verify_owner() and server.is_running()
        owned = len(server.list_owned()) if running else 0
        checks.append(("tmux server", True, f"{settings.socket_path} "
                       + (f"(running, {owned} owned session(s))" if running else "(not running)")))
    except OrchestratorError as exc:
        checks.append(("tmux server", False, str(exc)))
    checks.append(("daemon", True, f"running (pid {pid})" if pid else "not running"))
    if as_json:
        print_json({name: {"ok": ok, "detail": detail} for name, ok, detail in checks})
    else:
        for name, ok, detail in checks:
            click.echo(f"{'ok ' if ok else 'BAD'}  {name:<18} {safe_text(detail)}")
    if not all(ok for _, ok, _ in checks):
        raise click.exceptions.Exit(1)


def _config_check(settings: Settings, error: str | None, pid: int | None) -> tuple[str, bool, str]:
    """config.toml: does it load (hooks and webhooks too), and does the daemon run with it?"""
    if error is not None:
        return ("config", False, error)
    from tmux_orchestrator.dispatch import load_delivery  # only doctor and the daemon need it

    try:
        load_delivery(settings.extra)
    except ConfigError as exc:
        return ("config", False, f"{settings.config_path}: {exc}")
    where = str(settings.config_path) if settings.config_digest else (
        f"{settings.config_path}: none (the defaults)")
    state = config_state(settings, pid)
    if state is None:
        return ("config", True, where)
    problem = state.problem()
    if problem is not None:
        return ("config", False, problem)
    return ("config", True, f"{where} (as the daemon loaded it)")

"""``tmo daemon run|start|stop|status|reload|install-systemd``."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from tmux_orchestrator.cli.app import Context, cli, json_option, pass_context, print_json
from tmux_orchestrator.daemon import Daemon
from tmux_orchestrator.errors import ConfigError, DaemonAlreadyRunning, DaemonNotRunning
from tmux_orchestrator.inputs import safe_text
from tmux_orchestrator.logs import setup_logging
from tmux_orchestrator.redact import redact_url
from tmux_orchestrator.reload import config_state
from tmux_orchestrator.service import (
    DaemonStatus,
    daemon_pid,
    reload_daemon,
    start_daemon,
    stop_daemon,
)
from tmux_orchestrator.store.base import Store
from tmux_orchestrator.store.rows import iso_time


@cli.group()
def daemon() -> None:
    """Run or control the queue daemon of this home (one per home)."""


F = TypeVar("F", bound=Callable[..., Any])


def daemon_options(command: F) -> F:
    """The options of the daemon itself, taken by `daemon run` and, passed on, by `daemon start`."""
    options = [
        click.option("--concurrency", "-c", type=click.IntRange(min=1),
                     help="Projects running at once (stored; default: the stored value, else 1)."),
        click.option("--log-json", is_flag=True, help="Write scheduler.log as JSON lines."),
        click.option("--log-level", default="INFO", show_default=True,
                     type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False)),
        click.option("--metrics", "metrics_address", metavar="ADDRESS:PORT",
                     help="Serve Prometheus metrics on http://ADDRESS:PORT/metrics "
                          "(default: `metrics` in config.toml; none)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@daemon.command()
@daemon_options
@click.option("--quiet", "-q", is_flag=True, help="Log to scheduler.log only, not stderr.")
@click.option("--ready-fd", type=int, hidden=True)
@pass_context
def run(ctx: Context, concurrency: int | None, log_json: bool, log_level: str,
        metrics_address: str | None, quiet: bool, ready_fd: int | None) -> None:
    """Run the daemon in the foreground (for systemd and terminals); Ctrl-C stops it."""
    settings = ctx.settings
    settings.ensure_dirs()
    from tmux_orchestrator.dispatch import check_delivery_secrets
    from tmux_orchestrator.metrics import DaemonMetrics  # only `daemon run` needs prometheus_client

    check_delivery_secrets(settings)  # secret_env/password_env: before anything starts
    ctx.orch.server.verify_owner()  # a server on the socket that is not this home's: refuse now

    metrics = DaemonMetrics(metrics_address or settings.extra.get("metrics"))
    setup_logging(settings.scheduler_log, level=log_level, json_lines=log_json, stderr=not quiet)
    Daemon(ctx.orch, concurrency=concurrency, ready_fd=ready_fd, metrics=metrics).run()


@daemon.command()
@daemon_options
@pass_context
def start(ctx: Context, concurrency: int | None, log_json: bool, log_level: str,
          metrics_address: str | None) -> None:
    """Start the daemon in the background (logging to scheduler.log only); returns once it is ready.
    Exits 0 if it already runs."""
    try:
        pid = start_daemon(ctx.settings, concurrency=concurrency, log_json=log_json, log_level=log_level,
                           metrics=metrics_address)
    except DaemonAlreadyRunning as exc:
        # like `systemctl start`: the wanted state holds, so this is no failure
        click_ctx = click.get_current_context()
        given = any(click_ctx.get_parameter_source(name) != ParameterSource.DEFAULT
                    for name in ("concurrency", "log_json", "log_level", "metrics_address"))
        note = "; its options are unchanged (`tmo daemon stop` first to change them)" if given else ""
        click.echo(f"daemon already running{f' (pid {exc.pid})' if exc.pid else ''}{note}")
        return
    click.echo(f"daemon started (pid {pid}); log: {ctx.settings.scheduler_log}")


@daemon.command()
@pass_context
def stop(ctx: Context) -> None:
    """Stop the daemon (running projects keep running; the next daemon adopts them). Exits 0 if
    none runs."""
    # Only the home's lock is needed: a config.toml broken meanwhile must not keep the user from
    # stopping the daemon (which runs with the config it loaded).
    settings = ctx.settings_without_config()
    try:
        pid = stop_daemon(settings)
    except DaemonNotRunning:
        click.echo(f"daemon not running (home {settings.home})")
        return
    click.echo(f"daemon stopped (pid {pid})")


@daemon.command()
@json_option
@pass_context
def status(ctx: Context, as_json: bool) -> None:
    """Show whether the daemon runs, its concurrency and the queue counts; exit 3 if stopped."""
    try:
        settings = ctx.settings
    except ConfigError as exc:
        _status_without_config(ctx, exc, as_json)
        return
    store = ctx.existing.store
    pid = daemon_pid(settings)
    config = config_state(settings, pid)
    info = DaemonStatus(
        running=pid is not None,
        pid=pid,
        home=str(settings.home),
        socket=str(settings.socket_path),
        database=redact_url(settings.database_url),
        concurrency=_host_concurrency(store, settings.host),
        paused=store.get_setting("paused", "0") == "1",
        started_at=iso_time(store.get_setting("daemon.started_at")) if pid else None,
        counts=store.counts(),
        metrics_url=(store.get_setting("daemon.metrics_url") or None) if pid else None,
        config_changed=config.changed if config else None,
        config_loaded_at=config.loaded.loaded_at if config else None,
        config_reload_error=config.loaded.error if config else None,
        config_restart_needed=config.loaded.restart_needed if config else [],
    )
    if as_json:
        print_json(info.to_dict())
    else:
        state = f"running (pid {pid}, since {info.started_at})" if pid else "not running"
        click.echo(f"daemon:      {state}")
        click.echo(f"concurrency: {info.concurrency}{' (queue paused)' if info.paused else ''}")
        click.echo("projects:    " + ", ".join(f"{v} {k}" for k, v in info.counts.items()))
        click.echo(f"home:        {info.home}")
        click.echo(f"tmux socket: {info.socket}")
        if info.metrics_url:
            click.echo(f"metrics:     {info.metrics_url}")
        if config is not None:
            said = config.problem() or f"as loaded at {config.loaded.loaded_at}"
            click.echo(f"config:      {safe_text(said)}")
    if pid is None:
        raise click.exceptions.Exit(3)


@daemon.command()
@pass_context
def reload(ctx: Context) -> None:
    """Make the running daemon read config.toml again (as SIGHUP does) and say what changed.

    Takes effect at once: the intervals, kill_grace, orphan_policy, log retention, history_limit
    and window_size (for sessions started from now on), env_exclude, and the hooks, webhooks and
    e-mails. database_url, sqlite_synchronous, host_labels and metrics wait for a daemon restart.
    A config.toml that does not load changes nothing: the daemon keeps the config it had.
    """
    # config.toml is the daemon's to judge (it alone has the secrets its delivery needs), and a
    # broken file must not keep this command from finding the daemon to ask.
    loaded = reload_daemon(ctx.settings_without_config())
    changed = ", ".join(loaded.changed) or "no change"
    click.echo(f"config reloaded by the daemon (pid {loaded.pid}): {changed}")
    if loaded.restart_needed:
        click.echo(f"waiting for a daemon restart: {', '.join(loaded.restart_needed)} "
                   "(`tmo daemon stop && tmo daemon start`; projects keep running)")


def _status_without_config(ctx: Context, error: ConfigError, as_json: bool) -> None:
    """``tmo daemon status`` when config.toml does not load: whether the daemon runs (its lock says
    so; it goes on with the config it loaded) and the file's error; exit 2. The queue is not shown:
    the broken file may be the one that names its database."""
    pid = daemon_pid(ctx.settings_without_config())
    message = safe_text(str(error))
    if as_json:
        print_json({"running": pid is not None, "pid": pid, "config_error": message})
    else:
        state = f"running (pid {pid}), with the config it loaded" if pid else "not running"
        click.echo(f"daemon:      {state}")
        click.echo(f"config:      does not load: {message}")
    raise click.exceptions.Exit(2)


def _host_concurrency(store: Store, name: str) -> int:
    """This host's concurrency (the queue's default when it never ran a daemon)."""
    for host in store.hosts():
        if host.name == name:
            return host.concurrency
    return store.concurrency()


@daemon.command("install-systemd")
@click.option("--user/--system", default=True,
              help="A user unit in ~/.config/systemd/user (the default, also for root), or a system "
                   "unit in /etc/systemd/system.")
@click.option("--force", is_flag=True, help="Replace an existing unit file that differs.")
@click.option("--print", "print_only", is_flag=True, help="Only print the unit.")
@pass_context
def install_systemd(ctx: Context, user: bool, force: bool, print_only: bool) -> None:
    """Write a systemd unit that runs this home's daemon (KillMode=process keeps projects alive).

    One unit per home (the default home's is tmux-orchestrator.service). It carries TMO_HOME, the
    --database-url / TMO_DATABASE_URL given (never a password: use ~/.pgpass) and your PATH.
    """
    from tmux_orchestrator.systemd import install_unit, unit_text

    unit = unit_text(ctx.settings, user=user, database_url=ctx.database_url)
    if print_only:
        click.echo(unit, nl=False)
        return
    path = install_unit(ctx.settings, unit, user=user, force=force)
    flag = " --user" if user else ""
    click.echo(f"wrote {path}\nenable and start it with:\n"
               f"  systemctl{flag} daemon-reload\n  systemctl{flag} enable --now {path.stem}")
    if user:
        click.echo("  loginctl enable-linger $USER   # keep it running after you log out")
    if user and os.geteuid() == 0:  # root asked for nothing else: never a system unit unasked
        click.echo("this is root's user unit; `tmo daemon install-systemd --system` writes a system unit")


__all__ = ["DaemonNotRunning", "daemon", "daemon_pid"]

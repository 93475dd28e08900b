"""``tmo doctor``: is everything this queue needs in place? It creates nothing."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from typing import Any

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


@dataclass
class Check:
    """One check of ``tmo doctor``: a line of text, an object of ``--json`` (docs/json.md)."""

    #: Stable machine name (``tmux_server``); ``label`` is what the text output shows.
    name: str
    label: str
    ok: bool
    #: The one value the check is about (a version, a path, a pid), typed; None when unknown.
    value: Any
    #: What the text output prints after the label.
    message: str
    #: More machine values, named per check.
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` form: name, ok, value, message, details."""
        return {"name": self.name, "ok": self.ok, "value": self.value, "message": self.message,
                "details": self.details}


@cli.command()
@json_option
@pass_context
def doctor(ctx: Context, as_json: bool) -> None:
    """Check tmux, the home, the database, the tmux server and the daemon; exit 1 if something is
    wrong. A database that does not exist yet is reported, not created."""
    checks: list[Check] = []
    try:
        settings = ctx.settings
        config_error = None
    except UnsafePath as exc:
        settings = ctx.settings_without_config()
        settings.check_dirs()  # a home others control: refused in one line, as by every command
        config_error = str(exc)  # config.toml itself (a link, not ours): a BAD check, as below
    except ConfigError as exc:  # reported as a check; the others still run, on the defaults
        config_error = str(exc)
        settings = ctx.settings_without_config()
    python = sys.version.split()[0]
    checks.append(Check("tmo", "tmux-orchestrator", True, __version__, f"{__version__} (Python {python})",
                        {"python": python}))
    path = shutil.which("tmux")
    try:
        version = check_tmux()
        checks.append(Check("tmux", "tmux", True, version.removeprefix("tmux "), f"{version} at {path}",
                            {"path": path}))
    except OrchestratorError as exc:
        checks.append(Check("tmux", "tmux", False, None, str(exc), {"path": path}))
    home = str(settings.home)
    try:
        exists = settings.check_dirs()
        checks.append(Check("home", "home", True, home, f"{home}{'' if exists else ' (not created yet)'}",
                            {"exists": exists}))
    except OrchestratorError as exc:
        checks.append(Check("home", "home", False, home, str(exc), {"exists": settings.home.is_dir()}))
    pid = daemon_pid(settings)
    checks.append(_config_check(settings, config_error, pid))
    url = redact_url(settings.database_url)
    try:
        store = ctx.existing.store
        counts = store.counts()
        schema = store.schema_version()
        checks.append(Check("database", "database", True, schema, f"{url} (schema {schema}, "
                            + ", ".join(f"{v} {k}" for k, v in counts.items() if v) + ")",
                            {"url": url, "exists": True, "counts": counts}))
    except NoDatabase:  # not a fault: the state before the first `tmo add`
        checks.append(Check("database", "database", True, None,
                            f"{url}: none yet (`tmo add` or `tmo daemon start` creates it)",
                            {"url": url, "exists": False, "counts": {}}))
    except OrchestratorError as exc:
        checks.append(Check("database", "database", False, None, str(exc),
                            {"url": url, "exists": None, "counts": {}}))
    # The server is checked on its own (no database needed), ownership mark first.
    server = OrchestratorServer(
        Tmux(settings.socket_path, owner_mark=settings.owner_tag, private_dir=settings.socket_dir_private),
        settings.owner_tag,
    )
    socket = str(settings.socket_path)
    try:
        running = server.verify_owner() and server.is_running()
        owned = len(server.list_owned()) if running else 0
        checks.append(Check("tmux_server", "tmux server", True, running, f"{socket} "
                            + (f"(running, {owned} owned session(s))" if running else "(not running)"),
                            {"socket": socket, "owned_sessions": owned}))
    except OrchestratorError as exc:
        checks.append(Check("tmux_server", "tmux server", False, None, str(exc),
                            {"socket": socket, "owned_sessions": None}))
    checks.append(Check("daemon", "daemon", True, pid, f"running (pid {pid})" if pid else "not running",
                        {"running": pid is not None}))
    ok = all(check.ok for check in checks)
    if as_json:
        print_json({"ok": ok, "checks": [check.to_dict() for check in checks]})
    else:
        for check in checks:
            click.echo(f"{'ok ' if check.ok else 'BAD'}  {check.label:<18} {safe_text(check.message)}")
    if not ok:
        raise click.exceptions.Exit(1)


def _config_check(settings: Settings, error: str | None, pid: int | None) -> Check:
    """config.toml: does it load (hooks and webhooks too), and does the daemon run with it?
    Its value is the file's path, null when there is none (the defaults)."""
    path = str(settings.config_path) if settings.config_digest else None
    details: dict[str, Any] = {"path": str(settings.config_path), "exists": path is not None,
                               "loaded_by_daemon": None}

    def check(ok: bool, message: str) -> Check:
        return Check("config", "config", ok, path, message, details)
    if error is not None:
        details["exists"] = True  # only a file can be wrong
        return Check("config", "config", False, str(settings.config_path), error, details)
    from tmux_orchestrator.dispatch import load_delivery  # only doctor and the daemon need it

    try:
        load_delivery(settings.extra)
    except ConfigError as exc:
        return check(False, f"{settings.config_path}: {exc}")
    where = path or f"{settings.config_path}: none (the defaults)"
    state = config_state(settings, pid)
    if state is None:
        return check(True, where)
    details["loaded_by_daemon"] = not state.changed
    problem = state.problem()
    if problem is not None:
        return check(False, problem)
    return check(True, f"{where} (as the daemon loaded it)")

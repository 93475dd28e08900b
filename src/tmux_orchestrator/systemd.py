"""The systemd unit that runs a home's daemon: its name, where it goes, what it holds, writing it.

One unit file per home: ``tmux-orchestrator.service`` for the default home, else
``tmux-orchestrator-<directory name>-<home key>.service`` (the key is the home's
:attr:`~tmux_orchestrator.config.Settings.home_key`, also in its sessions' owner tag). Each home's unit
holds its own ``TMO_HOME``, database URL and ``PATH``, so a second home never replaces the first
one's unit. A template unit (``tmux-orchestrator@.service``) was not chosen: the URL and ``PATH``
would need a drop-in per instance anyway, and its instance names would be the escaped home path.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from tmux_orchestrator.config import Settings, platform_home
from tmux_orchestrator.errors import ConfigError, OrchestratorError
from tmux_orchestrator.redact import display_url

PREFIX = "tmux-orchestrator"

#: Variables of the caller's environment the unit carries when set: systemd starts the daemon with
#: almost none, and the daemon's tmux and the projects it starts must find the programs the user's
#: shell finds; ``PGPASSFILE`` is where a PostgreSQL password lives instead of the URL.
CARRIED = ("PATH", "PGPASSFILE")


def unit_name(settings: Settings) -> str:
    """The unit's file name for this home."""
    if os.path.realpath(settings.home) == os.path.realpath(platform_home()):
        return f"{PREFIX}.service"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", settings.home.name).strip("-.")[:32] or "home"
    return f"{PREFIX}-{name}-{settings.home_key}.service"


def unit_dir(*, user: bool) -> Path:
    """Where systemd reads units from: ``$XDG_CONFIG_HOME/systemd/user`` (``~/.config`` when the
    variable is unset, empty or relative, as the XDG spec says), or ``/etc/systemd/system``."""
    if not user:
        return Path("/etc/systemd/system")
    config = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(config) if os.path.isabs(config) else Path.home() / ".config"
    return base / "systemd" / "user"


def unit_text(settings: Settings, *, user: bool, database_url: str | None) -> str:
    """The unit running this home's daemon in the foreground.

    ``database_url`` is the one given by flag or ``TMO_DATABASE_URL`` (None: the home's own, or the
    one in its config.toml, which the daemon reads itself); one holding a password is refused.
    ``KillMode=process`` makes ``systemctl stop`` signal only the daemon: projects keep running in
    their tmux sessions and the next daemon adopts them.
    """
    env = {"TMO_HOME": str(settings.home)}
    if database_url:
        shown = display_url(database_url)
        if shown != database_url:
            raise ConfigError(
                "the database URL holds a password, which must not go into a unit file: keep it in "
                "~/.pgpass or the file PGPASSFILE names (docs/postgres.md) and give the URL without "
                f"it: {shown}")
        env["TMO_DATABASE_URL"] = database_url
    env.update((name, os.environ[name]) for name in CARRIED if os.environ.get(name))
    environment = "\n".join(f"Environment={_quoted(f'{k}={v}')}" for k, v in env.items())
    # The console script beside this interpreter is the tmo running now (PATH may find another).
    script = Path(sys.executable).parent / "tmo"
    argv = [str(script)] if script.is_file() else [sys.executable, "-m", "tmux_orchestrator"]
    command = " ".join(_quoted(word).replace("$", "$$") for word in argv)
    return f"""[Unit]
Description=tmux-orchestrator queue daemon ({_literal(str(settings.home))})
After=network.target

[Service]
Type=simple
{environment}
ExecStart={command} daemon run
KillMode=process
KillSignal=SIGTERM
TimeoutStopSec=15
Restart=on-failure
RestartSec=5s

[Install]
WantedBy={'default.target' if user else 'multi-user.target'}
"""


def install_unit(settings: Settings, text: str, *, user: bool, force: bool) -> Path:
    """Write ``text`` as this home's unit file and return its path. A file there holding anything
    else is replaced only with ``force``; the file is written whole or not at all."""
    path = unit_dir(user=user) / unit_name(settings)
    try:
        if not force and (path.exists() or path.is_symlink()) and _read(path) != text:
            raise OrchestratorError(
                f"{path} exists and differs from this home's unit; pass --force to replace it, "
                "or --print to see the new one")
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            partial.write_text(text)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    except OSError as exc:
        hint = "" if user else "; a system unit needs root (or print it with --print)"
        raise OrchestratorError(f"cannot write {path}: {exc.strerror or exc}{hint}") from exc
    return path


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _quoted(word: str) -> str:
    """``word`` as one quoted word of a unit file (``\\`` and ``"`` escaped)."""
    return '"' + _literal(word).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _literal(text: str) -> str:
    """``text`` as systemd reads it back: ``%`` doubled (it expands ``%h``, ``%u`` ...). A control
    character cannot be written, so it is refused."""
    if not text.isprintable():
        raise ConfigError(f"cannot put {text!r} into a unit file: it holds a control character")
    return text.replace("%", "%%")

"""Reloading config.toml in a running daemon, and telling whether the file changed since.

The daemon reads config.toml when it starts and again on SIGHUP (``tmo daemon reload`` sends it).
A reload applies at once what the daemon reads as it goes (:data:`LIVE`), restarts the event
delivery when ``[[hooks]]``, ``[[webhooks]]``, ``[[emails]]``, ``[smtp]`` or ``hook_concurrency``
changed, and keeps the running value of what is read only at start (:data:`RESTART`), naming it.
A file that does not load changes nothing: the daemon goes on with the config it had, and says why
(log, ``config_reload_failed`` event, this record, ``tmo daemon reload``'s answer).

The daemon keeps a record of what it loaded in ``$TMO_HOME/daemon.config.json`` (0600): its pid,
the digest of the file it loaded, when, and how the last reload went. ``tmo daemon status`` and
``tmo doctor`` compare that digest with the file as it is now.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tmux_orchestrator.config import Settings, config_file_digest
from tmux_orchestrator.errors import ConfigError
from tmux_orchestrator.home import read_private, replace_private
from tmux_orchestrator.timestamps import format_time

#: Settings a reload applies at once: the daemon reads them each time it needs them
#: (``history_limit`` and ``window_size`` apply to sessions started after the reload).
LIVE: tuple[str, ...] = (
    "reconcile_interval", "db_poll_interval", "kill_grace", "orphan_policy", "log_retention_days",
    "log_retention_mb", "reboot_policy", "pause_after_reboot", "host_lease", "env_exclude",
    "history_limit", "window_size", "send_settle_delay", "agent_idle_after",
    "idle_timeout_waiting",
)
#: config.toml tables and keys of the event delivery: a change restarts the delivery threads.
DELIVERY: tuple[str, ...] = ("hooks", "webhooks", "emails", "smtp", "hook_concurrency")
#: Settings read once, when the daemon starts: a changed value waits for the next start.
RESTART: tuple[str, ...] = ("database_url", "sqlite_synchronous", "host_labels", "metrics")


@dataclass(frozen=True)
class Change:
    """What a reload changes: settings applied now, delivery tables changed (the delivery restarts),
    settings whose new value waits for a restart."""

    applied: list[str]
    delivery: list[str]
    restart: list[str]

    @property
    def changed(self) -> list[str]:
        """Every key whose value took effect with this reload."""
        return self.applied + self.delivery

    def summary(self) -> str:
        """One line for the log, the event and ``tmo daemon reload``."""
        text = f"changed: {', '.join(self.changed)}" if self.changed else "no change"
        if self.restart:
            text += f"; waiting for a daemon restart: {', '.join(self.restart)}"
        return text


def compare(running: Settings, new: Settings) -> Change:
    """What loading ``new`` over the ``running`` settings changes."""
    applied = [key for key in LIVE if getattr(new, key) != getattr(running, key)]
    delivery = [key for key in DELIVERY if new.extra.get(key) != running.extra.get(key)]
    restart = [key for key in RESTART if key != "metrics" and getattr(new, key) != getattr(running, key)]
    if new.extra.get("metrics") != running.extra.get("metrics"):
        restart.append("metrics")
    return Change(applied, delivery, restart)


def apply(running: Settings, new: Settings) -> None:
    """Copy what takes effect now from ``new`` into ``running`` (shared by every part of the daemon,
    so each reads the new value next time it looks); the :data:`RESTART` values stay."""
    for key in LIVE:
        setattr(running, key, getattr(new, key))
    running.extra = {**{k: v for k, v in new.extra.items() if k in DELIVERY},
                     **{k: v for k, v in running.extra.items() if k not in DELIVERY}}
    running.config_digest = new.config_digest


def _now() -> str:
    return format_time(datetime.now(UTC))


@dataclass
class LoadedConfig:
    """The record the daemon keeps of the config it runs with (``daemon.config.json``)."""

    pid: int
    #: Digest of config.toml as loaded ("" for no file): :func:`tmux_orchestrator.config.digest`.
    digest: str
    #: When it was loaded, ISO 8601 with offset.
    loaded_at: str
    #: Reload requests answered since the daemon started (``tmo daemon reload`` waits for the next).
    reloads: int = 0
    #: Keys the last successful reload changed.
    changed: list[str] = field(default_factory=list)
    #: Keys whose new value waits for a daemon restart.
    restart_needed: list[str] = field(default_factory=list)
    #: Why the last reload failed; None when it worked (or none was asked for).
    error: str | None = None
    error_at: str | None = None

    @classmethod
    def started(cls, pid: int, settings: Settings) -> LoadedConfig:
        """The record of a daemon that has just started with ``settings``."""
        return cls(pid=pid, digest=settings.config_digest, loaded_at=_now())

    def reloaded(self, settings: Settings, change: Change) -> None:
        """A reload worked."""
        self.digest, self.loaded_at = settings.config_digest, _now()
        self.reloads += 1
        self.changed, self.restart_needed = change.changed, change.restart
        self.error = self.error_at = None

    def failed(self, why: str) -> None:
        """A reload failed: the config loaded before stays."""
        self.reloads += 1
        self.changed = []
        self.error, self.error_at = why, _now()

    def save(self, settings: Settings) -> None:
        """Write the record (0600, renamed into place)."""
        replace_private(record_path(settings), json.dumps(asdict(self)) + "\n")


def record_path(settings: Settings) -> Path:
    """Where the daemon keeps its :class:`LoadedConfig`."""
    return settings.home / "daemon.config.json"


def read_loaded(settings: Settings) -> LoadedConfig | None:
    """The daemon's record, None when there is none (or it is unreadable: an older daemon)."""
    try:
        data = json.loads(read_private(record_path(settings), limit=1 << 16) or b"null")
        return LoadedConfig(**data) if isinstance(data, dict) else None
    except (OSError, ValueError, TypeError):
        return None


@dataclass(frozen=True)
class ConfigState:
    """The running daemon's config compared with config.toml now (``daemon status``, ``doctor``)."""

    loaded: LoadedConfig
    #: True when the file differs from what the daemon loaded (or cannot be read now).
    changed: bool

    def problem(self) -> str | None:
        """What is not as the file says, with the fix; None when the daemon runs the file's config."""
        if self.loaded.error and self.changed:
            return (f"the daemon's last reload failed ({self.loaded.error}); it runs the config "
                    f"loaded at {self.loaded.loaded_at}")
        if self.changed:
            return (f"config.toml changed since the daemon loaded it at {self.loaded.loaded_at}; "
                    "`tmo daemon reload` applies it")
        if self.loaded.restart_needed:
            return (f"waiting for a daemon restart: {', '.join(self.loaded.restart_needed)} "
                    "(`tmo daemon stop && tmo daemon start`; projects keep running)")
        return None


def config_state(settings: Settings, pid: int | None) -> ConfigState | None:
    """How the config of the daemon ``pid`` compares with config.toml; None without a daemon or
    without its record."""
    loaded = read_loaded(settings) if pid is not None else None
    if loaded is None or loaded.pid != pid:
        return None
    try:
        changed = config_file_digest(settings) != loaded.digest
    except ConfigError:
        changed = True
    return ConfigState(loaded, changed)

"""Settings: from flags, then the environment (``TMO_*``), then ``$TMO_HOME/config.toml``, then defaults.

``TMO_HOME`` is the state directory: database, logs, tmux socket, lock and run files.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tmux_orchestrator.durations import parse_duration
from tmux_orchestrator.errors import ConfigError
from tmux_orchestrator.home import check_home, ensure_home, read_config

#: tmux's limits: ``history-limit`` is an int, a window at most 10000 cells wide and high.
_TMUX_INT_MAX = 2**31 - 1
_TMUX_WINDOW_MAX = 10000

#: Unix socket paths longer than this do not fit ``sockaddr_un`` on every platform (104 on macOS).
_MAX_SOCKET_PATH = 100


def default_home() -> Path:
    """``$TMO_HOME``, else :func:`platform_home`."""
    env = os.environ.get("TMO_HOME")
    if env:
        return Path(env).expanduser()
    return platform_home()


def platform_home() -> Path:
    """The home when ``TMO_HOME`` is not set: the platform's user state directory for
    tmux-orchestrator: ``$XDG_STATE_HOME/tmux-orchestrator``, by default
    ``~/.local/state/tmux-orchestrator``; ``~/Library/Application Support/tmux-orchestrator`` on
    macOS. (What platformdirs gives, without importing it at every start; an empty or relative
    ``XDG_STATE_HOME`` is ignored, as the XDG specification says.)"""
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "tmux-orchestrator"
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "tmux-orchestrator"


@dataclass
class Settings:
    """Everything the daemon, the CLI and the API need to find and run the queue."""

    home: Path
    #: ``sqlite:///path`` (default ``$TMO_HOME/tmo.db``) or ``postgresql://...``.
    database_url: str = ""
    #: Seconds between reconcile passes (database against tmux).
    reconcile_interval: float = 2.0
    #: Seconds between checks for hand-written database changes.
    db_poll_interval: float = 0.02
    #: Seconds between pasting a message (``tmo send``) and pressing Enter: the agent's input must
    #: have taken the paste in, or the Enter is lost in it.
    send_settle_delay: float = 0.3
    #: Seconds a process group gets between SIGTERM and SIGKILL when its project is stopped.
    kill_grace: float = 5.0
    #: ``history-limit`` of project panes: lines kept for the scrollback backup.
    history_limit: int = 50000
    #: What to do with an owned session that has no live project: ``kill`` or ``keep``.
    orphan_policy: str = "kill"
    #: Keep logs of ended projects this many days (0 = forever).
    log_retention_days: float = 30.0
    #: Keep at most this many MB of project logs (0 = no limit); oldest are removed first.
    log_retention_mb: float = 0.0
    #: Width x height of new project windows.
    window_size: str = "200x50"
    #: After a reboot, projects that were running are ``requeue``d or ``fail``ed as lost.
    reboot_policy: str = "requeue"
    #: After a reboot, start with the queue paused (``tmo resume`` to go on).
    pause_after_reboot: bool = False
    #: ``full`` (fsync every commit) or ``normal`` (WAL default: survives crashes of any process).
    sqlite_synchronous: str = "normal"
    #: Seconds a host may go without a heartbeat before other hosts count it dead (``TMO_HOST_LEASE``).
    host_lease: float = 30.0
    #: Seconds without output after which a running project's agent counts as ``idle``, unless
    #: it reports its state itself (``tmo state``).
    agent_idle_after: float = 30.0
    #: ``--idle-timeout`` ends also a project whose agent is ``waiting`` for an answer (by default it
    #: spares it: waiting is not being stuck).
    idle_timeout_waiting: bool = False
    #: This host's labels, comma-separated (``TMO_HOST_LABELS=gpu,big``): projects added with
    #: ``--requires`` run only on hosts that have all the labels they name.
    host_labels: str = ""
    #: Variables of the caller's environment that ``tmo add`` does not capture for a project: globs
    #: such as ``["AWS_*", "*_TOKEN"]`` (``TMO_ENV_EXCLUDE``: comma-separated). ``["*"]`` captures
    #: none (as ``--no-env`` does). Some are never captured anyway (``environment.NOT_CAPTURED``).
    env_exclude: tuple[str, ...] = ()
    #: The delivery tables and keys of config.toml (``[[hooks]]``, ``[[webhooks]]``, ``[smtp]``,
    #: ``[[emails]]``, ``hook_concurrency``, ``metrics``), read by :mod:`tmux_orchestrator.dispatch`.
    extra: dict[str, Any] = field(default_factory=dict)
    #: A digest of config.toml as read ("" when there is none): tells whether the file changed since.
    config_digest: str = ""

    # -- derived paths -------------------------------------------------------------------------
    @property
    def database_path(self) -> Path | None:
        """The SQLite file, or None for a non-SQLite URL."""
        url = self.database_url
        if url.startswith("sqlite:///"):
            return Path(url[len("sqlite:///") :])
        if url.startswith("sqlite://"):
            return Path(url[len("sqlite://") :])
        return None

    @property
    def logs_dir(self) -> Path:
        """Per-project output logs and scrollback backups."""
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        """Exit-code files, marker files and the end-event FIFO."""
        return self.home / "run"

    @property
    def fifo_path(self) -> Path:
        """The FIFO through which project wrappers (and CLI pokes) wake the daemon."""
        return self.run_dir / "events.fifo"

    @property
    def lock_path(self) -> Path:
        """The daemon's ``flock`` file (never unlinked)."""
        return self.home / "daemon.lock"

    @property
    def scheduler_log(self) -> Path:
        """The daemon's own rotating log."""
        return self.home / "scheduler.log"

    @property
    def config_path(self) -> Path:
        """Optional TOML configuration file."""
        return self.home / "config.toml"

    @property
    def home_key(self) -> str:
        """A short stable hash of the home's real path: names this home's server and owner tag."""
        real = os.path.realpath(self.home)
        import hashlib  # lazily: hashlib loads OpenSSL (a few ms at every start)

        return hashlib.sha256(real.encode()).hexdigest()[:12]

    @property
    def owner_tag(self) -> str:
        """The value of ``@tmo_owner`` on every session this orchestrator owns."""
        return f"tmo:{self.home_key}"

    @property
    def socket_path(self) -> Path:
        """The dedicated tmux server's socket: in the home when the path is short enough."""
        env = os.environ.get("TMO_TMUX_SOCKET")
        if env:
            return Path(env)
        candidate = self.home / "tmux.sock"
        if len(str(candidate.absolute())) <= _MAX_SOCKET_PATH:
            return candidate.absolute()
        base = Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmo-{os.getuid()}"
        return base / f"{self.home_key}.sock"

    def log_path(self, project_id: int) -> Path:
        """Complete output of a project (every attempt appended)."""
        return self.logs_dir / f"{project_id}.log"

    def scrollback_path(self, project_id: int, attempt: int) -> Path:
        """Scrollback of one attempt, saved just before its session was killed."""
        return self.logs_dir / f"{project_id}-{attempt}.scrollback.txt"

    def saved_scrollback(self, project_id: int, attempt: int) -> Path | None:
        """The scrollback of the latest attempt up to ``attempt`` that has one (older releases
        kept one ``<id>.scrollback.txt``); None when none was saved."""
        for number in range(attempt, 0, -1):
            path = self.scrollback_path(project_id, number)
            if path.exists():
                return path
        legacy = self.logs_dir / f"{project_id}.scrollback.txt"
        return legacy if legacy.exists() else None

    def started_path(self, project_id: int, attempt: int) -> Path:
        """Left by the wrapper when an attempt's command starts: it ran, even if unrecorded."""
        return self.run_dir / f"{project_id}-{attempt}.started"

    @property
    def host(self) -> str:
        """This machine's name in the queue: ``TMO_HOST``, else the hostname."""
        return os.environ.get("TMO_HOST") or os.uname().nodename  # socket.gethostname() says the same

    @property
    def labels(self) -> frozenset[str]:
        """This host's labels (:attr:`host_labels` split at commas)."""
        return frozenset(x.strip() for x in self.host_labels.split(",") if x.strip())

    @property
    def runner(self) -> str:
        """Which daemon runs a project: this host and this home (each home has its own server)."""
        return f"{self.host}:{self.home_key}"

    def exit_path(self, project_id: int, attempt: int) -> Path:
        """Where the wrapper leaves the exit code of an attempt (read after a daemon restart)."""
        return self.run_dir / f"{project_id}-{attempt}.exit"

    def marker_path(self, project_id: int) -> Path:
        """``$TMO_DONE_FILE`` of a project."""
        return self.run_dir / f"{project_id}.done"

    @property
    def socket_dir_private(self) -> bool:
        """True when the socket is not in the home (the ``tmo-<uid>`` fallback or ``TMO_TMUX_SOCKET``):
        its directory must then be closed to other users altogether, as tmux requires of its own."""
        return self.socket_path.parent != self.home.absolute()

    def check_dirs(self) -> bool:
        """Check the home and its subdirectories without creating or changing anything (read
        commands); False when there is no home. Raises :class:`UnsafePath` for one that others own
        or may write (``docs/security.md``)."""
        return check_home(self.home, (self.logs_dir, self.run_dir))

    def ensure_dirs(self) -> None:
        """Create the home and its subdirectories (0700), refuse them if others own or may write
        them, and make them private if others may read them."""
        try:
            ensure_home(self.home, (self.logs_dir, self.run_dir))
            if not os.access(self.home, os.R_OK | os.W_OK | os.X_OK):
                raise PermissionError(13, "Permission denied", str(self.home))
        except OSError as exc:
            raise ConfigError(
                f"cannot use TMO_HOME {self.home}: {exc.strerror or exc}; "
                "set TMO_HOME to a directory you can write"
            ) from exc


_DURATION_FIELDS = {"reconcile_interval", "db_poll_interval", "kill_grace", "host_lease",
                    "send_settle_delay", "agent_idle_after"}
#: Top-level config.toml keys read by :func:`tmux_orchestrator.dispatch.load_delivery`.
_DELIVERY_KEYS = {"hooks", "webhooks", "smtp", "emails", "hook_concurrency", "metrics"}
#: Fields of :class:`Settings` that neither config.toml nor a ``TMO_*`` variable sets.
_NOT_KEYS = {"home", "extra", "config_digest"}


def config_keys() -> list[str]:
    """Every top-level key config.toml may hold, sorted."""
    return sorted({f.name for f in fields(Settings)} - _NOT_KEYS | _DELIVERY_KEYS)


def load_settings(home: Path | str | None = None, database_url: str | None = None, *,
                  read_config: bool = True) -> Settings:
    """Build :class:`Settings`; explicit arguments win over ``TMO_*`` variables and config.toml.

    Raises :class:`ConfigError` for a config.toml that does not parse, or holds an unknown key or a
    bad value. ``read_config=False`` leaves the file unread (commands that must work whatever it
    holds: ``tmo daemon reload``, ``tmo doctor`` reporting it).
    """
    home_path = Path(home).expanduser() if home else default_home()
    settings = Settings(home=home_path.absolute())
    # The home is checked before config.toml is read: its hooks run commands (docs/security.md).
    values: dict[str, Any] = {}
    if read_config and settings.check_dirs():
        data = _read_config_bytes(settings.config_path)
        settings.config_digest = digest(data)
        values = _parse_config(settings.config_path, data)
    known = {f.name: f for f in fields(Settings) if f.name not in _NOT_KEYS}
    for key, raw in values.items():
        if key in _DELIVERY_KEYS:
            settings.extra[key] = raw
        elif key in known:
            setattr(settings, key, _coerce(key, raw, known[key].type, settings.config_path))
        else:
            raise ConfigError(_unknown_key(key, settings.config_path))
    for f in known.values():
        env = os.environ.get(f"TMO_{f.name.upper()}")
        if env is not None:
            setattr(settings, f.name, _coerce(f.name, env, f.type, f"TMO_{f.name.upper()}"))
    if database_url:
        settings.database_url = database_url
    if not settings.database_url:
        settings.database_url = f"sqlite:///{settings.home / 'tmo.db'}"
    if settings.orphan_policy not in ("kill", "keep"):
        raise ConfigError(f"orphan_policy must be 'kill' or 'keep', not {settings.orphan_policy!r}")
    if settings.reboot_policy not in ("requeue", "fail"):
        raise ConfigError(f"reboot_policy must be 'requeue' or 'fail', not {settings.reboot_policy!r}")
    if settings.sqlite_synchronous not in ("full", "normal"):
        raise ConfigError("sqlite_synchronous must be 'full' or 'normal'")
    # Values tmux itself checks only when a session is made: a typo would stop every start.
    if not 0 <= settings.history_limit <= _TMUX_INT_MAX:
        raise ConfigError(f"history_limit must be a number of lines from 0 to {_TMUX_INT_MAX}, "
                          f"not {settings.history_limit}")
    width, x, height = settings.window_size.partition("x")
    if not (x and width.isascii() and width.isdigit() and height.isascii() and height.isdigit()
            and 1 <= int(width) <= _TMUX_WINDOW_MAX and 1 <= int(height) <= _TMUX_WINDOW_MAX):
        raise ConfigError(f"window_size must be WIDTHxHEIGHT, each from 1 to {_TMUX_WINDOW_MAX} "
                          f"(e.g. \"200x50\"), not {settings.window_size!r}")
    # [[hooks]], [[webhooks]], [smtp], [[emails]] are read only where they are used: by the
    # daemon (at its start and on reload, which refuse a bad table in one line), `tmo daemon
    # reload` and `tmo doctor`. Checking them in every command cost 30-40 ms of every start.
    return settings


def _unknown_key(key: str, path: Path) -> str:
    """The error for an unknown top-level key: the key, a likely meant one, and every known one."""
    import difflib  # only on this error path

    keys = config_keys()
    if key == "home":
        return (f"{path}: 'home' cannot be set in config.toml (the file is in the home); "
                "set TMO_HOME or pass --home")
    close = difflib.get_close_matches(key, keys, n=1)
    meant = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {key!r} in {path}{meant}; known keys: {', '.join(keys)}"


def digest(data: bytes | None) -> str:
    """A short digest of config.toml's content; "" for no file."""
    if data is None:
        return ""
    import hashlib  # lazily: hashlib loads OpenSSL (a few ms), and most homes have no config file

    return hashlib.sha256(data).hexdigest()[:16]


def config_file_digest(settings: Settings) -> str:
    """The digest of config.toml as it is now (compared with :attr:`Settings.config_digest` of the
    daemon); raises :class:`ConfigError` when it cannot be read."""
    return digest(_read_config_bytes(settings.config_path))


def _read_config_bytes(path: Path) -> bytes | None:
    try:
        return read_config(path)  # refuses a link or a file others own or may write
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc


def _parse_config(path: Path, data: bytes | None) -> dict[str, Any]:
    if data is None:
        return {}  # no config file; an unusable home is reported by ensure_dirs()
    import tomllib  # lazily, for the same reason

    try:
        return tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"invalid config file {path}: {exc}; fix or remove it") from exc


def _patterns(raw: Any) -> tuple[str, ...]:
    """``env_exclude``: a TOML list of globs, or (``TMO_ENV_EXCLUDE``) a comma-separated string."""
    if isinstance(raw, str):
        raw = raw.split(",")
    if not isinstance(raw, list | tuple) or not all(isinstance(p, str) for p in raw):
        raise ValueError('expected a list of glob patterns, e.g. ["AWS_*", "*_TOKEN"]')
    return tuple(p.strip() for p in raw if p.strip())


def _coerce(name: str, raw: Any, kind: Any, where: object) -> Any:
    try:
        if name == "env_exclude":
            return _patterns(raw)
        if name in _DURATION_FIELDS:
            return parse_duration(str(raw))
        if kind in ("bool", bool):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError("expected true or false")
        if kind in ("float", float):
            return float(raw)
        if kind in ("int", int):
            return int(raw)
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid value {raw!r} for {name} in {where}: {exc}") from exc

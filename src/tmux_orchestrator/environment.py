"""The environment tmo gives the processes it starts: the tmux server (so every pane) and hooks,
and the caller's environment that ``tmo add`` captures for a project.

It is chosen, not inherited. The daemon's environment may hold secrets meant only for it (a webhook's
``secret_env``, the SMTP password, a database URL with a password); the tmux server's global
environment is copied into every pane, and a hook is a command of its own. So both start from the
variables named here, taken from the daemon's environment, and get the rest explicitly: a project
the environment captured from the shell that queued it, its ``--env`` and ``TMO_*`` variables
(through its wrapper), a hook its ``TMO_EVENT_*`` variables, its ``env`` table and the variables its
``pass_env`` names (``docs/security.md``).
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

#: Variables passed on from the daemon's environment: where things are, who the user is, the locale
#: and the desktop session (for notifications). Nothing here is a credential: not ``SSH_AUTH_SOCK``,
#: proxies (their URLs may carry a password), tokens, ``TMO_DATABASE_URL``.
BASE_ENV_VARS: tuple[str, ...] = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR",
    "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME",
    "DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS",
)
#: Prefixes of variables passed on as well (the locale categories ``LC_ALL``, ``LC_CTYPE``, ...).
BASE_ENV_PREFIXES: tuple[str, ...] = ("LC_",)


def base_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables of ``environ`` (default: ours) that :data:`BASE_ENV_VARS` and
    :data:`BASE_ENV_PREFIXES` name, with ``LANG`` defaulting to ``C.UTF-8``."""
    source = os.environ if environ is None else environ
    env = {k: v for k, v in source.items() if k in BASE_ENV_VARS or k.startswith(BASE_ENV_PREFIXES)}
    env.setdefault("LANG", "C.UTF-8")
    return env


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_env_name(key: str) -> bool:
    """True for a portable environment variable name (ASCII ``[A-Za-z_][A-Za-z0-9_]*``)."""
    return bool(_ENV_NAME.fullmatch(key))


#: Variables of the caller that ``tmo add`` never captures (globs), whatever ``env_exclude`` says:
#: they describe the caller's shell, terminal, login or service, and would be wrong, or break the
#: session, in a project that runs later in its own tmux pane.
NOT_CAPTURED: tuple[str, ...] = (
    "TMO_*",  # the caller's own tmo variables (a project's are set by its wrapper)
    "TMUX", "TMUX_PANE", "TMUX_TMPDIR",  # the caller's tmux, not the project's server
    # tmux sets the pane's terminal; a caller's TERM or size would garble a full-screen program
    "TERM", "TERM_PROGRAM", "TERM_PROGRAM_VERSION", "COLORTERM", "COLUMNS", "LINES",
    "PWD", "OLDPWD", "SHLVL", "_",  # the caller's shell
    # the caller's login: gone when it ends (pass an agent socket with --env on purpose)
    "SSH_AUTH_SOCK", "SSH_AGENT_PID", "SSH_CLIENT", "SSH_CONNECTION", "SSH_TTY",
    # a systemd unit's own: a project would talk to the caller's service manager
    "NOTIFY_SOCKET", "LISTEN_*", "WATCHDOG_*", "JOURNAL_STREAM", "INVOCATION_ID",
)


@dataclass(frozen=True)
class CapturedEnvironment:
    """What :func:`capture_environment` took, and what it could not."""

    #: The variables a project gets.
    env: dict[str, str]
    #: Variables that cannot travel, with why (an undecodable value, a name no shell can export).
    skipped: dict[str, str] = field(default_factory=dict)

    def warning(self) -> str | None:
        """One line naming the skipped variables, or None when nothing was skipped."""
        if not self.skipped:
            return None
        listed = ", ".join(f"{name} ({why})" for name, why in sorted(self.skipped.items()))
        return f"not passed to the project: {listed}; set one with --env if it is needed"


def capture_environment(environ: Mapping[str, str] | None = None,
                        exclude: Iterable[str] = ()) -> CapturedEnvironment:
    """The variables of ``environ`` (default: ours) that a project queued from it runs with:
    all but :data:`NOT_CAPTURED` and the ``exclude`` globs (``env_exclude``). A variable that cannot
    be passed on is skipped and named in :attr:`CapturedEnvironment.skipped`; none raises."""
    source = os.environ if environ is None else environ
    # One expression for every glob: a shell has about a hundred variables, `tmo add` runs often.
    excluded = re.compile("|".join(fnmatch.translate(p) for p in (*NOT_CAPTURED, *exclude)))
    env: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for name, value in source.items():
        if excluded.match(name):
            continue
        if name.startswith("BASH_FUNC_") and name.endswith("%%"):
            continue  # an exported bash function, not a variable: sh could not take it anyway
        if not is_env_name(name):
            skipped[name] = "not a variable name a shell can export"
        elif "\x00" in value:
            skipped[name] = "contains a NUL byte"
        elif not value.isprintable() and any("\ud800" <= c <= "\udfff" for c in value):
            skipped[name] = "not valid UTF-8"  # undecodable bytes, held as lone surrogates
        else:
            env[name] = value
    return CapturedEnvironment(env, skipped)

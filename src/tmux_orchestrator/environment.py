"""The environment tmo gives the processes it starts: the tmux server (so every pane) and hooks.

It is chosen, not inherited. The daemon's environment may hold secrets meant only for it (a webhook's
``secret_env``, the SMTP password, a database URL with a password); the tmux server's global
environment is copied into every pane, and a hook is a command of its own. So both start from the
variables named here, taken from the daemon's environment, and get the rest explicitly: a project
its ``--env`` and ``TMO_*`` variables (through its wrapper), a hook its ``TMO_EVENT_*`` variables, its
``env`` table and the variables its ``pass_env`` names (``docs/security.md``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

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

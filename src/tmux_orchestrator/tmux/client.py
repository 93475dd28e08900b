"""The one choke point for tmux calls: every tmux command of the package goes through :class:`Tmux`.

Commands are lists of words passed as argv (never through a shell). Several commands chain into one
tmux invocation with ``;`` separators, which costs one client start (~1.6 ms) instead of one per
command (``tmux-facts.md`` section 1). The server is always addressed by its own socket (``-S``) with
``-f /dev/null``, so the user's default server and ``~/.tmux.conf`` are never involved.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tmux_orchestrator.errors import (
    DuplicateSession,
    ServerNotRunning,
    SessionNotFound,
    TmuxError,
    TmuxNotFound,
)

log = logging.getLogger(__name__)

#: Oldest tmux this package supports: ``new-session -e`` and ``default-size`` need 3.0.
MIN_VERSION = (3, 0)
#: Keep one chained invocation below tmux's ~16 KB argv limit ("command too long").
MAX_CHAIN_BYTES = 12_000

Command = Sequence[str]


@dataclass(frozen=True)
class TmuxResult:
    """Output of one tmux invocation."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        """stdout split into lines (no trailing empty line)."""
        return self.stdout.splitlines()


def parse_version(text: str) -> tuple[int, int] | None:
    """``(3, 3)`` from ``tmux 3.3a``; ``None`` when the text names no version."""
    if "master" in text or ("next" in text and not re.search(r"\d", text)):
        return (99, 0)
    match = re.search(r"(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


@lru_cache(maxsize=8)
def check_tmux(binary: str = "tmux") -> str:
    """Return the tmux version string; raise :class:`TmuxNotFound` if missing or too old."""
    path = shutil.which(binary)
    if path is None:
        raise TmuxNotFound(
            f"tmux not found on PATH; install tmux >= {MIN_VERSION[0]}.{MIN_VERSION[1]} "
            "(e.g. apt install tmux, brew install tmux)"
        )
    try:
        out = subprocess.run([path, "-V"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise TmuxNotFound(f"cannot run {path} -V: {exc}") from exc
    version = parse_version(out)
    if version is None or version < MIN_VERSION:
        raise TmuxNotFound(
            f"tmux {'.'.join(map(str, MIN_VERSION))} or newer is required, found {out or 'unknown'} "
            f"at {path}"
        )
    return out


def escape_word(word: str) -> str:
    """Protect a word that ends in ``;`` from being read as a command separator by tmux."""
    return word[:-1] + "\\;" if word.endswith(";") else word


def chain(commands: Sequence[Command]) -> list[str]:
    """Join commands into one argv with ``;`` separators."""
    argv: list[str] = []
    for command in commands:
        if argv:
            argv.append(";")
        argv.extend(escape_word(w) for w in command)
    return argv


def _classify(stderr: str, command: list[str]) -> TmuxError:
    text = stderr.strip().splitlines()[-1] if stderr.strip() else "tmux failed"
    if "can't find session" in text or "can't find pane" in text or "can't find window" in text:
        return SessionNotFound(text, command=command)
    if "duplicate session" in text:
        return DuplicateSession(text, command=command)
    if "no server running" in text or "error connecting to" in text:
        return ServerNotRunning(text, command=command)
    return TmuxError(f"tmux: {text}", command=command)


class Tmux:
    """A client of one dedicated tmux server, addressed by socket path."""

    def __init__(
        self,
        socket_path: Path | str,
        *,
        binary: str = "tmux",
        server_env: Mapping[str, str] | None = None,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.binary = binary
        # The environment of the client that starts the server becomes the server's global
        # environment, which every pane inherits: so it is chosen, not whatever we happen to have.
        self.server_env = dict(server_env if server_env is not None else clean_environment())

    def argv(self, commands: Sequence[Command]) -> list[str]:
        """The full argv of one invocation running ``commands`` chained."""
        return [self.binary, "-u", "-S", str(self.socket_path), "-f", "/dev/null", *chain(commands)]

    def run(self, *commands: Command, check: bool = True, timeout: float = 30.0) -> TmuxResult:
        """Run ``commands`` in one invocation; raise a typed :class:`TmuxError` on failure."""
        check_tmux(self.binary)
        argv = self.argv(commands)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("tmux: %s", shlex.join(argv))
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                errors="replace",
                env=self.server_env,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise TmuxError(f"tmux did not answer within {timeout:.0f}s", command=argv) from exc
        except OSError as exc:
            raise TmuxNotFound(f"cannot run tmux: {exc}") from exc
        result = TmuxResult(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise _classify(proc.stderr, argv)
        return result

    def run_batched(self, commands: Sequence[Command], *, check: bool = False) -> list[TmuxResult]:
        """Run many independent commands in as few invocations as the argv limit allows.

        With ``check=False`` a failing command (say, a session that is already gone) does not stop
        the batch: tmux stops a chain at its first error, so the rest is re-run from there.
        """
        results: list[TmuxResult] = []
        pending = list(commands)
        while pending:
            batch: list[Command] = []
            size = 0
            for command in pending:
                words = sum(len(w.encode()) + 1 for w in command) + 2
                if batch and size + words > MAX_CHAIN_BYTES:
                    break
                batch.append(command)
                size += words
            result = self.run(*batch, check=check)
            results.append(result)
            if result.returncode == 0:
                pending = pending[len(batch) :]
            else:
                # tmux ran commands up to the failing one; we cannot tell which from the
                # exit code alone, so run the rest one at a time.
                for command in batch:
                    results.append(self.run(command, check=False))
                pending = pending[len(batch) :]
        return results

    def server_pid(self) -> int | None:
        """Pid of the running server, or None when no server answers on the socket."""
        try:
            out = self.run(["display-message", "-p", "-t", "=_tmo_keep:", "#{pid}"]).stdout.strip()
        except TmuxError:
            return None
        return int(out) if out.isdigit() else None


#: Variables that must not leak from the daemon's environment into project panes.
_DROP_VARS = ("TMUX", "TMUX_PANE", "TMO_PROJECT_ID", "TMO_DONE_FILE", "TMO_ATTEMPT")


def clean_environment() -> dict[str, str]:
    """The daemon's environment without variables that belong to another tmux or project."""
    env = {k: v for k, v in os.environ.items() if k not in _DROP_VARS}
    env.setdefault("LANG", "C.UTF-8")
    return env

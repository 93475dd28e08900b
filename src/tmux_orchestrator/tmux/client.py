"""The one choke point for tmux calls: every tmux command of the package goes through :class:`Tmux`.

Commands are lists of words passed as argv (never through a shell). Several commands chain into one
tmux invocation with ``;`` separators, which costs one client start (~1.6 ms) instead of one per
command (``tmux-facts.md`` section 1). The server is always addressed by its own socket (``-S``) with
``-f /dev/null``, so the user's default server and ``~/.tmux.conf`` are never involved.

Before every command the socket is checked as tmux checks its own: its directory must be ours and
not writable by others (not open to them at all outside the home), the socket ours. A client made
with an ``owner_mark`` also refuses a running server that does not carry this home's ``@tmo_home``
mark (set when the server is started), such as the user's own default server: nothing is sent to it.
"""

from __future__ import annotations

import logging
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tmux_orchestrator.environment import base_environment
from tmux_orchestrator.errors import (
    DuplicateSession,
    ForeignServer,
    ServerNotRunning,
    SessionNotFound,
    TmuxError,
    TmuxNotFound,
)
from tmux_orchestrator.home import check_socket, check_socket_dir, user_umask

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
        owner_mark: str | None = None,
        private_dir: bool = False,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.binary = binary
        # The environment of the client that starts the server becomes the server's global
        # environment, which every pane inherits: so it is chosen, not whatever we happen to have.
        self.server_env = dict(server_env if server_env is not None else clean_environment())
        #: The ``@tmo_home`` value a server must carry before anything is sent to it (None: no check).
        self.owner_mark = owner_mark
        #: The socket's directory must be closed to other users (it is not the home).
        self.private_dir = private_dir
        self._verified: tuple[int, int] | None = None

    def argv(self, commands: Sequence[Command]) -> list[str]:
        """The full argv of one invocation running ``commands`` chained."""
        return [self.binary, "-u", "-S", str(self.socket_path), "-f", "/dev/null", *chain(commands)]

    def run(self, *commands: Command, check: bool = True, timeout: float = 30.0,
            stdin: bytes | None = None) -> TmuxResult:
        """Run ``commands`` in one invocation; raise a typed :class:`TmuxError` on failure.

        ``stdin``: bytes given to tmux on its standard input (``load-buffer -b NAME -``), so text
        reaches a buffer exactly as it is, never through argv or tmux's command parser.

        Raises :class:`UnsafePath`/:class:`ForeignServer` (and sends nothing) when the socket, its
        directory or the server on it is not this home's.
        """
        check_tmux(self.binary)
        self._guard()
        return self._run(commands, check=check, timeout=timeout, stdin=stdin)

    def _guard(self) -> None:
        """Check the socket's directory and the socket; the first time a server answers on a socket
        file, check its ownership mark (a new server makes a new socket file: checked again)."""
        check_socket_dir(self.socket_path.parent, private=self.private_dir)
        info = check_socket(self.socket_path)
        if info is None or self.owner_mark is None or self._verified == (info.st_dev, info.st_ino):
            return
        self.check_owner(self.owner_mark)

    def check_owner(self, mark: str) -> bool:
        """True if a server marked ``@tmo_home = mark`` answers on the socket, False if no server
        does; raises :class:`ForeignServer` for any other server (nothing else is sent to it)."""
        check_socket_dir(self.socket_path.parent, private=self.private_dir)
        info = check_socket(self.socket_path)
        if info is None:
            return False
        result = self._run([["show-options", "-sqv", "@tmo_home"]], check=False, timeout=30.0)
        if result.returncode != 0:
            error = _classify(result.stderr, [])
            if isinstance(error, ServerNotRunning):
                return False  # a stale socket: the next command says so (or starts our server)
            raise error
        found = result.stdout.strip()
        if found != mark:
            what = f"its mark is {found!r}" if found else "it has no @tmo_home mark"
            raise ForeignServer(
                f"refusing tmux server on {self.socket_path}: not started by this home ({what}; "
                "it may be your own tmux server); fix: point TMO_TMUX_SOCKET elsewhere, or, only if "
                "an older tmo started it for this home, adopt it with "
                f"`tmux -S {self.socket_path} set-option -s @tmo_home {mark}`"
            )
        if mark == self.owner_mark:
            self._verified = (info.st_dev, info.st_ino)
        return True

    def _run(self, commands: Sequence[Command], *, check: bool, timeout: float,
             stdin: bytes | None = None) -> TmuxResult:
        argv = self.argv(commands)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("tmux: %s", shlex.join(argv))
        try:
            if stdin is None:
                proc = subprocess.run(
                    argv, capture_output=True, text=True, errors="replace", env=self.server_env,
                    timeout=timeout, stdin=subprocess.DEVNULL,
                    # A server started by this client, and so every pane, gets the user's umask:
                    # projects work in the user's directories, not in tmo's private home.
                    umask=user_umask(),
                )
                returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
            else:
                # Bytes, not text mode: text mode would encode with the locale's codec.
                raw = subprocess.run(argv, capture_output=True, env=self.server_env, timeout=timeout,
                                     input=stdin, umask=user_umask())
                returncode = raw.returncode
                stdout = raw.stdout.decode(errors="replace")
                stderr = raw.stderr.decode(errors="replace")
        except subprocess.TimeoutExpired as exc:
            raise TmuxError(f"tmux did not answer within {timeout:.0f}s", command=argv) from exc
        except OSError as exc:
            raise TmuxNotFound(f"cannot run tmux: {exc}") from exc
        result = TmuxResult(returncode, stdout, stderr)
        if check and returncode != 0:
            raise _classify(stderr, argv)
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
        """Pid of the running server, or None when no server answers on the socket (a server with
        no session at all answers too)."""
        try:
            out = self.run(["display-message", "-p", "#{pid}"]).stdout.strip()
        except TmuxError:
            return None
        return int(out) if out.isdigit() else None


def clean_environment() -> dict[str, str]:
    """The environment of the tmux server, so of every pane: only the variables named by
    :data:`~tmux_orchestrator.environment.BASE_ENV_VARS` (never the daemon's secrets, ``TMO_*`` or
    another tmux's ``TMUX``); each project adds its own through its wrapper."""
    return base_environment()

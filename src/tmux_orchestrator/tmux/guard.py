"""Is this home's tmux server alive? Asked of the server process, not of what happens to answer.

Three things look alike from a client and must not be confused:

* the **server died**: every session on it is gone, so its running projects are lost;
* someone killed only the **keeper session**: the server and every project session are fine, the
  keeper is simply created again;
* the **socket file was deleted** (tmp cleaners do that): the server and its sessions are fine but
  unreachable; tmux recreates its socket when it receives SIGUSR1.

So the guard remembers the server it talks to (pid and start time, also in the database for the
next daemon) and, when nothing answers on the socket, looks at that process: alive and still the
tmux server of this socket means the socket is gone, not the server.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from tmux_orchestrator.errors import TmuxError
from tmux_orchestrator.processes import is_running
from tmux_orchestrator.tmux.server import OrchestratorServer, ServerView

log = logging.getLogger(__name__)

#: Seconds to wait for tmux to recreate its socket after SIGUSR1.
SOCKET_WAIT = 2.0


@dataclass
class Look:
    """One checked look at the server."""

    #: ``alive``, ``dead`` (its process is gone) or ``unknown`` (tmux did not answer properly).
    state: str
    view: ServerView | None = None
    #: What was repaired on the way: ``keeper_restored``, ``socket_restored`` (event kinds).
    repaired: list[str] = field(default_factory=list)


class ServerGuard:
    """Looks at this home's server and repairs what can be repaired without losing a session."""

    def __init__(self, server: OrchestratorServer, known: str | None = None) -> None:
        self.server = server
        #: ``pid.start time`` of the server we last talked to.
        self.known = known
        #: Repairs made by any look (the launcher looks too) and not recorded as events yet.
        self._repairs: list[str] = []

    @property
    def socket_path(self) -> Path:
        """The server's socket."""
        return self.server.tmux.socket_path

    def look(self) -> Look:
        """List the server, telling a dead server from a lost keeper or socket."""
        repaired: list[str] = []
        try:
            view = self.server.view()
            if not view.reachable and self._restore_socket():
                repaired.append("socket_restored")
                self._repairs.append("socket_restored")
                view = self.server.view()
        except TmuxError as exc:
            log.warning("tmux did not answer: %s", exc)
            return Look("unknown", repaired=repaired)
        if not view.reachable:
            if self.known is not None and self._known_pid_alive():
                return Look("unknown", repaired=repaired)  # alive but unreachable: never "dead"
            return Look("dead", view, repaired)
        if view.instance is not None:
            self.known = view.instance
        if not view.keeper:
            try:
                self.server.restore_keeper()
                repaired.append("keeper_restored")
                self._repairs.append("keeper_restored")
                log.warning("the keeper session of the tmux server was gone; created it again")
            except TmuxError as exc:
                log.warning("cannot recreate the keeper session: %s", exc)
        return Look("alive", view, repaired)

    def take_repairs(self) -> list[str]:
        """The repairs made since the last call (to be recorded as events)."""
        repairs, self._repairs = self._repairs, []
        return repairs

    def _known_pid_alive(self) -> bool:
        pid = _pid_of(self.known)
        return pid is not None and is_running(pid) and self._is_our_server(pid)

    def _is_our_server(self, pid: int) -> bool:
        """True if ``pid`` is the tmux server of our socket (its command line names the socket;
        without /proc, a live pid we started is taken as ours)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            return not Path("/proc/self").exists()
        except OSError:
            return False
        return b"tmux" in cmdline and os.fsencode(self.socket_path) in cmdline

    def _restore_socket(self) -> bool:
        """If the known server lives on but its socket is gone, have tmux recreate it."""
        pid = _pid_of(self.known)
        if pid is None or self.socket_path.exists() or not is_running(pid) or not self._is_our_server(pid):
            return False
        log.warning("the tmux socket %s was deleted while its server (pid %s) runs; restoring it",
                    self.socket_path, pid)
        try:
            os.kill(pid, signal.SIGUSR1)
        except OSError:
            return False
        deadline = time.monotonic() + SOCKET_WAIT
        while time.monotonic() < deadline:
            if self.socket_path.exists():
                return True
            time.sleep(0.01)
        return False


def _pid_of(instance: str | None) -> int | None:
    text = (instance or "").split(".", 1)[0]
    return int(text) if text.isdigit() else None

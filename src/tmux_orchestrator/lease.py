"""One daemon per host and database: a lease in the ``hosts`` table, renewed by heartbeats.

The ``flock`` on ``daemon.lock`` keeps a second daemon off a *home*; it cannot see a daemon of
another home pointed at the same database (``--database-url``), which would judge the first one's
running projects by its own tmux server, find them missing, fail them ``lost`` and run their retries
beside them. So a daemon also takes its host's row in ``hosts`` (home, pid and the process's start
time, labels, and a heartbeat by the database's clock) and refuses to start while a live daemon
holds it. A lease whose holder died (on this machine: its pid no longer runs the same process; on
another: no heartbeat for ``host_lease``) is taken over. A daemon whose heartbeat finds the lease no
longer its own (another daemon took it, or other hosts declared it dead) must fence itself before it
goes on: see :mod:`tmux_orchestrator.daemon`.
"""

from __future__ import annotations

import logging
import os
import socket

from tmux_orchestrator.config import Settings
from tmux_orchestrator.errors import DatabaseInUse
from tmux_orchestrator.processes import is_same_process, process_start
from tmux_orchestrator.redact import redact_url
from tmux_orchestrator.store.base import Host, Store
from tmux_orchestrator.timestamps import format_time

log = logging.getLogger(__name__)

#: A host not heard from for this long is dead (``host_lease`` in config.toml, ``TMO_HOST_LEASE``).
DEFAULT_HOST_LEASE = 30.0


class DaemonLease:
    """This daemon's hold on its host's row in ``hosts``."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        pid = os.getpid()
        self.host = Host(name=settings.host, runner=settings.runner, home=str(settings.home), pid=pid,
                         owner=f"{socket.gethostname()}:{pid}:{process_start(pid)}",
                         labels=sorted(settings.labels))

    @property
    def name(self) -> str:
        """This host's name in the queue."""
        return self.host.name

    def acquire(self) -> None:
        """Take the lease or raise :class:`DatabaseInUse` naming the daemon that holds it."""
        holder = self.store.register_host(self.host, holder_gone=self.holder_gone)
        if holder is not None:
            since = format_time(holder.started_at) if holder.started_at else "?"
            raise DatabaseInUse(
                f"database {redact_url(self.settings.database_url)} is already run as host "
                f"{holder.name} by the daemon of home {holder.home} (pid {holder.pid}, since {since}); "
                "stop that daemon, give this one another TMO_HOST, or give this home a database of its "
                "own", holder.pid)

    def renew(self) -> bool:
        """Heartbeat; False when the lease is no longer ours (this daemon must fence itself)."""
        return self.store.heartbeat(self.host.name, self.host.owner)

    def release(self) -> None:
        """Give the lease up."""
        self.store.unregister_host(self.host.name, self.host.owner)

    def holder_gone(self, holder: Host) -> bool:
        """True when the daemon holding ``holder``'s lease is known to be dead."""
        machine, _, rest = holder.owner.partition(":")
        pid, _, start = rest.partition(":")
        if machine == socket.gethostname() and pid.isdigit():
            return not is_same_process(int(pid), start)
        return holder.silent_for is None or holder.silent_for > self.settings.host_lease

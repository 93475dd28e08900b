"""One daemon per database and host: a lease row in the database itself.

The ``flock`` on ``daemon.lock`` keeps a second daemon off a *home*; it cannot see a daemon of
another home pointed at the same database (``--database-url``), which would judge the first one's
running projects by its own tmux server, find them missing, fail them ``lost`` and run their retries
beside them. So the daemon also takes this host's row in ``daemon_leases`` (host, home, pid and the
process's start time, and a heartbeat) and refuses to start while a live process holds it. A lease
whose holder died (on this host: its pid no longer runs the same process) is taken over at once; a
daemon that finds its lease taken stops without touching anything.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import UTC, datetime

from tmux_orchestrator.config import Settings
from tmux_orchestrator.errors import DatabaseInUse
from tmux_orchestrator.processes import is_same_process, process_start
from tmux_orchestrator.store.base import Lease, Store
from tmux_orchestrator.store.rows import parse_time_or_none

log = logging.getLogger(__name__)

#: A lease of another host not renewed for this long is taken over (heartbeats come every
#: ``reconcile_interval``, 2 s by default).
LEASE_TTL = 60.0


class DaemonLease:
    """This daemon's hold on its host's row in ``daemon_leases``."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        pid = os.getpid()
        self.lease = Lease(host=settings.host, runner=settings.runner, home=str(settings.home), pid=pid,
                           owner=f"{socket.gethostname()}:{pid}:{process_start(pid)}",
                           started_at="", heartbeat_at="")

    def acquire(self) -> None:
        """Take the lease or raise :class:`DatabaseInUse` naming the daemon that holds it."""
        holder = self.store.take_lease(self.lease, holder_gone=self.holder_gone)
        if holder is not None:
            raise DatabaseInUse(
                f"database {self.settings.database_url} is already run on host {holder.host} by the "
                f"daemon of home {holder.home} (pid {holder.pid}, since {holder.started_at[:19]}); "
                "stop that daemon, or give this home a database of its own", holder.pid)

    def renew(self) -> bool:
        """Heartbeat; False when another daemon has taken the lease (this one must stop)."""
        return self.store.renew_lease(self.lease.host, self.lease.owner)

    def release(self) -> None:
        """Give the lease up."""
        self.store.drop_lease(self.lease.host, self.lease.owner)

    @staticmethod
    def holder_gone(lease: Lease) -> bool:
        """True when the process that holds ``lease`` is known to be dead."""
        host, _, rest = lease.owner.partition(":")
        pid, _, start = rest.partition(":")
        if host == socket.gethostname() and pid.isdigit():
            return not is_same_process(int(pid), start)
        beat = parse_time_or_none(lease.heartbeat_at)
        return beat is None or (datetime.now(UTC) - beat).total_seconds() > LEASE_TTL

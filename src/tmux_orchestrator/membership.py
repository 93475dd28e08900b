"""This daemon as one host of the queue: its lease, its heartbeat, and what it owes the others.

Every host's daemon holds a lease on its row of ``hosts`` and renews it on every reconcile pass (the
database's clock decides, never the host's). On the same passes it:

* **expires dead hosts**: a host silent for longer than ``host_lease`` (30 s) is dead; its running
  projects fail ``lost`` (and are retried elsewhere by their policy), in one transaction, by
  whichever host notices first;
* **fences itself** when its own lease is gone: if the others declared it dead (a partition, a
  suspended VM), its projects were taken from it, so before it claims anything again it stops every
  session whose project it no longer holds (reconcile does that: those rows are no longer its own);
  and on a shared database (PostgreSQL), when it cannot renew its lease for half the lease time it
  stops its running sessions itself, without the database, before the others may run them again;
* **elects the dispatcher**: hooks, webhooks and e-mails are delivered by one host, the first alive
  host by name, so an event is delivered once by the queue, not once per host (delivery stays at
  least once: a dispatcher that dies mid-delivery leaves the event to the next). The elected host
  delivers only while its lease is fresh (:meth:`Membership.may_deliver`, asked before every
  delivery): cut off from the database, it stops at half the lease, before the others can count it
  dead and elect another, so two hosts never deliver side by side.
"""

from __future__ import annotations

import logging
import time

from tmux_orchestrator.config import Settings
from tmux_orchestrator.errors import OrchestratorError
from tmux_orchestrator.lease import DaemonLease
from tmux_orchestrator.project import Project
from tmux_orchestrator.store.base import Host, Store

log = logging.getLogger(__name__)


class Membership:
    """This daemon's place among the hosts of its database."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.lease = DaemonLease(store, settings)
        #: Monotonic time of the last heartbeat the database took.
        self.last_beat = time.monotonic()
        #: This host won the last election of the dispatcher (:meth:`elect`).
        self.elected = False

    @property
    def name(self) -> str:
        """This host's name."""
        return self.lease.name

    def join(self, concurrency: int | None) -> None:
        """Take this host's lease (:class:`DatabaseInUse` if a live daemon holds it)."""
        self.lease.acquire()
        if concurrency is not None:
            self.store.set_host(self.name, concurrency=concurrency)
            # the default for the API's own claims and for hosts that never set one
            self.store.set_setting("concurrency", str(concurrency))
        self.last_beat = time.monotonic()

    def leave(self) -> None:
        """Give the lease up (a clean stop)."""
        self.lease.release()

    def beat(self) -> bool:
        """Renew the lease. False when it had been lost and could be taken again: this host was
        declared dead, so it must fence itself before it claims anything. Raises
        :class:`DatabaseInUse` when another live daemon now holds this host's name, and
        :class:`OrchestratorError` when the database does not answer."""
        if self.lease.renew():
            self.last_beat = time.monotonic()
            return True
        # Declared dead: another host may hold the dispatcher role by now. Step down before the
        # lease is taken again (which makes it fresh), so no delivery slips in between.
        self.elected = False
        log.error("host %s lost its lease (the other hosts declared it dead, or another daemon took "
                  "it); taking it again, then stopping whatever was taken from it", self.name)
        self.lease.acquire()
        self.last_beat = time.monotonic()
        return False

    def silent_too_long(self) -> bool:
        """True when this host could not renew its lease for half the lease time: on a shared
        database the others may soon count it dead and run its projects again."""
        return time.monotonic() - self.last_beat > self.settings.host_lease / 2

    def expire_others(self) -> list[Project]:
        """Declare hosts silent for longer than the lease dead; returns their lost projects."""
        lost = self.store.expire_hosts(self.settings.host_lease, source="daemon")
        for project in lost:
            log.warning("project %s lost: host %s stopped renewing its lease", project.id, project.host,
                        extra={"project_id": project.id, "session_name": project.session_name})
        return lost

    def controls(self) -> tuple[int, bool]:
        """This host's concurrency, and whether it should claim nothing (queue or host paused)."""
        me = self.me()
        concurrency = me.concurrency if me is not None and me.concurrency > 0 else self.store.concurrency()
        paused = self.store.get_setting("paused", "0") == "1" or (me is not None and me.paused)
        return concurrency, paused

    def me(self) -> Host | None:
        """This host's row."""
        for host in self.store.hosts():
            if host.name == self.name:
                return host
        return None

    def elect(self) -> bool:
        """Decide whether this host delivers events, and remember it (:attr:`elected`). The role
        stays with the host that has it while that host is alive (the ``dispatcher`` setting); when
        it is not, the first alive host by name takes it. A host that cannot ask steps down."""
        try:
            alive = sorted(h.name for h in self.store.hosts() if is_alive(h, self.settings.host_lease))
            holder = self.store.get_setting("dispatcher")
            if holder in alive:
                self.elected = holder == self.name
            elif not alive or alive[0] == self.name:
                self.store.set_setting("dispatcher", self.name)
                self.elected = True
            else:
                self.elected = False
        except OrchestratorError:
            self.elected = False
        return self.elected

    def may_deliver(self) -> bool:
        """True while this host is the elected dispatcher and its lease is fresh. The others
        elect a new dispatcher only once this host was silent for the whole lease; it stops at
        half of it, so the two never overlap (the event in flight is delivered again by the next
        dispatcher: at least once)."""
        return self.elected and not self.silent_too_long()


def is_alive(host: Host, lease: float) -> bool:
    """True while ``host``'s daemon holds its lease: not stopped, not expired, heard from lately."""
    return host.is_alive(lease)

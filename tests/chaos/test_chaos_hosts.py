"""Chaos on PostgreSQL with three hosts: 300 projects while daemons are SIGKILLed on random hosts,
tmux servers are killed, and one host is cut off from the database for longer than its lease.

At the end: nothing lost (every project ended), no attempt alive on two hosts or twice at once (a
ledger the projects write), never more projects running than the hosts' slots, no session left on
any host, an unbroken status-event chain per project, and every event a hook asked for delivered
(at least once: more than once only for the delivery in flight when the delivering host was
killed or cut off, never because two hosts delivered side by side).
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from acceptance.proxy import CuttableProxy
from chaos.support import DaemonProcess
from faults.support import Ledger
from tmux_orchestrator.config import Settings, load_settings
from tmux_orchestrator.orchestrator import Orchestrator
from tmux_orchestrator.project import ProjectStatus
from tmux_orchestrator.testing import (
    end_marked_processes,
    end_tmux_server,
    fresh_postgres_database,
    retry_until,
)
from tmux_orchestrator.tmux import OrchestratorServer, Tmux

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

STATUS_KINDS = {"queued", "started", "completed", "failed", "cancelled", "retried", "requeued"}
HOSTS = ("alpha", "beta", "gamma")
CONCURRENCY = 3
LEASE = "5s"


class HostProcess(DaemonProcess):
    """One host: a home, and its ``tmo daemon run`` as a child the test may SIGKILL at any moment."""

    def __init__(self, name: str, database_url: str, hook_out: Path) -> None:
        self.name = name
        self.home = Path(tempfile.mkdtemp(prefix=f"tmo-chaos-{name}-"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TMO_")}
        self.env.update(TMO_HOME=str(self.home), TMO_HOST=name, TMO_DATABASE_URL=database_url,
                        TMO_HOST_LEASE=LEASE, TMO_RECONCILE_INTERVAL="0.5")
        (self.home / "config.toml").write_text(
            '[[hooks]]\nname = "ends"\non = ["completed", "failed", "cancelled"]\n'
            f'command = ["sh", "-c", "echo $TMO_EVENT_ID $DELIVERER >> {hook_out}"]\n'
            f'env = {{ DELIVERER = "{name}" }}\n')
        (self.home / "config.toml").chmod(0o600)
        super().__init__(self.home, self.env, concurrency=CONCURRENCY, log_name="daemon.log", stop_wait=15)

    @property
    def settings(self) -> Settings:
        return load_settings(self.home, self.env["TMO_DATABASE_URL"])

    def _server(self) -> OrchestratorServer:
        """This host's tmux server, without its database (beta's may be cut off)."""
        settings = self.settings
        tmux = Tmux(settings.socket_path, owner_mark=settings.owner_tag)
        return OrchestratorServer(tmux, settings.owner_tag)

    def server_pid(self) -> int | None:
        return self._server().tmux.server_pid()

    def owned_sessions(self) -> list[str]:
        return [s.name for s in self._server().list_owned()]

    def close(self) -> None:
        self.stop()
        end_tmux_server(self.settings.socket_path)
        end_marked_processes(self.home)
        shutil.rmtree(self.home, ignore_errors=True)


def test_three_hosts_on_postgres_keep_every_invariant() -> None:
    rng = random.Random(20261201)
    with fresh_postgres_database() as url:
        parts = urlsplit(url)
        proxy = CuttableProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
        netloc = f"{parts.username or 'postgres'}@127.0.0.1:{proxy.port}"
        via_proxy = urlunsplit(parts._replace(netloc=netloc))
        hook_out = Path(tempfile.mkdtemp(prefix="tmo-chaos-hook-")) / "delivered"
        ledger = Ledger(Path(tempfile.mkdtemp(prefix="tmo-chaos-ledger-")))
        hosts = {name: HostProcess(name, via_proxy if name == "beta" else url, hook_out) for name in HOSTS}
        api = Orchestrator(load_settings(hosts["alpha"].home, url))
        try:
            enqueued = []
            for n in range(300):
                code = 1 if n % 10 == 3 else 0
                seconds = rng.uniform(1.0, 2.5) if n % 10 == 5 else rng.uniform(0.02, 0.4)
                project = api.enqueue(ledger.command(f"sleep:{seconds:.3f}:{code}",
                                                     limit=CONCURRENCY * len(HOSTS)),
                                      name=f"chaos {n}", project_path=hosts["alpha"].home,
                                      max_retries=1 if n % 3 == 0 else 0, retry_delay=0.1)
                enqueued.append(project.id)
            for host in hosts.values():
                host.start()
            server_kills = 0
            dispatcher_kills = 0  # the event in flight may be delivered again by the next one
            partitioned = False
            deadline = time.monotonic() + 400
            round_number = 0
            while time.monotonic() < deadline and round_number < 14:
                round_number += 1
                time.sleep(rng.uniform(0.8, 2.0))
                victim = hosts[rng.choice(HOSTS)]
                if round_number in (4, 10) and victim.server_pid():
                    pid = victim.server_pid()
                    if pid:
                        os.kill(pid, signal.SIGKILL)
                        server_kills += 1
                if round_number == 7 and not partitioned:
                    proxy.cut()  # beta's database is gone for longer than its lease
                    time.sleep(9.0)
                    proxy.heal()
                    partitioned = True
                    continue
                if api.store.get_setting("dispatcher") == victim.name:
                    dispatcher_kills += 1
                victim.kill()
                time.sleep(rng.uniform(0.0, 0.5))
                victim.start()

            def settled() -> bool:
                active = api.list_projects([ProjectStatus.QUEUED, ProjectStatus.PROCESSING])
                return not active and not api.store.open_sessions() and not any(
                    h.owned_sessions() for h in hosts.values())

            try:
                retry_until(settled, timeout=240, interval=0.5, message="the queue to drain on every host")
            except BaseException:
                for p in api.list_projects([ProjectStatus.QUEUED, ProjectStatus.PROCESSING]):
                    print("ACTIVE", p.id, p.status.value, p.host, p.runner, p.session_name, p.session_id,
                          p.session_closed_at, p.not_before, p.attempt)
                for p in api.store.open_sessions():
                    print("OPEN", p.id, p.status.value, p.host, p.session_name)
                for h in hosts.values():
                    print("OWNED", h.name, h.owned_sessions(), h.proc.poll() if h.proc else None)
                for row in api.store.hosts():
                    print("HOST", row)
                print("CLAIMS", api.store.claims())
                raise
            time.sleep(8.0)  # a second occurrence (an event, a kill) needs time to show up
        finally:
            for host in hosts.values():
                host.stop()
            proxy.close()

        assert partitioned and server_kills >= 1
        projects = {p.id: p for p in api.list_projects()}
        # Nothing lost: every project is there and ended.
        assert set(enqueued) <= set(projects)
        assert all(p.status.is_terminal for p in projects.values())
        # From what really ran: no attempt twice at once, on one host or two; never more running
        # than the hosts' slots; no attempt started twice.
        assert ledger.violations() == []
        starts = Counter((p, a) for p, a, _, _ in ledger.starts())
        assert [key for key, count in starts.items() if count > 1] == []
        # No session left on any host.
        assert all(host.owned_sessions() == [] for host in hosts.values())
        # One unbroken chain of status events per project.
        events = api.store.events_after(0, limit=1_000_000)
        chains: dict[int, list[tuple[str | None, str | None]]] = {}
        for event in events:
            if event.kind in STATUS_KINDS and event.project_id is not None:
                chains.setdefault(event.project_id, []).append((event.old_status, event.new_status))
        for project_id, project in projects.items():
            chain = chains[project_id]
            assert chain[0] == (None, "queued"), (project_id, chain)
            for (_, previous), (old, _) in itertools.pairwise(chain):
                assert old == previous, (project_id, chain)
            assert chain[-1][1] == project.status.value, (project_id, chain)
        # Every end was delivered to the hook; a repeat only where the delivering host was killed
        # or cut off (the partition), one at most each time.
        wanted = {e.id for e in events if e.kind in ("completed", "failed", "cancelled")}
        lines = [line.split() for line in hook_out.read_text().splitlines() if line.strip()]
        delivered = Counter(int(event_id) for event_id, _ in lines)
        by_host = Counter(host for _, host in lines)
        assert wanted <= set(delivered), sorted(wanted - set(delivered))[:10]
        repeats = sum(count - 1 for count in delivered.values())
        assert repeats <= dispatcher_kills + 1, (repeats, dispatcher_kills, by_host, [
            (event_id, host) for event_id, host in lines if delivered[int(event_id)] > 1][:40])
        hosts_used = Counter(p.host for p in projects.values())
        print(f"projects {len(projects)} on {dict(hosts_used)}, daemon kills "
              f"{sum(h.kills for h in hosts.values())} ({dispatcher_kills} of the dispatcher), "
              f"server kills {server_kills}, partition "
              f"{partitioned}, events {len(events)}, hook deliveries {sum(delivered.values())} "
              f"({repeats} repeated): "
              f"{dict(Counter(f'{p.status.value}/{p.outcome}' for p in projects.values()))}")
        api.close()
        for host in hosts.values():
            host.close()
        shutil.rmtree(hook_out.parent, ignore_errors=True)

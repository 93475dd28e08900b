"""Several hosts, one queue: work spreads, pins and labels hold, control crosses hosts, a dead host's
projects are retried elsewhere, and a host that comes back fences itself before it claims.

Each host is a home with its own tmux server, daemon and ``TMO_HOST`` on one machine, all on one
database (``hosts.py``). The lease is 5 s here instead of 30 s, so a dead host is noticed quickly.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from acceptance.hosts import Cluster, Host
from acceptance.proxy import CuttableProxy
from acceptance.support import pid_alive
from faults.support import Ledger
from tmux_orchestrator.testing import retry_until


def _running_on(host: Host, project: int) -> bool:
    data = host.tmo.project(project)
    return data["status"] == "processing" and data["host"] == host.name and data["session_name"] in \
        host.tmo.tmux_session_names()


def _gate(host: Host) -> tuple[Path, list[str]]:
    work = host.home / "work"
    work.mkdir(exist_ok=True)
    return work / "gate", ["sh", "-c", f"while [ ! -e {work / 'gate'} ]; do sleep 0.05; done"]


def test_work_spreads_over_hosts(cluster: Cluster) -> None:
    a, b = cluster.host("alpha"), cluster.host("beta")
    gate, command = _gate(a)
    ids = [a.tmo.add(*command, options=["--name", f"p{n}"]) for n in range(2)]
    a.daemon.start("--concurrency", "1")
    b.daemon.start("--concurrency", "1")
    retry_until(lambda: {a.tmo.project(i)["host"] for i in ids} == {"alpha", "beta"}
                and all(a.tmo.status_of(i) == "processing" for i in ids), timeout=20,
                message="one project on each host")
    hosts = {h["name"]: h for h in a.tmo.json("hosts")}
    assert hosts["alpha"]["alive"] and hosts["beta"]["alive"]
    assert hosts["alpha"]["running"] == hosts["beta"]["running"] == 1
    gate.touch()
    for project in ids:
        assert a.tmo.wait_status(project, "completed", timeout=20)["status"] == "completed"


def test_pinned_and_labelled_projects_run_only_where_they_may(cluster: Cluster) -> None:
    a, b = cluster.host("alpha"), cluster.host("beta", labels="gpu,big")
    pinned = a.tmo.add("true", options=["--host", "alpha", "--name", "pinned"])
    gpu = a.tmo.add("true", options=["--requires", "gpu", "--name", "gpu"])
    both = a.tmo.add("true", options=["--requires", "gpu,big", "--name", "both"])
    nowhere = a.tmo.add("true", options=["--requires", "tpu", "--name", "nowhere"])
    b.daemon.start("--concurrency", "2")
    a.daemon.start("--concurrency", "2")
    for project, where in ((pinned, "alpha"), (gpu, "beta"), (both, "beta")):
        done = a.tmo.wait_status(project, "completed", timeout=20)
        assert done["host"] == where, done
    time.sleep(3.0)
    assert a.tmo.status_of(nowhere) == "queued"


def test_cancel_and_sql_from_another_host_reach_the_owning_host(cluster: Cluster) -> None:
    a, b = cluster.host("alpha"), cluster.host("beta")
    b.daemon.start("--concurrency", "2")
    first = b.tmo.add("sleep", "600", options=["--name", "first"])
    second = b.tmo.add("sleep", "600", options=["--name", "second"])
    retry_until(lambda: _running_on(b, first) and _running_on(b, second), timeout=20,
                message="both projects to run on beta")
    sessions = {p: b.tmo.project(p)["session_name"] for p in (first, second)}
    a.tmo.ok("cancel", str(first))  # from alpha, which runs no daemon and has no such session
    cluster.sql(f"UPDATE project_queue SET status='completed' WHERE id={second}")
    for project in (first, second):
        retry_until(lambda p=project: sessions[p] not in b.tmo.tmux_session_names(),  # type: ignore[misc]
                    timeout=20, message="beta to kill the session")
    retry_until(lambda: sorted(e["project_id"] for e in a.tmo.events() if e["kind"] == "session_killed")
                == [first, second], timeout=10, message="one kill event each, written by beta")


def test_a_dead_hosts_projects_are_retried_elsewhere(cluster: Cluster) -> None:
    a, b = cluster.host("alpha"), cluster.host("beta")
    b_pid = b.daemon.start("--concurrency", "1")
    project = b.tmo.add("sleep", "600", options=["--name", "doomed", "--max-retries", "1"])
    retry_until(lambda: _running_on(b, project), timeout=20, message="the project to run on beta")
    a.daemon.start("--concurrency", "1")
    os.kill(b_pid, signal.SIGKILL)  # the machine dies: its daemon and its tmux server
    b.tmo.end_server()
    retry_until(lambda: _running_on(a, project), timeout=40, message="the retry to run on alpha")
    data = a.tmo.project(project)
    assert (data["attempt"], data["retry_count"]) == (2, 1)
    lost = [e for e in a.tmo.events() if e["project_id"] == project and e["outcome"] == "lost"]
    assert len(lost) == 1 and "beta" in (lost[0]["message"] or ""), lost
    hosts = {h["name"]: h for h in a.tmo.json("hosts")}
    assert not hosts["beta"]["alive"] and hosts["beta"]["state"] == "dead (lease expired)"


def test_a_host_that_comes_back_fences_itself_before_it_claims(cluster: Cluster) -> None:
    a, b = cluster.host("alpha"), cluster.host("beta")
    b_pid = b.daemon.start("--concurrency", "1")
    project = b.tmo.add("sleep", "600", options=["--name", "taken", "--max-retries", "1"])
    retry_until(lambda: _running_on(b, project), timeout=20, message="the project to run on beta")
    session = b.tmo.project(project)["session_name"]
    pane = int(b.tmo.tmux("display-message", "-p", "-t", f"={session}:", "#{pane_pid}").stdout.strip())
    server = b.tmo.server_pid()
    assert server is not None
    # beta is suspended as a whole (a VM paused): daemon, tmux server and project
    for pid in (b_pid, server):
        os.kill(pid, signal.SIGSTOP)
    os.killpg(pane, signal.SIGSTOP)
    a.daemon.start("--concurrency", "1")
    try:
        retry_until(lambda: _running_on(a, project), timeout=40, message="the retry to run on alpha")
        late = b.tmo.add("true", options=["--host", "beta", "--name", "late"])
    finally:
        os.killpg(pane, signal.SIGCONT)
        for pid in (server, b_pid):
            os.kill(pid, signal.SIGCONT)
    # beta comes back: it must stop the attempt that was taken from it, and only then claim again
    retry_until(lambda: not pid_alive(pane), timeout=20, message="beta to stop the taken attempt")
    done = b.tmo.wait_status(late, "completed", timeout=30)
    assert done["host"] == "beta"
    assert _running_on(a, project), "the retry on alpha must be untouched"
    events = a.tmo.events()
    assert "host_fenced" in [e["kind"] for e in events]
    stopped = [e["id"] for e in events if e["project_id"] == project and e["session_name"] == session
               and e["kind"] in ("session_killed", "lingering_cleaned")]
    started = [e["id"] for e in events if e["project_id"] == late and e["kind"] == "started"]
    assert len(stopped) == 1 and started and stopped[0] < started[0], (stopped, started)


def test_a_hook_runs_once_for_the_queue_not_once_per_host(cluster: Cluster) -> None:
    a, b = cluster.host("alpha"), cluster.host("beta")
    out = a.home.parent / f"hook-{a.name}-{b.name}.out"
    for host in (a, b):
        (host.home / "config.toml").write_text(
            '[[hooks]]\nname = "note"\non = ["completed"]\n'
            f'command = ["sh", "-c", "cat >> {out}; echo >> {out}"]\n')
        (host.home / "config.toml").chmod(0o600)
    a.daemon.start()
    b.daemon.start()
    ids = [a.tmo.add("true", options=["--name", f"n{n}"]) for n in range(4)]
    for project in ids:
        a.tmo.wait_status(project, "completed", timeout=20)
    retry_until(lambda: out.exists() and out.read_text().count('"kind": "completed"') >= 4, timeout=20,
                message="the hook to run for each project")
    time.sleep(5.0)  # a second delivery would show by now
    assert out.read_text().count('"kind": "completed"') == 4, out.read_text()
    out.unlink()


def test_a_partitioned_host_stops_its_projects_before_they_run_elsewhere(postgres_cluster: Cluster) -> None:
    # A partition needs a database on the network: PostgreSQL only (SQLite is one machine's file).
    cluster = postgres_cluster
    ledger = Ledger(Path(tempfile.mkdtemp(prefix="tmo-ledger-")))
    parts = urlsplit(cluster.database_url)
    proxy = CuttableProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    try:
        netloc = f"{parts.username or 'postgres'}@127.0.0.1:{proxy.port}"
        through_proxy = urlunsplit(parts._replace(netloc=netloc))
        a, b = cluster.host("alpha"), cluster.host("beta", database_url=through_proxy)
        b.daemon.start("--concurrency", "1")
        project = b.tmo.add(*ledger.command("sleep:600"), options=["--name", "cut-off", "--max-retries", "1"])
        retry_until(lambda: _running_on(b, project), timeout=20, message="the project to run on beta")
        a.daemon.start("--concurrency", "1")
        proxy.cut()  # beta's daemon lives on, but its database is gone
        retry_until(lambda: len(ledger.starts()) >= 2, timeout=60, message="the retry to start on alpha")
        assert a.tmo.project(project)["host"] == "alpha"
        assert ledger.violations() == [], "the project ran on both hosts at once"
        proxy.heal()
        retry_until(lambda: {h["name"]: h for h in a.tmo.json("hosts")}["beta"]["alive"], timeout=60,
                    message="beta to come back")
        time.sleep(3.0)
        assert _running_on(a, project)
        kinds = [(e["kind"], e["session_name"]) for e in a.tmo.events() if e["project_id"] == project]
        assert ("session_killed", f"cut-off-{project}") in kinds, kinds
    finally:
        proxy.close()


def test_a_partitioned_dispatcher_steps_down_and_delivers_nothing_twice(postgres_cluster: Cluster) -> None:
    # beta delivers the hooks; it is cut off, alpha takes the role over and delivers what ends
    # meanwhile; when beta comes back it must not deliver those again (it did: its channel went on
    # from its own stale cursor until its next election).
    cluster = postgres_cluster
    parts = urlsplit(cluster.database_url)
    proxy = CuttableProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    try:
        netloc = f"{parts.username or 'postgres'}@127.0.0.1:{proxy.port}"
        through_proxy = urlunsplit(parts._replace(netloc=netloc))
        a, b = cluster.host("alpha"), cluster.host("beta", database_url=through_proxy)
        out = a.home.parent / f"hook-{a.name}-{b.name}.out"
        for host in (a, b):
            (host.home / "config.toml").write_text(
                '[[hooks]]\nname = "note"\non = ["completed"]\n'
                f'command = ["sh", "-c", "echo \\"$TMO_EVENT_PROJECT_ID $TMO_EVENT_ID\\" >> {out}"]\n')
            (host.home / "config.toml").chmod(0o600)
        def dispatcher() -> str:
            return next((h["name"] for h in a.tmo.json("hosts") if h["dispatcher"]), "")

        b.daemon.start()  # the first alive host: beta holds the role from now on
        retry_until(lambda: dispatcher() == "beta", timeout=20, message="beta to become the dispatcher")
        a.daemon.start()
        first = a.tmo.add("true", options=["--name", "before", "--host", "alpha"])
        a.tmo.wait_status(first, "completed", timeout=20)
        retry_until(lambda: out.exists() and len(out.read_text().splitlines()) >= 1, timeout=20,
                    message="beta to run the hook")
        proxy.cut()
        ids = [a.tmo.add("true", options=["--name", f"cut{n}", "--host", "alpha"]) for n in range(5)]
        for project in ids:
            a.tmo.wait_status(project, "completed", timeout=20)
        retry_until(lambda: len(out.read_text().splitlines()) >= 6, timeout=60,
                    message="alpha to take the role over and run the hooks")
        proxy.heal()
        retry_until(lambda: {h["name"]: h for h in a.tmo.json("hosts")}["beta"]["alive"], timeout=60,
                    message="beta to come back")
        assert dispatcher() == "alpha"
        later = a.tmo.add("true", options=["--name", "after", "--host", "alpha"])
        a.tmo.wait_status(later, "completed", timeout=20)
        time.sleep(8.0)  # a second delivery (beta's stale cursor, two dispatchers) would show by now
        lines = out.read_text().splitlines()
        projects = sorted(int(line.split()[0]) for line in lines)
        assert projects == sorted([first, *ids, later]), lines
    finally:
        proxy.close()

"""Chaos: 200+ short projects while the daemon is SIGKILLed, the tmux server is killed, CLI writers
and hand-written SQL run concurrently. At the end every invariant of the queue must hold.

Runs in CI in about a minute. ``bench/soak.py`` is the longer version.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from chaos.support import DaemonProcess
from faults.support import Ledger
from tmux_orchestrator import naming
from tmux_orchestrator.config import Settings, load_settings
from tmux_orchestrator.orchestrator import Orchestrator
from tmux_orchestrator.project import ProjectStatus
from tmux_orchestrator.testing import retry_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

STATUS_KINDS = {"queued", "started", "completed", "failed", "cancelled", "retried", "requeued"}
CLEANUP_KINDS = {"output_saved", "backup_failed", "session_killed", "lingering_cleaned"}
CONCURRENCY = 4


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tmux_orchestrator", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def _server_pid(settings: Settings) -> int | None:
    orch = Orchestrator(settings)
    try:
        return orch.tmux.server_pid()
    finally:
        orch.close()


def test_chaos_keeps_every_invariant(tmo_settings: Settings) -> None:
    home = tmo_settings.home
    # kill_grace stays at its default (5 s): a shorter grace hid a double clean-up once.
    env = {**os.environ, "TMO_HOME": str(home), "TMO_RECONCILE_INTERVAL": "0.3"}
    for name in ("TMO_PROJECT_ID", "TMO_KILL_GRACE", "TMO_DATABASE_URL"):
        env.pop(name, None)
    settings = load_settings(home)
    rng = random.Random(20261125)
    orch = Orchestrator(settings, source="api")
    ledger = Ledger(home / "ledger")
    enqueued: list[int] = []
    for n in range(200):
        code = 1 if n % 10 == 3 else 0
        seconds = rng.uniform(1.5, 3) if n % 10 == 5 else rng.uniform(0.02, 0.3)
        # a few ignore SIGTERM: ended by hand, they make every clean-up wait out the whole grace
        mode = "stubborn" if n % 40 == 7 else f"sleep:{seconds:.3f}:{code}"
        project = orch.enqueue(ledger.command(mode, limit=CONCURRENCY), name=f"chaos {n}",
                               project_path=home, max_retries=1 if n % 3 == 0 else 0, retry_delay=0.1)
        enqueued.append(project.id)
    stubborn = {pid for n, pid in enumerate(enqueued) if n % 40 == 7}

    daemon = DaemonProcess(home, env, concurrency=CONCURRENCY, log_name="daemon-chaos.out", stop_wait=10)
    daemon.start()
    stop_writers = threading.Event()
    writer_errors: list[str] = []

    def cli_writer() -> None:
        # Concurrent CLI use: adds, cancels of queued projects, hand-written SQL completions.
        local = random.Random(7)
        while not stop_writers.is_set():
            result = _cli(env, "add", "--name", "late add", "--dir", str(home), "--",
                          *ledger.command("sleep:0.05", limit=CONCURRENCY))
            if result.returncode != 0:
                writer_errors.append(result.stderr)
            else:
                enqueued.append(int(result.stdout.strip()))
            queued = [p.id for p in orch.list_projects([ProjectStatus.QUEUED])]
            if queued and local.random() < 0.5:
                result = _cli(env, "cancel", str(local.choice(queued)))
                if "database is locked" in result.stderr or "Traceback" in result.stderr:
                    writer_errors.append(result.stderr)
            running = [p.id for p in orch.list_projects([ProjectStatus.PROCESSING])]
            if running and local.random() < 0.3:
                with sqlite3.connect(settings.database_path or "", timeout=30) as conn:
                    try:
                        conn.execute("UPDATE project_queue SET status='completed' WHERE id=? "
                                     "AND status='processing'", (local.choice(running),))
                    except sqlite3.OperationalError as exc:
                        writer_errors.append(str(exc))
            # the stubborn ones are ended by hand (from the CLI or SQL) once they run
            for project_id in stubborn & set(running):
                if local.random() < 0.5:
                    result = _cli(env, "fail", str(project_id), "--reason", "stubborn")
                    if "Traceback" in result.stderr:
                        writer_errors.append(result.stderr)
            time.sleep(local.uniform(0.2, 0.6))

    writer = threading.Thread(target=cli_writer, daemon=True)
    writer.start()
    server_kills = 0
    try:
        deadline = time.monotonic() + 240
        while daemon.kills < 12 and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.4, 1.6))
            if daemon.kills + 1 in (4, 9):
                # Kill the server while a long project runs (the daemon still up, so one does
                # start), so its loss is really exercised; then the daemon.
                retry_until(lambda: any("chaos" in p.name and int(p.name.split()[1]) % 10 == 5
                                        for p in orch.list_projects([ProjectStatus.PROCESSING])),
                            timeout=60, interval=0.05, message="a long project to run")
                pid = _server_pid(settings)
                if pid:
                    os.kill(pid, signal.SIGKILL)
                    server_kills += 1
            daemon.kill()
            time.sleep(rng.uniform(0.0, 0.3))
            daemon.start()
        stop_writers.set()
        writer.join(60)
        ended_by_hand: set[int] = set()

        def settled() -> bool:
            # Whatever stubborn project still runs (or starts late) is ended by hand too.
            for project in orch.list_projects([ProjectStatus.PROCESSING]):
                if project.id in stubborn and project.id not in ended_by_hand:
                    ended_by_hand.add(project.id)
                    _cli(env, "cancel", str(project.id))
            active = orch.list_projects([ProjectStatus.QUEUED, ProjectStatus.PROCESSING])
            return not active and not orch.server.list_owned() and not orch.store.open_sessions()

        try:
            retry_until(settled, timeout=90, interval=0.2, message="the queue to drain")
        except BaseException:
            print("active:", orch.list_projects([ProjectStatus.QUEUED, ProjectStatus.PROCESSING]))
            print("owned:", orch.server.list_owned())
            print("open:", orch.store.open_sessions())
            print("claims:", orch.store.claims())
            raise
        # "Exactly once" needs time for a second occurrence to show up.
        time.sleep(8.0)
    finally:
        stop_writers.set()
        daemon.stop()

    assert daemon.kills >= 10
    assert server_kills >= 2
    assert not writer_errors, writer_errors[:3]

    projects = {p.id: p for p in orch.list_projects()}
    # Nothing lost: every project that was enqueued is still there, and ended.
    assert set(enqueued) <= set(projects)
    assert all(p.status.is_terminal for p in projects.values())
    # No owned session left behind, no session left open, no claim left.
    assert orch.server.list_owned() == []
    assert orch.store.open_sessions() == []
    # From what really ran (the projects' own ledger, not the database): at no instant were two
    # attempts of one project alive, nor more projects than the concurrency.
    assert ledger.violations() == []
    # No attempt of any project ran twice.
    starts = [(project, attempt) for project, attempt, _, _ in ledger.starts()]
    duplicates = [key for key, count in Counter(starts).items() if count > 1]
    assert duplicates == []
    for project_id, attempt in starts:
        assert attempt <= projects[project_id].attempt
    events = orch.store.events_after(0, limit=1_000_000)
    # Every session was saved at most once and killed at most once, by one kind of kill; and a
    # kill was recorded only for a session that ran.
    per_session: dict[str, Counter[str]] = {}
    for event in events:
        if event.session_name and event.kind in CLEANUP_KINDS:
            per_session.setdefault(event.session_name, Counter())[event.kind] += 1
    for session, counts in per_session.items():
        assert counts["output_saved"] + counts["backup_failed"] <= 1, (session, counts)
        assert counts["session_killed"] + counts["lingering_cleaned"] <= 1, (session, counts)
    ran = {naming.session_name_for(p, projects[p].name, a) for p, a in starts if p in projects}
    # A session ended in the few milliseconds between its creation and its command's first ledger
    # line (a hand-written completion picks any running project) did exist: its scrollback was
    # captured from tmux. A session that never existed has neither.
    captured = {s for s, c in per_session.items() if c["output_saved"]}
    killed = {s for s, c in per_session.items() if c["session_killed"] or c["lingering_cleaned"]}
    assert killed <= ran | captured, sorted(killed - ran - captured)[:5]
    # Exactly one event per status change: each project's status events form one unbroken chain
    # from its insertion to its current status.
    chains: dict[int, list[tuple[str | None, str | None]]] = {}
    for event in events:
        if event.kind in STATUS_KINDS and event.project_id is not None:
            chains.setdefault(event.project_id, []).append((event.old_status, event.new_status))
    for project_id, project in projects.items():
        chain = chains[project_id]
        assert chain[0] == (None, "queued"), (project_id, chain)
        for (_, previous_new), (old, _) in itertools.pairwise(chain):
            assert old == previous_new, (project_id, chain)
        assert chain[-1][1] == project.status.value, (project_id, chain)
    # Outcomes are honest: retries never exceed the policy; lost ones were retried when allowed.
    for project in projects.values():
        assert project.retry_count <= project.max_retries
        exited = project.outcome is not None and project.outcome.value == "exited"
        if project.status == ProjectStatus.COMPLETED and exited:
            assert project.exit_code == 0
        if project.status == ProjectStatus.FAILED:
            assert project.outcome is not None
    # The tmux server kills really lost running projects, and the retry policy applied to them.
    lost = [e for e in events if e.kind == "failed" and e.outcome == "lost"]
    assert lost, "no project was lost to a server kill: the test did not exercise it"
    for event in lost:
        project = projects[event.project_id or 0]
        if project.max_retries:
            assert project.retry_count >= 1, (project.id, "a lost project was not retried")
    outcomes = Counter(f"{p.status.value}/{p.outcome}" for p in projects.values())
    print(f"daemon kills {daemon.kills}, server kills {server_kills}, projects {len(projects)}, "
          f"runs {len(starts)}, events {len(events)}: {dict(outcomes)}")
    orch.close()

"""Soak: the chaos suite (``tests/chaos/test_chaos.py``) for longer, with figures.

Many short projects run at concurrency 4 under ``tmo daemon run`` (a child process) while:

* the daemon is SIGKILLed at random moments and restarted, many times;
* the home's tmux server is SIGKILLed (by its pid) a few times while long projects run;
* a writer thread runs ``tmo add``, ``tmo cancel`` of queued projects and hand-written
  ``UPDATE project_queue SET status='completed'`` of running ones, all the time.

Every project appends ``<id> <attempt>`` to a file when it starts, so a project that ran twice shows.
At the end the queue must be drained and every invariant of the chaos suite must hold: every project
ended, none lost from the table, no attempt ran twice, no owned session left, one event per status
change (each project's status events form one unbroken chain), retries within the policy, no
``database is locked`` reaching a user. Figures: the run's length, projects per second, time from a
restart to the daemon being ready again, time to drain after the last kill, the outcomes, and
"false failures": projects failed as ``lost`` that were not running when a tmux server was killed
(the system this replaces failed 30-40 % of live projects after a restart).
"""

from __future__ import annotations

import contextlib
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
from pathlib import Path
from typing import Any

from bench.harness import BenchError, BenchHome, tmo_argv, wait_dead, wait_until
from bench.stats import summarize

NAME = "soak"
STATUS_KINDS = {"queued", "started", "completed", "failed", "cancelled", "retried", "requeued"}


class _Daemon:
    """``tmo daemon run`` as a child process that may be SIGKILLed at any moment."""

    def __init__(self, bench: BenchHome, env: dict[str, str]) -> None:
        self.bench = bench
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0
        self.ready_ms: list[float] = []

    def start(self) -> None:
        last = self.bench.db.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
        with open(self.bench.home / "daemon-soak.out", "ab") as log:
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tmux_orchestrator", "daemon", "run", "--concurrency", "4",
                 "--quiet"], env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        pid = self.proc.pid

        def ready() -> bool:
            return bool(self.bench.db.execute(
                "SELECT 1 FROM events WHERE id > ? AND kind = 'daemon_started' AND message LIKE ?",
                (last, f"pid {pid},%")).fetchone())

        wait_until(ready, timeout=60, interval=0.005, what="the restarted daemon to be ready")
        self.ready_ms.append((time.perf_counter() - t0) * 1000)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.kills += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def run(config: dict[str, Any], *, keep: bool = False, seed: int = 1) -> dict[str, Any]:
    """``config``: projects, daemon_kills, server_kills, timeout_s."""
    rng = random.Random(seed)
    projects_n = int(config["projects"])
    daemon_kills = int(config["daemon_kills"])
    server_kills_wanted = int(config["server_kills"])
    with BenchHome(NAME, keep=keep) as bench:
        home = bench.home
        env = {**bench.env, "TMO_RECONCILE_INTERVAL": "0.3", "TMO_KILL_GRACE": "1"}
        runs = home / "runs.txt"
        items = []
        for n in range(projects_n):
            code = 1 if n % 10 == 3 else 0
            pause = rng.uniform(1.5, 3) if n % 10 == 5 else rng.uniform(0.02, 0.3)
            items.append({"command": ["sh", "-c", f'echo "$TMO_PROJECT_ID $TMO_ATTEMPT" >> {runs}; '
                                      f"sleep {pause:.3f}; exit {code}"],
                          "name": f"soak {n}", "project_path": home,
                          "max_retries": 1 if n % 3 == 0 else 0, "retry_delay": 0.1})
        enqueued = [p.id for p in bench.orch.enqueue_many(items)]
        daemon = _Daemon(bench, env)
        stop_writers = threading.Event()
        writer_errors: list[str] = []
        writes = Counter[str]()
        server_kill_times: list[float] = []

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*tmo_argv(), *args], env=env, capture_output=True, text=True,
                                  timeout=60, check=False)

        def writer() -> None:
            local = random.Random(seed + 7)
            conn = sqlite3.connect(str(home / "tmo.db"), timeout=30, isolation_level=None)
            try:
                while not stop_writers.is_set():
                    result = cli("add", "--name", "late add", "--dir", str(home), "--", "sh", "-c",
                                 f'echo "$TMO_PROJECT_ID $TMO_ATTEMPT" >> {runs}; sleep 0.05')
                    if result.returncode != 0:
                        writer_errors.append(result.stderr)
                    else:
                        enqueued.append(int(result.stdout.strip()))
                        writes["add"] += 1
                    queued = [r[0] for r in conn.execute(
                        "SELECT id FROM project_queue WHERE status = 'queued'")]
                    if queued and local.random() < 0.5:
                        result = cli("cancel", str(local.choice(queued)))
                        writes["cancel"] += 1
                        if "database is locked" in result.stderr or "Traceback" in result.stderr:
                            writer_errors.append(result.stderr)
                    running = [r[0] for r in conn.execute(
                        "SELECT id FROM project_queue WHERE status = 'processing'")]
                    if running and local.random() < 0.3:
                        try:
                            conn.execute("UPDATE project_queue SET status='completed' WHERE id=? "
                                         "AND status='processing'", (local.choice(running),))
                            writes["sql_complete"] += 1
                        except sqlite3.OperationalError as exc:
                            writer_errors.append(str(exc))
                    time.sleep(local.uniform(0.2, 0.6))
            finally:
                conn.close()

        started = time.monotonic()
        daemon.start()
        thread = threading.Thread(target=writer, name="soak-writer", daemon=True)
        thread.start()
        server_kills = 0
        try:
            deadline = time.monotonic() + float(config["timeout_s"])
            # spread the server kills over the run
            server_kill_at = {max(1, round(daemon_kills * (k + 1) / (server_kills_wanted + 1)))
                              for k in range(server_kills_wanted)}
            while daemon.kills < daemon_kills and time.monotonic() < deadline:
                time.sleep(rng.uniform(0.4, 1.6))
                daemon.kill()
                if daemon.kills in server_kill_at:
                    if _kill_server_during_long_project(bench, server_kill_times):
                        server_kills += 1
                time.sleep(rng.uniform(0.0, 0.3))
                daemon.start()
            last_kill = time.monotonic()
            stop_writers.set()
            thread.join(60)

            def settled() -> bool:
                active = bench.count_not_terminal()
                return active == 0 and not bench.owned_sessions()

            wait_until(settled, timeout=300, interval=0.2, what="the queue to drain")
            drain = time.monotonic() - last_kill
            wall = time.monotonic() - started
        finally:
            stop_writers.set()
            daemon.stop()

        bench.refresh_server_pid()  # the server was restarted: end the current one at teardown
        projects = {p.id: p for p in bench.orch.list_projects()}
        events = bench.orch.store.events_after(0, limit=10_000_000)
        lines = [tuple(line.split()) for line in runs.read_text().splitlines() if line.strip()]
        leftover = bench.owned_sessions()
        home_text = str(home)
    notes = list(bench.teardown_notes)

    # -- invariants, as in the chaos suite --------------------------------------------------------
    duplicates = [key for key, count in Counter(lines).items() if count > 1]
    chains: dict[int, list[tuple[str | None, str | None]]] = {}
    for event in events:
        if event.kind in STATUS_KINDS and event.project_id is not None:
            chains.setdefault(event.project_id, []).append((event.old_status, event.new_status))
    broken = []
    for project_id, project in projects.items():
        chain = chains.get(project_id, [])
        ok = bool(chain) and chain[0] == (None, "queued") and chain[-1][1] == project.status.value
        ok = ok and all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(chain))
        if not ok:
            broken.append(project_id)
    lost_events = [e for e in events if e.kind == "failed" and e.outcome == "lost"]
    # a project lost within 10 s of a server kill was running on that server: an honest loss
    false_lost = [e for e in lost_events
                  if not any(0 <= e.at.timestamp() - t <= 10 for t in server_kill_times)]
    invariants = {
        "every_project_terminal": all(p.status.is_terminal for p in projects.values()),
        "none_missing": set(enqueued) <= set(projects),
        "no_attempt_ran_twice": not duplicates,
        "no_owned_session_left": not leftover,
        "one_event_per_status_change": not broken,
        "retries_within_policy": all(p.retry_count <= p.max_retries for p in projects.values()),
        "no_database_locked_or_traceback": not writer_errors,
        "daemon_killed_as_asked": daemon.kills >= daemon_kills,
        "server_killed_as_asked": server_kills >= server_kills_wanted,
        "no_false_lost": not false_lost,
    }
    outcomes = Counter(f"{p.status.value}/{p.outcome.value if p.outcome else None}"
                       for p in projects.values())
    result = {
        "description": "chaos soak: daemon SIGKILLs, tmux server kills, concurrent CLI and SQL writers",
        "config": {**config, "concurrency": 4, "seed": seed},
        "figures": {
            "projects": len(projects),
            "runs": len(lines),
            "events": len(events),
            "daemon_kills": daemon.kills,
            "server_kills": server_kills,
            "writes": dict(writes),
            "wall_s": round(wall, 1),
            "projects_per_s": round(len(projects) / wall, 2),
            "drain_after_last_kill_s": round(drain, 2),
            "lost": len(lost_events),
            "false_lost": len(false_lost),
            "outcomes": dict(outcomes),
        },
        "summary": {"restart_to_ready_ms": summarize(daemon.ready_ms)},
        "invariants": invariants,
        "violations": {
            "duplicates": duplicates[:10], "broken_chains": broken[:10],
            "writer_errors": [e[:300] for e in writer_errors[:5]],
            "false_lost": [e.project_id for e in false_lost[:10]], "leftover_sessions": leftover[:10],
        },
        "home": home_text if keep else None,
        "notes": notes,
    }
    if not all(invariants.values()):
        failed = [k for k, v in invariants.items() if not v]
        raise _Violated(f"soak invariants violated: {', '.join(failed)}", result)
    return result


class _Violated(BenchError):
    """An invariant did not hold; ``result`` has the figures and the violations."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


def _kill_server_during_long_project(bench: BenchHome, kill_times: list[float]) -> bool:
    """SIGKILL this home's tmux server (by its pid) while a long project runs; True if it did."""
    def long_running() -> bool:
        return bool(bench.db.execute(
            "SELECT 1 FROM project_queue WHERE status = 'processing' AND session_id IS NOT NULL "
            "AND name LIKE 'soak %5'").fetchone())

    with contextlib.suppress(BenchError):
        wait_until(long_running, timeout=60, interval=0.05, what="a long project to run")
    out = bench.tmux("display-message", "-p", "-t", "=_tmo_keep:", "#{pid}").stdout.strip()
    if not out.isdigit():
        return False
    pid = int(out)
    # only the server answering on this home's own socket
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if Path(f"/proc/{pid}").exists() else b""
    if b"tmux" not in cmdline:
        return False
    kill_times.append(time.time())
    os.kill(pid, signal.SIGKILL)
    wait_dead(pid, 5)
    return True


__all__ = ["NAME", "run"]

"""Scale: 10,000 queued projects, 1,000 running at once, 500 sessions to clean up.

**Queue** (no daemon; each part in a fresh ``TMO_HOME``):

* enqueue rate: ``tmo add`` run once per project (a process each), the API one call per project
  (``Orchestrator.enqueue``), and batched: ``Orchestrator.enqueue_many`` and ``tmo add --from-file``,
  each of which queues the whole batch in one transaction;
* ``tmo list`` and ``tmo list --status queued --json`` with 10,000 rows: whole-process figures
  (wall time fork to reap, CPU, peak RSS; one warm-up run, then several counted), the installed
  console script called directly;
* claim time (``SqliteStore.claim_next``, what the daemon calls) with 100, 1,000 and 10,000
  projects queued: it must stay flat.

**Running** (the real daemon, ``tmo daemon start``, its own tmux server):

* N ``sleep`` projects (N = 1,000 in full mode) started by one daemon at concurrency N: time to start
  them all; then, once settled, the daemon's CPU while idle read from ``/proc/<pid>/stat`` over a
  window of at least 30 s (full), its RSS and the tmux server's;
* a reconcile pass at N sessions: the daemon is stopped (the sessions live on) and run again inside
  the bench process, so ``Reconciler.last_duration`` can be read after each pass, with a short
  reconcile interval: passes where nothing changed (the common case: it lists the sessions and
  compares) and full passes (forced by writing an event before each);
* restart with N running (``tmo daemon start``, which returns once the start-up reconcile adopted
  every session), then ``tmo cancel`` of all N in one command, and the time until no session is left;
* ``tmo cleanup`` of M (500 in full mode) sessions left behind with the daemon stopped: half of them
  lingering (their projects were completed by hand in SQL), half orphaned (owned, no project).

Limits: the tmux server needs about one file descriptor per pane (it inherits the daemon's
``ulimit -n``, raised here to the hard limit) and one pty each (``kernel.pty.max``); N is reduced,
with a note, when the machine does not allow it.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from bench.harness import (
    BenchError,
    BenchHome,
    cpu_seconds,
    time_process,
    tmo_argv,
    wait_until,
)
from bench.stats import summarize
from tmux_orchestrator.daemon import Daemon
from tmux_orchestrator.orchestrator import Orchestrator

NAME = "scale"


def _rss_kb(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _cpu_on(pid: int | None) -> float | None:
    """CPU seconds all threads of ``pid`` have run, from ``/proc/<pid>/task/*/schedstat``
    (nanoseconds, where ``/proc/<pid>/stat`` counts 10 ms ticks: too coarse for 1 % over 40 s)."""
    if pid is None:
        return None
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError):
                total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
    except OSError:
        return cpu_seconds(pid)
    return total / 1e9


def _cpu_with_children(pid: int | None) -> float | None:
    """:func:`_cpu_on` plus the CPU of its waited-for children (the tmux clients the daemon runs;
    the kernel adds theirs to ``cutime``/``cstime`` in ticks when they are reaped)."""
    own = _cpu_on(pid)
    if pid is None or own is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[-1].split()
    except OSError:
        return None
    return own + sum(int(x) for x in fields[13:15]) / os.sysconf("SC_CLK_TCK")


def _percent(before: float | None, after: float | None, seconds: float) -> float | None:
    """CPU seconds used between two readings, as a percentage of one CPU over ``seconds``."""
    if before is None or after is None:
        return None
    return round(100 * (after - before) / seconds, 3)


def _batch(bench: BenchHome, count: int, argv: list[str]) -> list[dict[str, Any]]:
    return [{"command": argv, "project_path": bench.home, "name": "scale"} for _ in range(count)]


# -- queue ---------------------------------------------------------------------------------------------
def enqueue_rates(cfg: dict[str, Any], keep: bool) -> dict[str, Any]:
    """Projects queued per second, four ways."""
    out: dict[str, Any] = {}
    argv = ["true"]
    with BenchHome(f"{NAME}-enqueue", keep=keep) as bench:
        n = int(cfg["cli_single"])
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            proc = subprocess.run([*tmo_argv(), "add", "--dir", str(bench.home), "--", *argv],
                                  capture_output=True, text=True, env=bench.env, timeout=60, check=False)
            times.append((time.perf_counter() - t0) * 1000)
            if proc.returncode != 0:
                raise BenchError(f"tmo add failed: {proc.stderr.strip()}")
        out["cli_single"] = {"projects": n, "per_s": round(n / (sum(times) / 1000), 1),
                             "ms_per_process": summarize(times)}
        n = int(cfg["api_single"])
        t0 = time.perf_counter()
        for _ in range(n):
            bench.orch.enqueue(argv, name="scale", project_path=bench.home)
        seconds = time.perf_counter() - t0
        out["api_single"] = {"projects": n, "seconds": round(seconds, 3), "per_s": round(n / seconds, 1)}
        n = int(cfg["batch"])
        items = _batch(bench, n, argv)
        t0 = time.perf_counter()
        queued = bench.orch.enqueue_many(items)
        seconds = time.perf_counter() - t0
        if len(queued) != n:
            raise BenchError(f"enqueue_many queued {len(queued)} of {n}")
        out["api_batch"] = {"projects": n, "seconds": round(seconds, 3), "per_s": round(n / seconds, 1)}
        path = bench.home / "batch.jsonl"
        path.write_text("".join(json.dumps({"command": argv, "dir": str(bench.home)}) + "\n"
                                for _ in range(n)))
        t0 = time.perf_counter()
        proc = subprocess.run([*tmo_argv(), "add", "--from-file", str(path)], capture_output=True,
                              text=True, env=bench.env, timeout=600, check=False)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0 or len(proc.stdout.split()) != n:
            raise BenchError(f"tmo add --from-file failed: {proc.stderr.strip()[:500]}")
        out["cli_batch"] = {"projects": n, "seconds": round(seconds, 3), "per_s": round(n / seconds, 1)}
    return out


def list_times(cfg: dict[str, Any], keep: bool) -> dict[str, Any]:
    """``tmo list`` and ``tmo list --status queued --json`` at ``rows`` queued projects."""
    rows = int(cfg["rows"])
    runs = int(cfg["list_runs"])
    with BenchHome(f"{NAME}-list", keep=keep) as bench:
        bench.orch.enqueue_many(_batch(bench, rows, ["sleep", "1"]))
        out: dict[str, Any] = {"rows": rows, "argv0": tmo_argv()[0]}
        for key, args in (("table", ["list"]), ("json_queued", ["list", "--status", "queued", "--json"]),
                          ("version", ["--version"])):
            out[key] = time_process([*tmo_argv(), *args], env=bench.env, runs=runs, cwd=bench.home)
            if out[key]["exit_codes"] != [0]:
                raise BenchError(f"tmo {' '.join(args)} exited {out[key]['exit_codes']}")
        if json.loads(subprocess.run([*tmo_argv(), "list", "--status", "queued", "--json", "--limit", "1"],
                                     capture_output=True, text=True, env=bench.env, check=True,
                                     timeout=60).stdout)[0]["status"] != "queued":
            raise BenchError("tmo list --json did not list the queued projects")
    return out


def claim_times(cfg: dict[str, Any], keep: bool) -> dict[str, Any]:
    """Milliseconds per ``claim_next`` with 100, 1,000, 10,000 ... projects queued."""
    out: dict[str, Any] = {}
    claims = int(cfg["claims"])
    if claims > min(int(size) for size in cfg["claim_sizes"]):
        raise BenchError(f"{claims} claims do not fit the smallest queue ({min(cfg['claim_sizes'])})")
    for size in cfg["claim_sizes"]:
        with BenchHome(f"{NAME}-claim", keep=keep) as bench:
            bench.orch.enqueue_many(_batch(bench, int(size), ["true"]))
            store = bench.orch.store
            samples = []
            for _ in range(claims):
                t0 = time.perf_counter()
                project = store.claim_next(host="bench", max_processing=10**9)
                samples.append((time.perf_counter() - t0) * 1000)
                if project is None:
                    raise BenchError("nothing to claim")
            out[str(size)] = summarize(samples)
    return out


# -- running ---------------------------------------------------------------------------------------------
def _limits(wanted: int, notes: list[str]) -> int:
    """Raise ``ulimit -n`` to the hard limit; the number of sessions this machine allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    allowed = wanted
    if soft != resource.RLIM_INFINITY and soft - 200 < wanted:
        allowed = max(10, soft - 200)
        notes.append(f"ulimit -n is {soft}: {allowed} sessions instead of {wanted}")
    try:
        pty_max = int(Path("/proc/sys/kernel/pty/max").read_text())
        pty_used = int(Path("/proc/sys/kernel/pty/nr").read_text())
    except (OSError, ValueError):
        return allowed
    if pty_max - pty_used - 50 < allowed:
        allowed = max(10, pty_max - pty_used - 50)
        notes.append(f"kernel.pty.max {pty_max} with {pty_used} in use: {allowed} sessions "
                     f"instead of {wanted}")
    return allowed


class _InProcessDaemon:
    """The real :class:`Daemon` in a thread of this process, so its reconciler can be read."""

    def __init__(self, bench: BenchHome, reconcile_interval: float) -> None:
        settings = bench.settings
        settings.reconcile_interval = reconcile_interval
        self.orch = Orchestrator(settings, source="daemon")
        self.daemon = Daemon(self.orch, install_signal_handlers=False)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="bench-daemon", daemon=True)

    def _run(self) -> None:
        try:
            self.daemon.run()
        except BaseException as exc:  # noqa: BLE001 - reported by start/stop
            self.error = exc

    def start(self) -> float:
        t0 = time.perf_counter()
        self.thread.start()
        wait_until(lambda: (self.daemon._token != -1) or self.error, timeout=120, interval=0.005,
                   what="the in-process daemon to start")
        if self.error:
            raise BenchError(f"in-process daemon failed: {self.error}")
        return time.perf_counter() - t0

    def next_pass(self, timeout: float = 30.0) -> tuple[float, bool]:
        reconciler = self.daemon.reconciler
        seen = reconciler.passes
        wait_until(lambda: reconciler.passes > seen, timeout=timeout, interval=0.002,
                   what="a reconcile pass")
        return reconciler.last_duration * 1000, reconciler.last_skipped

    def stop(self) -> None:
        self.daemon.stop()
        self.thread.join(30)
        self.orch.close()


def running(cfg: dict[str, Any], keep: bool, notes: list[str]) -> dict[str, Any]:
    """N sleeping projects: start, idle CPU, RSS, reconcile passes, restart, cancel all, cleanup."""
    count = _limits(int(cfg["running"]), notes)
    out: dict[str, Any] = {"sessions": count}
    with BenchHome(f"{NAME}-running", keep=keep) as bench:
        projects = bench.orch.enqueue_many(_batch(bench, count, ["sleep", "3600"]))
        ids = [p.id for p in projects]

        def all_running() -> bool:
            return int(bench.db.execute(
                "SELECT count(*) FROM project_queue WHERE status = 'processing' AND session_id IS NOT NULL"
            ).fetchone()[0]) == count

        t0 = time.perf_counter()
        bench.start_daemon(concurrency=count)
        wait_until(all_running, timeout=60 + count * 0.2, interval=0.05, what=f"{count} sessions")
        started = time.perf_counter() - t0
        out["start_all_s"] = round(started, 2)
        out["starts_per_s"] = round(count / started, 1)
        if len(bench.owned_sessions()) != count:
            raise BenchError(f"{len(bench.owned_sessions())} sessions for {count} running projects")

        # idle: nothing changes; the daemon only polls the database and lists sessions
        time.sleep(float(cfg["settle_s"]))
        window = float(cfg["idle_window_s"])
        pids = {"daemon": bench.daemon_pid, "tmux_server": bench.server_pid}
        before = {k: _cpu_on(p) for k, p in pids.items()}
        before["daemon_with_children"] = _cpu_with_children(bench.daemon_pid)
        t0 = time.monotonic()
        time.sleep(window)
        elapsed = time.monotonic() - t0
        after = {k: _cpu_on(p) for k, p in pids.items()}
        after["daemon_with_children"] = _cpu_with_children(bench.daemon_pid)
        out["idle"] = {
            "window_s": round(elapsed, 1),
            "cpu_percent": {k: _percent(b, after[k], elapsed) for k, b in before.items()},
            "rss_kb": {k: _rss_kb(p) for k, p in pids.items()},
            "threads": {k: _threads(p) for k, p in pids.items()},
        }
        bench.close_daemon_only()

        # reconcile passes, read inside this process
        inproc = _InProcessDaemon(bench, reconcile_interval=float(cfg["reconcile_interval_s"]))
        adopt = inproc.start()
        try:
            if len(inproc.daemon.running) != count:
                raise BenchError(f"the in-process daemon adopted {len(inproc.daemon.running)} of {count}")
            settled: list[float] = []
            full: list[float] = []
            inproc.next_pass()
            for _ in range(int(cfg["passes"])):
                duration, skipped = inproc.next_pass()
                (settled if skipped else full).append(duration)
            for _ in range(int(cfg["passes"])):
                bench.orch.store.append_event("bench_marker", source="api", message="force a full pass")
                duration, skipped = inproc.next_pass()
                (settled if skipped else full).append(duration)
        finally:
            inproc.stop()
        out["startup_with_adoption_in_process_s"] = round(adopt, 3)
        out["reconcile_pass_ms"] = {"unchanged": summarize(settled), "full": summarize(full)}

        # restart with everything running, then cancel all in one command
        t0 = time.perf_counter()
        bench.start_daemon(concurrency=count)
        out["restart_with_all_running_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        proc = subprocess.run([*tmo_argv(), "cancel", *map(str, ids)], capture_output=True, text=True,
                              env=bench.env, timeout=600, check=False)
        cli = time.perf_counter() - t0
        if proc.returncode != 0:
            raise BenchError(f"tmo cancel failed: {proc.stderr.strip()[:500]}")
        wait_until(lambda: not bench.owned_sessions(), timeout=120, interval=0.02,
                   what="every cancelled session to go")
        gone = time.perf_counter() - t0
        cancelled = int(bench.db.execute(
            "SELECT count(*) FROM project_queue WHERE status = 'cancelled'").fetchone()[0])
        if cancelled != count:
            raise BenchError(f"{cancelled} of {count} projects cancelled")
        out["cancel_all"] = {"cli_s": round(cli, 3), "until_no_session_s": round(gone, 3)}
        bench.close_daemon_only()

        # sessions left behind while no daemon runs: half lingering, half orphaned
        out["cleanup"] = _cleanup(bench, int(cfg["cleanup"]), int(cfg["cleanup_runs"]))
    return out


def _threads(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return None


def _cleanup(bench: BenchHome, total: int, runs: int) -> dict[str, Any]:
    """``tmo cleanup`` of ``total`` sessions, half lingering and half orphaned; ``runs`` times."""
    lingering = total // 2
    orphans = total - lingering
    seconds: list[float] = []
    for _ in range(runs):
        bench.orch.enqueue_many(_batch(bench, lingering, ["sleep", "3600"]))
        bench.start_daemon(concurrency=lingering)
        wait_until(lambda: int(bench.db.execute(
            "SELECT count(*) FROM project_queue WHERE status = 'processing' AND session_id IS NOT NULL"
        ).fetchone()[0]) == lingering, timeout=60 + lingering * 0.2, interval=0.05,
            what="the sessions that will linger")
        bench.close_daemon_only()
        bench.db.execute("UPDATE project_queue SET status = 'completed' WHERE status = 'processing'")
        tag = bench.settings.owner_tag
        commands: list[str] = []
        made = 0
        for n in range(orphans):
            name = f"orphan-{time.monotonic_ns()}-{n}"
            commands += ["new-session", "-d", "-s", name, "sleep", "3600", ";",
                         "set-option", "-t", f"={name}:", "@tmo_owner", tag, ";"]
            if len(commands) > 600 or n == orphans - 1:
                result = bench.tmux(*commands[:-1])
                if result.returncode != 0:
                    raise BenchError(f"cannot create orphan sessions: {result.stderr.strip()}")
                made += commands.count("new-session")
                commands = []
        if len(bench.owned_sessions()) != total:
            raise BenchError(f"{len(bench.owned_sessions())} sessions to clean up, expected {total}")
        t0 = time.perf_counter()
        proc = subprocess.run([*tmo_argv(), "cleanup"], capture_output=True, text=True, env=bench.env,
                              timeout=600, check=False)
        seconds.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise BenchError(f"tmo cleanup failed: {proc.stderr.strip()[:500]}")
        left = bench.owned_sessions()
        if left:
            raise BenchError(f"tmo cleanup left {len(left)} of {total} sessions")
    ordered = sorted(seconds)
    return {"sessions": total, "lingering": lingering, "orphaned": orphans,
            "seconds": [round(x, 3) for x in seconds], "median_s": round(ordered[len(ordered) // 2], 3)}


def run(config: dict[str, Any], *, keep: bool = False, seed: int = 1) -> dict[str, Any]:
    """The queue and running scale figures (``config``: see ``bench.MODES``)."""
    del seed
    notes: list[str] = []
    result: dict[str, Any] = {
        "description": "queue of 10,000 projects; N projects running at once; cleanup of left sessions",
        "config": dict(config),
        "enqueue": enqueue_rates(config, keep),
        "list": list_times(config, keep),
        "claim_ms": claim_times(config, keep),
        "running": running(config, keep, notes),
        "notes": notes,
    }
    claims = result["claim_ms"]
    sizes = sorted(claims, key=int)
    result["claim_flatness"] = round(claims[sizes[-1]]["median"] / claims[sizes[0]]["median"], 2)
    result["summary"] = {}
    return result

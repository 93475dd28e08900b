"""Throughput side by side: tmux-orchestrator against task-spooler, nq and a raw tmux loop.

Same run, same machine, same jobs, one tool after the other (the order rotates each round, so a
drift of the machine's speed does not always hit the same tool):

* ``true``: the cost of the machinery alone;
* ``sleep 0.1``: how well each tool keeps its slots busy;
* a job printing 10 MiB (``yes ... | head -c 10485760``): the cost of the output path, which for a
  tmux-based tool is a terminal emulator.

For each job and each concurrency (1, 4, 16) every tool runs N jobs; the figure is N divided by the
wall time from the first submission to the moment the tool knows the last job ended. Submission is
part of it, each tool submitting the way a user of it would from a shell script:

* **tmo**: the daemon runs (``tmo daemon start``; its concurrency is changed between cells through
  the stored setting it watches); the N jobs are queued by one ``tmo add --from-file`` process (one
  transaction). Done when every row is terminal; the end is the daemon's own ``completed_at`` of the
  last one (microseconds), the bench polling the database every 5 ms to know when to look.
* **tsp** (task-spooler) on a private ``TS_SOCKET`` and ``TMPDIR``: ``tsp -S C``, one ``tsp CMD`` per
  job, then a barrier job ``tsp -N C true`` (it needs every slot, so it runs only once all earlier
  jobs have ended; tsp is first-in first-out) and ``tsp -w`` on it. The barrier adds one trivial job.
* **nq**: nq runs the jobs of one queue directory strictly one after the other, so concurrency C
  uses C private ``NQDIR`` queues, jobs dealt round-robin (the way nq's documentation suggests for
  parallel work); done when ``nq -w`` has returned in each.
* **tmux (raw)**: the floor of any tmux-based runner. A private server (``tmux -S <tmp>/raw.sock -f
  /dev/null``, kept up by a keeper session like tmo's) and C threads, each a tight loop of
  ``tmux new-session -d -P -F '#{pane_pid}' CMD``, wait for that pid to exit (``pidfd_open``: no
  polling), ``tmux kill-session``. No output is kept, no state recorded, nothing survives a crash.

Outputs go where each tool puts them: tsp and nq to files, tmo through tmux into its log file (the
pipe-pane) and the raw loop only into tmux's terminal. They are deleted after each cell.

Every process the bench starts is ended by pid or by the tool's own command on the private socket
(``tsp -K``); the user's default tmux server and tsp socket are never contacted.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.harness import BenchError, BenchHome, pid_alive, tmo_argv, wait_dead, wait_until
from bench.stats import percentile

NAME = "peers"

#: The jobs every tool runs, as argv.
JOBS: dict[str, list[str]] = {
    "true": ["true"],
    "sleep_0.1": ["sleep", "0.1"],
    "print_10mb": ["sh", "-c", "yes 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                   " | head -c 10485760"],
}
CONCURRENCY = (1, 4, 16)
TOOLS = ("tmo", "tsp", "nq", "tmux_raw")
#: Debian packages of the peers.
PACKAGES = ("task-spooler", "nq")


# -- finding and installing the peers ---------------------------------------------------------------
def _is_task_spooler(path: str) -> bool:
    """``ts`` may also be moreutils' timestamp filter: ask the binary what it is."""
    with tempfile.TemporaryDirectory(prefix="tmo-bench-tsp-probe-") as tmp:
        env = {**os.environ, "TS_SOCKET": f"{tmp}/probe.sock", "TMPDIR": tmp}
        try:
            out = subprocess.run([path, "-V"], capture_output=True, text=True, env=env, timeout=5,
                                 stdin=subprocess.DEVNULL, check=False)
        except (OSError, subprocess.SubprocessError):
            return False
    return "task spooler" in (out.stdout + out.stderr).lower()


def find_peers() -> dict[str, str | None]:
    """Paths of tsp (or ``ts``, when it is task-spooler) and nq; None for a missing one."""
    tsp = next((p for p in (shutil.which("tsp"), shutil.which("ts")) if p and _is_task_spooler(p)), None)
    return {"tsp": tsp, "nq": shutil.which("nq")}


def ensure_peers(*, install: bool = True) -> dict[str, str]:
    """Find tsp and nq, installing the Debian packages when missing (root and apt-get needed).

    Raises :class:`BenchError` with what to do when they are missing and cannot be installed.
    """
    found = find_peers()
    if all(found.values()):
        return {k: v for k, v in found.items() if v}
    how = f"apt-get install -y {' '.join(PACKAGES)} (or run bench/setup.sh)"
    if not install:
        raise BenchError(f"missing {', '.join(k for k, v in found.items() if not v)}; install with: {how}")
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise BenchError(f"missing {', '.join(k for k, v in found.items() if not v)} and cannot install "
                         f"them here (needs root and apt-get); install with: {how}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    attempts: list[str] = []
    for argv in (["apt-get", "install", "-y", "-q", *PACKAGES], ["apt-get", "update", "-q"],
                 ["apt-get", "install", "-y", "-q", *PACKAGES]):
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=False)
        attempts.append(f"{' '.join(argv)}: exit {proc.returncode} {proc.stderr.strip()[-300:]}")
        found = find_peers()
        if all(found.values()):
            return {k: v for k, v in found.items() if v}
    raise BenchError("could not install task-spooler and nq: " + " | ".join(attempts))


# -- the tools ------------------------------------------------------------------------------------------
class Tool:
    """One runner under test: ``run`` returns the seconds N jobs took, submission included."""

    name = "tool"

    def run(self, argv: list[str], count: int, concurrency: int) -> float:
        raise NotImplementedError

    def close(self) -> None:
        """End everything this tool started."""


class TmoTool(Tool):
    """The real daemon (``tmo daemon start``), jobs queued with one ``tmo add --from-file``."""

    name = "tmo"

    def __init__(self, keep: bool) -> None:
        self.bench = BenchHome(NAME, keep=keep)
        self.concurrency = max(CONCURRENCY)
        self.bench.start_daemon(concurrency=self.concurrency)
        self.submit_seconds: list[float] = []

    def _set_concurrency(self, concurrency: int) -> None:
        if concurrency != self.concurrency:
            # The daemon re-reads the stored setting whenever another process commits.
            self.bench.orch.store.set_setting("concurrency", str(concurrency))
            self.concurrency = concurrency
            time.sleep(0.2)

    def run(self, argv: list[str], count: int, concurrency: int) -> float:
        self._set_concurrency(concurrency)
        batch = self.bench.home / "batch.jsonl"
        line = json.dumps({"command": argv, "dir": str(self.bench.home)})
        batch.write_text((line + "\n") * count)
        t0 = time.time()
        proc = subprocess.run([*tmo_argv(), "add", "--from-file", str(batch)], capture_output=True,
                              text=True, env=self.bench.env, timeout=120, check=False)
        self.submit_seconds.append(time.time() - t0)
        if proc.returncode != 0:
            raise BenchError(f"tmo add --from-file failed: {proc.stderr.strip()}")
        ids = [int(x) for x in proc.stdout.split()]
        first, last = min(ids), max(ids)

        def done() -> bool:
            return int(self.bench.db.execute(
                "SELECT count(*) FROM project_queue WHERE id BETWEEN ? AND ? "
                "AND status IN ('queued', 'processing')", (first, last)).fetchone()[0]) == 0

        wait_until(done, timeout=60 + count * 2.0, interval=0.005, what=f"{count} tmo jobs")
        rows = self.bench.rows_where("id BETWEEN ? AND ?", (first, last))
        bad = [r.id for r in rows if r.status != "completed" or r.exit_code != 0]
        if bad:
            raise BenchError(f"tmo jobs {bad[:5]} did not complete with exit code 0")
        end = max(r.completed_at or 0.0 for r in rows)
        # the pipe-pane logs of the 10 MiB jobs add up: drop them once their sessions are gone
        wait_until(lambda: not self.bench.owned_sessions(), timeout=30, interval=0.01,
                   what="tmo sessions to close")
        for row in rows:
            with contextlib.suppress(FileNotFoundError):
                self.bench.settings.log_path(row.id).unlink()
        return end - t0

    def close(self) -> None:
        self.bench.close()


class TspTool(Tool):
    """task-spooler on a private socket and temp dir."""

    name = "tsp"

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="tmo-bench-tsp-"))
        self.env = {**os.environ, "TS_SOCKET": str(self.dir / "ts.sock"), "TMPDIR": str(self.dir),
                    "TS_MAXFINISHED": "100000"}
        self.env.pop("TS_SLOTS", None)
        self.env.pop("TS_ONFINISH", None)

    def _tsp(self, *args: str) -> str:
        proc = subprocess.run([self.binary, *args], capture_output=True, text=True, env=self.env,
                              timeout=600, stdin=subprocess.DEVNULL, check=False)
        if proc.returncode not in (0,) and args[:1] != ("-w",):
            raise BenchError(f"tsp {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def run(self, argv: list[str], count: int, concurrency: int) -> float:
        self._tsp("-S", str(concurrency))
        t0 = time.time()
        for _ in range(count):
            self._tsp(*argv)
        self._tsp("-N", str(concurrency), "true")  # barrier: needs every slot, so runs last
        self._tsp("-w")
        elapsed = time.time() - t0
        listing = self._tsp("-l").splitlines()[1:]
        finished = [line for line in listing if " finished " in f" {line} "]
        failed = [line for line in finished if line.split()[3:4] != ["0"]]
        if len(finished) != count + 1 or failed:
            raise BenchError(f"tsp: {len(finished)} of {count + 1} jobs finished, failures: {failed[:3]}")
        self._tsp("-C")
        for path in self.dir.glob("ts-out.*"):
            path.unlink()
        return elapsed

    def close(self) -> None:
        if (self.dir / "ts.sock").exists():
            subprocess.run([self.binary, "-K"], capture_output=True, env=self.env, timeout=30,
                           stdin=subprocess.DEVNULL, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


class NqTool(Tool):
    """nq, one private queue directory per slot."""

    name = "nq"

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="tmo-bench-nq-"))

    def run(self, argv: list[str], count: int, concurrency: int) -> float:
        queues = [self.dir / f"q{n}" for n in range(concurrency)]
        for queue_dir in queues:
            queue_dir.mkdir(exist_ok=True)
        envs = [{**os.environ, "NQDIR": str(q)} for q in queues]
        t0 = time.time()
        for n in range(count):
            proc = subprocess.run([self.binary, "-q", *argv], env=envs[n % concurrency], timeout=60,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, check=False)
            if proc.returncode != 0:
                raise BenchError(f"nq failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
        for env in envs:
            subprocess.run([self.binary, "-w"], env=env, timeout=600, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        elapsed = time.time() - t0
        jobs = [p for q in queues for p in q.glob(",*")]
        if len(jobs) != count:
            raise BenchError(f"nq: {len(jobs)} job files for {count} jobs")
        for queue_dir in queues:
            shutil.rmtree(queue_dir)
        return elapsed

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class RawTmuxTool(Tool):
    """A tight loop of new-session, wait for the pane's process, kill-session on a private server."""

    name = "tmux_raw"

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tmo-bench-raw-"))
        self.socket = self.dir / "raw.sock"
        self.env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
        self.base = ["tmux", "-S", str(self.socket), "-f", "/dev/null"]
        subprocess.run([*self.base, "new-session", "-d", "-s", "keep", "sleep", "2147483647", ";",
                        "set-option", "-s", "exit-empty", "off"], env=self.env, check=True, timeout=30,
                       capture_output=True)
        out = subprocess.run([*self.base, "display-message", "-p", "-t", "=keep:", "#{pid}"],
                             env=self.env, capture_output=True, text=True, timeout=30, check=True)
        self.server_pid = int(out.stdout.strip())
        self.errors: list[str] = []

    def _one(self, number: int, argv: list[str]) -> None:
        name = f"raw{number}"
        out = subprocess.run([*self.base, "new-session", "-d", "-s", name, "-P", "-F", "#{pane_pid}",
                              *argv], env=self.env, capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL, check=False)
        if out.returncode != 0 or not out.stdout.strip().isdigit():
            self.errors.append(out.stderr.strip())
            return
        wait_pid_exit(int(out.stdout.strip()))
        subprocess.run([*self.base, "kill-session", "-t", f"={name}"], env=self.env, capture_output=True,
                       timeout=60, stdin=subprocess.DEVNULL, check=False)

    def run(self, argv: list[str], count: int, concurrency: int) -> float:
        counter = iter(range(count))
        lock = threading.Lock()

        def loop() -> None:
            while True:
                with lock:
                    number = next(counter, None)
                if number is None:
                    return
                self._one(number, argv)

        threads = [threading.Thread(target=loop, daemon=True) for _ in range(concurrency)]
        t0 = time.time()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.time() - t0
        if self.errors:
            raise BenchError(f"raw tmux loop: {len(self.errors)} new-session failures: {self.errors[:3]}")
        return elapsed

    def close(self) -> None:
        if pid_alive(self.server_pid):
            panes = subprocess.run([*self.base, "list-panes", "-a", "-F", "#{pane_pid}"], env=self.env,
                                   capture_output=True, text=True, timeout=30, check=False).stdout.split()
            for pid in panes:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.server_pid, sig)
                if wait_dead(self.server_pid, 5):
                    break
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_pid_exit(pid: int) -> None:
    """Block until ``pid`` (not our child) has exited: a pidfd when the kernel has them, else poll."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):
        while pid_alive(pid):
            time.sleep(0.001)
        return
    try:
        select.select([fd], [], [], 600)
    finally:
        os.close(fd)


# -- the benchmark -------------------------------------------------------------------------------------
def _tools(keep: bool, peers: dict[str, str]) -> list[Tool]:
    tools: list[Tool] = []
    try:
        tools.append(TmoTool(keep))
        tools.append(TspTool(peers["tsp"]))
        tools.append(NqTool(peers["nq"]))
        tools.append(RawTmuxTool())
    except BaseException:
        for tool in tools:
            tool.close()
        raise
    return tools


def run(config: dict[str, Any], *, keep: bool = False, seed: int = 1,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every job at every concurrency on every tool, ``config['rounds']`` times.

    ``config``: ``{"jobs": {job: count}, "rounds": int, "install": bool}``.
    """
    del seed  # no randomness: the order of the tools rotates each round
    peers = ensure_peers(install=bool(config.get("install", True)))
    versions = {
        "tsp": subprocess.run(
            [peers["tsp"], "-V"], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
            timeout=10, env={**os.environ, "TS_SOCKET": "/nonexistent/tmo-bench"},
        ).stdout.split("\n")[0],
        "nq": _dpkg_version("nq"),
        "task-spooler": _dpkg_version("task-spooler"),
    }
    rounds = int(config.get("rounds", 1))
    counts: dict[str, int] = dict(config["jobs"])
    # seconds[job][concurrency][tool] -> one value per round
    seconds: dict[str, dict[str, dict[str, list[float]]]] = {}
    tools = _tools(keep, peers)
    try:
        for job, count in counts.items():
            for concurrency in CONCURRENCY:
                cell = seconds.setdefault(job, {}).setdefault(str(concurrency), {})
                for round_no in range(rounds):
                    order = tools[round_no % len(tools):] + tools[:round_no % len(tools)]
                    for tool in order:
                        elapsed = tool.run(JOBS[job], count, concurrency)
                        cell.setdefault(tool.name, []).append(round(elapsed, 4))
                if progress:
                    progress(f"{job} x{count} c={concurrency}: " + ", ".join(
                        f"{name} {count / percentile(sorted(v), 50):.0f}/s" for name, v in cell.items()))
        submit = list(tools[0].submit_seconds) if isinstance(tools[0], TmoTool) else []
        notes = list(tools[0].bench.teardown_notes) if isinstance(tools[0], TmoTool) else []
    finally:
        for tool in tools:
            tool.close()

    throughput: dict[str, dict[str, dict[str, float]]] = {}
    ratios: dict[str, dict[str, dict[str, float]]] = {}
    for job, by_conc in seconds.items():
        for conc, by_tool in by_conc.items():
            count = counts[job]
            throughput.setdefault(job, {})[conc] = {
                tool: round(count / percentile(sorted(values), 50), 2) for tool, values in by_tool.items()
            }
            # ratio per round (same conditions), then the median: robust to a drifting machine
            ratios.setdefault(job, {})[conc] = {
                f"tmo_vs_{peer}": round(percentile(sorted(
                    by_tool[peer][r] / by_tool["tmo"][r] for r in range(len(by_tool["tmo"]))), 50), 3)
                for peer in TOOLS if peer != "tmo"
            }
    return {
        "description": "throughput (jobs/s, submission included) of the same jobs: tmo vs tsp, nq and "
                       "a raw tmux loop",
        "config": {"jobs": {job: {"count": counts[job], "argv": JOBS[job]} for job in counts},
                   "concurrency": list(CONCURRENCY), "rounds": rounds, "tools": list(TOOLS),
                   "peer_versions": versions, "peer_paths": peers},
        "throughput_jobs_per_s": throughput,
        "ratios": ratios,
        "seconds": seconds,
        "tmo_submit_seconds": {"median": round(percentile(sorted(submit), 50), 4) if submit else None,
                               "max": max(submit) if submit else None},
        "summary": {},
        "notes": notes,
    }


def _dpkg_version(package: str) -> str | None:
    if shutil.which("dpkg-query") is None:
        return None
    proc = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True,
                          text=True, check=False, timeout=10)
    return proc.stdout.strip() or None


def floor_ratio(result: dict[str, Any], job: str = "true", concurrency: int = 16) -> float | None:
    """tmo's throughput as a fraction of the raw tmux floor (the goal: at least 0.5)."""
    cell = result.get("throughput_jobs_per_s", {}).get(job, {}).get(str(concurrency), {})
    if "tmo" not in cell or not cell.get("tmux_raw"):
        return None
    return round(float(cell["tmo"]) / float(cell["tmux_raw"]), 3)


__all__: Sequence[str] = ("JOBS", "NAME", "ensure_peers", "floor_ratio", "run")

"""Manual-SQL-to-kill latency: from a hand-written ``UPDATE ... status='completed'`` to the session gone.

The daemon runs; for each trial the bench queues one project, ``bash -c`` that stamps its start and
then ``exec sleep 600``. Once it runs (its start stamp exists and its session ids are recorded) and
after a random 20-120 ms pause (so the UPDATE falls at a random phase of the daemon's 20 ms database
poll), the bench runs, on its own plain ``sqlite3`` connection in autocommit mode, exactly what a
human would type::

    UPDATE project_queue SET status='completed' WHERE id=N

and takes the commit time when ``execute`` returns. Two probes then watch for the session to go:

* **poll** (the headline): ``tmux -S <sock> has-session -t '$ID'`` in a tight loop; the session is
  gone at the return of the first call that fails. Its resolution is one call, about 2-3 ms,
  reported as ``poll_interval_ms``.
* **notify**: a tmux control-mode client attached to the keeper session receives
  ``%unlinked-window-close @W`` when the project's (only) window, and so its session, is destroyed.
  This is push-based (well under 1 ms) and puts no load on the machine; it cross-checks the poll.

From the daemon's side: the ``project N completed by sql`` line in ``scheduler.log`` (when the daemon
noticed the change; millisecond resolution, truncated) and the ``session_killed`` event (written when
its clean-up finished). The bench waits for that event before the next trial.
"""

from __future__ import annotations

import queue
import random
import sqlite3
import subprocess
import threading
import time
from typing import IO, Any

from bench.harness import BenchError, BenchHome, Event, Row, project_argv, stamp, wait_until
from bench.stats import summarize

NAME = "sql_kill"


class TrialRefused(BenchError):
    """The UPDATE was refused: the project had already ended by the time it ran.

    Seen about once in 150 trials with tmux-orchestrator 0.1.0: the daemon killed the project
    itself, right after starting it (see docs/benchmarks.md, "Findings").
    """


class ControlWatcher:
    """A tmux control-mode client on the bench home's server that timestamps every line it reads."""

    def __init__(self, bench: BenchHome) -> None:
        self.proc = subprocess.Popen(
            ["tmux", "-S", str(bench.socket), "-f", "/dev/null", "-C", "attach-session", "-t",
             "=_tmo_keep", "-f", "no-output,ignore-size"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=bench.env,
        )
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self.thread = threading.Thread(target=self._read, name="bench-control", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        stdout: IO[bytes] | None = self.proc.stdout
        assert stdout is not None
        for raw in iter(stdout.readline, b""):
            self.lines.put((time.perf_counter(), raw.decode(errors="replace").rstrip("\n")))

    def drain(self) -> None:
        """Forget every line read so far."""
        while True:
            try:
                self.lines.get_nowait()
            except queue.Empty:
                return

    def wait_for(self, line: str, timeout: float) -> float | None:
        """perf_counter time at which ``line`` was read, None if it did not come within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                at, text = self.lines.get(timeout=left)
            except queue.Empty:
                return None
            if text == line:
                return at

    def close(self) -> None:
        """Detach (close stdin); kill this client by its pid if it does not leave."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=3)
        self.thread.join(timeout=3)


def _poll_gone(bench: BenchHome, session_id: str, timeout: float) -> tuple[float | None, int]:
    """perf_counter time at which ``has-session`` first failed, and the number of calls made."""
    argv = ["tmux", "-S", str(bench.socket), "-f", "/dev/null", "has-session", "-t", session_id]
    deadline = time.monotonic() + timeout
    calls = 0
    while time.monotonic() < deadline:
        code = subprocess.call(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=bench.env)
        calls += 1
        if code != 0:
            return time.perf_counter(), calls
    return None, calls


SERIES = (
    "commit_to_gone_poll_ms",
    "commit_to_gone_notify_ms",
    "commit_to_gone_notify_unpolled_ms",
    "commit_to_detected_log_ms",
    "detected_log_to_gone_poll_ms",
    "commit_to_output_saved_event_ms",
    "commit_to_session_killed_event_ms",
    "update_statement_ms",
    "poll_interval_ms",
    "commit_to_gone_idle_ms",
    "commit_to_detected_idle_log_ms",
)


def run(count: int, *, keep: bool = False, seed: int = 1) -> dict[str, Any]:
    """Measure ``count`` manual-SQL completions of a running ``sleep 600`` project.

    ``count`` trials use both probes (the headline); ``count // 2`` more, shuffled in among them,
    use only the notification, so the cost of the polling itself on this machine shows as the
    difference between ``commit_to_gone_notify_ms`` and ``commit_to_gone_notify_unpolled_ms``.
    """
    rng = random.Random(seed)
    argv = project_argv(stamp("start"), "exec sleep 600")
    # "idle": the UPDATE comes 1.5-3 s after the start, once the daemon polls at its idle pace
    schedule = ["poll"] * count + ["notify"] * (count // 2) + ["idle"] * max(3, count // 5)
    rng.shuffle(schedule)
    trials: list[dict[str, Any]] = []
    notes: list[str] = []
    refused: list[str] = []
    with BenchHome(NAME, keep=keep) as bench:
        bench.start_daemon(concurrency=1)
        watcher = ControlWatcher(bench)
        try:
            wait_until(lambda: bench.owned_sessions() == [] and watcher.proc.poll() is None,
                       timeout=10, what="control client")
            number = 0
            while schedule:
                probe = schedule.pop()
                try:
                    trials.append(_trial(bench, watcher, argv, rng, number, poll=probe != "notify",
                                         idle=probe == "idle"))
                except TrialRefused as exc:
                    # The project had already ended on its own: record it, run a replacement.
                    refused.append(str(exc))
                    schedule.append(probe)
                    if len(refused) > max(3, count // 10):
                        raise
                number += 1
        finally:
            watcher.close()
        leftover = bench.owned_sessions()
        cpu = bench.cpu_used()
        log = bench.log_lines()
        home = str(bench.home)
    notes += bench.teardown_notes

    detected = {}
    for line in log:
        words = line.message.split()
        # "project 7 completed by sql"
        if len(words) == 5 and words[0] == "project" and words[2:] == ["completed", "by", "sql"]:
            detected[int(words[1])] = line.at
    for t in trials:
        if t["project_id"] in detected:
            t["commit_to_detected_log_ms"] = round((detected[t["project_id"]] - t["commit_wall"]) * 1000, 3)
            if t["commit_to_gone_poll_ms"] is not None:
                t["detected_log_to_gone_poll_ms"] = round(
                    t["commit_to_gone_poll_ms"] - t["commit_to_detected_log_ms"], 3
                )
    series: dict[str, list[float]] = {key: [] for key in SERIES}
    for t in trials:
        if t["idle"]:
            for key, source in (("commit_to_gone_idle_ms", "commit_to_gone_poll_ms"),
                                ("commit_to_detected_idle_log_ms", "commit_to_detected_log_ms")):
                if t.get(source) is not None:
                    series[key].append(t[source])
            continue
        for key in SERIES:
            if key == "commit_to_gone_notify_unpolled_ms":
                if not t["polled"] and t["commit_to_gone_notify_ms"] is not None:
                    series[key].append(t["commit_to_gone_notify_ms"])
            elif key == "commit_to_gone_notify_ms":
                if t["polled"] and t[key] is not None:
                    series[key].append(t[key])
            elif t.get(key) is not None:
                series[key].append(t[key])
    notes += [f"trial refused: {text}" for text in refused]
    missed_notify = sum(1 for t in trials if t["commit_to_gone_notify_ms"] is None)
    if missed_notify:
        notes.append(f"{missed_notify} trial(s) saw no %unlinked-window-close notification")
    return {
        "description": "UPDATE project_queue SET status='completed' WHERE id=N (commit) -> session gone",
        "config": {"trials_polled": count, "trials_notify_only": count // 2, "command": argv,
                   "trials_idle": max(3, count // 5), "settle_s": "uniform 0.02-0.12",
                   "idle_settle_s": "uniform 1.5-3.0", "seed": seed},
        "summary": {key: summarize(values) for key, values in series.items()},
        "samples": {key: [round(v, 3) for v in values] for key, values in series.items()},
        "trials": trials,
        "checks": {
            "sessions_gone": sum(1 for t in trials if t["gone"]),
            "trials": len(trials),
            "trials_refused": len(refused),
            "owned_sessions_left": leftover,
            "cpu_seconds": cpu,
        },
        "home": home if keep else None,
        "notes": notes,
    }


def _trial(bench: BenchHome, watcher: ControlWatcher, argv: list[str], rng: random.Random,
           number: int, *, poll: bool, idle: bool = False) -> dict[str, Any]:
    project_id = bench.enqueue(argv, name="sqlkill")
    wait_until(lambda: bench.mark(project_id, "start") is not None, timeout=10,
               what=f"project {project_id} to start")

    def recorded() -> Row | None:
        row = bench.row(project_id)
        return row if row.session_id and row.window_id else None

    row = wait_until(recorded, timeout=10, what=f"project {project_id}'s session ids")
    session_id, window_id = row.session_id or "", row.window_id or ""
    if bench.tmux("has-session", "-t", session_id).returncode != 0:
        raise BenchError(f"session {session_id} of project {project_id} is not running")
    last_event = bench.events()[-1].id
    time.sleep(rng.uniform(1.5, 3.0) if idle else rng.uniform(0.02, 0.12))
    watcher.drain()

    before = time.perf_counter()
    try:
        bench.db.execute("UPDATE project_queue SET status='completed' WHERE id=?", (project_id,))
    except sqlite3.IntegrityError as exc:
        now = bench.row(project_id)
        raise TrialRefused(
            f"project {project_id} was {now.status} (outcome {now.outcome}, exit code {now.exit_code}) "
            f"before the UPDATE, although its `sleep 600` had started: {exc}"
        ) from exc
    commit = time.perf_counter()
    commit_wall = time.time()
    gone, calls = _poll_gone(bench, session_id, timeout=30) if poll else (None, 0)
    notified = watcher.wait_for(f"%unlinked-window-close {window_id}", timeout=30)
    still_there = bench.tmux("has-session", "-t", session_id).returncode == 0
    if still_there:
        raise BenchError(f"session {session_id} of project {project_id} still alive after 30 s")
    def cleaned_up() -> list[Event] | None:
        found = [e for e in bench.events(last_event) if e.project_id == project_id]
        return found if any(e.kind == "session_killed" for e in found) else None

    events = wait_until(cleaned_up, timeout=30, what=f"session_killed event of project {project_id}")
    at = {e.kind: e.at for e in events}

    def ms(value: float | None, origin: float) -> float | None:
        return None if value is None else round((value - origin) * 1000, 3)

    return {
        "trial": number,
        "project_id": project_id,
        "polled": poll,
        "idle": idle,
        "gone": not still_there,
        "commit_wall": commit_wall,
        "update_statement_ms": ms(commit, before),
        "commit_to_gone_poll_ms": ms(gone, commit),
        "commit_to_gone_notify_ms": ms(notified, commit),
        "commit_to_output_saved_event_ms": ms(at.get("output_saved"), commit_wall),
        "commit_to_session_killed_event_ms": ms(at.get("session_killed"), commit_wall),
        "poll_calls": calls,
        "poll_interval_ms": round((gone - commit) * 1000 / calls, 3) if gone is not None else None,
        "event_kinds": [e.kind for e in events],
    }

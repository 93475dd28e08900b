"""Hand-off latency: from the end of project N to the first command of project N+1.

``count + 1`` projects are queued before the daemon starts (concurrency 1), so they run back to
back. Each project is ``bash -c`` whose **first** action writes ``$EPOCHREALTIME`` (a clock read
with no fork) to ``$TMO_HOME/bench/<id>.start`` and whose **last** action, just before ``exit 0``,
writes it to ``<id>.end``. The headline figure is

    hand-off(N) = start(N+1) - end(N)

It includes everything between the two user-visible moments: bash exiting, the wrapper's exit-code
file and FIFO message, the daemon recording the end, claiming N+1, creating its tmux session, and
tmux, the wrapper ``sh`` and ``bash`` starting up in the new pane. tmux's own ``session_created`` has
one-second resolution, so the project's own first action is the honest "the session exists and runs"
timestamp.

The same run is split into parts with the daemon's own timestamps, which have microsecond resolution
(``project_queue.completed_at`` and ``started_at`` are written by the daemon with ``now_text()``):

* exit -> completed_at(N): the daemon recorded the end (FIFO message, row update);
* completed_at(N) -> started_at(N+1): the claim of the next project;
* started_at(N+1) -> start(N+1): session creation plus the wrapper and bash starting.

Also reported, as asked for: ``events.at`` of N's ``completed`` event to N+1's ``started`` event
(SQLite clock, millisecond resolution), and end(N) -> the ``started session`` line of N+1 in
``scheduler.log`` (written once ``tmux new-session`` has returned; millisecond resolution, truncated).
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from bench.harness import BenchError, BenchHome, project_argv, stamp, wait_until
from bench.stats import summarize

NAME = "handoff"


def run(count: int, *, keep: bool = False) -> dict[str, Any]:
    """Measure ``count`` hand-offs (``count + 1`` projects)."""
    argv = project_argv(stamp("start"), stamp("end"), "exit 0")
    with BenchHome(NAME, keep=keep) as bench:
        ids = [bench.enqueue(argv, name="handoff") for _ in range(count + 1)]
        started = time.monotonic()
        bench.start_daemon(concurrency=1)
        wait_until(lambda: bench.count_not_terminal() == 0, timeout=30 + 2.0 * len(ids),
                   interval=0.05, what=f"{len(ids)} projects to finish")
        wall = time.monotonic() - started
        time.sleep(0.2)  # let the last session close before looking at tmux
        leftover = bench.owned_sessions()
        cpu = bench.cpu_used()
        rows = bench.rows()
        events = bench.events()
        log = bench.log_lines()
        marks = {i: (bench.mark(i, "start"), bench.mark(i, "end")) for i in ids}
        home = str(bench.home)
    notes = list(bench.teardown_notes)

    bad = [r.id for r in rows.values() if r.status != "completed" or r.exit_code != 0]
    if bad:
        raise BenchError(f"projects {bad[:10]} did not complete with exit code 0")
    order = sorted(ids, key=lambda i: rows[i].started_at or 0.0)
    if order != ids:
        notes.append("projects did not start in id order; hand-offs follow start order")
    completed_event = {e.project_id: e.at for e in events if e.kind == "completed"}
    started_event = {e.project_id: e.at for e in events if e.kind == "started"}
    session_logged: dict[int, float] = {}
    for line in log:
        if line.message.startswith("started session "):
            pid = line.message.split(" for project ", 1)[1].split(":", 1)[0]
            session_logged[int(pid)] = line.at

    series: dict[str, list[float]] = {
        "handoff_ms": [],
        "exit_to_completed_at_ms": [],
        "completed_at_to_claimed_ms": [],
        "claimed_to_first_command_ms": [],
        "event_completed_to_event_started_ms": [],
        "end_to_session_logged_ms": [],
        "project_runtime_ms": [],
    }
    for prev, nxt in itertools.pairwise(order):
        end = marks[prev][1]
        start_next = marks[nxt][0]
        done, claimed = rows[prev].completed_at, rows[nxt].started_at
        if end is None or start_next is None or done is None or claimed is None:
            raise BenchError(f"missing timestamps for hand-off {prev} -> {nxt}")
        series["handoff_ms"].append((start_next - end) * 1000)
        series["exit_to_completed_at_ms"].append((done - end) * 1000)
        series["completed_at_to_claimed_ms"].append((claimed - done) * 1000)
        series["claimed_to_first_command_ms"].append((start_next - claimed) * 1000)
        series["event_completed_to_event_started_ms"].append(
            (started_event[nxt] - completed_event[prev]) * 1000
        )
        if nxt in session_logged:
            series["end_to_session_logged_ms"].append((session_logged[nxt] - end) * 1000)
    for i in ids:
        start, end = marks[i]
        if start is not None and end is not None:
            series["project_runtime_ms"].append((end - start) * 1000)

    starts = [m[0] for m in marks.values() if m[0] is not None]
    ends = [m[1] for m in marks.values() if m[1] is not None]
    span = max(ends) - min(starts) if starts and ends else 0.0
    return {
        "description": "end of project N (its last command) -> first command of project N+1, concurrency 1",
        "config": {"handoffs": count, "projects": len(ids), "command": argv, "concurrency": 1},
        "summary": {key: summarize(values) for key, values in series.items()},
        "samples": {key: [round(v, 3) for v in values] for key, values in series.items()},
        "checks": {
            "all_completed_exit_0": not bad,
            "owned_sessions_left": leftover,
            "wall_seconds_with_daemon_start": round(wall, 3),
            "first_start_to_last_end_seconds": round(span, 3),
            "projects_per_second": round(len(ids) / span, 1) if span > 0 else None,
            "cpu_seconds": cpu,
            "cpu_ms_per_project": {k: (round(v * 1000 / len(ids), 3) if v is not None else None)
                                   for k, v in cpu.items()},
        },
        "home": home if keep else None,
        "notes": notes,
    }

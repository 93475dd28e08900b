"""End-detection latency: from a project's process exit to its row being terminal.

``count`` projects are queued before the daemon starts (concurrency 1). Each one sleeps a random
100-300 ms first, so that the daemon is idle in its ``select`` when the project ends (as in real use,
where projects run for minutes) and the ends fall at random phases of the daemon's timers (the 20 ms
database poll and the 2 s reconcile pass). Just before ``exit 0`` the project writes
``$EPOCHREALTIME`` to ``$TMO_HOME/bench/<id>.end``.

Figures, each "exit -> X":

* ``events.at`` of the ``completed`` event (the headline): the SQLite clock inside the trigger, at the
  moment the status UPDATE runs; millisecond resolution, so single samples carry +-1 ms;
* ``project_queue.completed_at``: stamped by the daemon (microseconds) just before its write
  transaction, a lower bound of the commit;
* the ``project N completed`` line of ``scheduler.log``: logged after the commit and the session
  bookkeeping, an upper bound (millisecond resolution, truncated).

To split the figure, the product's own wrapper script (``tmux_orchestrator.wrapper.write_wrapper``)
is also run on its own, outside tmux and with no daemon, with the bench reading the FIFO:
``exit_to_fifo_message_ms`` is the part of the latency spent before the daemon is told (bash
exiting, the wrapper's exit-code file and its ``mv``, the FIFO write).
"""

from __future__ import annotations

import os
import random
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import BenchError, BenchHome, project_argv, stamp, wait_until
from bench.stats import summarize
from tmux_orchestrator import Project, ProjectStatus, load_settings
from tmux_orchestrator.wrapper import write_wrapper

NAME = "end_detection"


def run(count: int, *, keep: bool = False, seed: int = 1) -> dict[str, Any]:
    """Measure ``count`` project ends."""
    rng = random.Random(seed)
    durations = [round(rng.uniform(0.1, 0.3), 3) for _ in range(count)]
    with BenchHome(NAME, keep=keep) as bench:
        ids = [
            bench.enqueue(project_argv(stamp("start"), f"sleep {d}", stamp("end"), "exit 0"), name="end")
            for d in durations
        ]
        started = time.monotonic()
        bench.start_daemon(concurrency=1)
        wait_until(lambda: bench.count_not_terminal() == 0, timeout=30 + 3.0 * len(ids),
                   interval=0.05, what=f"{len(ids)} projects to finish")
        wall = time.monotonic() - started
        cpu = bench.cpu_used()
        rows = bench.rows()
        events = bench.events()
        log = bench.log_lines()
        ends = {i: bench.mark(i, "end") for i in ids}
        home = str(bench.home)
    notes = list(bench.teardown_notes)

    bad = [r.id for r in rows.values() if r.status != "completed" or r.exit_code != 0]
    if bad:
        raise BenchError(f"projects {bad[:10]} did not complete with exit code 0")
    completed_event = {e.project_id: e.at for e in events if e.kind == "completed"}
    logged: dict[int, float] = {}
    for line in log:
        words = line.message.split()
        if len(words) >= 3 and words[0] == "project" and words[2] == "completed" and words[1].isdigit():
            logged.setdefault(int(words[1]), line.at)

    series: dict[str, list[float]] = {
        "exit_to_event_ms": [],
        "exit_to_completed_at_ms": [],
        "exit_to_logged_ms": [],
        "exit_to_fifo_message_ms": wrapper_overhead(count, rng),
    }
    for i in ids:
        end, done = ends[i], rows[i].completed_at
        if end is None or done is None or i not in completed_event:
            raise BenchError(f"missing timestamps for project {i}")
        series["exit_to_event_ms"].append((completed_event[i] - end) * 1000)
        series["exit_to_completed_at_ms"].append((done - end) * 1000)
        if i in logged:
            series["exit_to_logged_ms"].append((logged[i] - end) * 1000)

    return {
        "description": "project process exit (timestamp written just before exit) -> row terminal",
        "config": {"projects": count, "project_runtime_s": "uniform 0.1-0.3", "seed": seed,
                   "concurrency": 1},
        "summary": {key: summarize(values) for key, values in series.items()},
        "samples": {key: [round(v, 3) for v in values] for key, values in series.items()},
        "checks": {
            "all_completed_exit_0": not bad,
            "wall_seconds": round(wall, 3),
            "cpu_seconds": cpu,
        },
        "home": home if keep else None,
        "notes": notes,
    }


def wrapper_overhead(count: int, rng: random.Random) -> list[float]:
    """Milliseconds from a project's last command to its wrapper's FIFO line, outside tmux."""
    home = Path(tempfile.mkdtemp(prefix="tmo-bench-wrapper-"))
    samples: list[float] = []
    try:
        settings = load_settings(home)
        settings.ensure_dirs()
        (home / "bench").mkdir()
        os.mkfifo(settings.fifo_path, 0o600)
        fifo = os.open(settings.fifo_path, os.O_RDWR | os.O_NONBLOCK)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TMO_")}
        try:
            for number in range(1, count + 1):
                duration = round(rng.uniform(0.01, 0.03), 3)
                argv = project_argv(f"sleep {duration}", stamp("end"), "exit 0")
                project = Project(id=number, name="wrapper", status=ProjectStatus.PROCESSING,
                                  command=argv, attempt=1, session_name=f"wrapper-{number}")
                script = write_wrapper(settings, project)
                proc = subprocess.Popen(["/bin/sh", str(script)], cwd=home, env=env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
                ready, _, _ = select.select([fifo], [], [], 10)
                read_at = time.time()
                line = os.read(fifo, 4096).decode() if ready else ""
                proc.wait(timeout=10)
                if not line.startswith(f"exit {number} 1 0"):
                    raise BenchError(f"unexpected wrapper message {line!r}")
                end = float((home / "bench" / f"{number}.end").read_text().replace(",", "."))
                samples.append((read_at - end) * 1000)
        finally:
            os.close(fifo)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return samples

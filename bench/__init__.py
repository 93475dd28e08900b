"""Benchmarks of tmux-orchestrator, run against the real installed daemon and CLI.

``python -m bench [quick|full] [--out DIR]`` runs, each in fresh temporary ``TMO_HOME`` s with
``tmo daemon start`` as a subprocess and the home's own tmux server:

* :mod:`bench.handoff` - end of project N to the first command of project N+1;
* :mod:`bench.end_detection` - a project's exit to its row being terminal;
* :mod:`bench.sql_kill` - a hand-written ``UPDATE ... status='completed'`` to its session gone;
* :mod:`bench.peers` - throughput of the same jobs against task-spooler, nq and a raw tmux loop;
* :mod:`bench.scale` - 10,000 queued projects, 1,000 running at once, cleanup of 500 sessions;
* :mod:`bench.soak` - the chaos suite for longer: daemon and tmux server kills under load;
* :mod:`bench.hosts` - 1, 2 and 4 hosts on one PostgreSQL queue beside SQLite: hand-off, throughput,
  cross-host SQL-to-kill (needs PostgreSQL: ``TMO_BENCH_POSTGRES``);
* :mod:`bench.cli` - the wall time of one ``tmo`` process per command, beside a bare Python start;
* :mod:`bench.messages` - ``tmo send`` to 10 fake agents: send-to-submitted latency, exactly once.

Results go to ``bench/results/<timestamp>-<mode>.json`` and ``latest-<mode>.json`` (with a PNG
plot when matplotlib is installed: ``pip install -e '.[bench]'``); ``python -m bench report``
prints the latest full run as the Markdown of ``docs/benchmarks.md``.
"""

from __future__ import annotations

from typing import Any

#: Version of the result file layout.
SCHEMA_VERSION = 2

#: What each benchmark does per mode: a sample count (latency benchmarks) or a config dict.
MODES: dict[str, dict[str, Any]] = {
    "quick": {
        "handoff": 50,
        "end_detection": 40,
        "sql_kill": 15,
        "peers": {"jobs": {"true": 40, "sleep_0.1": 12, "print_10mb": 3}, "rounds": 1},
        "scale": {"cli_single": 10, "api_single": 1000, "batch": 10000, "rows": 10000, "list_runs": 3,
                  "claims": 30, "claim_sizes": [100, 1000, 10000], "running": 200, "settle_s": 2,
                  "idle_window_s": 8, "reconcile_interval_s": 0.2, "passes": 4, "cleanup": 100,
                  "cleanup_runs": 1},
        "soak": {"projects": 40, "daemon_kills": 3, "server_kills": 1, "timeout_s": 40},
        "hosts": {"host_counts": [1, 2, 4], "handoffs_per_host": 10, "projects": 40, "concurrency": 4,
                  "work": 0.2, "sql_kill": 10, "sql_kill_idle": 3},
        "cli": {"runs": 10, "small_queue": 20, "rows": 10000, "rows_runs": 3},
        "messages": {"agents": 10, "messages": 100, "cli_sends": 5},
    },
    "full": {
        "handoff": 300,
        "end_detection": 300,
        "sql_kill": 100,
        "peers": {"jobs": {"true": 200, "sleep_0.1": 48, "print_10mb": 12}, "rounds": 3},
        "scale": {"cli_single": 100, "api_single": 10000, "batch": 10000, "rows": 10000, "list_runs": 9,
                  "claims": 80, "claim_sizes": [100, 1000, 10000], "running": 1000, "settle_s": 5,
                  "idle_window_s": 40, "reconcile_interval_s": 0.2, "passes": 10, "cleanup": 500,
                  "cleanup_runs": 3},
        "soak": {"projects": 600, "daemon_kills": 30, "server_kills": 4, "timeout_s": 400},
        "hosts": {"host_counts": [1, 2, 4], "handoffs_per_host": 40, "projects": 200, "concurrency": 4,
                  "work": 0.2, "sql_kill": 60, "sql_kill_idle": 12},
        "cli": {"runs": 40, "small_queue": 20, "rows": 10000, "rows_runs": 9},
        "messages": {"agents": 10, "messages": 1000, "cli_sends": 20},
    },
}

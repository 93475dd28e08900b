"""Latency benchmarks of tmux-orchestrator, run against the real installed daemon.

``python -m bench [quick|full] [--out DIR]`` runs, each in a fresh temporary ``TMO_HOME`` with
``tmo daemon start`` as a subprocess and the home's own tmux server:

* :mod:`bench.handoff` - end of project N to the first command of project N+1;
* :mod:`bench.end_detection` - a project's exit to its row being terminal;
* :mod:`bench.sql_kill` - a hand-written ``UPDATE ... status='completed'`` to its session gone.

Results go to ``bench/results/<timestamp>-<mode>.json`` and ``latest-<mode>.json``;
``python -m bench report`` prints the latest full run as the Markdown of ``docs/benchmarks.md``.
"""

from __future__ import annotations

#: Version of the result file layout.
SCHEMA_VERSION = 1

#: Sample counts per mode.
MODES: dict[str, dict[str, int]] = {
    "quick": {"handoff": 100, "end_detection": 100, "sql_kill": 30},
    "full": {"handoff": 300, "end_detection": 300, "sql_kill": 100},
}

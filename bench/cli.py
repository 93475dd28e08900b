"""CLI start-up: every ``tmo`` command side by side with a bare Python start, in one run.

A script that queues 100 specs runs ``tmo add`` 100 times, and ``tsp``/``nq`` answer in 1-2 ms, so
the cost of one ``tmo`` process is a figure of its own. Measured here, interleaved round by round so
that a busy moment of the (shared) machine hits every command alike:

* **bare**: ``python -c 'import sqlite3, json'`` with the same interpreter: the floor any Python CLI
  that reads a SQLite database pays;
* ``tmo --version``, ``tmo add -- true`` (no daemon running), ``tmo list`` and ``tmo show 1`` on a
  small queue (a few dozen rows), in a home without a config file;
* ``tmo add`` and ``tmo list`` again in a home whose ``config.toml`` has a ``[[hooks]]`` section
  (hooks are the daemon's business: a command that does not deliver must not pay for them);
* ``tmo list --status queued --json`` at ``rows`` (10,000) queued projects.

Each figure is the wall time from fork to reap (:func:`bench.harness.time_process`), median of the
counted runs; the ratios are to the bare start's median of the same run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bench.harness import BenchError, BenchHome, time_process, tmo_argv
from bench.stats import summarize

NAME = "cli"
HOOK_CONFIG = """
[[hooks]]
name = "notify"
on = ["completed", "failed"]
command = ["true"]
"""


def _commands(home: Path) -> dict[str, list[str]]:
    tmo = tmo_argv()
    return {
        "bare": [sys.executable, "-c", "import sqlite3, json"],
        "version": [*tmo, "--version"],
        "add": [*tmo, "add", "--name", "bench", "--dir", str(home), "--", "true"],
        "list": [*tmo, "list"],
        "show": [*tmo, "show", "1"],
    }


def _interleaved(commands: dict[str, tuple[list[str], BenchHome]], runs: int) -> dict[str, list[float]]:
    """Wall times (ms) of every command, one run of each per round, ``runs`` rounds."""
    walls: dict[str, list[float]] = {key: [] for key in commands}
    for _ in range(runs):
        for key, (argv, home) in commands.items():
            figure = time_process(argv, env=home.env, runs=1, warmup=0, cwd=home.home)
            if figure["exit_codes"] != [0]:
                raise BenchError(f"{' '.join(argv[-4:])} exited {figure['exit_codes']}")
            walls[key].append(figure["wall_ms"]["median"])
    return walls


def run(config: dict[str, Any], *, keep: bool = False, seed: int = 1) -> dict[str, Any]:
    """Start-up of every command beside the bare interpreter, then ``list --json`` at ``rows``."""
    runs = int(config["runs"])
    with BenchHome(f"{NAME}-plain", keep=keep) as plain, BenchHome(f"{NAME}-hooks", keep=keep) as hooked:
        (hooked.home / "config.toml").write_text(HOOK_CONFIG)
        (hooked.home / "config.toml").chmod(0o600)
        for bench in (plain, hooked):
            bench.orch.enqueue_many([{"command": ["true"], "name": "seed", "project_path": str(bench.home)}]
                                    * int(config["small_queue"]))
        commands = {key: (argv, plain) for key, argv in _commands(plain.home).items()}
        hooked_argv = _commands(hooked.home)
        commands["add_with_hooks"] = (hooked_argv["add"], hooked)
        commands["list_with_hooks"] = (hooked_argv["list"], hooked)
        for argv, home in commands.values():  # warm the page cache and the bytecode caches
            time_process(argv, env=home.env, runs=1, warmup=0, cwd=home.home)
        walls = _interleaved(commands, runs)
    with BenchHome(f"{NAME}-rows", keep=keep) as big:
        rows = int(config["rows"])
        row = {"command": ["sleep", "1"], "name": "row", "project_path": str(big.home)}
        big.orch.enqueue_many([row] * rows)
        list_json = time_process([*tmo_argv(), "list", "--status", "queued", "--json"], env=big.env,
                                 runs=int(config["rows_runs"]), cwd=big.home)
        if list_json["exit_codes"] != [0] or list_json["output_bytes"] < rows:
            raise BenchError("tmo list --status queued --json did not list the queued projects")
    summary = {f"{key}_ms": summarize(values) for key, values in walls.items()}
    bare = summary["bare_ms"]["median"]
    ratios = {key: round(summary[f"{key}_ms"]["median"] / bare, 2) for key in walls if key != "bare"}
    return {
        "description": "wall time of one tmo process, beside a bare `python -c 'import sqlite3, json'`",
        "config": {**config, "argv0": tmo_argv()[0], "python": sys.executable, "seed": seed},
        "summary": summary,
        "ratios_to_bare": ratios,
        "list_json_queued": {"rows": rows, **list_json},
        "samples_ms": {key: [round(v, 2) for v in values] for key, values in walls.items()},
    }

"""``python -m bench [quick|full|report] [--out DIR] [--only NAMES] [--keep] [--no-install]``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tmux_orchestrator
from bench import (
    MODES,
    SCHEMA_VERSION,
    cli,
    end_detection,
    handoff,
    hosts,
    messages,
    peers,
    scale,
    soak,
    sql_kill,
)
from bench.harness import scrub_environment, tmo_argv
from bench.machine import busy_percent, cpu_ticks, describe, git_revision, tree_digest
from bench.plot import MISSING, write_plot
from bench.report import evaluate_goals, headline, markdown, write_json
from tmux_orchestrator import load_settings

BENCH_DIR = Path(__file__).resolve().parent
PACKAGE_DIR = Path(tmux_orchestrator.__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results"
DOCS_PNG = BENCH_DIR.parent / "docs" / "benchmarks.png"
RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    handoff.NAME: handoff.run,
    end_detection.NAME: end_detection.run,
    sql_kill.NAME: sql_kill.run,
    peers.NAME: peers.run,
    scale.NAME: scale.run,
    soak.NAME: soak.run,
    hosts.NAME: hosts.run,
    cli.NAME: cli.run,
    messages.NAME: messages.run,
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks of the real tmux-orchestrator daemon and CLI (each in a temp TMO_HOME): "
                    "latencies, throughput against tsp/nq/raw tmux, scale, chaos soak.",
    )
    parser.add_argument("mode", nargs="?", default="quick", choices=[*MODES, "report", "plot"],
                        help="quick (under 2 minutes), full (about 15 minutes), report: print the "
                             "latest full result as Markdown, or plot: draw it as a PNG (default: quick)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"directory for the JSON results (default: {DEFAULT_OUT})")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(RUNNERS)}")
    parser.add_argument("--keep", action="store_true", help="keep the temporary homes for inspection")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random pauses (default 1)")
    parser.add_argument("--no-install", action="store_true",
                        help="do not apt-get install task-spooler and nq when missing (fail instead)")
    parser.add_argument("--no-plot", action="store_true", help="do not write the PNG plot")
    parser.add_argument("--from", dest="source", type=Path,
                        help="report/plot: the result file to render (default: <out>/latest-full.json)")
    parser.add_argument("--png", type=Path, default=DOCS_PNG,
                        help=f"plot: where to write the PNG (default: {DOCS_PNG})")
    return parser.parse_args(argv)


def _print_summary(name: str, result: dict[str, Any]) -> None:
    if "error" in result:
        print(f"  {name}: FAILED: {result['error']}")
        return
    for line in headline(name, result):
        print(f"  {name}: {line}")
    for series, stats in result["summary"].items():
        if stats.get("n"):
            print(f"  {name}.{series:<38} n={stats['n']:<4} median {stats['median']:8.2f}  "
                  f"p90 {stats['p90']:8.2f}  p99 {stats['p99']:8.2f}  max {stats['max']:8.2f} ms")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks of one mode, or render a report; returns the exit code."""
    args = _parse(argv)
    if args.mode in ("report", "plot"):
        source = args.source or args.out / "latest-full.json"
        saved: dict[str, Any] = json.loads(source.read_text())
        if args.mode == "report":
            print(markdown(saved))
            return 0
        message = write_plot(saved, [args.png])
        print(message, file=sys.stderr if message == MISSING else sys.stdout)
        return 1 if message == MISSING else 0
    removed = scrub_environment()
    names = [n for n in args.only.split(",") if n] or list(RUNNERS)
    unknown = set(names) - set(RUNNERS)
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    counts = MODES[args.mode]
    started = datetime.now(UTC)
    run_id = started.strftime("%Y%m%dT%H%M%SZ")
    settings = load_settings(Path(tempfile.gettempdir()) / "tmo-bench-defaults")
    data: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "run_id": run_id,
        "mode": args.mode,
        "started_at": started.isoformat(),
        "machine": describe(Path(tempfile.gettempdir())),
        "product": {
            "version": tmux_orchestrator.__version__,
            "module": str(Path(tmux_orchestrator.__file__).parent),
            "cli": tmo_argv(),
            "code_sha256": tree_digest(PACKAGE_DIR),
            **git_revision(BENCH_DIR.parent),
            "settings": {
                "db_poll_interval_s": settings.db_poll_interval,
                "reconcile_interval_s": settings.reconcile_interval,
                "kill_grace_s": settings.kill_grace,
                "sqlite_synchronous": settings.sqlite_synchronous,
            },
        },
        "environment_removed": sorted(removed),
        "counts": {n: counts[n] for n in names},
        "benchmarks": {},
    }
    print(f"bench {args.mode}: {', '.join(names)}")
    failed = False
    for name in names:
        t0 = time.monotonic()
        ticks = cpu_ticks()
        load = [round(x, 2) for x in os.getloadavg()]
        try:
            kwargs: dict[str, Any] = {"keep": args.keep}
            if name != handoff.NAME:
                kwargs["seed"] = args.seed
            config = counts[name]
            if name == peers.NAME:
                config = {**config, "install": not args.no_install}
            result = RUNNERS[name](config, **kwargs)
        except Exception as exc:  # noqa: BLE001 - recorded in the result; the other benches still run
            failed = True
            result = {**getattr(exc, "result", {}), "error": str(exc),
                      "traceback": traceback.format_exc()}
        result["seconds"] = round(time.monotonic() - t0, 1)
        result["load_average_before"] = load
        # everything the machine did meanwhile, this bench and its daemon included
        result["system_cpu_busy_percent"] = busy_percent(ticks, cpu_ticks())
        data["benchmarks"][name] = result
        _print_summary(name, result)
        print(f"  ({result['seconds']} s, all CPUs {result['system_cpu_busy_percent']} % busy, "
              f"load before {load})")
    data["finished_at"] = datetime.now(UTC).isoformat()
    if tree_digest(PACKAGE_DIR) != data["product"]["code_sha256"]:
        data["product"]["code_changed_during_run"] = True
        print("warning: the tmux_orchestrator sources changed while the benchmarks ran", file=sys.stderr)
    data["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    data["goals"] = evaluate_goals(data["benchmarks"])
    for key, goal in data["goals"].items():
        verdict = {True: "met", False: "MISSED", None: "not judged" if goal.get("caveat") else
                   "not measured"}[goal["met"]]
        print(f"  goal {key}: {verdict} ({goal['measured']} {goal['unit']}{goal.get('caveat', '')})")
    if not args.no_plot:
        pngs = [args.out / f"{run_id}-{args.mode}.png", args.out / f"latest-{args.mode}.png"]
        print(write_plot(data, pngs))
    for path in write_json(data, args.out, run_id, args.mode):
        print(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The results as one PNG a person can read at a glance (needs matplotlib: ``pip install -e '.[bench]'``).

Top row: throughput of each job against the peers, per concurrency, log scale (so equal distances
are equal ratios). Bottom row: the latency distributions with their goals, the scale curves (claim
time against queue size, ``tmo list`` at 10,000 rows) and every goal as a share of its limit.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.report import GOALS

_COLOURS = {"tmo": "#1f77b4", "tsp": "#ff7f0e", "nq": "#2ca02c", "tmux_raw": "#7f7f7f"}
_TOOL_NAMES = {"tmo": "tmo", "tsp": "tsp", "nq": "nq", "tmux_raw": "raw tmux loop"}
_GOAL_LABELS = {
    "handoff_median_under_20ms": "hand-off median < 20 ms",
    "handoff_p99_under_100ms": "hand-off p99 < 100 ms",
    "sql_kill_median_under_200ms": "SQL -> kill median < 200 ms",
    "sql_kill_after_idle_median_under_200ms": "same, daemon idle < 200 ms",
    "true_c16_at_least_half_the_raw_tmux_floor": "true, c=16: >= 0.5 x raw tmux",
    "idle_daemon_cpu_under_1pct_at_1000_sessions": "idle daemon CPU < 1 % (1000)",
    "idle_daemon_cpu_with_its_tmux_calls_under_1pct_at_1000_sessions": "same + its tmux calls < 1 %",
    "reconcile_pass_under_50ms_at_1000_sessions": "reconcile pass < 50 ms (1000)",
    "list_under_300ms_at_10000_rows": "tmo list < 300 ms (10k rows)",
    "list_json_queued_under_300ms_at_10000_rows": "list --json < 300 ms (10k)",
    "claim_at_10k_within_2x_of_100": "claim at 10k <= 2 x at 100",
    "cleanup_of_500_sessions_under_2s": "cleanup of 500 < 2 s",
}
_JOB_TITLES = {"true": "`true`", "sleep_0.1": "`sleep 0.1`", "print_10mb": "print 10 MiB"}

MISSING = ("matplotlib is not installed, so no plot was written; install it with "
           "`pip install -e '.[bench]'` (or `pip install 'matplotlib>=3.7'`) and run "
           "`python -m bench plot` to draw the latest results")


def write_plot(data: dict[str, Any], targets: list[Path]) -> str:
    """Draw ``data`` into each of ``targets`` (PNG files); returns what happened (or :data:`MISSING`)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return MISSING
    mode = data.get("mode")
    benches = data.get("benchmarks", {})
    fig, axes = plt.subplots(2, 3, figsize=(18, 11))
    fig.suptitle(f"tmux-orchestrator benchmarks, run {data.get('run_id')} ({mode}); "
                 f"{data.get('machine', {}).get('cpu_count')} CPUs, {data.get('machine', {}).get('tmux')}",
                 fontsize=14)
    peers = benches.get("peers", {})
    for ax, job in zip(axes[0], ("true", "sleep_0.1", "print_10mb"), strict=True):
        _throughput(ax, peers, job)
    _latencies(axes[1][0], benches)
    _scale(axes[1][1], benches.get("scale", {}))
    _goals(axes[1][2], data.get("goals", {}))
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    written = []
    for path in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
        written.append(str(path))
    plt.close(fig)
    data["plot_files"] = written
    return "wrote " + ", ".join(written)


def _throughput(ax: Any, peers: dict[str, Any], job: str) -> None:
    cells = peers.get("throughput_jobs_per_s", {}).get(job, {})
    count = peers.get("config", {}).get("jobs", {}).get(job, {}).get("count")
    ax.set_title(f"throughput: {count} x {_JOB_TITLES.get(job, job)} (higher is better)")
    if not cells:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        return
    tools = [t for t in _COLOURS if any(t in c for c in cells.values())]
    concs = list(cells)
    width = 0.8 / len(tools)
    for i, tool in enumerate(tools):
        xs = [n + (i - (len(tools) - 1) / 2) * width for n in range(len(concs))]
        ys = [cells[c].get(tool, 0.0) for c in concs]
        bars = ax.bar(xs, ys, width, label=_TOOL_NAMES[tool], color=_COLOURS[tool])
        for bar, value in zip(bars, ys, strict=True):
            ax.annotate(f"{value:.0f}" if value >= 10 else f"{value:.1f}",
                        (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom", fontsize=7)
    ax.set_yscale("log")
    top = max(v for c in cells.values() for v in c.values())
    bottom = min(v for c in cells.values() for v in c.values() if v > 0)
    ax.set_ylim(bottom / 2, top * 6)  # room for the legend above the bars
    ax.set_xticks(range(len(concs)), [f"concurrency {c}" for c in concs], fontsize=9)
    ax.set_ylabel("jobs per second (log scale)")
    ratios = peers.get("ratios", {}).get(job, {})
    floor = ", ".join(f"c={c}: {ratios.get(c, {}).get('tmo_vs_tmux_raw', float('nan')):.2f}" for c in concs)
    ax.set_xlabel(f"tmo / raw tmux loop: {floor}", fontsize=9)
    ax.legend(fontsize=8, loc="upper center", ncol=4)
    ax.grid(axis="y", alpha=0.3, which="both")


def _latencies(ax: Any, benches: dict[str, Any]) -> None:
    series = [
        ("handoff", "handoff_ms", "hand-off\nend N -> start N+1", 20.0),
        ("end_detection", "exit_to_event_ms", "end detection\nexit -> row terminal", None),
        ("sql_kill", "commit_to_gone_poll_ms", "manual SQL\n-> session gone", 200.0),
    ]
    data, labels, goals = [], [], []
    for bench, key, label, goal in series:
        samples = benches.get(bench, {}).get("samples", {}).get(key)
        if samples:
            data.append(samples)
            stats = benches[bench]["summary"][key]
            labels.append(f"{label}\nmedian {stats['median']:.1f}\np99 {stats['p99']:.1f}")
            goals.append(goal)
    ax.set_title("latency distributions (ms; lower is better)")
    if not data:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        return
    ax.boxplot(data, whis=(1, 99), showfliers=True, flierprops={"markersize": 2})
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
    top = max(max(d) for d in data)
    for n, goal in enumerate(goals, start=1):
        if goal is not None and goal <= top * 1.5:
            ax.hlines(goal, n - 0.35, n + 0.35, colors="red", linestyles="--")
            ax.annotate(f"goal: median < {goal:g}", (n + 0.37, goal), color="red", fontsize=7, va="center")
    ax.set_ylim(0, top * 1.25)
    ax.set_ylabel("milliseconds (box: quartiles; whiskers: p1-p99)")
    ax.text(0.02, 0.97, "original scheduler: 24,000-44,000 ms per hand-off (off this scale)",
            transform=ax.transAxes, fontsize=8, color="darkred", va="top")
    ax.grid(axis="y", alpha=0.3)


def _scale(ax: Any, scale: dict[str, Any]) -> None:
    ax.set_title("scale (lower is better)")
    claims = scale.get("claim_ms", {})
    if not claims:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        return
    sizes = sorted(claims, key=int)
    ax.plot([int(s) for s in sizes], [claims[s]["median"] for s in sizes], "o-", label="claim, median (ms)")
    ax.plot([int(s) for s in sizes], [claims[s]["p90"] for s in sizes], "o:", label="claim, p90 (ms)")
    ax.set_xscale("log")
    ax.set_xlabel("projects queued (log scale)")
    ax.set_ylabel("claim time (ms)")
    ax.set_ylim(0, max(claims[s]["p90"] for s in sizes) * 3.2)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    lst = scale.get("list", {})
    run = scale.get("running", {})
    passes = run.get("reconcile_pass_ms", {})
    text = [
        f"tmo list, {lst.get('rows', 0):,} rows: {lst.get('table', {}).get('wall_ms', {}).get('median')} ms",
        f"  --status queued --json: {lst.get('json_queued', {}).get('wall_ms', {}).get('median')} ms "
        "(goal < 300)",
        f"{run.get('sessions')} running: idle daemon CPU "
        f"{run.get('idle', {}).get('cpu_percent', {}).get('daemon')} %",
        f"  reconcile pass: {passes.get('unchanged', {}).get('median')} ms unchanged, "
        f"{passes.get('full', {}).get('median')} ms full (goal < 50)",
        f"  cancel all: {run.get('cancel_all', {}).get('until_no_session_s')} s; cleanup of "
        f"{run.get('cleanup', {}).get('sessions')}: {run.get('cleanup', {}).get('median_s')} s",
    ]
    ax.text(0.02, 0.97, "\n".join(text), transform=ax.transAxes, fontsize=8, va="top",
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "#cccccc"})


def _goals(ax: Any, goals: dict[str, Any]) -> None:
    ax.set_title("goals: measured / limit (met: left of the line)")
    rows = []
    for key, goal in goals.items():
        value = goal.get("measured")
        if not isinstance(value, (int, float)) or math.isnan(value):
            continue
        limit = goal["limit"]
        # ">=" goals (a floor to reach) are drawn inverted, so left of 1 is always "met"
        share = (limit / value if value else math.inf) if GOALS[key]["op"] == ">=" else value / limit
        rows.append((_GOAL_LABELS.get(key, key.replace("_", " ")), share, goal.get("met")))
    if not rows:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        return
    colours = {True: "#2ca02c", False: "#d62728", None: "#aaaaaa"}
    ys = range(len(rows))
    ax.barh(list(ys), [min(r[1], 3.0) for r in rows], color=[colours[r[2]] for r in rows])
    ax.set_yticks(list(ys), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", linestyle="--")
    ax.set_xlim(0, max(1.2, min(3.0, max(r[1] for r in rows) * 1.1)))
    for y, (_, share, met) in zip(ys, rows, strict=True):
        ax.annotate(f"{share:.2f}" + ("" if met is not None else " (small run)"), (min(share, 3.0), y),
                    va="center", fontsize=7, xytext=(3, 0), textcoords="offset points")
    ax.set_xlabel("green: met, red: missed, grey: smaller run than the goal")

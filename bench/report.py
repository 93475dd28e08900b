"""Writing results (JSON) and rendering them as Markdown tables for docs/benchmarks.md."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: The targets the product is held to (docs/benchmarks.md); all in milliseconds.
GOALS: dict[str, tuple[str, str, str, float]] = {
    # key: (benchmark, series, statistic, limit)
    "handoff_median_under_20ms": ("handoff", "handoff_ms", "median", 20.0),
    "handoff_p99_under_100ms": ("handoff", "handoff_ms", "p99", 100.0),
    "sql_kill_median_under_200ms": ("sql_kill", "commit_to_gone_poll_ms", "median", 200.0),
}

#: What each series means, for the tables (benchmark, series) -> label.
LABELS: dict[tuple[str, str], str] = {
    ("handoff", "handoff_ms"): "**hand-off**: end(N) -> first command of N+1",
    ("handoff", "exit_to_completed_at_ms"): "part 1: end(N) -> daemon stamps N completed",
    ("handoff", "completed_at_to_claimed_ms"): "part 2: N completed -> N+1 claimed",
    ("handoff", "claimed_to_first_command_ms"): "part 3: N+1 claimed -> its first command",
    ("handoff", "event_completed_to_event_started_ms"): "events: `completed`(N) -> `started`(N+1)",
    ("handoff", "end_to_session_logged_ms"): "end(N) -> `started session` log line of N+1 (*)",
    ("end_detection", "exit_to_event_ms"): "**exit -> `completed` event** (`events.at`)",
    ("end_detection", "exit_to_completed_at_ms"): "exit -> `project_queue.completed_at`",
    ("end_detection", "exit_to_logged_ms"): "exit -> `project N completed` log line",
    ("end_detection", "exit_to_fifo_message_ms"): "of which: exit -> wrapper's FIFO message (no daemon)",
    ("sql_kill", "commit_to_gone_poll_ms"): "**commit -> session gone** (has-session poll)",
    ("sql_kill", "commit_to_gone_notify_ms"): "same trials, control-mode notification",
    ("sql_kill", "commit_to_gone_notify_unpolled_ms"): "other trials, notification only (no poll load)",
    ("sql_kill", "commit_to_detected_log_ms"): "commit -> daemon notices (log line)",
    ("sql_kill", "detected_log_to_gone_poll_ms"): "daemon notices -> session gone",
    ("sql_kill", "commit_to_output_saved_event_ms"): "commit -> `output_saved` event (scrollback saved)",
    ("sql_kill", "commit_to_session_killed_event_ms"): "commit -> `session_killed` event",
    ("sql_kill", "update_statement_ms"): "the UPDATE statement itself",
    ("sql_kill", "poll_interval_ms"): "probe resolution: one has-session call",
}


def evaluate_goals(benchmarks: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each goal with the measured value and whether it is met (None if not measured)."""
    out: dict[str, dict[str, Any]] = {}
    for key, (bench, series, stat, limit) in GOALS.items():
        value = benchmarks.get(bench, {}).get("summary", {}).get(series, {}).get(stat)
        out[key] = {"limit_ms": limit, "statistic": f"{bench}.{series}.{stat}", "measured_ms": value,
                    "met": None if value is None else value < limit}
    return out


def write_json(data: dict[str, Any], out_dir: Path, stamp: str, mode: str) -> list[Path]:
    """Write ``<stamp>-<mode>.json`` and ``latest-<mode>.json`` atomically; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=1, sort_keys=False) + "\n"
    written = []
    for name in (f"{stamp}-{mode}.json", f"latest-{mode}.json"):
        path = out_dir / name
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        written.append(path)
    return written


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if value >= 10 else f"{value:.2f}"
    return str(value)


def markdown(data: dict[str, Any]) -> str:
    """The results as Markdown: one table per benchmark, then the goals and the machine."""
    product = data.get("product", {})
    dirty = " plus uncommitted changes" if product.get("dirty_src") else ""
    lines = [f"Run `{data.get('run_id')}` ({data.get('mode')} mode), tmux-orchestrator "
             f"{product.get('version')} at commit `{str(product.get('commit'))[:10]}`{dirty} "
             f"(code digest `{product.get('code_sha256')}`).", ""]
    for bench, result in data.get("benchmarks", {}).items():
        if "error" in result:
            lines += [f"### {bench}", "", f"failed: {result['error']}", ""]
            continue
        lines += [f"### {bench}", "", result.get("description", ""), "",
                  "| figure (ms) | n | median | p90 | p99 | max |", "|---|---|---|---|---|---|"]
        for series, stats in result.get("summary", {}).items():
            label = LABELS.get((bench, series))
            if label is None or not stats.get("n"):
                continue
            lines.append(f"| {label} | {stats['n']} | {_fmt(stats['median'])} | {_fmt(stats['p90'])} "
                         f"| {_fmt(stats['p99'])} | {_fmt(stats['max'])} |")
        lines += ["", f"Took {result.get('seconds')} s; all CPUs {result.get('system_cpu_busy_percent')} % "
                  f"busy meanwhile (this bench included), load average before "
                  f"{result.get('load_average_before')}.", ""]
        for note in result.get("notes", []):
            lines += [f"Note: {note}", ""]
        if bench == "handoff":
            lines += ["(*) logged once `new-session` has returned and the session ids are stored: "
                      "usually after the new project's first command has already run.", ""]
    lines += ["### Goals", "", "| goal | measured | met |", "|---|---|---|"]
    for key, goal in data.get("goals", {}).items():
        met = {True: "yes", False: "**no**", None: "not measured"}[goal["met"]]
        lines.append(f"| {key.replace('_', ' ')} (`{goal['statistic']}` < {goal['limit_ms']:g} ms) "
                     f"| {_fmt(goal['measured_ms'])} ms | {met} |")
    machine = data.get("machine", {})
    fs = machine.get("temp_dir_filesystem", {})
    lines += ["", "### Machine", "",
              f"{machine.get('cpu_count')} CPUs ({machine.get('cpu_model')}), {machine.get('kernel')}, "
              f"{machine.get('tmux')}, Python {machine.get('python')}, SQLite {machine.get('sqlite')}, "
              f"bash {machine.get('bash')}; temp dir on {fs.get('type')} ({fs.get('mount')}); "
              f"load average at start {machine.get('load_average_at_start')}.", ""]
    return "\n".join(lines)

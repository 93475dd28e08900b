"""Writing results (JSON) and rendering them as Markdown tables for docs/benchmarks.md."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: The targets the product is held to (issue 6 and docs/benchmarks.md). Each: the benchmark, the
#: path to the figure in its result, the comparison, the limit, the unit, and optionally a
#: (path, value) the run must have reached for the figure to count (e.g. 1,000 sessions).
GOALS: dict[str, dict[str, Any]] = {
    "handoff_median_under_20ms": {"bench": "handoff", "path": ("summary", "handoff_ms", "median"),
                                  "op": "<", "limit": 20.0, "unit": "ms"},
    "handoff_p99_under_100ms": {"bench": "handoff", "path": ("summary", "handoff_ms", "p99"),
                                "op": "<", "limit": 100.0, "unit": "ms"},
    "sql_kill_median_under_200ms": {"bench": "sql_kill",
                                    "path": ("summary", "commit_to_gone_poll_ms", "median"),
                                    "op": "<", "limit": 200.0, "unit": "ms"},
    "sql_kill_after_idle_median_under_200ms": {
        "bench": "sql_kill", "path": ("summary", "commit_to_gone_idle_ms", "median"), "op": "<",
        "limit": 200.0, "unit": "ms"},
    "true_c16_at_least_half_the_raw_tmux_floor": {
        "bench": "peers", "path": ("ratios", "true", "16", "tmo_vs_tmux_raw"), "op": ">=", "limit": 0.5,
        "unit": "x floor"},
    "idle_daemon_cpu_under_1pct_at_1000_sessions": {
        "bench": "scale", "path": ("running", "idle", "cpu_percent", "daemon"), "op": "<", "limit": 1.0,
        "unit": "%", "requires": (("running", "sessions"), 1000)},
    "idle_daemon_cpu_with_its_tmux_calls_under_1pct_at_1000_sessions": {
        "bench": "scale", "path": ("running", "idle", "cpu_percent", "daemon_with_children"), "op": "<",
        "limit": 1.0, "unit": "%", "requires": (("running", "sessions"), 1000)},
    "reconcile_pass_under_50ms_at_1000_sessions": {
        "bench": "scale", "path": ("running", "reconcile_pass_ms", "full", "median"), "op": "<",
        "limit": 50.0, "unit": "ms", "requires": (("running", "sessions"), 1000)},
    "list_under_300ms_at_10000_rows": {
        "bench": "scale", "path": ("list", "table", "wall_ms", "median"), "op": "<", "limit": 300.0,
        "unit": "ms", "requires": (("list", "rows"), 10000)},
    "list_json_queued_under_300ms_at_10000_rows": {
        "bench": "scale", "path": ("list", "json_queued", "wall_ms", "median"), "op": "<", "limit": 300.0,
        "unit": "ms", "requires": (("list", "rows"), 10000)},
    "claim_at_10k_within_2x_of_100": {"bench": "scale", "path": ("claim_flatness",), "op": "<=",
                                      "limit": 2.0, "unit": "x"},
    "cross_host_sql_kill_median_under_200ms": {
        "bench": "hosts", "path": ("summary", "cross_host_sql_kill_ms", "median"), "op": "<",
        "limit": 200.0, "unit": "ms"},
    "cross_host_sql_kill_after_idle_median_under_200ms": {
        "bench": "hosts", "path": ("summary", "cross_host_sql_kill_idle_ms", "median"), "op": "<",
        "limit": 200.0, "unit": "ms"},
    "cli_add_at_most_4x_a_bare_python_start": {
        "bench": "cli", "path": ("ratios_to_bare", "add"), "op": "<=", "limit": 4.0, "unit": "x"},
    "cli_list_at_most_4x_a_bare_python_start": {
        "bench": "cli", "path": ("ratios_to_bare", "list"), "op": "<=", "limit": 4.0, "unit": "x"},
    "cli_version_at_most_2x_a_bare_python_start": {
        "bench": "cli", "path": ("ratios_to_bare", "version"), "op": "<=", "limit": 2.0, "unit": "x"},
    "cli_list_json_queued_under_300ms_at_10000_rows": {
        "bench": "cli", "path": ("list_json_queued", "wall_ms", "median"), "op": "<", "limit": 300.0,
        "unit": "ms", "requires": (("list_json_queued", "rows"), 10000)},
    "cleanup_of_500_sessions_under_2s": {
        "bench": "scale", "path": ("running", "cleanup", "median_s"), "op": "<", "limit": 2.0, "unit": "s",
        "requires": (("running", "cleanup", "sessions"), 500)},
    "messages_delivered_exactly_once_100pct": {
        "bench": "messages", "path": ("delivery", "delivered_once_percent"), "op": ">=", "limit": 100.0,
        "unit": "%", "requires": (("delivery", "sent"), 1000)},
}


def _dig(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


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
    ("sql_kill", "commit_to_gone_idle_ms"): "**after 1.5-3 s idle: commit -> session gone** (poll)",
    ("sql_kill", "commit_to_detected_idle_log_ms"): "after 1.5-3 s idle: commit -> daemon notices",
}


def evaluate_goals(benchmarks: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each goal with the measured value and whether it is met (None if not measured).

    A goal whose run did not reach its scale (quick mode runs 200 sessions, not 1,000) is measured
    but not judged: ``met`` is None and ``caveat`` says why.
    """
    out: dict[str, dict[str, Any]] = {}
    for key, goal in GOALS.items():
        result = benchmarks.get(goal["bench"], {})
        value = _dig(result, goal["path"])
        entry: dict[str, Any] = {
            "statistic": f"{goal['bench']}.{'.'.join(goal['path'])}", "op": goal["op"],
            "limit": goal["limit"], "unit": goal["unit"], "measured": value, "met": None,
        }
        if isinstance(value, (int, float)):
            entry["met"] = value < goal["limit"] if goal["op"] == "<" else (
                value <= goal["limit"] if goal["op"] == "<=" else value >= goal["limit"])
            requires = goal.get("requires")
            if requires is not None:
                reached = _dig(result, requires[0])
                if reached != requires[1]:
                    entry["met"] = None
                    entry["caveat"] = f" (at {reached}, not {requires[1]}: not judged)"
        out[key] = entry
    return out


def headline(name: str, result: dict[str, Any]) -> list[str]:
    """One-line summaries of a result for the console."""
    lines: list[str] = []
    if name == "peers":
        for job, by_conc in result.get("throughput_jobs_per_s", {}).items():
            for conc, by_tool in by_conc.items():
                lines.append(f"{job:<10} c={conc:<3} " + "  ".join(
                    f"{tool} {value:7.1f}/s" for tool, value in by_tool.items()))
    elif name == "scale":
        enq = result.get("enqueue", {})
        lines.append("enqueue/s: " + ", ".join(f"{k} {v.get('per_s')}" for k, v in enq.items()))
        lst = result.get("list", {})
        lines.append(f"tmo list at {lst.get('rows')} rows: table "
                     f"{_dig(lst, ('table', 'wall_ms', 'median'))} ms, --status queued --json "
                     f"{_dig(lst, ('json_queued', 'wall_ms', 'median'))} ms")
        lines.append("claim ms (median): " + ", ".join(
            f"{k}: {v.get('median')}" for k, v in result.get("claim_ms", {}).items()))
        run = result.get("running", {})
        lines.append(f"{run.get('sessions')} running: idle CPU {_dig(run, ('idle', 'cpu_percent'))} %, "
                     f"RSS {_dig(run, ('idle', 'rss_kb'))} KB, reconcile unchanged/full "
                     f"{_dig(run, ('reconcile_pass_ms', 'unchanged', 'median'))}/"
                     f"{_dig(run, ('reconcile_pass_ms', 'full', 'median'))} ms, cancel all "
                     f"{_dig(run, ('cancel_all', 'until_no_session_s'))} s, cleanup of "
                     f"{_dig(run, ('cleanup', 'sessions'))} {_dig(run, ('cleanup', 'median_s'))} s")
    elif name == "soak":
        fig = result.get("figures", {})
        lines.append(f"{fig.get('projects')} projects, {fig.get('daemon_kills')} daemon kills, "
                     f"{fig.get('server_kills')} server kills, {fig.get('wall_s')} s, lost "
                     f"{fig.get('lost')} (false {fig.get('false_lost')}), invariants "
                     f"{'all held' if all(result.get('invariants', {}).values()) else 'VIOLATED'}")
    elif name == "messages":
        d = result.get("delivery", {})
        lines.append(f"{d.get('sent')} sent, delivered once {d.get('delivered_once')}, lost {d.get('lost')}, "
                     f"doubled {d.get('doubled')}, corrupted {d.get('corrupted')}, misrouted "
                     f"{d.get('misrouted')}; rows {d.get('row_status')}, Enter presses {d.get('row_tries')}")
    return lines


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
    """The results as Markdown: one section per benchmark, then the goals and the machine."""
    product = data.get("product", {})
    dirty = " plus uncommitted changes" if product.get("dirty_src") else ""
    lines = [f"Run `{data.get('run_id')}` ({data.get('mode')} mode), tmux-orchestrator "
             f"{product.get('version')} at commit `{str(product.get('commit'))[:10]}`{dirty} "
             f"(code digest `{product.get('code_sha256')}`"
             + ("; **the code changed during the run**" if product.get("code_changed_during_run") else "")
             + ").", ""]
    if data.get("plot"):
        lines += [f"![benchmark plot]({data['plot']})", ""]
    for bench, result in data.get("benchmarks", {}).items():
        lines += [f"#### {bench}", ""]
        if "error" in result:
            lines += [f"**failed**: {result['error']}", ""]
        renderer = _RENDERERS.get(bench, _latency_tables)
        if "error" not in result or bench == "soak":
            lines += renderer(bench, result)
        lines += [f"Took {result.get('seconds')} s; all CPUs {result.get('system_cpu_busy_percent')} % "
                  f"busy meanwhile (this bench included), load average before "
                  f"{result.get('load_average_before')}.", ""]
        for note in result.get("notes", []):
            lines += [f"Note: {note}", ""]
    lines += ["#### Goals", "", "| goal | figure | measured | met |", "|---|---|---|---|"]
    for key, goal in data.get("goals", {}).items():
        met = {True: "yes", False: "**no**", None: "not judged" if goal.get("caveat") else "not measured"}[
            goal["met"]]
        lines.append(f"| {key.replace('_', ' ')} | `{goal['statistic']}` {goal['op']} {goal['limit']:g} "
                     f"| {_fmt(goal['measured'])} {goal['unit']}{goal.get('caveat', '')} | {met} |")
    machine = data.get("machine", {})
    fs = machine.get("temp_dir_filesystem", {})
    lines += ["", "#### Machine", "",
              f"{machine.get('cpu_count')} CPUs ({machine.get('cpu_model')}), {machine.get('kernel')}, "
              f"{machine.get('tmux')}, Python {machine.get('python')}, SQLite {machine.get('sqlite')}, "
              f"bash {machine.get('bash')}; temp dir on {fs.get('type')} ({fs.get('mount')}); "
              f"load average at start {machine.get('load_average_at_start')}, at end "
              f"{machine.get('load_average_at_end')}.", ""]
    return "\n".join(lines)


def _latency_tables(bench: str, result: dict[str, Any]) -> list[str]:
    lines = [result.get("description", ""), "",
             "| figure (ms) | n | median | p90 | p99 | max |", "|---|---|---|---|---|---|"]
    for series, stats in result.get("summary", {}).items():
        label = LABELS.get((bench, series))
        if label is None or not stats.get("n"):
            continue
        lines.append(f"| {label} | {stats['n']} | {_fmt(stats['median'])} | {_fmt(stats['p90'])} "
                     f"| {_fmt(stats['p99'])} | {_fmt(stats['max'])} |")
    lines.append("")
    if bench == "handoff":
        lines += ["(*) logged once `new-session` has returned and the session ids are stored: "
                  "usually after the new project's first command has already run.", ""]
    return lines


_TOOL_NAMES = {"tmo": "tmo", "tsp": "tsp", "nq": "nq", "tmux_raw": "raw tmux loop"}
_JOB_NAMES = {"true": "`true`", "sleep_0.1": "`sleep 0.1`", "print_10mb": "print 10 MiB"}


def _peers(bench: str, result: dict[str, Any]) -> list[str]:
    cfg = result.get("config", {})
    tools = cfg.get("tools", list(_TOOL_NAMES))
    lines = [f"Jobs per second, submission included (median of {cfg.get('rounds')} round(s); "
             f"tsp {cfg.get('peer_versions', {}).get('task-spooler')}, nq "
             f"{cfg.get('peer_versions', {}).get('nq')}). Ratios: tmo's throughput divided by the peer's, "
             "the median of the per-round ratios (same round, same conditions).", "",
             "| job | N | concurrency | " + " | ".join(_TOOL_NAMES.get(t, t) for t in tools)
             + " | tmo / tsp | tmo / nq | tmo / raw tmux |",
             "|---|---|---|" + "---|" * (len(tools) + 3)]
    for job, by_conc in result.get("throughput_jobs_per_s", {}).items():
        count = cfg.get("jobs", {}).get(job, {}).get("count")
        for conc, by_tool in by_conc.items():
            ratios = result.get("ratios", {}).get(job, {}).get(conc, {})
            lines.append(f"| {_JOB_NAMES.get(job, job)} | {count} | {conc} | "
                         + " | ".join(_fmt(by_tool.get(t)) for t in tools) + " | "
                         + " | ".join(_fmt(ratios.get(f"tmo_vs_{p}")) for p in ("tsp", "nq", "tmux_raw"))
                         + " |")
    submit = result.get("tmo_submit_seconds", {})
    lines += ["", f"tmo's submission (one `tmo add --from-file` process) took {_fmt(submit.get('median'))} s "
              "(median), counted in its figures.", ""]
    return lines


def _scale(bench: str, result: dict[str, Any]) -> list[str]:
    enq = result.get("enqueue", {})
    lst = result.get("list", {})
    run = result.get("running", {})
    lines = ["| enqueue | projects | projects/s |", "|---|---|---|"]
    labels = {"cli_single": "`tmo add`, one process per project",
              "api_single": "API `enqueue`, one call each",
              "api_batch": "API `enqueue_many`, one transaction",
              "cli_batch": "`tmo add --from-file`, one process"}
    for key, label in labels.items():
        if key in enq:
            lines.append(f"| {label} | {enq[key].get('projects')} | {_fmt(enq[key].get('per_s'))} |")
    lines += ["", f"Whole-process timings at {lst.get('rows')} queued rows "
              f"({lst.get('table', {}).get('runs')} counted runs after a warm-up; `{lst.get('argv0')}`):", "",
              "| command | wall median (ms) | min | max | CPU (ms) | peak RSS (KB) |",
              "|---|---|---|---|---|---|"]
    for key, label in (("table", "`tmo list`"), ("json_queued", "`tmo list --status queued --json`"),
                       ("version", "`tmo --version` (start-up alone)")):
        fig = lst.get(key, {})
        wall = fig.get("wall_ms", {})
        lines.append(f"| {label} | {_fmt(wall.get('median'))} | {_fmt(wall.get('min'))} "
                     f"| {_fmt(wall.get('max'))} | {_fmt(fig.get('cpu_ms_median'))} "
                     f"| {fig.get('peak_rss_kb_max')} |")
    lines += ["", "| claim (`claim_next`) with N queued | n | median (ms) | p90 | p99 | max |",
              "|---|---|---|---|---|---|"]
    for size, stats in result.get("claim_ms", {}).items():
        lines.append(f"| {int(size):,} | {stats.get('n')} | {_fmt(stats.get('median'))} "
                     f"| {_fmt(stats.get('p90'))} | {_fmt(stats.get('p99'))} | {_fmt(stats.get('max'))} |")
    idle = run.get("idle", {})
    cpu = idle.get("cpu_percent", {})
    rss = idle.get("rss_kb", {})
    passes = run.get("reconcile_pass_ms", {})
    cancel = run.get("cancel_all", {})
    cleanup = run.get("cleanup", {})
    lines += ["", f"With {run.get('sessions')} projects running at once (`sleep`):", "",
              "| figure | value |", "|---|---|",
              f"| start them all (one daemon, concurrency {run.get('sessions')}) "
              f"| {_fmt(run.get('start_all_s'))} s ({_fmt(run.get('starts_per_s'))} starts/s) |",
              f"| daemon CPU while idle ({_fmt(idle.get('window_s'))} s window) "
              f"| {_fmt(cpu.get('daemon'))} % of one CPU; with the tmux clients it runs: "
              f"{_fmt(cpu.get('daemon_with_children'))} % |",
              f"| tmux server CPU meanwhile | {_fmt(cpu.get('tmux_server'))} % |",
              f"| daemon RSS / tmux server RSS | {rss.get('daemon')} KB / {rss.get('tmux_server')} KB |"]
    for key, label in (("unchanged", "reconcile pass, nothing changed (every 2 s when idle)"),
                       ("full", "reconcile pass, full (after any change)")):
        stats = passes.get(key, {})
        lines.append(f"| {label} | median {_fmt(stats.get('median'))} ms, p90 {_fmt(stats.get('p90'))}, "
                     f"max {_fmt(stats.get('max'))} (n={stats.get('n')}) |")
    lines += [f"| daemon restart with all running (`tmo daemon start`, adopts every session) | "
              f"{_fmt(run.get('restart_with_all_running_s'))} s |",
              f"| `tmo cancel` of all {run.get('sessions')} (one command) | {_fmt(cancel.get('cli_s'))} s; "
              f"no session left after {_fmt(cancel.get('until_no_session_s'))} s |",
              f"| `tmo cleanup` of {cleanup.get('sessions')} sessions ({cleanup.get('lingering')} lingering, "
              f"{cleanup.get('orphaned')} orphaned), daemon stopped "
              f"| median {_fmt(cleanup.get('median_s'))} s "
              f"(runs: {', '.join(_fmt(x) for x in cleanup.get('seconds', []))}) |", ""]
    return lines


def _soak(bench: str, result: dict[str, Any]) -> list[str]:
    fig = result.get("figures", {})
    ready = result.get("summary", {}).get("restart_to_ready_ms", {})
    inv = result.get("invariants", {})
    lines = [result.get("description", ""), "", "| figure | value |", "|---|---|",
             f"| projects (queued at start + added during the run) | {fig.get('projects')} |",
             f"| attempts started / events written | {fig.get('runs')} / {fig.get('events')} |",
             f"| daemon SIGKILLs / tmux server SIGKILLs | {fig.get('daemon_kills')} / "
             f"{fig.get('server_kills')} |",
             "| concurrent writes: CLI adds / CLI cancels / SQL completions | "
             + " / ".join(str(fig.get("writes", {}).get(k, 0)) for k in ("add", "cancel", "sql_complete"))
             + " |",
             f"| run length / projects per second | {fig.get('wall_s')} s / {fig.get('projects_per_s')} |",
             f"| restart -> daemon ready (`daemon_started` event) | median {_fmt(ready.get('median'))} ms, "
             f"max {_fmt(ready.get('max'))} (n={ready.get('n')}) |",
             f"| queue drained, after the last kill (the writers then stop) | "
             f"{fig.get('drain_after_last_kill_s')} s |",
             f"| lost to server kills / false failures (lost outside one) | {fig.get('lost')} / "
             f"{fig.get('false_lost')} |",
             f"| outcomes | {', '.join(f'{k}: {v}' for k, v in sorted(fig.get('outcomes', {}).items()))} |",
             "", "Invariants: " + ", ".join(f"{k.replace('_', ' ')} {'held' if v else '**VIOLATED**'}"
                                            for k, v in inv.items()) + ".", ""]
    return lines


def _hosts(bench: str, result: dict[str, Any]) -> list[str]:
    lines = [result.get("description", ""), "",
             "| setup | hand-off median (ms) | p90 | p99 | n | projects/s at concurrency "
             f"{result.get('config', {}).get('concurrency')} per host (ideal) | projects per host |",
             "|---|---|---|---|---|---|---|"]
    for key, handoff in result.get("handoff", {}).items():
        stats = handoff.get("handoff_ms", {})
        burst = result.get("throughput", {}).get(key, {})
        shares = " / ".join(str(n) for n in burst.get("projects_per_host", {}).values())
        lines.append(f"| {key.replace('-', ', ')} host(s) | {_fmt(stats.get('median'))} | "
                     f"{_fmt(stats.get('p90'))} | {_fmt(stats.get('p99'))} | {_fmt(stats.get('n'))} | "
                     f"{_fmt(burst.get('projects_per_second'))} "
                     f"({_fmt(burst.get('ideal_projects_per_second'))}) | {shares} |")
    kill = result.get("sql_kill", {})
    lines += ["", "| cross-host SQL-to-kill (ms) | n | median | p90 | p99 | max |",
              "|---|---|---|---|---|---|"]
    for label, key in (("UPDATE from another client -> session gone on beta", "commit_to_gone_ms"),
                       ("same, after 1.5-3 s idle", "commit_to_gone_idle_ms")):
        stats = kill.get(key, {})
        if stats.get("n"):
            lines.append(f"| {label} | {_fmt(stats['n'])} | {_fmt(stats['median'])} | {_fmt(stats['p90'])} "
                         f"| {_fmt(stats['p99'])} | {_fmt(stats['max'])} |")
    return [*lines, ""]


def _cli(bench: str, result: dict[str, Any]) -> list[str]:
    summary = result.get("summary", {})
    ratios = result.get("ratios_to_bare", {})
    labels = {"bare": "`python -c 'import sqlite3, json'`", "version": "`tmo --version`",
              "add": "`tmo add -- true` (no daemon)", "list": "`tmo list` (small queue)",
              "show": "`tmo show 1`", "add_with_hooks": "`tmo add`, config.toml with `[[hooks]]`",
              "list_with_hooks": "`tmo list`, config.toml with `[[hooks]]`"}
    lines = [result.get("description", ""), "",
             "| command | wall median (ms) | p90 | min | x bare |", "|---|---|---|---|---|"]
    for key, label in labels.items():
        stats = summary.get(f"{key}_ms", {})
        if stats.get("n"):
            lines.append(f"| {label} | {_fmt(stats['median'])} | {_fmt(stats['p90'])} | {_fmt(stats['min'])} "
                         f"| {_fmt(ratios.get(key, 1.0))} |")
    big = result.get("list_json_queued", {})
    lines += ["", f"`tmo list --status queued --json` at {big.get('rows')} queued rows: "
              f"{_fmt(_dig(big, ('wall_ms', 'median')))} ms median ({big.get('runs')} runs).", ""]
    return lines


def _messages(bench: str, result: dict[str, Any]) -> list[str]:
    summary = result.get("summary", {})
    sent_via = result.get("config", {}).get("sent_via", {})
    labels = {"send_to_submitted_ms": "**send -> submitted**, all",
              "send_to_submitted_api_ms": f"of which sent with the API ({sent_via.get('api', 0)})",
              "send_to_submitted_cli_ms": f"of which sent with `tmo send` ({sent_via.get('cli', 0)})",
              "first_of_a_round_ms": "first submission of a round, from its first send (no wait)",
              "between_submissions_in_a_round_ms": "between consecutive submissions of a round",
              "row_created_to_delivered_ms": "row `created_at` -> `delivered_at` (after the Enter check)"}
    lines = [result.get("description", ""), "",
             "| figure (ms) | n | median | p90 | p99 | max |", "|---|---|---|---|---|---|"]
    for key, label in labels.items():
        stats = summary.get(key, {})
        if stats.get("n"):
            lines.append(f"| {label} | {stats['n']} | {_fmt(stats['median'])} | {_fmt(stats['p90'])} "
                         f"| {_fmt(stats['p99'])} | {_fmt(stats['max'])} |")
    d = result.get("delivery", {})
    statuses = ", ".join(f"{k} {v}" for k, v in d.get("row_status", {}).items())
    tries = ", ".join(f"{k}: {v}" for k, v in d.get("row_tries", {}).items())
    lines += ["", "| sent | delivered once | lost | doubled | corrupted | misrouted | message rows | "
              "Enter presses per message |", "|---|---|---|---|---|---|---|---|",
              f"| {d.get('sent')} | {d.get('delivered_once')} ({_fmt(d.get('delivered_once_percent'))} %) "
              f"| {d.get('lost')} | {d.get('doubled')} | {d.get('corrupted')} | {d.get('misrouted')} "
              f"| {statuses} | {tries} |", "",
              f"{result.get('wall_s')} s in all, {_fmt(result.get('messages_per_s'))} messages/s; CPU "
              f"seconds: {result.get('cpu_seconds')}.", ""]
    return lines


_RENDERERS = {"peers": _peers, "scale": _scale, "soak": _soak, "hosts": _hosts, "cli": _cli,
              "messages": _messages}

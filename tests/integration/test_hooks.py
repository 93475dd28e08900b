"""Hooks run by a real daemon on real events: input, filters, failures, timeouts, cap, cursor, loops."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from tmo_helpers import pid_alive

from tmux_orchestrator.config import Settings, load_settings
from tmux_orchestrator.orchestrator import Orchestrator
from tmux_orchestrator.project import ProjectStatus
from tmux_orchestrator.store.base import Event
from tmux_orchestrator.testing import DaemonThread, retry_until

TMO = f'"{sys.executable}" -m tmux_orchestrator'


def configure(settings: Settings, text: str) -> None:
    """Write config.toml and read it the way the daemon does."""
    settings.config_path.write_text(text)
    settings.extra = load_settings(settings.home).extra


def events_of(orch: Orchestrator, kind: str) -> list[Event]:
    return orch.store.events_after(0, kinds=[kind], limit=100000)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def cursor(orch: Orchestrator, name: str) -> int:
    return int(orch.store.get_setting(f"cursor.hook.{name}", "0") or 0)


def test_a_hook_gets_the_event_as_json_on_stdin_and_as_tmo_event_variables(
    tmo_settings: Settings, orchestrator: Orchestrator, daemon_factory: Callable[..., DaemonThread],
    tmp_path: Path,
) -> None:
    configure(tmo_settings, """
[[hooks]]
name = "record"
on = ["completed"]
command = 'cat > "$TMO_HOME/stdin.json"; env | grep -E "^TMO_(EVENT_|HOME=|HOOK)" > "$TMO_HOME/env.txt"'
""")
    daemon_factory()
    project = orchestrator.enqueue(["true"], name="rec", project_path=tmp_path)
    [completed] = retry_until(lambda: events_of(orchestrator, "completed"), message="completed event")
    retry_until(lambda: cursor(orchestrator, "record") >= completed.id, message="the hook to run")

    assert json.loads((tmo_settings.home / "stdin.json").read_text()) == completed.to_dict()
    env = dict(line.split("=", 1) for line in lines(tmo_settings.home / "env.txt"))
    assert env["TMO_EVENT_ID"] == str(completed.id)
    assert env["TMO_EVENT_KIND"] == "completed"
    assert env["TMO_EVENT_PROJECT_ID"] == str(project.id)
    assert env["TMO_EVENT_PROJECT_NAME"] == "rec"
    assert (env["TMO_EVENT_OLD_STATUS"], env["TMO_EVENT_NEW_STATUS"]) == ("processing", "completed")
    assert (env["TMO_EVENT_OUTCOME"], env["TMO_EVENT_EXIT_CODE"]) == ("exited", "0")
    assert env["TMO_EVENT_SOURCE"] == "daemon"
    assert env["TMO_EVENT_SESSION_NAME"] == completed.session_name
    assert env["TMO_HOME"] == str(tmo_settings.home)
    assert (env["TMO_HOOK"], env["TMO_HOOK_NAME"]) == ("1", "record")


def test_a_hook_runs_only_for_its_kinds_and_project_name_globs(
    tmo_settings: Settings, orchestrator: Orchestrator, daemon_factory: Callable[..., DaemonThread],
    tmp_path: Path,
) -> None:
    configure(tmo_settings, """
[[hooks]]
name = "builds"
on = ["completed", "failed"]
project_names = ["build-*"]
command = 'echo "$TMO_EVENT_PROJECT_NAME $TMO_EVENT_KIND" >> "$TMO_HOME/runs.txt"'
""")
    daemon_factory()
    for name, argv in (("build-a", ["true"]), ("deploy", ["true"]), ("build-b", ["false"])):
        orchestrator.enqueue(argv, name=name, project_path=tmp_path)
    runs = tmo_settings.home / "runs.txt"
    retry_until(lambda: len(lines(runs)) >= 2, message="two hook runs")
    assert lines(runs) == ["build-a completed", "build-b failed"]


def test_a_failing_hook_is_logged_and_recorded_as_a_hook_failed_event(
    tmo_settings: Settings, orchestrator: Orchestrator, daemon_factory: Callable[..., DaemonThread],
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    configure(tmo_settings, """
[[hooks]]
name = "broken"
on = ["completed"]
command = "echo something went wrong; exit 3"
""")
    daemon_factory()
    project = orchestrator.enqueue(["true"], name="p", project_path=tmp_path)
    [failed] = retry_until(lambda: events_of(orchestrator, "hook_failed"), message="hook_failed")
    [completed] = events_of(orchestrator, "completed")
    assert failed.project_id == project.id
    assert failed.source == "daemon"
    assert failed.message is not None
    assert f"hook broken failed on event #{completed.id} (completed): exited with code 3" in failed.message
    assert "something went wrong" in failed.message
    assert "hook broken failed" in caplog.text


def test_a_hook_past_its_timeout_is_killed_with_its_whole_process_group(
    tmo_settings: Settings, orchestrator: Orchestrator, daemon_factory: Callable[..., DaemonThread],
    tmp_path: Path,
) -> None:
    configure(tmo_settings, """
[[hooks]]
name = "slow"
on = ["queued"]
timeout = "0.5s"
command = 'sleep 300 & echo $! > "$TMO_HOME/child.pid"; wait'
""")
    daemon_factory()
    orchestrator.enqueue(["true"], project_path=tmp_path)
    [failed] = retry_until(lambda: events_of(orchestrator, "hook_failed"), message="hook_failed")
    assert failed.message is not None and "timed out after 0.5s" in failed.message
    child = int((tmo_settings.home / "child.pid").read_text())
    retry_until(lambda: not pid_alive(child), timeout=5, message="the hook's child to be killed")


def test_hook_runs_never_exceed_the_global_concurrency_cap(
    tmo_settings: Settings, orchestrator: Orchestrator, daemon_factory: Callable[..., DaemonThread],
    tmp_path: Path,
) -> None:
    # mkdir is atomic: a second hook running at the same time finds the directory and says so.
    body = ('mkdir "$TMO_HOME/busy" || echo overlap >> "$TMO_HOME/overlaps.txt"; sleep 0.2; '
            'rmdir "$TMO_HOME/busy"; echo "$TMO_HOOK_NAME" >> "$TMO_HOME/runs.txt"')
    configure(tmo_settings, f"""
hook_concurrency = 1
[[hooks]]
name = "a"
on = ["queued"]
command = '{body}'
[[hooks]]
name = "b"
on = ["queued"]
command = '{body}'
""")
    orchestrator.pause()  # the projects stay queued: only their queued events matter here
    daemon_factory()
    for _ in range(2):
        orchestrator.enqueue(["true"], project_path=tmp_path)
    runs = tmo_settings.home / "runs.txt"
    retry_until(lambda: len(lines(runs)) == 4, message="four hook runs")
    assert sorted(lines(runs)) == ["a", "a", "b", "b"]
    assert not (tmo_settings.home / "overlaps.txt").exists()


def test_the_cursor_survives_a_restart_so_events_are_neither_skipped_nor_repeated(
    tmo_settings: Settings, orchestrator: Orchestrator, daemon_factory: Callable[..., DaemonThread],
    tmp_path: Path,
) -> None:
    configure(tmo_settings, """
[[hooks]]
name = "ids"
on = ["queued"]
command = 'echo "$TMO_EVENT_ID" >> "$TMO_HOME/ids.txt"'
""")
    orchestrator.pause()
    ids = tmo_settings.home / "ids.txt"
    first = daemon_factory()
    orchestrator.enqueue(["true"], project_path=tmp_path)
    retry_until(lambda: len(lines(ids)) == 1, message="the first delivery")
    first.stop()
    for _ in range(2):  # queued while no daemon runs
        orchestrator.enqueue(["true"], project_path=tmp_path)
    daemon_factory()
    queued = [str(e.id) for e in events_of(orchestrator, "queued")]
    retry_until(lambda: len(lines(ids)) >= 3, message="the deliveries after the restart")
    retry_until(lambda: cursor(orchestrator, "ids") >= int(queued[-1]), message="the cursor")
    assert lines(ids) == queued


def test_a_hook_that_retries_its_project_is_stopped_by_the_circuit_breaker(
    tmo_settings: Settings, orchestrator: Orchestrator, daemon_factory: Callable[..., DaemonThread],
    tmp_path: Path,
) -> None:
    configure(tmo_settings, f"""
[[hooks]]
name = "again"
on = ["completed"]
max_runs = 3
max_runs_window = "10m"
command = 'echo run >> "$TMO_HOME/runs.txt"; {TMO} retry "$TMO_EVENT_PROJECT_ID"'
""")
    daemon_factory()
    project = orchestrator.enqueue(["true"], name="loop", project_path=tmp_path)
    [suppressed] = retry_until(lambda: events_of(orchestrator, "hook_suppressed"), timeout=30,
                               message="hook_suppressed")
    assert suppressed.project_id == project.id
    assert suppressed.message is not None and "hook again ran 3 times" in suppressed.message
    assert lines(tmo_settings.home / "runs.txt") == ["run"] * 3
    retried = events_of(orchestrator, "retried")
    assert [e.source for e in retried] == ["hook"] * 3
    final = orchestrator.get(project.id)
    assert (final.status, final.retry_count) == (ProjectStatus.COMPLETED, 3)
    assert len(events_of(orchestrator, "completed")) == 4


def test_hand_written_sql_inside_a_hook_is_bounded_by_the_circuit_breaker(
    tmo_settings: Settings, orchestrator: Orchestrator, daemon_factory: Callable[..., DaemonThread],
    tmp_path: Path,
) -> None:
    script = (
        "import os, sqlite3\n"
        "home = os.environ['TMO_HOME']\n"
        "with open(home + '/runs.txt', 'a') as fh: fh.write('run\\n')\n"
        "db = sqlite3.connect(home + '/tmo.db', timeout=30)\n"
        "db.execute(\"UPDATE project_queue SET status = 'queued' WHERE id = ?\", "
        "(int(os.environ['TMO_EVENT_PROJECT_ID']),))\n"
        "db.commit()\n"
    )
    configure(tmo_settings, f"""
[[hooks]]
name = "sql"
on = ["completed"]
max_runs = 2
command = {json.dumps([sys.executable, "-c", script])}
""")
    daemon_factory()
    project = orchestrator.enqueue(["true"], name="sql-loop", project_path=tmp_path)
    retry_until(lambda: events_of(orchestrator, "hook_suppressed"), timeout=30, message="hook_suppressed")
    assert lines(tmo_settings.home / "runs.txt") == ["run"] * 2
    assert [e.source for e in events_of(orchestrator, "retried")] == ["sql"] * 2
    assert orchestrator.get(project.id).status == ProjectStatus.COMPLETED

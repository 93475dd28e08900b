"""Agent state: what an agent reports with `tmo state` (its hooks), the daemon's output-activity
fallback, and `tmo agent-hooks` printing and installing Claude Code's hook settings."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

from acceptance.support import TMO, DaemonControl, Tmo, poll, wait_session


def _hook_commands(tmo: Tmo) -> dict[str, str]:
    """The command of each Claude Code event in `tmo agent-hooks claude` (the default: print)."""
    settings = json.loads(tmo.ok("agent-hooks", "claude"))
    return {event: groups[0]["hooks"][0]["command"] for event, groups in settings["hooks"].items()}


def _state_events(tmo: Tmo, project_id: int) -> list[tuple[str, str]]:
    return [(e["message"], e["source"]) for e in tmo.events()
            if e["project_id"] == project_id and e["kind"] == "state_changed"]


def _agent(project: dict[str, Any]) -> tuple[Any, Any]:
    return project["agent_state"], project["agent_state_source"]


def test_reported_states_are_recorded_once_each_and_cleared_at_the_end(
    tmo: Tmo, daemon: DaemonControl
) -> None:
    hooks = _hook_commands(tmo)
    # The agent's hooks, as Claude Code runs them (by a shell, in the session's environment), twice
    # each: a repeat changes nothing. What each printed and its exit code go to a file.
    calls = [hooks["Stop"], hooks["Stop"], hooks["UserPromptSubmit"], hooks["UserPromptSubmit"]]
    script = "".join(f'out=$({c} 2>&1); echo "$?[$out]" >> calls.txt; ' for c in calls)
    work = tmo.home / "work"
    work.mkdir()
    env = {"PATH": f"{Path(TMO).parent}{os.pathsep}{os.environ['PATH']}"}
    project_id = tmo.add("sh", "-c", script + "touch reported; sleep 600", options=["--dir", str(work)],
                         env=env)
    assert tmo.project(project_id)["agent_state"] is None  # queued: not running, no state
    daemon.start()
    poll(lambda: (work / "reported").exists() or None, timeout=15, message="the hooks to have run")
    assert (work / "calls.txt").read_text().splitlines() == ["0[]"] * 4
    project = tmo.project(project_id)
    assert _agent(project) == ("working", "reported") and project["agent_state_since"]
    assert _state_events(tmo, project_id) == [("unknown -> waiting (reported)", "cli"),
                                              ("waiting -> working (reported)", "cli")]
    listing = tmo.ok("list")
    header, row = listing.splitlines()[0].split(), listing.splitlines()[1].split()
    assert row[header.index("AGENT")] == "working"

    # A hook of an attempt that no longer runs is ignored: exit 0, nothing printed, nothing written.
    before = len(tmo.events())
    stale = tmo("state", "waiting", env={"TMO_PROJECT_ID": str(project_id),
                                         "TMO_ATTEMPT": str(project["attempt"] + 1)})
    assert (stale.returncode, stale.stdout, stale.stderr) == (0, "", "")
    assert len(tmo.events()) == before and _agent(tmo.project(project_id)) == ("working", "reported")

    tmo.ok("cancel", str(project_id))
    ended = tmo.project(project_id)
    assert (ended["agent_state"], ended["agent_state_since"], ended["agent_state_source"]) == (None,) * 3
    assert tmo.projects()[0]["agent_state"] is None


def test_state_outside_a_session_is_one_line_of_usage_and_the_hook_is_silent(tmo: Tmo) -> None:
    tmo.ok("add", "--", "true")
    result = tmo("state", "waiting")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("tmo: error: ") and len(result.stderr.splitlines()) == 1
    assert "TMO_PROJECT_ID" in result.stderr
    # The hook command itself does nothing outside a tmo session, and never fails the agent.
    for command in _hook_commands(tmo).values():
        hook = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=tmo.env, check=False)
        assert (hook.returncode, hook.stdout, hook.stderr) == (0, "", "")


def test_output_activity_decides_until_the_agent_reports(tmo: Tmo, daemon: DaemonControl) -> None:
    (tmo.home / "config.toml").write_text('agent_idle_after = "1s"\nreconcile_interval = "0.2s"\n')
    # Prints until `quiet` exists, then prints nothing until `more` exists, then prints on.
    chatty = ("while [ ! -e quiet ]; do echo tick; sleep 0.1; done; "
              "while [ ! -e more ]; do sleep 0.1; done; while :; do echo tock; sleep 0.1; done")
    works = {}
    for name in ("reporting", "silent"):
        works[name] = tmo.home / name
        works[name].mkdir()
    reporting = tmo.add("sh", "-c", chatty, options=["--dir", str(works["reporting"])])
    # the second one prints only when told, later: the test's witness of a daemon look
    silent = tmo.add("sh", "-c", "touch ready; while [ ! -e more ]; do sleep 0.1; done; "
                     "while :; do echo tock; sleep 0.1; done", options=["--dir", str(works["silent"])])
    daemon.start("--concurrency", "2")
    wait_session(tmo, reporting)
    poll(lambda: _agent(tmo.project(reporting)) == ("working", "activity") or None, timeout=15,
         message="its output to make it working")
    (works["reporting"] / "quiet").touch()
    poll(lambda: _agent(tmo.project(reporting)) == ("idle", "activity") or None, timeout=15,
         message="its silence to make it idle")
    poll(lambda: _agent(tmo.project(silent)) == ("idle", "activity") or None, timeout=15,
         message="the silent one to be idle")

    # The agent reports: from now on its own word decides, whatever its output does.
    attempt = str(tmo.project(reporting)["attempt"])
    tmo.ok("state", "waiting", env={"TMO_PROJECT_ID": str(reporting), "TMO_ATTEMPT": attempt})
    log = tmo.home / "logs" / f"{reporting}.log"
    size = log.stat().st_size
    (works["reporting"] / "more").touch()
    poll(lambda: log.stat().st_size > size or None, timeout=15, message="its log to grow again")
    # Only now does the witness print: once the daemon has seen it working, it has looked at the
    # reporting project's grown log too.
    (works["silent"] / "more").touch()
    poll(lambda: _agent(tmo.project(silent)) == ("working", "activity") or None, timeout=15,
         message="the witness to be seen working")
    assert _agent(tmo.project(reporting)) == ("waiting", "reported")
    messages = [m for m, _ in _state_events(tmo, reporting)]
    assert messages == ["unknown -> working (activity)", "working -> idle (activity)",
                        "idle -> waiting (reported)"]
    assert all(source == "daemon" for m, source in _state_events(tmo, silent))


def test_agent_hooks_install_merges_and_keeps_other_settings(tmo: Tmo, tmp_path: Path) -> None:
    project = tmp_path / "repo"
    (project / ".claude").mkdir(parents=True)
    settings_path = project / ".claude" / "settings.local.json"
    theirs: dict[str, Any] = {"permissions": {"allow": ["Bash(ls)"]}, "model": "x",
              "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "notify-send done"}]}],
                        "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "a"}]}]}}
    settings_path.write_text(json.dumps(theirs))
    out = tmo.ok("agent-hooks", "claude", "--install", str(project))
    assert str(settings_path) in out
    printed = json.loads(tmo.ok("agent-hooks", "claude", "--print"))["hooks"]
    merged = json.loads(settings_path.read_text())
    assert (merged["permissions"], merged["model"]) == (theirs["permissions"], "x")
    assert merged["hooks"]["PreToolUse"] == theirs["hooks"]["PreToolUse"]
    assert merged["hooks"]["Stop"] == theirs["hooks"]["Stop"] + printed["Stop"]
    for event in ("UserPromptSubmit", "Notification"):
        assert merged["hooks"][event] == printed[event]
    # a second install adds nothing
    tmo.ok("agent-hooks", "claude", "--install", str(project))
    assert json.loads(settings_path.read_text()) == merged
    # into a directory with no settings yet: the file is created
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    tmo.ok("agent-hooks", "claude", "--install", str(fresh))
    assert json.loads((fresh / ".claude" / "settings.local.json").read_text()) == {"hooks": printed}


def test_agent_hooks_install_refuses_a_file_that_is_not_json(tmo: Tmo, tmp_path: Path) -> None:
    (tmp_path / ".claude").mkdir()
    path = tmp_path / ".claude" / "settings.local.json"
    path.write_text('{"model": "x",')
    result = tmo("agent-hooks", "claude", "--install", str(tmp_path))
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.startswith("tmo: error: ") and len(result.stderr.splitlines()) == 1
    assert "not valid JSON" in result.stderr and str(path) in result.stderr
    assert path.read_text() == '{"model": "x",'
    printed = tmo.ok("agent-hooks", "claude")
    assert set(json.loads(printed)["hooks"]) == {"UserPromptSubmit", "Stop", "Notification"}
    assert shlex.split(json.loads(printed)["hooks"]["Stop"][0]["hooks"][0]["command"])

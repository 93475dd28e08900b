"""What tmo prints: one project schema, one time format, `doctor --json`, `show`, `list`, `logs`.

Issue 13, defect 6. The documented schema is in docs/json.md.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from acceptance.support import DaemonControl, Tmo, add_gated, end_pid, poll, wait_session
from tmux_orchestrator.config import load_settings
from tmux_orchestrator.orchestrator import Orchestrator
from tmux_orchestrator.testing import retry_until

#: The one time format (see tmux_orchestrator/timestamps.py).
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00")


def _is_time(value: Any) -> bool:
    return isinstance(value, str) and ISO.fullmatch(value) is not None


def _types(data: dict[str, Any]) -> dict[str, str]:
    return {key: type(value).__name__ for key, value in data.items()}


# -- one project schema --------------------------------------------------------------------------
OPTIONS = ["--name", "same", "--priority", "3", "--env", "K=V", "--timeout", "2h",
           "--retry-delay", "30s", "--max-retries", "2", "--requires", "gpu"]


def test_add_list_show_from_file_and_the_api_give_one_project_schema(tmo: Tmo, tmp_path: Path) -> None:
    added = json.loads(tmo.ok("add", "--json", *OPTIONS, "--", "sh", "-c", "echo 'a b'"))
    batch = tmp_path / "batch.txt"
    batch.write_text("sh -c \"echo 'a b'\"\n")
    [from_file] = tmo.json("add", *OPTIONS, "--from-file", str(batch))
    # an ended project too: every time and the outcome are set
    ended_id = tmo.add("true", options=OPTIONS)
    tmo.ok("cancel", str(ended_id))

    listed = {p["id"]: p for p in tmo.projects()}
    orch = Orchestrator(load_settings(tmo.home))
    try:
        api = {pid: orch.get(pid).to_dict() for pid in (added["id"], from_file["id"], ended_id)}
    finally:
        orch.close()
    for pid in (added["id"], from_file["id"], ended_id):
        # the same project is the same object, whichever command printed it
        assert listed[pid] == tmo.project(pid) == api[pid], pid
    assert added == api[added["id"]] and from_file == api[from_file["id"]]
    # and different projects give the same keys with the same types
    assert _types(added) == _types(from_file)
    assert set(api[ended_id]) == set(added)
    ended = api[ended_id]
    assert ended["status"] == "cancelled" and _is_time(ended["completed_at"])
    assert added["command"] == ["sh", "-c", "echo 'a b'"] and "K" in added["env_names"]
    assert tmo.env_of(added["id"])["K"] == "V"  # over the captured value
    assert (added["timeout"], added["retry_delay"], added["required_labels"]) == (7200.0, 30.0, ["gpu"])


def test_the_documented_schema_is_the_printed_one(tmo: Tmo) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "json.md").read_text()
    section = doc.split("## Projects", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE))
    project = json.loads(tmo.ok("add", "--json", "--", "true"))
    assert documented == set(project)


# -- timestamps ----------------------------------------------------------------------------------
def test_every_time_printed_is_iso_8601_utc_with_microseconds(tmo: Tmo, daemon: DaemonControl) -> None:
    daemon.start()
    project_id, _gate = add_gated(tmo, "clock")
    wait_session(tmo, project_id)

    status = daemon.status()
    assert _is_time(status["started_at"]) and _is_time(status["config_loaded_at"]), status
    text = tmo.ok("daemon", "status")
    assert ISO.search(text.splitlines()[0]), text
    [session] = tmo.sessions()
    assert _is_time(session["created"]), session
    project = tmo.project(project_id)
    assert _is_time(project["enqueued_at"]) and _is_time(project["started_at"]), project
    [listed] = tmo.projects()
    assert _is_time(listed["started_at"])
    events = tmo.events()
    assert events and all(_is_time(e["at"]) for e in events), events
    lines = tmo.ok("events").splitlines()
    assert lines and all(ISO.match(line) for line in lines), lines
    hosts = tmo.json("hosts")
    assert _is_time(hosts[0]["started_at"]) and _is_time(hosts[0]["heartbeat_at"]), hosts
    assert _is_time(tmo.json("stats")["since"])
    assert ISO.search(tmo.ok("show", str(project_id)))


# -- doctor --json ---------------------------------------------------------------------------------
def test_doctor_json_has_stable_keys_and_machine_values(tmo: Tmo) -> None:
    tmo.add("true")
    data = tmo.json("doctor")
    assert set(data) == {"ok", "checks"} and data["ok"] is True
    checks = {c["name"]: c for c in data["checks"]}
    assert list(checks) == ["tmo", "tmux", "home", "config", "database", "tmux_server", "daemon"]
    for check in data["checks"]:
        assert set(check) == {"name", "ok", "value", "message", "details"}, check
        assert check["ok"] is True and isinstance(check["message"], str)
        assert isinstance(check["details"], dict)
    assert re.fullmatch(r"\d+\.\d+\w*", checks["tmux"]["value"]), checks["tmux"]
    assert Path(checks["tmux"]["details"]["path"]).name == "tmux"
    assert checks["home"]["value"] == str(tmo.home) and checks["home"]["details"]["exists"] is True
    database = checks["database"]
    assert isinstance(database["value"], int) and database["details"]["exists"] is True
    assert database["details"]["counts"]["queued"] == 1
    assert database["details"]["url"].endswith("tmo.db")
    assert checks["tmux_server"]["value"] is False
    assert checks["tmux_server"]["details"]["owned_sessions"] == 0
    assert checks["daemon"]["value"] is None and checks["daemon"]["details"]["running"] is False
    assert checks["config"]["value"] is None and checks["config"]["details"]["exists"] is False
    # the text output is what it was: one line per check, with the same labels
    lines = tmo.ok("doctor").splitlines()
    labels = [line[5:24].strip() for line in lines]
    assert labels == ["tmux-orchestrator", "tmux", "home", "config", "database", "tmux server",
                      "daemon"], lines


# -- show -------------------------------------------------------------------------------------------
def test_show_prints_the_command_shell_quoted_and_durations_short(tmo: Tmo) -> None:
    project_id = tmo.add("sh", "-c", "echo 'it works'", "$HOME",
                         options=["--timeout", "4h", "--idle-timeout", "90", "--retry-delay", "30s"])
    fields = dict(line.split(None, 1) for line in tmo.ok("show", str(project_id)).splitlines())
    assert shlex.split(fields["command"]) == ["sh", "-c", "echo 'it works'", "$HOME"], fields
    assert fields["command"] == shlex.join(["sh", "-c", "echo 'it works'", "$HOME"])
    assert (fields["timeout"], fields["idle_timeout"], fields["retry_delay"]) == ("4h", "1m30s", "30s")
    assert fields["log_file"].endswith(f"{project_id}.log")


# -- list -------------------------------------------------------------------------------------------
def test_list_shows_when_a_project_waiting_for_its_retry_runs_again(
        tmo: Tmo, daemon: DaemonControl) -> None:
    project_id = tmo.add("false", options=["--name", "flaky", "--max-retries", "2", "--retry-delay", "1h"])
    daemon.start()
    def retried() -> dict[str, Any] | None:
        project = tmo.project(project_id)
        return project if project["status"] == "queued" and project["retry_count"] == 1 else None
    waiting = poll(retried, timeout=30, message="the project to wait for its retry")
    assert waiting["session_name"], waiting  # the last attempt's, long gone
    [row] = [line for line in tmo.ok("list").splitlines() if line.split()[0] == str(project_id)]
    assert re.search(r"\bretry in (59m\d+s|1h)\b", row), row
    assert waiting["session_name"] not in row, row


# -- logs --scrollback --------------------------------------------------------------------------------
def test_scrollback_of_a_project_that_exited_by_itself_says_why_there_is_none(
        tmo: Tmo, daemon: DaemonControl) -> None:
    project_id = tmo.add("echo", "all in the log")
    daemon.start()
    tmo.wait_status(project_id, "completed", timeout=30)
    result = tmo("logs", str(project_id), "--scrollback")
    assert result.returncode == 1, result  # as `tmo logs` of a project with no output yet
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("tmo: error: ") and "by itself" in line, line
    assert f"`tmo logs {project_id}`" in line, line
    assert "all in the log" in tmo.ok("logs", str(project_id))


def test_scrollback_is_kept_per_attempt_and_shows_the_latest(tmo: Tmo, daemon: DaemonControl) -> None:
    project_id = tmo.add("sh", "-c", 'echo "attempt $TMO_ATTEMPT here"; sleep 600',
                         options=["--timeout", "1s", "--max-retries", "1"])
    daemon.start()
    tmo.wait_status(project_id, "failed", timeout=30)
    settings = load_settings(tmo.home)

    def saved() -> bool:
        return all(settings.scrollback_path(project_id, n).exists() for n in (1, 2))
    retry_until(saved, timeout=20, message="both attempts' scrollback")
    assert "attempt 1 here" in settings.scrollback_path(project_id, 1).read_text()
    shown = tmo.ok("logs", str(project_id), "--scrollback")
    assert "attempt 2 here" in shown and "attempt 1 here" not in shown, shown


# -- attach inside the user's own tmux ------------------------------------------------------------------
Outer = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def outer_tmux(tmo: Tmo) -> Iterator[Outer]:
    """Runs tmux commands on a private server standing for the user's own (socket in a temporary
    directory, no configuration, the test's environment); the server is ended by its pid afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="outer-", dir="/tmp"))
    env = {k: v for k, v in tmo.env.items() if k not in ("TMUX", "TMUX_PANE")}

    def outer(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-S", str(directory / "sock"), "-f", "/dev/null", *args], env=env,
                              capture_output=True, text=True, timeout=30, check=False)
    assert outer("new-session", "-d", "-s", "user", "-x", "160", "-y", "40").returncode == 0
    try:
        yield outer
    finally:
        pid = outer("display-message", "-p", "#{pid}").stdout.strip()
        if pid.isdigit():
            end_pid(int(pid))
        shutil.rmtree(directory, ignore_errors=True)


def _attach_inside(outer: Outer, window: str, project_id: int) -> str:
    """Run `tmo attach` in a new window of the outer server, wait until its client is attached,
    send it the keys the outer tmux passes on after `C-b C-b` (`C-b`) and `d`; the window's text."""
    outer("new-window", "-d", "-t", "user:", "-n", window,
          f"tmo attach {project_id}; echo attach-exited-$?; exec sleep 600")
    # the project's own output: the inner client draws it
    retry_until(lambda: "started-nested" in outer("capture-pane", "-p", "-t", f"user:{window}").stdout,
                timeout=20, message="the nested client to attach")
    outer("send-keys", "-t", f"user:{window}", "C-b", "d")

    def detached() -> str | None:
        out = outer("capture-pane", "-p", "-J", "-t", f"user:{window}").stdout
        return out if "attach-exited-0" in out else None
    return poll(detached, timeout=20, message="the nested client to detach")


def test_attach_inside_the_users_tmux_says_how_to_detach_the_inner_client(
        tmo: Tmo, daemon: DaemonControl, outer_tmux: Outer) -> None:
    daemon.start()
    project_id, _gate = add_gated(tmo, "nested")
    wait_session(tmo, project_id)

    shown = _attach_inside(outer_tmux, "first", project_id)
    assert "tmo: inside your own tmux: detach this session with C-b C-b d" in shown, shown
    # a user whose own prefix is another key detaches tmo's session with C-b d
    assert outer_tmux("set-option", "-g", "prefix", "C-a").returncode == 0
    shown = _attach_inside(outer_tmux, "second", project_id)
    assert "tmo: inside your own tmux (prefix C-a): detach this session with C-b d" in shown, shown
    # tmo never touched the user's server, and the project runs on
    assert outer_tmux("show-options", "-gv", "prefix").stdout.strip() == "C-a"
    assert tmo.project(project_id)["status"] == "processing"


def test_attach_outside_tmux_prints_no_hint(tmo: Tmo, daemon: DaemonControl) -> None:
    daemon.start()
    project_id, _gate = add_gated(tmo, "plain")
    wait_session(tmo, project_id)
    # no terminal here: tmux refuses to attach, but any hint would come first
    result = tmo("attach", str(project_id))
    assert "detach" not in result.stderr, result.stderr

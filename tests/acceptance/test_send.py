"""``tmo send`` and ``tmo peek`` against the real daemon, tmux and a fake agent (``fake_agent.py``):
text arrives byte for byte and exactly once, keys arrive as keys, a daemon killed mid-delivery does
not paste twice, and a project that does not run is a one-line error."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from acceptance.support import DaemonControl, Tmo, poll, wait_session
from tmux_orchestrator.orchestrator import Orchestrator

AGENT = Path(__file__).with_name("fake_agent.py")
TRICKY = "run `ls`; # $(whoami) 'single' \"double\" back\\slash /path @file -x ünïcødé ✓ end;"


def start_agent(tmo: Tmo, daemon: DaemonControl, *agent_args: str) -> tuple[int, Path]:
    """Start the daemon and a project running the fake agent; returns (id, its output file)."""
    work = tmo.home / "work"
    work.mkdir()
    daemon.start()
    project_id = tmo.add(sys.executable, str(AGENT), str(work / "out.jsonl"), str(work / "ready"),
                         *agent_args, options=["--dir", str(work)])
    wait_session(tmo, project_id)
    poll(lambda: (work / "ready").exists() or None, message="the fake agent to be ready")
    return project_id, work / "out.jsonl"


def submitted(out: Path) -> list[dict[str, Any]]:
    """What the fake agent received so far."""
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def message_row(tmo: Tmo, message_id: int) -> dict[str, Any]:
    with Orchestrator(home=tmo.home, create=False) as orch:
        return orch.message(message_id).to_dict()


def test_text_arrives_byte_for_byte_once_and_keys_as_keys(tmo: Tmo, daemon: DaemonControl) -> None:
    project_id, out = start_agent(tmo, daemon)
    texts = [TRICKY, "first line\nsecond line\n  indented;", "/help"]
    for text in texts:
        result = tmo("send", str(project_id), text, "--wait", "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["status"] == "delivered"
    assert submitted(out) == [{"text": t} for t in texts]

    assert tmo("send", str(project_id), "--keys", "C-c", "--wait").returncode == 0
    assert submitted(out)[-1] == {"key": "C-c"}
    kinds = [e["kind"] for e in tmo.events() if e["kind"].startswith("message_")]
    assert kinds == ["message_delivered"] * 4

    screen = tmo.ok("peek", str(project_id))
    assert "submitted" in screen and "\x1b" not in screen
    assert tmo.ok("peek", str(project_id), "--lines", "1").strip() == ">"


def test_a_lost_enter_is_pressed_again_without_a_second_copy(tmo: Tmo, daemon: DaemonControl) -> None:
    project_id, out = start_agent(tmo, daemon, "1")  # the agent ignores its first Enter
    result = tmo("send", str(project_id), "status?", "--wait", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["tries"] == 2
    assert submitted(out) == [{"text": "status?"}]


def test_send_or_peek_to_a_project_that_does_not_run_is_an_error(tmo: Tmo) -> None:
    project_id = tmo.add("true")
    for args in (["send", str(project_id), "hello"], ["peek", str(project_id)]):
        result = tmo(*args)
        assert result.returncode == 1
        assert result.stderr.startswith("tmo: error: project 1 is not running (it is queued)")
        assert len(result.stderr.splitlines()) == 1
    result = tmo("send", str(project_id))
    assert result.returncode == 2 and "nothing to send" in result.stderr


def test_a_daemon_killed_between_paste_and_enter_does_not_paste_twice(
    tmo: Tmo, daemon: DaemonControl
) -> None:
    (tmo.home / "config.toml").write_text('send_settle_delay = "30s"\n')
    project_id, out = start_agent(tmo, daemon)
    tmo.ok("send", str(project_id), "pasted once")
    # The paste is on the agent's input line, Enter is 30 s away: the daemon dies now.
    poll(lambda: "pasted once" in tmo.ok("peek", str(project_id)) or None,
         message="the paste to reach the pane")
    assert message_row(tmo, 1)["status"] == "delivering"
    pid = daemon.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    poll(lambda: daemon.pid() is None or None, message="the killed daemon to be gone")

    (tmo.home / "config.toml").write_text('send_settle_delay = "0.2s"\n')
    daemon.start()
    row = poll(lambda: ((r := message_row(tmo, 1))["status"] == "failed" and r) or None,
               message="the interrupted message to be failed")
    assert "daemon stopped during delivery" in row["reason"]
    assert any(e["kind"] == "message_failed" for e in tmo.events())
    assert tmo.ok("peek", str(project_id)).count("pasted once") == 1
    assert submitted(out) == []
    # The project still takes messages.
    assert tmo("send", str(project_id), "after restart", "--wait").returncode == 0
    assert submitted(out) == [{"text": "pasted onceafter restart"}]


def test_a_message_whose_project_ended_before_delivery_is_failed_not_left_queued(
    tmo: Tmo, daemon: DaemonControl
) -> None:
    project_id, out = start_agent(tmo, daemon)
    tmo.ok("daemon", "stop")  # the project runs on; nothing delivers meanwhile
    tmo.ok("send", str(project_id), "too late")
    assert message_row(tmo, 1)["status"] == "queued"
    tmo.ok("cancel", str(project_id))
    daemon.start()
    row = poll(lambda: (lambda r: r if r["status"] != "queued" else None)(message_row(tmo, 1)),
               message="the message to be settled")
    assert row["status"] == "failed" and "no longer running" in row["reason"], row
    assert [e["kind"] for e in tmo.events()].count("message_failed") == 1
    assert submitted(out) == []

"""``tmo send --when-waiting`` and ``tmo checkin`` against the real daemon, tmux and the fake agent,
whose state the test reports with ``tmo state`` as the agent's hooks would: held while the agent
works, delivered once it waits, one check-in per period counted from the last delivery, kept across
a daemon restart, gone with the project."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from acceptance.support import DaemonControl, Tmo, poll, run_sql, wait_session
from acceptance.test_send import AGENT, message_row, start_agent, submitted


def report(tmo: Tmo, project_id: int, state: str) -> None:
    """``tmo state STATE`` as the project's agent runs it (its hooks)."""
    attempt = tmo.project(project_id)["attempt"]
    tmo.ok("state", state, env={"TMO_PROJECT_ID": str(project_id), "TMO_ATTEMPT": str(attempt)})


def send_and_wait(tmo: Tmo, project_id: int, text: str) -> None:
    """An ordinary message, delivered: the daemon's pass that delivered it went through every older
    message of the project first (oldest first), so a held one was looked at and held."""
    result = tmo("send", str(project_id), text, "--wait")
    assert result.returncode == 0, result.stderr


def sent(tmo: Tmo, project_id: int, *args: str) -> dict[str, Any]:
    data = json.loads(tmo.ok("send", str(project_id), *args, "--json"))
    assert isinstance(data, dict)
    return data


def texts(out: Path) -> list[str]:
    return [entry.get("text", "") for entry in submitted(out)]


def test_a_when_waiting_message_is_held_while_working_and_delivered_once_waiting(
    tmo: Tmo, daemon: DaemonControl
) -> None:
    project_id, out = start_agent(tmo, daemon)
    report(tmo, project_id, "working")
    held = sent(tmo, project_id, "--when-waiting", "status?")
    assert held["when_waiting"] is True and held["status"] == "queued"
    send_and_wait(tmo, project_id, "go on")
    assert texts(out) == ["go on"]
    assert message_row(tmo, held["id"])["status"] == "queued"

    report(tmo, project_id, "waiting")
    result = tmo("send", "--wait", str(project_id), "--when-waiting", "second")  # waiting: at once
    assert result.returncode == 0, result.stderr
    poll(lambda: message_row(tmo, held["id"])["status"] == "delivered" or None,
         message="the held message to be delivered")
    assert texts(out) == ["go on", "status?", "second"]


def _checkin_messages(tmo: Tmo, checkin_id: int) -> list[dict[str, Any]]:
    """The messages the daemon queued for a check-in (one ``checkin_due`` event each)."""
    rows = []
    for event in tmo.events():
        if event["kind"] == "checkin_due" and event["message"].startswith(f"check-in {checkin_id} "):
            rows.append(message_row(tmo, int(event["message"].split("message ")[1].split()[0])))
    return rows


def _delivered_at(row: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(row["delivered_at"].replace("Z", "+00:00"))


def test_a_checkin_lands_only_while_waiting_once_per_period_survives_a_restart_and_ends(
    tmo: Tmo, daemon: DaemonControl
) -> None:
    project_id, out = start_agent(tmo, daemon)
    report(tmo, project_id, "working")
    added = json.loads(tmo.ok("checkin", str(project_id), "--every", "2s", "check in", "--json"))
    checkin_id = added["id"]
    assert tmo.ok("checkin", "--list").splitlines()[1].split()[:3] == [str(checkin_id),
                                                                      str(project_id), "2s"]

    # Due while the agent works: queued, held, and not a second one while that one is pending.
    poll(lambda: _checkin_messages(tmo, checkin_id) or None, timeout=15,
         message="the check-in to fall due")
    send_and_wait(tmo, project_id, "working on")
    assert texts(out) == ["working on"]
    [first] = _checkin_messages(tmo, checkin_id)
    assert first["status"] == "queued" and first["when_waiting"]

    # Waiting: delivered, and again every 2 s counted from the last delivery.
    report(tmo, project_id, "waiting")
    poll(lambda: len([m for m in _checkin_messages(tmo, checkin_id) if m["status"] == "delivered"])
         >= 3 or None, timeout=30, message="three check-ins to be delivered")
    report(tmo, project_id, "working")
    delivered = [m for m in _checkin_messages(tmo, checkin_id) if m["status"] == "delivered"]
    stamps = [_delivered_at(m) for m in delivered]
    gaps = [(later - earlier).total_seconds() for earlier, later in pairwise(stamps)]
    assert gaps and min(gaps) >= 2, gaps
    assert texts(out)[1:] == ["check in"] * len(delivered)

    # Working again: the next one is queued and held, through a daemon restart.
    count = len(_checkin_messages(tmo, checkin_id))
    poll(lambda: len(_checkin_messages(tmo, checkin_id)) > count or None, timeout=15,
         message="the next check-in to fall due")
    tmo.ok("daemon", "stop")
    daemon.start()
    send_and_wait(tmo, project_id, "after restart")
    assert texts(out)[-1] == "after restart"
    assert texts(out).count("check in") == len(delivered)
    assert [c["id"] for c in json.loads(tmo.ok("checkin", "--list", "--json"))] == [checkin_id]
    report(tmo, project_id, "waiting")
    poll(lambda: texts(out).count("check in") > len(delivered) or None, timeout=15,
         message="the held check-in to be delivered after the restart")

    # The project ends: its check-ins with it.
    tmo.ok("cancel", str(project_id))
    assert json.loads(tmo.ok("checkin", "--list", "--json")) == []
    assert "checkin_added" in [e["kind"] for e in tmo.events()]


def test_checkin_mistakes_are_one_line_errors(tmo: Tmo) -> None:
    project_id = tmo.add("true")  # queued: no daemon runs
    for args, words in [
        ((str(project_id), "--every", "2s", "hi"), "not running"),
        ((str(project_id), "hi"), "--every"),
        ((str(project_id), "--every", "0", "hi"), "more than 0"),
        ((str(project_id), "--every", "soon", "hi"), "invalid duration"),
        (("--list", "--remove", "1"), "--list"),
        (("--remove", "7"), "no check-in 7"),
        ((), "--list"),
    ]:
        result = tmo("checkin", *args)
        assert result.returncode != 0, args
        assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def _silent_agent(tmo: Tmo, name: str) -> int:
    """A running fake agent with a 5 s --idle-timeout (it prints nothing after its prompt)."""
    work = tmo.home / name
    work.mkdir()
    project_id = tmo.add(sys.executable, str(AGENT), str(work / "out.jsonl"), str(work / "ready"),
                         options=["--dir", str(work), "--idle-timeout", "5s"])
    wait_session(tmo, project_id)
    poll(lambda: (work / "ready").exists() or None, message="the fake agent to be ready")
    return project_id


def _idle_pair(tmo: Tmo, daemon: DaemonControl) -> tuple[int, int]:
    """Two fake agents with a 5 s --idle-timeout, started in turn: the first reported waiting, the
    second working. Returns (waiting, working) once the working one has been ended as idle: by then
    the waiting one, silent for longer, was past its timeout too."""
    daemon.start("--concurrency", "2")
    waiting = _silent_agent(tmo, "waiting")
    report(tmo, waiting, "waiting")
    working = _silent_agent(tmo, "working")
    report(tmo, working, "working")
    poll(lambda: tmo.project(working)["status"] == "failed" or None, timeout=30,
         message="the working agent to be ended by its idle timeout")
    assert tmo.project(working)["outcome"] == "idle"
    return waiting, working


def test_the_idle_timeout_spares_an_agent_waiting_for_an_answer(tmo: Tmo, daemon: DaemonControl) -> None:
    waiting, _ = _idle_pair(tmo, daemon)
    assert tmo.project(waiting)["status"] == "processing"


def test_idle_timeout_waiting_ends_a_waiting_agent_too(tmo: Tmo, daemon: DaemonControl) -> None:
    (tmo.home / "config.toml").write_text("idle_timeout_waiting = true\n")
    waiting, _ = _idle_pair(tmo, daemon)
    poll(lambda: tmo.project(waiting)["status"] == "failed" or None, timeout=15,
         message="the waiting agent to be ended by its idle timeout")


def test_bad_hand_written_rows_fail_alone_and_stop_no_delivery(tmo: Tmo, daemon: DaemonControl) -> None:
    # One bad row never stops the queue: a check-in whose text is not UTF-8 used to make every
    # delivery pass fail, and a keys message that is not JSON stayed `delivering` for good.
    project_id, out = start_agent(tmo, daemon)
    report(tmo, project_id, "waiting")
    attempt = tmo.project(project_id)["attempt"]
    run_sql(tmo.home, "INSERT INTO checkins (project_id, attempt, every, body) "
                      f"VALUES ({project_id}, {attempt}, 1, 'bad-' || CAST(X'ff' AS TEXT))")
    run_sql(tmo.home, "INSERT INTO messages (project_id, attempt, kind, body) "
                      f"VALUES ({project_id}, {attempt}, 'keys', 'not json')")
    send_and_wait(tmo, project_id, "still delivered")
    assert texts(out) == ["still delivered"]
    keys = poll(lambda: (lambda r: r if r["status"] == "failed" else None)(message_row(tmo, 1)),
                message="the bad keys message to fail")
    assert keys["reason"], keys
    # the check-in that cannot be sent is removed (once due), with its event
    poll(lambda: json.loads(tmo.ok("checkin", "--list", "--json")) == [] or None,
         message="the check-in that cannot be sent to be removed")
    assert "checkin_removed" in [e["kind"] for e in tmo.events()]
    send_and_wait(tmo, project_id, "and after it")
    assert texts(out) == ["still delivered", "and after it"]

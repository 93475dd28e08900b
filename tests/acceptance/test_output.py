"""What tmo prints: one project schema, one time format, `doctor --json`, `show`, `list`, `logs`.

Issue 13, defect 6. The documented schema is in docs/json.md.
"""

from __future__ import annotations

import re
from typing import Any

from acceptance.support import DaemonControl, Tmo, add_gated, wait_session

#: The one time format (see tmux_orchestrator/timestamps.py).
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00")


def _is_time(value: Any) -> bool:
    return isinstance(value, str) and ISO.fullmatch(value) is not None


def _types(data: dict[str, Any]) -> dict[str, str]:
    return {key: type(value).__name__ for key, value in data.items()}


# -- timestamps ----------------------------------------------------------------------------------
def test_every_time_printed_is_iso_8601_utc_with_microseconds(tmo: Tmo, daemon: DaemonControl) -> None:
    daemon.start()
    project_id, _gate = add_gated(tmo, "clock")
    wait_session(tmo, project_id)

    status = daemon.status()
    assert _is_time(status["started_at"]), status
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

"""Requirement 8: `tmo events --follow --json` streams a new event within well under a second."""

from __future__ import annotations

import json
import time

from acceptance.support import LineReader, Tmo


def test_events_follow_json_shows_a_new_event_well_under_a_second_after_add(tmo: Tmo) -> None:
    first = tmo.add("echo", "first")
    follower = tmo.popen("events", "--follow", "--json")
    reader = LineReader(follower)
    _, line = reader.next_line(timeout=15)  # the backlog: proves the follower is up
    backlog = json.loads(line)
    assert (backlog["kind"], backlog["project_id"]) == ("queued", first)

    second = tmo.add("echo", "second")
    added = time.monotonic()
    arrived, line = reader.next_line(timeout=5)
    event = json.loads(line)
    assert event["kind"] == "queued"
    assert event["project_id"] == second
    assert event["source"] == "cli"
    delay = arrived - added
    assert delay < 0.5, f"the event arrived {delay:.3f}s after `tmo add` returned"
    assert follower.poll() is None, "--follow must keep running"


def test_events_follow_json_lines_are_complete_json_objects(tmo: Tmo) -> None:
    follower = tmo.popen("events", "--follow", "--json")
    reader = LineReader(follower)
    ids = [tmo.add("echo", str(n)) for n in range(3)]
    seen = [json.loads(reader.next_line(timeout=5)[1]) for _ in ids]
    assert [e["project_id"] for e in seen] == ids
    assert all({"id", "at", "kind", "source", "project_id"} <= set(e) for e in seen)
    assert [e["id"] for e in seen] == sorted(e["id"] for e in seen)

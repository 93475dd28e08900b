"""Requirement 2: `add` prints the new id; `list --json`, `show ID --json`, `list --status`."""

from __future__ import annotations

from acceptance.support import Tmo, db_snapshot

LIST_KEYS = {
    "id", "name", "status", "priority", "session_name", "exit_code", "error_message",
    "enqueued_at", "started_at", "completed_at",
}


def test_add_prints_the_new_id(tmo: Tmo) -> None:
    first = tmo.ok("add", "--", "echo", "one")
    second = tmo.ok("add", "--", "echo", "two")
    assert first.strip() == "1"
    assert second.strip() == "2"
    assert db_snapshot(tmo.home).projects == 2


def test_list_json_objects_carry_the_documented_fields(tmo: Tmo) -> None:
    project_id = tmo.add("echo", "hello", options=["--name", "greeter", "--priority", "4"])
    projects = tmo.projects()
    assert len(projects) == 1
    project = projects[0]
    assert LIST_KEYS <= set(project), f"missing keys: {LIST_KEYS - set(project)}"
    assert project["id"] == project_id
    assert project["name"] == "greeter"
    assert project["status"] == "queued"
    assert project["priority"] == 4
    assert project["exit_code"] is None
    assert project["error_message"] is None
    assert project["enqueued_at"]
    assert project["started_at"] is None
    assert project["completed_at"] is None


def test_show_json_describes_one_project(tmo: Tmo) -> None:
    tmo.add("echo", "first")
    project_id = tmo.add("echo", "second", options=["--name", "two", "--env", "COLOUR=blue", "--no-env"],
                         cwd=tmo.home)
    shown = tmo.project(project_id)
    assert LIST_KEYS <= set(shown)
    assert shown["id"] == project_id
    assert shown["name"] == "two"
    assert shown["status"] == "queued"
    assert shown["command"] == ["echo", "second"]
    assert shown["env_names"] == ["COLOUR"]  # names only: values may be secrets
    assert tmo.env_of(project_id) == {"COLOUR": "blue"}
    assert shown["project_path"] == str(tmo.home.resolve())


def test_list_status_queued_shows_only_queued_projects(tmo: Tmo) -> None:
    keep = tmo.add("echo", "stays queued")
    dropped = tmo.add("echo", "gets cancelled")
    tmo.ok("cancel", str(dropped))
    queued = tmo.projects("--status", "queued")
    assert [p["id"] for p in queued] == [keep]
    assert all(p["status"] == "queued" for p in queued)
    cancelled = tmo.projects("--status", "cancelled")
    assert [p["id"] for p in cancelled] == [dropped]
    assert {p["id"] for p in tmo.projects()} == {keep, dropped}

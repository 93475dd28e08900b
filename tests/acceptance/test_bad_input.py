"""Requirement 3: bad input gets one clear error line, a non-zero exit, no traceback, and changes
nothing in the database (rows and events are compared with sqlite3 before and after)."""

from __future__ import annotations

import subprocess

import pytest

from acceptance.support import DbSnapshot, Tmo, db_snapshot

UNKNOWN = "9999"


def assert_clean_error(result: subprocess.CompletedProcess[str], exit_code: int) -> str:
    """Exit ``exit_code``, no traceback, exactly one error line; returns that line."""
    assert result.returncode == exit_code, (
        f"exit {result.returncode}, expected {exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("tmo: error:")]
    assert len(errors) == 1 and lines == errors, f"expected one `tmo: error:` line:\n{result.stderr}"
    assert len(errors[0]) > len("tmo: error: ") + 10, f"error line says too little: {errors[0]!r}"
    return errors[0]


@pytest.fixture
def baseline(tmo: Tmo) -> DbSnapshot:
    """A home with one queued project, so there is something a bad command could wrongly change."""
    tmo.add("echo", "baseline")
    return db_snapshot(tmo.home)


def assert_unchanged(tmo: Tmo, before: DbSnapshot) -> None:
    after = db_snapshot(tmo.home)
    assert after.projects == before.projects, "a project row was added or removed"
    assert after.events == before.events, "an event was written"
    assert after.last_event_id == before.last_event_id
    assert after.rows == before.rows, "a project row changed"


@pytest.mark.parametrize("command", ["show", "complete", "fail", "cancel", "retry", "remove"])
def test_unknown_id_is_a_clean_error_that_changes_nothing(
    tmo: Tmo, baseline: DbSnapshot, command: str
) -> None:
    line = assert_clean_error(tmo(command, UNKNOWN), 1)
    assert UNKNOWN in line, line
    assert_unchanged(tmo, baseline)


def test_non_integer_priority_is_a_usage_error(tmo: Tmo, baseline: DbSnapshot) -> None:
    line = assert_clean_error(tmo("add", "--priority", "high", "--", "echo", "hi"), 2)
    assert "priority" in line
    assert_unchanged(tmo, baseline)


@pytest.mark.parametrize("argv", [["add"], ["add", "--"]], ids=["no-args", "only-dashes"])
def test_missing_command_is_a_usage_error(tmo: Tmo, baseline: DbSnapshot, argv: list[str]) -> None:
    line = assert_clean_error(tmo(*argv), 2)
    assert "command" in line.lower()
    assert_unchanged(tmo, baseline)


def test_dir_that_does_not_exist_is_a_usage_error(tmo: Tmo, baseline: DbSnapshot) -> None:
    missing = tmo.home / "no-such-dir"
    line = assert_clean_error(tmo("add", "--dir", str(missing), "--", "echo", "hi"), 2)
    assert str(missing) in line
    assert_unchanged(tmo, baseline)


def test_spec_that_does_not_exist_is_a_usage_error(tmo: Tmo, baseline: DbSnapshot) -> None:
    missing = tmo.home / "no-such-spec.md"
    line = assert_clean_error(tmo("add", "--spec", str(missing), "--", "echo", "hi"), 2)
    assert str(missing) in line
    assert_unchanged(tmo, baseline)


@pytest.mark.parametrize("pair", ["NOEQUALS", "=value", "1BAD=x", "BAD-NAME=x"])
def test_bad_env_is_a_usage_error(tmo: Tmo, baseline: DbSnapshot, pair: str) -> None:
    line = assert_clean_error(tmo("add", "--env", pair, "--", "echo", "hi"), 2)
    assert "env" in line.lower() or pair in line
    assert_unchanged(tmo, baseline)


@pytest.mark.parametrize("command", ["complete", "fail"])
def test_no_id_outside_a_session_is_a_usage_error(tmo: Tmo, baseline: DbSnapshot, command: str) -> None:
    assert "TMO_PROJECT_ID" not in tmo.env
    line = assert_clean_error(tmo(command), 2)
    assert "TMO_PROJECT_ID" in line
    assert_unchanged(tmo, baseline)


def test_non_integer_id_is_a_usage_error(tmo: Tmo, baseline: DbSnapshot) -> None:
    assert_clean_error(tmo("show", "abc"), 2)
    assert_unchanged(tmo, baseline)


def test_daemon_stop_without_a_daemon_says_so_and_changes_nothing(tmo: Tmo, baseline: DbSnapshot) -> None:
    result = tmo("daemon", "stop")
    assert result.returncode == 0, result  # idempotent, like `systemctl stop`
    assert "not running" in result.stdout and result.stderr == "", result
    assert_unchanged(tmo, baseline)


def test_daemon_status_without_a_daemon_exits_3(tmo: Tmo, baseline: DbSnapshot) -> None:
    result = tmo("daemon", "status")
    assert result.returncode == 3, result
    assert "Traceback" not in result.stderr
    assert "not running" in result.stdout
    as_json = tmo("daemon", "status", "--json")
    assert as_json.returncode == 3
    assert '"running": false' in as_json.stdout
    assert_unchanged(tmo, baseline)

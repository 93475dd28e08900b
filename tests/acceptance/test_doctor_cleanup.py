"""Requirement 9: `tmo doctor` and `tmo cleanup` (orphans go; untagged and foreign sessions stay)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from acceptance.support import Tmo, end_pid
from tmux_orchestrator.config import load_settings
from tmux_orchestrator.tmux import Tmux


def test_doctor_exits_0_and_reports_tmux_version_and_database(tmo: Tmo) -> None:
    out = tmo.ok("doctor")
    lines = out.splitlines()
    tmux_lines = [line for line in lines if re.match(r"^ok\s+tmux\s", line)]
    assert tmux_lines, out
    assert re.search(r"tmux \d+\.\d+", tmux_lines[0]), tmux_lines[0]
    database_lines = [line for line in lines if re.match(r"^ok\s+database\s", line)]
    assert database_lines, out
    assert str(tmo.home / "tmo.db") in database_lines[0]
    assert not any(line.startswith("BAD") for line in lines), out


@pytest.fixture
def foreign(foreign_tmux: Tmux) -> Iterator[Tmux]:
    """``foreign_tmux``, whose server is ended by pid without waiting for init to reap it."""
    yield foreign_tmux
    pid = foreign_tmux.run(["display-message", "-p", "#{pid}"], check=False).stdout.strip()
    if pid.isdigit():
        end_pid(int(pid))


def _has_session(run: Tmux | Tmo, name: str) -> bool:
    if isinstance(run, Tmo):
        return run.tmux("has-session", "-t", f"={name}").returncode == 0
    return run.run(["has-session", "-t", f"={name}"], check=False).returncode == 0


def test_cleanup_kills_an_owned_orphan_and_spares_untagged_and_foreign_sessions(
    tmo: Tmo, foreign: Tmux
) -> None:
    settings = load_settings(tmo.home)
    assert settings.socket_path == tmo.socket_path
    tmo.ok("pause")  # creates the database: read commands (cleanup --dry-run) create nothing
    # this home's server (it carries the home's @tmo_home mark) with a stray owned session
    made = tmo.tmux("new-session", "-d", "-s", "stray", "sleep", "600", ";",
                    "set-option", "-s", "@tmo_home", settings.owner_tag, ";",
                    "set-option", "-t", "=stray:", "@tmo_owner", settings.owner_tag)
    assert made.returncode == 0, made.stderr
    made = tmo.tmux("new-session", "-d", "-s", "untagged", "sleep", "600")
    assert made.returncode == 0, made.stderr

    dry = tmo.json("cleanup", "--dry-run")
    assert [(r["session_name"], r["state"]) for r in dry] == [("stray", "orphaned")], dry
    assert dry[0]["killed"] is False
    assert _has_session(tmo, "stray"), "--dry-run must not kill anything"

    tmo.ok("cleanup")
    assert not _has_session(tmo, "stray")
    assert _has_session(tmo, "untagged"), "an untagged session on our server was killed"
    assert _has_session(foreign, "job1"), "a session on another tmux server was killed"
    assert tmo.json("cleanup", "--dry-run") == []

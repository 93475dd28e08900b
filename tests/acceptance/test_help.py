"""Requirement 1: `tmo --help` and `tmo <command> --help` exit 0 for every command."""

from __future__ import annotations

import re

import pytest

from acceptance.support import Tmo

#: Every command the design names, plus the daemon's subcommands.
COMMANDS = [
    "add", "list", "show", "complete", "fail", "cancel", "retry", "remove", "sessions", "cleanup",
    "attach", "logs", "events", "daemon", "doctor", "demo",
]
DAEMON_SUBCOMMANDS = ["run", "start", "stop", "status", "reload"]


def _listed_commands(help_text: str) -> list[str]:
    """Names in the `Commands:` section of a click help page."""
    _, _, section = help_text.partition("\nCommands:\n")
    return [m.group(1) for m in re.finditer(r"^  (\S+)", section, re.MULTILINE)]


def _assert_help(tmo: Tmo, *words: str) -> str:
    result = tmo(*words, "--help")
    assert result.returncode == 0, f"tmo {' '.join(words)} --help exited {result.returncode}: {result.stderr}"
    assert "Traceback" not in result.stderr
    assert result.stdout.startswith("Usage: tmo"), result.stdout
    return result.stdout


def test_top_level_help_exits_0_and_lists_every_command(tmo: Tmo) -> None:
    listed = _listed_commands(_assert_help(tmo))
    assert set(COMMANDS) <= set(listed), f"commands missing from `tmo --help`: {set(COMMANDS) - set(listed)}"


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_exits_0(tmo: Tmo, command: str) -> None:
    text = _assert_help(tmo, command)
    assert f"Usage: tmo {command}" in text


@pytest.mark.parametrize("subcommand", DAEMON_SUBCOMMANDS)
def test_daemon_subcommand_help_exits_0(tmo: Tmo, subcommand: str) -> None:
    text = _assert_help(tmo, "daemon", subcommand)
    assert f"Usage: tmo daemon {subcommand}" in text


def test_every_listed_command_and_daemon_subcommand_has_working_help(tmo: Tmo) -> None:
    """Commands beyond the required ones (pause, resume, install-systemd ...) too."""
    extra = [c for c in _listed_commands(_assert_help(tmo)) if c not in COMMANDS]
    extra_daemon = [c for c in _listed_commands(_assert_help(tmo, "daemon")) if c not in DAEMON_SUBCOMMANDS]
    for command in extra:
        _assert_help(tmo, command)
    for subcommand in extra_daemon:
        _assert_help(tmo, "daemon", subcommand)


def test_help_does_not_touch_the_home(tmo: Tmo) -> None:
    _assert_help(tmo, "add")
    _assert_help(tmo, "daemon", "start")
    assert not (tmo.home / "tmo.db").exists()
    assert not tmo.socket_path.exists()

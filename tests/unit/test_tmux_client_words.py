"""tmux client helpers that need no server: version parsing and command chaining (tmux/client.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tmux_orchestrator.tmux.client import (
    MIN_VERSION,
    Tmux,
    chain,
    clean_environment,
    escape_word,
    parse_version,
)


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("tmux 3.3a", (3, 3)),
        ("tmux 3.0", (3, 0)),
        ("tmux 3.4", (3, 4)),
        ("tmux 2.9a", (2, 9)),
        ("tmux 10.12", (10, 12)),
        ("tmux next-3.5", (3, 5)),
        ("tmux next", (99, 0)),
        ("tmux master", (99, 0)),
        ("tmux openbsd-7.4", (7, 4)),
        ("", None),
        ("tmux", None),
        ("garbage", None),
    ],
)
def test_parse_version(text: str, version: tuple[int, int] | None) -> None:
    assert parse_version(text) == version


def test_parse_version_compares_against_minimum() -> None:
    old = parse_version("tmux 2.9a")
    new = parse_version("tmux 3.3a")
    assert old is not None and old < MIN_VERSION
    assert new is not None and new >= MIN_VERSION


@pytest.mark.parametrize(
    ("word", "escaped"),
    [
        ("plain", "plain"),
        ("a;", "a\\;"),
        (";", "\\;"),
        ("a;b", "a;b"),
        (";a", ";a"),
        ("", ""),
        ("#{pid}", "#{pid}"),
    ],
)
def test_escape_word(word: str, escaped: str) -> None:
    assert escape_word(word) == escaped


def test_chain_joins_with_separators() -> None:
    assert chain([["has-session", "-t", "=a"], ["kill-session", "-t", "$3"]]) == [
        "has-session", "-t", "=a", ";", "kill-session", "-t", "$3",
    ]


def test_chain_single_and_empty() -> None:
    assert chain([["list-sessions"]]) == ["list-sessions"]
    assert chain([]) == []


def test_chain_escapes_words_ending_in_semicolon_only() -> None:
    argv = chain([["new-session", "-d", "sh", "-c", "echo a;"], ["list-sessions"]])
    assert argv == ["new-session", "-d", "sh", "-c", "echo a\\;", ";", "list-sessions"]
    # exactly one unescaped separator word
    assert argv.count(";") == 1


def test_argv_always_names_socket_and_no_config(tmp_path: Path) -> None:
    tmux = Tmux(tmp_path / "s.sock", server_env={})
    argv = tmux.argv([["list-sessions"], ["has-session", "-t", "=x"]])
    assert argv[:6] == ["tmux", "-u", "-S", str(tmp_path / "s.sock"), "-f", "/dev/null"]
    assert argv[6:] == ["list-sessions", ";", "has-session", "-t", "=x"]


def test_clean_environment_is_chosen_not_inherited(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's (so every pane's) environment holds only the base variables: no tmux or project
    variables, no secret of the daemon, no database URL."""
    monkeypatch.setenv("TMUX", "/tmp/tmux-1/default,1,0")
    monkeypatch.setenv("TMUX_PANE", "%1")
    monkeypatch.setenv("TMO_PROJECT_ID", "5")
    monkeypatch.setenv("TMO_DONE_FILE", "/x")
    monkeypatch.setenv("TMO_ATTEMPT", "2")
    monkeypatch.setenv("TMO_DATABASE_URL", "postgresql://u:pw@h/db")
    monkeypatch.setenv("WEBHOOK_SECRET", "s3cret")
    monkeypatch.setenv("LC_TIME", "C")
    env = clean_environment()
    for key in ("TMUX", "TMUX_PANE", "TMO_PROJECT_ID", "TMO_DONE_FILE", "TMO_ATTEMPT", "TMO_DATABASE_URL",
                "WEBHOOK_SECRET"):
        assert key not in env
    assert env["LC_TIME"] == "C"
    assert env["PATH"] == os.environ["PATH"]
    assert "LANG" in env

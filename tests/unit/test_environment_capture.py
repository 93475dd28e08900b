"""What ``tmo add`` captures of the caller's environment (environment.capture_environment)."""

from __future__ import annotations

import os

from tmux_orchestrator.environment import NOT_CAPTURED, capture_environment


def test_per_shell_terminal_and_tmo_variables_are_never_captured() -> None:
    caller = {"PATH": "/home/u/.local/bin:/usr/bin", "ANTHROPIC_API_KEY": "k", "TERM": "xterm",
              "TMUX": "/tmp/tmux-1/default,1,0", "TMUX_PANE": "%3", "PWD": "/x", "OLDPWD": "/y",
              "SHLVL": "2", "_": "/usr/bin/tmo", "TMO_PROJECT_ID": "7", "TMO_HOOK": "1",
              "COLUMNS": "80", "SSH_AUTH_SOCK": "/tmp/agent", "LISTEN_FDS": "3"}
    captured = capture_environment(caller)
    assert captured.env == {"PATH": "/home/u/.local/bin:/usr/bin", "ANTHROPIC_API_KEY": "k"}
    assert captured.skipped == {} and captured.warning() is None


def test_exclude_globs_are_case_sensitive_and_star_captures_nothing() -> None:
    caller = {"AWS_SECRET": "s", "aws_lower": "l", "GITHUB_TOKEN": "t", "KEEP": "k"}
    assert capture_environment(caller, ["AWS_*", "*_TOKEN"]).env == {"aws_lower": "l", "KEEP": "k"}
    assert capture_environment(caller, ["*"]).env == {}


def test_variables_that_cannot_travel_are_skipped_and_named() -> None:
    caller = {"GOOD": "fine\nmultiline", "BAD": os.fsdecode(b"\xff"), "A-B": "x",
              "BASH_FUNC_module%%": "() { :; }"}
    captured = capture_environment(caller)
    assert captured.env == {"GOOD": "fine\nmultiline"}
    assert captured.skipped == {"BAD": "not valid UTF-8", "A-B": "not a variable name a shell can export"}
    warning = captured.warning()
    assert warning is not None and warning.startswith("not passed to the project: A-B (")
    assert "BASH_FUNC" not in warning  # exported bash functions are not variables: skipped silently


def test_the_built_in_list_is_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "security.md").read_text()
    for pattern in NOT_CAPTURED:
        assert f"`{pattern}`" in doc, pattern

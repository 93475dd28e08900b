"""Hostile text refused at the door (inputs.py), printed safely, and credentials redacted (redact.py)."""

from __future__ import annotations

import logging
import re

import pytest

from tmux_orchestrator.environment import base_environment
from tmux_orchestrator.errors import UsageError
from tmux_orchestrator.inputs import check_command, check_env, check_project, check_text, safe_text
from tmux_orchestrator.logs import RedactingFormatter
from tmux_orchestrator.redact import add_secret, redact, redact_url, without_password
from tmux_orchestrator.webhooks import WebhookSpec


@pytest.mark.parametrize(("argv", "message"), [
    (["true", "a\x00b"], "argument 2 of the command contains a NUL byte"),
    (["echo", "\udcff"], "argument 2 of the command is not valid UTF-8"),
    (["sh", "-c", "echo \x1b[31m"],
     "argument 3 of the command contains a control character (\\x1b); only tab"),
    (["sh", "-c", "a\x85"], "argument 3 of the command contains a control character (\\x85)"),
    (["tr\nue"], "argument 1 of the command contains a control character (\\n)"),
])
def test_commands_refuse_nul_invalid_utf8_and_control_characters(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        check_command(argv)


def test_a_script_of_several_lines_with_tabs_is_a_command() -> None:
    check_command(["sh", "-c", "for i in 1 2; do\n\techo $i\ndone"])
    check_command(["claude", "-p", "implémente la spec ✓"])


@pytest.mark.parametrize("name", ["a\x00b", "a\nb", "a\x1b[2Jb", "a\x7fb", "a\x9bb", "a\udcffb"])
def test_names_and_paths_hold_no_control_character(name: str) -> None:
    with pytest.raises(UsageError, match=r"^the name "):
        check_text(name, "the name")


def test_env_values_may_hold_newlines_but_not_nul_or_invalid_utf8() -> None:
    check_env({"PEM": "-----BEGIN-----\nabc\n-----END-----\n", "TAB": "a\tb"})
    with pytest.raises(UsageError, match="environment variable K: the value contains a NUL byte"):
        check_env({"K": "a\x00b"})
    with pytest.raises(UsageError, match="environment variable K: the value is not valid UTF-8"):
        check_env({"K": "\udcfe"})


def test_check_project_names_the_field() -> None:
    with pytest.raises(UsageError, match=r"^the spec file contains"):
        check_project(["true"], name="n", env={}, project_path=None, spec_path="s\n.md")
    with pytest.raises(UsageError, match=r"^the directory contains"):
        check_project(["true"], name="n", env={}, project_path="/tmp/\x1b", spec_path=None)


@pytest.mark.parametrize(("text", "shown"), [
    ("plain ünïcode ✓", "plain ünïcode ✓"),
    ("a\x1b]0;title\x07b", "a\\x1b]0;title\\x07b"),
    ("one\ntwo\tthree\r", "one\\ntwo\\tthree\\r"),
    ("byte \udcff", "byte \\xff"),
    ("c1 \x9b", "c1 \\x9b"),
])
def test_safe_text_makes_every_control_character_visible(text: str, shown: str) -> None:
    assert safe_text(text) == shown


def test_safe_text_returns_clean_text_unchanged() -> None:
    text = "nothing to escape"
    assert safe_text(text) is text


@pytest.mark.parametrize(("url", "redacted", "usable"), [
    ("postgresql://tmo:s3cret@db:5432/q", "postgresql://***@db:5432/q", "postgresql://tmo@db:5432/q"),
    ("https://token@hooks.example/x", "https://***@hooks.example/x", "https://token@hooks.example/x"),
    ("sqlite:////home/me/tmo.db", "sqlite:////home/me/tmo.db", "sqlite:////home/me/tmo.db"),
])
def test_urls_lose_their_credentials(url: str, redacted: str, usable: str) -> None:
    assert redact_url(url) == redacted
    assert without_password(url) == usable


def test_redact_hides_urls_and_known_secrets_in_any_text() -> None:
    add_secret("sw0rdfish-value")
    add_secret("on")  # too short to hide
    text = "POST http://u:pw@h/x failed; body signed with sw0rdfish-value; on and on"
    assert redact(text) == "POST http://***@h/x failed; body signed with ***; on and on"


def test_the_log_formatter_redacts_every_line() -> None:
    record = logging.LogRecord("tmux_orchestrator.x", logging.INFO, __file__, 1,
                               "webhook %s failed", ("https://a:b@h/p",), None)
    formatter = RedactingFormatter(logging.Formatter("%(message)s"))
    assert formatter.format(record) == "webhook https://***@h/p failed"


def test_a_webhook_is_named_without_the_password_of_its_url() -> None:
    spec = WebhookSpec.read({"url": "https://bot:hunter2@chat.example:8443/hooks/abc", "on": ["*"],
                             "headers": {"Authorization": "Bearer tok-123456", "X-Env": "prod"}}, 0)
    assert spec.label == "https://chat.example:8443/..."
    assert set(spec.secrets()) == {"bot", "hunter2", "Bearer tok-123456"}


def test_the_base_environment_is_chosen_not_inherited() -> None:
    env = base_environment({"PATH": "/bin", "LC_ALL": "C", "HOME": "/h", "AWS_SECRET_ACCESS_KEY": "x",
                            "SSH_AUTH_SOCK": "/s", "TMO_DATABASE_URL": "postgresql://u:p@h/d",
                            "http_proxy": "http://u:p@proxy:3128"})
    assert env == {"PATH": "/bin", "LC_ALL": "C", "HOME": "/h", "LANG": "C.UTF-8"}


def test_print_table_shows_hostile_cells_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    from tmux_orchestrator.cli.app import print_table

    print_table(["ID", "NAME"], [[1, "ok"], [2, "evil\x1b[2J\nrow"]])
    out = capsys.readouterr().out
    assert "\x1b" not in out and len(out.splitlines()) == 3
    assert "evil\\x1b[2J\\nrow" in out

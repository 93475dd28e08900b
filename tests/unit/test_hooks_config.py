"""Reading [[hooks]], [[webhooks]], [smtp] and [[emails]] from config.toml: values and clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tmux_orchestrator.config import load_settings
from tmux_orchestrator.dispatch import check_delivery_secrets, load_delivery
from tmux_orchestrator.errors import ConfigError


def _settings_with(tmp_path: Path, text: str) -> dict[str, object]:
    (tmp_path / "config.toml").write_text(text)
    return load_settings(tmp_path).extra


def test_a_hook_table_is_read_with_its_defaults(tmp_path: Path) -> None:
    extra = _settings_with(tmp_path, """
[[hooks]]
name = "notify"
on = ["completed", "failed"]
command = "echo $TMO_EVENT_KIND"
""")
    hook = load_delivery(extra).hooks[0]
    assert hook.name == "notify"
    assert hook.argv == ("/bin/sh", "-c", "echo $TMO_EVENT_KIND")
    assert hook.route.kinds == {"completed", "failed"}
    assert (hook.timeout, hook.max_attempts, hook.max_runs, hook.max_runs_window) == (30.0, 1, 20, 600.0)
    assert hook.cursor_key == "cursor.hook.notify"


def test_a_hook_command_may_be_an_argv_with_filters_env_and_durations(tmp_path: Path) -> None:
    extra = _settings_with(tmp_path, """
hook_concurrency = 2
[[hooks]]
name = "argv"
on = ["*"]
command = ["/usr/bin/env", "python3", "-c", "pass"]
projects = [3, 4]
project_names = ["build-*"]
timeout = "1m30s"
env = { CHANNEL = "ops", LEVEL = 2 }
max_runs = 5
max_runs_window = "1h"
""")
    config = load_delivery(extra)
    hook = config.hooks[0]
    assert config.hook_concurrency == 2
    assert hook.argv == ("/usr/bin/env", "python3", "-c", "pass")
    assert hook.route.projects == {3, 4}
    assert hook.route.project_names == ("build-*",)
    assert hook.timeout == 90.0
    assert dict(hook.env) == {"CHANNEL": "ops", "LEVEL": "2"}
    assert (hook.max_runs, hook.max_runs_window) == (5, 3600.0)


def test_webhook_smtp_and_email_tables_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "pw")
    extra = _settings_with(tmp_path, """
[[webhooks]]
url = "http://127.0.0.1:9/hook"
on = ["failed"]
secret = "s3cret"
max_attempts = 3
backoff = "250ms"

[smtp]
host = "127.0.0.1"
port = 2525
from = "tmo@example.com"
username = "me"
password_env = "TEST_SMTP_PASSWORD"

[[emails]]
on = ["failed"]
to = "ops@example.com"
""")
    # password_env is read by the daemon only (with_secrets), not when the config is loaded
    unresolved = load_delivery(extra).smtp
    assert unresolved is not None and unresolved.password is None
    config = load_delivery(extra).with_secrets({"TEST_SMTP_PASSWORD": "pw"})
    webhook, email, smtp = config.webhooks[0], config.emails[0], config.smtp
    assert webhook.cursor_key == "cursor.webhook.http://127.0.0.1:9/hook"
    assert (webhook.secret, webhook.max_attempts, webhook.backoff) == ("s3cret", 3, 0.25)
    assert [webhook.delay(n) for n in (1, 2, 3)] == [0.25, 0.5, 1.0]
    assert smtp is not None and (smtp.host, smtp.port, smtp.sender, smtp.password) == (
        "127.0.0.1", 2525, "tmo@example.com", "pw")
    assert email.to == ("ops@example.com",)
    assert email.cursor_key == "cursor.email.ops@example.com"


@pytest.mark.parametrize(("text", "message"), [
    ('[[hooks]]\non = ["*"]\ncommand = "true"', "needs name"),
    ('[[hooks]]\nname = "a"\ncommand = "true"', "needs on"),
    ('[[hooks]]\nname = "a"\non = ["*"]', "command in [[hooks]] 'a'"),
    ('[[hooks]]\nname = "a"\non = ["*"]\ncommand = "true"\ncomand = "x"', "unknown key 'comand'"),
    ('[[hooks]]\nname = "a"\non = ["*"]\ncommand = "true"\ntimeout = "soon"', "invalid duration"),
    ('[[hooks]]\nname = "a"\non = ["*"]\ncommand = "true"\nprojects = ["x"]', "list of project ids"),
    ('[[hooks]]\nname = "a"\non = ["*"]\ncommand = "t"\n[[hooks]]\nname = "a"\non = ["*"]\ncommand = "t"',
     "used twice"),
    ('hooks = "x"', "[[hooks]] tables"),
    ('hook_concurrency = 0', "hook_concurrency"),
    ('[[webhooks]]\nurl = "ftp://x"\non = ["*"]', "http:// or https://"),
    ('[[webhooks]]\nurl = "http://x"\non = ["*"]\nsecret_env = "not a name"', "environment variable"),
    ('[[emails]]\non = ["failed"]\nto = ["a@b.c"]', "need an [smtp] table"),
    ('[smtp]\nssl = true\nstarttls = true', "not both"),
    ('[[emails]]\non = ["failed"]\nto = ["nobody"]\n[smtp]\nhost = "x"', "e-mail addresses"),
])
def test_a_bad_table_is_a_config_error_that_names_the_file_and_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "config.toml").write_text(text)
    settings = load_settings(tmp_path)  # other commands do not read the delivery tables
    with pytest.raises(ConfigError) as info:
        check_delivery_secrets(settings, environ={})  # what the daemon, its reload and doctor call
    assert message in str(info.value)
    assert str(tmp_path / "config.toml") in str(info.value)


def test_a_config_without_delivery_tables_has_no_channels(tmp_path: Path) -> None:
    config = load_delivery(_settings_with(tmp_path, 'orphan_policy = "keep"\n'))
    assert (config.hooks, config.webhooks, config.emails, config.smtp) == ((), (), (), None)


def test_secret_env_is_read_only_where_it_is_used(tmp_path: Path) -> None:
    """A `secret_env`/`password_env` that is not set fails the daemon (with_secrets), not every command."""
    extra = _settings_with(tmp_path, '[[webhooks]]\nurl = "http://x"\non = ["*"]\n'
                                     'secret_env = "TMO_NOT_SET_ANYWHERE"\n'
                                     '[smtp]\npassword_env = "TMO_NO_PW"\n')
    config = load_delivery(extra)  # every command loads it: no error
    with pytest.raises(ConfigError, match="TMO_NOT_SET_ANYWHERE, which is not set"):
        config.with_secrets({})
    with pytest.raises(ConfigError, match="TMO_NO_PW, which is not set"):
        config.with_secrets({"TMO_NOT_SET_ANYWHERE": "s3cret"})
    resolved = config.with_secrets({"TMO_NOT_SET_ANYWHERE": "s3cret", "TMO_NO_PW": "pw"})
    assert resolved.webhooks[0].secret == "s3cret"
    assert resolved.smtp is not None and resolved.smtp.password == "pw"


def test_a_route_on_an_unknown_kind_names_the_known_ones(tmp_path: Path) -> None:
    for table in ("hooks", "webhooks"):
        target = 'command = "true"' if table == "hooks" else 'url = "http://x"'
        with pytest.raises(ConfigError) as caught:
            load_delivery(_settings_with(
                tmp_path, f'[[{table}]]\nname = "n"\non = ["completed", "completd"]\n{target}\n'))
        message = str(caught.value)
        assert f"unknown event kind 'completd' in on of [[{table}]]" in message
        assert "known kinds: queued, started, completed" in message and "config_reloaded" in message


def test_a_hook_on_a_delivery_kind_is_refused_a_webhook_may_have_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="hooks never run on delivery events"):
        load_delivery(_settings_with(tmp_path, '[[hooks]]\nname = "n"\non = ["hook_failed"]\n'
                                               'command = "true"\n'))
    extra = _settings_with(tmp_path, '[[webhooks]]\nurl = "http://x"\non = ["hook_failed"]\n')
    assert load_delivery(extra).webhooks[0].route.kinds == {"hook_failed"}


def test_every_kind_is_documented_and_every_documented_kind_is_known() -> None:
    import re

    from tmux_orchestrator.kinds import EVENT_KINDS

    doc = (Path(__file__).parents[2] / "docs" / "events.md").read_text()
    kinds_section = doc[doc.index("## Kinds"):doc.index("## Following events")]
    documented = re.findall(r"^\| `([a-z_]+)`(?: / `([a-z_]+)`)? \|", kinds_section, re.M)
    names = [name for pair in documented for name in pair if name]
    assert sorted(names) == sorted(EVENT_KINDS)


def test_commands_other_than_the_daemon_do_not_load_the_delivery_layer(tmp_path: Path) -> None:
    # Reading [[hooks]] loads hooks, webhooks, e-mail and tmux modules: 30-40 ms of every start.
    (tmp_path / "config.toml").write_text('[[hooks]]\nname = "n"\non = ["completd"]\ncommand = "true"\n')
    code = ("import sys\n"
            "from tmux_orchestrator.config import load_settings\n"
            f"load_settings({str(tmp_path)!r})\n"
            "heavy = ('tmux_orchestrator.dispatch', 'tmux_orchestrator.hooks')\n"
            "print([m for m in heavy if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr

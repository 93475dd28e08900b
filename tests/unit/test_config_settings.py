"""Settings from arguments, TMO_* variables, config.toml and defaults (config.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tmux_orchestrator.config import Settings, config_file_digest, default_home, load_settings
from tmux_orchestrator.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("TMO_"):
            monkeypatch.delenv(key)
    monkeypatch.delenv("TMUX_TMPDIR", raising=False)


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings(tmp_path)
    assert settings.home == tmp_path
    assert settings.database_url == f"sqlite:///{tmp_path / 'tmo.db'}"
    assert settings.database_path == tmp_path / "tmo.db"
    assert settings.reconcile_interval == 2.0
    assert settings.kill_grace == 5.0
    assert settings.orphan_policy == "kill"
    assert settings.history_limit == 50000
    assert settings.extra == {}


def test_relative_home_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings("rel")
    assert settings.home == tmp_path / "rel"
    assert settings.home.is_absolute()


def test_home_from_tmo_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMO_HOME", str(tmp_path / "h"))
    assert load_settings().home == tmp_path / "h"


def test_derived_paths(tmp_path: Path) -> None:
    s = load_settings(tmp_path)
    assert s.logs_dir == tmp_path / "logs"
    assert s.run_dir == tmp_path / "run"
    assert s.fifo_path == tmp_path / "run" / "events.fifo"
    assert s.lock_path == tmp_path / "daemon.lock"
    assert s.log_path(3) == tmp_path / "logs" / "3.log"
    assert s.exit_path(3, 2) == tmp_path / "run" / "3-2.exit"
    assert s.marker_path(3) == tmp_path / "run" / "3.done"
    assert s.config_path == tmp_path / "config.toml"


def test_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMO_RECONCILE_INTERVAL", "5m")
    monkeypatch.setenv("TMO_KILL_GRACE", "1.5")
    monkeypatch.setenv("TMO_DB_POLL_INTERVAL", "100ms")
    monkeypatch.setenv("TMO_HISTORY_LIMIT", "1234")
    monkeypatch.setenv("TMO_ORPHAN_POLICY", "keep")
    monkeypatch.setenv("TMO_LOG_RETENTION_DAYS", "7.5")
    monkeypatch.setenv("TMO_DATABASE_URL", f"sqlite:///{tmp_path / 'other.db'}")
    s = load_settings(tmp_path)
    assert s.reconcile_interval == 300.0
    assert s.kill_grace == 1.5
    assert s.db_poll_interval == pytest.approx(0.1)
    assert s.history_limit == 1234
    assert isinstance(s.history_limit, int)
    assert s.orphan_policy == "keep"
    assert s.log_retention_days == 7.5
    assert s.database_path == tmp_path / "other.db"


def test_config_toml_values(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        'kill_grace = "10s"\n'
        "reconcile_interval = 3\n"
        "history_limit = 777\n"
        'orphan_policy = "keep"\n'
        'window_size = "80x24"\n'
        'env_exclude = ["AWS_*", "*_TOKEN"]\n'
    )
    s = load_settings(tmp_path)
    assert s.kill_grace == 10.0
    assert s.reconcile_interval == 3.0
    assert s.history_limit == 777
    assert s.orphan_policy == "keep"
    assert s.window_size == "80x24"
    assert s.env_exclude == ("AWS_*", "*_TOKEN")
    assert s.extra == {}


def test_an_unknown_key_names_itself_the_likely_one_and_every_known_one(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('kill_grase = "3s"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"unknown key 'kill_grase' in {tmp_path / 'config.toml'}")
    assert "(did you mean 'kill_grace'?)" in message
    assert "known keys: " in message
    for key in ("database_url", "env_exclude", "hooks", "webhooks", "smtp", "emails", "metrics"):
        assert key in message
    assert "config_digest" not in message and "extra" not in message


def test_config_toml_cannot_set_home(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('home = "/elsewhere"\n')
    with pytest.raises(ConfigError, match=r"'home' cannot be set in config\.toml"):
        load_settings(tmp_path)


def test_env_exclude_from_the_environment_and_bad_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMO_ENV_EXCLUDE", "AWS_*, GITHUB_TOKEN")
    assert load_settings(tmp_path).env_exclude == ("AWS_*", "GITHUB_TOKEN")
    monkeypatch.delenv("TMO_ENV_EXCLUDE")
    (tmp_path / "config.toml").write_text("env_exclude = [1, 2]\n")
    with pytest.raises(ConfigError, match=r"env_exclude .*list of glob patterns"):
        load_settings(tmp_path)


def test_the_digest_tells_whether_the_file_changed(tmp_path: Path) -> None:
    assert load_settings(tmp_path).config_digest == ""
    (tmp_path / "config.toml").write_text('kill_grace = "3s"\n')
    first = load_settings(tmp_path)
    assert first.config_digest and config_file_digest(first) == first.config_digest
    (tmp_path / "config.toml").write_text('kill_grace = "4s"\n')
    assert config_file_digest(first) != first.config_digest


def test_env_wins_over_config_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.toml").write_text('kill_grace = "10s"\norphan_policy = "keep"\n')
    monkeypatch.setenv("TMO_KILL_GRACE", "2")
    s = load_settings(tmp_path)
    assert s.kill_grace == 2.0
    assert s.orphan_policy == "keep"


def test_argument_wins_over_env_database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMO_DATABASE_URL", "sqlite:////nowhere/env.db")
    s = load_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'arg.db'}")
    assert s.database_path == tmp_path / "arg.db"


def test_invalid_toml_raises_config_error(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("kill_grace = = 3\n[unclosed\n")
    with pytest.raises(ConfigError, match="invalid config file"):
        load_settings(tmp_path)


@pytest.mark.parametrize("where", ["env", "toml"])
def test_invalid_orphan_policy_raises_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    if where == "env":
        monkeypatch.setenv("TMO_ORPHAN_POLICY", "nuke")
    else:
        (tmp_path / "config.toml").write_text('orphan_policy = "nuke"\n')
    with pytest.raises(ConfigError, match="orphan_policy"):
        load_settings(tmp_path)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TMO_KILL_GRACE", "soon"),
        ("TMO_KILL_GRACE", "-1"),
        ("TMO_RECONCILE_INTERVAL", ""),
        ("TMO_HISTORY_LIMIT", "many"),
        ("TMO_LOG_RETENTION_DAYS", "x"),
        ("TMO_SQLITE_SYNCHRONOUS", "off"),
    ],
)
def test_invalid_env_values_raise_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError):
        load_settings(tmp_path)


def test_invalid_toml_value_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('history_limit = "lots"\n')
    with pytest.raises(ConfigError, match=r"config\.toml"):
        load_settings(tmp_path)


def test_socket_in_home_when_short(tmp_path: Path) -> None:
    s = load_settings(tmp_path)
    assert s.socket_path == tmp_path / "tmux.sock"


def test_socket_path_falls_back_when_home_is_long(tmp_path: Path) -> None:
    long_home = tmp_path / ("h" * 120)
    s = load_settings(long_home)
    socket = s.socket_path
    assert len(str(s.home / "tmux.sock")) > 100
    assert not str(socket).startswith(str(long_home))
    assert socket == Path("/tmp") / f"tmo-{os.getuid()}" / f"{s.home_key}.sock"
    assert len(str(socket)) <= 100
    # stable for the same home, distinct for another long home
    assert load_settings(long_home).socket_path == socket
    assert load_settings(tmp_path / ("g" * 120)).socket_path != socket


def test_socket_fallback_honours_tmux_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMUX_TMPDIR", str(tmp_path / "tt"))
    s = load_settings(tmp_path / ("h" * 120))
    assert s.socket_path == tmp_path / "tt" / f"tmo-{os.getuid()}" / f"{s.home_key}.sock"


def test_socket_path_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMO_TMUX_SOCKET", str(tmp_path / "custom.sock"))
    assert load_settings(tmp_path).socket_path == tmp_path / "custom.sock"


def test_owner_tag_is_per_home(tmp_path: Path) -> None:
    a = load_settings(tmp_path / "a")
    b = load_settings(tmp_path / "b")
    assert a.owner_tag.startswith("tmo:")
    assert a.owner_tag != b.owner_tag
    assert load_settings(tmp_path / "a").owner_tag == a.owner_tag


def test_ensure_dirs_creates_private_dirs(tmp_path: Path) -> None:
    s = load_settings(tmp_path / "new")
    s.ensure_dirs()
    for path in (s.home, s.logs_dir, s.run_dir):
        assert path.is_dir()
    assert s.run_dir.stat().st_mode & 0o777 == 0o700


def test_ensure_dirs_on_unusable_home_raises_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    s = Settings(home=blocker / "home")
    with pytest.raises(ConfigError, match="cannot use TMO_HOME"):
        s.ensure_dirs()


def test_non_sqlite_url_has_no_database_path(tmp_path: Path) -> None:
    s = load_settings(tmp_path, database_url="postgresql://db/x")
    assert s.database_path is None


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS uses ~/Library/Application Support")
@pytest.mark.parametrize(("xdg", "expected"), [
    ("/srv/state", "/srv/state/tmux-orchestrator"),
    ("", "{home}/.local/state/tmux-orchestrator"),
    ("relative/state", "{home}/.local/state/tmux-orchestrator"),  # ignored, as XDG says
])
def test_the_default_home_is_the_xdg_state_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, xdg: str, expected: str
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_STATE_HOME", xdg)
    monkeypatch.delenv("TMO_HOME", raising=False)
    assert default_home() == Path(expected.format(home=tmp_path))


@pytest.mark.parametrize(("line", "message"), [
    ('window_size = "abc"', "window_size must be WIDTHxHEIGHT"),
    ('window_size = "0x50"', "window_size must be WIDTHxHEIGHT"),
    ('window_size = "200x99999"', "each from 1 to 10000"),
    ('window_size = "\uff12\uff10\uff10x50"', "window_size must be WIDTHxHEIGHT"),  # fullwidth digits
    ("history_limit = -1", "history_limit must be a number of lines from 0"),
    ("history_limit = 99999999999999999999", "history_limit"),
])
def test_values_tmux_would_refuse_are_refused_when_the_config_loads(
    tmp_path: Path, line: str, message: str
) -> None:
    # tmux checks them only when a session is made: a typo used to stop every start of the daemon
    # while `tmo doctor` said the config was fine.
    (tmp_path / "config.toml").write_text(line + "\n")
    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path)

"""What a config reload applies at once and what waits for a restart (reload.compare/apply)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from tmux_orchestrator.config import config_keys, load_settings
from tmux_orchestrator.reload import DELIVERY, LIVE, RESTART, apply, compare


def test_every_config_key_is_classified_once() -> None:
    classified = [*LIVE, *DELIVERY, *RESTART]
    assert sorted(classified) == config_keys()


def test_live_keys_apply_restart_keys_stay_and_are_named(tmp_path: Path) -> None:
    running = load_settings(tmp_path)
    (tmp_path / "config.toml").write_text(
        'kill_grace = "9s"\nsqlite_synchronous = "full"\nmetrics = "127.0.0.1:0"\n'
        '[[hooks]]\nname = "h"\non = ["failed"]\ncommand = "true"\n')
    new = load_settings(tmp_path)
    change = compare(running, new)
    assert change.applied == ["kill_grace"] and change.delivery == ["hooks"]
    assert change.restart == ["sqlite_synchronous", "metrics"]
    assert change.summary() == ("changed: kill_grace, hooks; "
                                "waiting for a daemon restart: sqlite_synchronous, metrics")
    apply(running, new)
    assert running.kill_grace == 9.0 and running.extra["hooks"] == new.extra["hooks"]
    assert running.sqlite_synchronous == "normal" and "metrics" not in running.extra
    assert running.config_digest == new.config_digest
    # Compared with what runs, so a change that waits stays named by the next reloads.
    again = compare(running, load_settings(tmp_path))
    assert again.changed == [] and again.restart == ["sqlite_synchronous", "metrics"]
    assert again.summary().startswith("no change; waiting for a daemon restart")
    assert {f.name for f in fields(running)} >= set(LIVE) | set(RESTART) - {"metrics"}

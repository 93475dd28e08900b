"""Configuration mistakes are never silent (issue 13, defect 2): unknown keys and event kinds are
errors naming the known ones, and the running daemon reloads config.toml on SIGHUP (or
``tmo daemon reload``), keeps its old config when the new one is broken, and ``daemon status`` and
``doctor`` say when the file changed since the daemon loaded it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from acceptance.support import DaemonControl, Tmo, pid_alive, poll
from tmux_orchestrator.lock import DaemonLock


def _one_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """The single ``tmo: error:`` line of a failed command, checked for exit code and words."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tmo: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _config(tmo: Tmo, text: str) -> None:
    path = tmo.home / "config.toml"
    path.write_text(text)
    path.chmod(0o600)


def _daemon_pid(tmo: Tmo) -> int | None:
    """The running daemon's pid from its lock (``tmo daemon status`` needs a config that loads)."""
    return DaemonLock(tmo.home / "daemon.lock").running_pid()


def _events_of(tmo: Tmo, kind: str) -> list[dict[str, Any]]:
    """Events of one kind, read from the database itself: with a broken config.toml every ``tmo``
    command refuses to run."""
    conn = sqlite3.connect(f"file:{tmo.home / 'tmo.db'}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute("SELECT kind, message FROM events WHERE kind = ? ORDER BY id", (kind,))
        return [{"kind": k, "message": m} for k, m in rows]
    finally:
        conn.close()


# (`daemon status` and `daemon stop` still work: see the test of a config broken while the daemon runs)
@pytest.mark.parametrize("command", [("list",), ("add", "--", "true"), ("daemon", "start"), ("events",)])
def test_an_unknown_key_is_an_error_in_every_command(tmo: Tmo, command: tuple[str, ...]) -> None:
    tmo.add("true")
    _config(tmo, 'kill_grase = "3s"\n')
    _one_error(tmo(*command), 2, "'kill_grase'", "config.toml", "kill_grace", "known keys")


def test_doctor_names_an_unknown_key(tmo: Tmo) -> None:
    _config(tmo, 'kill_grase = "3s"\n')
    result = tmo("doctor")
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    bad = [line for line in result.stdout.splitlines() if line.startswith("BAD")]
    assert len(bad) == 1 and "config" in bad[0] and "kill_grase" in bad[0], result.stdout


def test_a_hook_on_an_unknown_kind_is_an_error(tmo: Tmo) -> None:
    _config(tmo, '[[hooks]]\nname = "n"\non = ["completd"]\ncommand = "true"\n')
    _one_error(tmo("daemon", "start"), 2, "'completd'", "completed", "failed", "known kinds")
    result = tmo("doctor")
    assert result.returncode != 0 and "completd" in result.stdout, result.stdout


def test_events_kind_must_be_a_known_kind(tmo: Tmo) -> None:
    tmo.add("true")
    _one_error(tmo("events", "--kind", "bogus"), 2, "'bogus'", "queued", "daemon_started")
    assert '"kind": "queued"' in tmo.ok("events", "--kind", "queued", "--json")


def test_reload_without_a_daemon_says_so(tmo: Tmo) -> None:
    _one_error(tmo("daemon", "reload"), 1, "no daemon is running", str(tmo.home))


def test_sighup_reloads_the_config_and_a_new_hook_fires(tmo: Tmo, daemon: DaemonControl) -> None:
    pid = daemon.start()
    out = tmo.home / "hook.out"
    _config(tmo, f'[[hooks]]\nname = "log"\non = ["completed"]\n'
                 f'command = "echo $TMO_EVENT_PROJECT_ID >> {out}"\n')
    status = daemon.status()
    assert status["config_changed"] is True
    assert "config.toml changed since the daemon loaded it" in tmo("daemon", "status").stdout
    os.kill(pid, signal.SIGHUP)
    reloaded = poll(lambda: _events_of(tmo, "config_reloaded") or None, message="a config_reloaded event")
    assert "hooks" in reloaded[0]["message"]
    assert pid_alive(pid) and daemon.pid() == pid
    assert daemon.status()["config_changed"] is False
    project_id = tmo.add("true")
    poll(lambda: (out.exists() and out.read_text().split() == [str(project_id)]) or None,
         message="the hook added by the reload to run")


def test_a_broken_config_on_reload_keeps_the_old_one(tmo: Tmo, daemon: DaemonControl) -> None:
    _config(tmo, 'orphan_policy = "keep"\n')
    pid = daemon.start()
    _config(tmo, 'orphan_policy = "keep"\nkill_grase = "3s"\n')
    error = _one_error(tmo("daemon", "reload"), 2, "kill_grase", "kept")
    assert f"pid {pid}" in error
    failed = _events_of(tmo, "config_reload_failed")
    assert len(failed) == 1 and "kill_grase" in failed[0]["message"]
    assert pid_alive(pid) and _daemon_pid(tmo) == pid  # never stops the daemon
    os.kill(pid, signal.SIGHUP)  # the same through a real signal
    poll(lambda: len(_events_of(tmo, "config_reload_failed")) == 2 or None,
         message="a second config_reload_failed event")
    assert pid_alive(pid) and _daemon_pid(tmo) == pid
    status = tmo("daemon", "status")
    assert status.returncode == 2  # the command itself cannot read the config either
    # Fixed: the reload takes it, and the daemon still runs the queue.
    _config(tmo, 'orphan_policy = "keep"\nkill_grace = "3s"\n')
    said = tmo.ok("daemon", "reload")
    assert f"pid {pid}" in said and "kill_grace" in said
    assert daemon.status()["config_changed"] is False
    tmo.wait_status(tmo.add("true"), "completed")


def test_status_and_doctor_say_when_the_file_changed(tmo: Tmo, daemon: DaemonControl) -> None:
    daemon.start()
    assert tmo("doctor").returncode == 0
    assert daemon.status()["config_changed"] is False
    _config(tmo, 'kill_grace = "2s"\nsqlite_synchronous = "full"\n')
    doctor = tmo("doctor")
    assert doctor.returncode == 1
    line = next(x for x in doctor.stdout.splitlines() if " config " in x)
    assert line.startswith("BAD") and "tmo daemon reload" in line, doctor.stdout
    said = tmo.ok("daemon", "reload")
    assert "kill_grace" in said and "sqlite_synchronous" in said and "restart" in said, said
    status = daemon.status()
    assert status["config_changed"] is False
    assert status["config_restart_needed"] == ["sqlite_synchronous"]
    doctor = tmo("doctor")  # what the file says is not all in effect yet
    assert doctor.returncode == 1 and "waiting for a daemon restart: sqlite_synchronous" in doctor.stdout
    assert "no change" in tmo.ok("daemon", "reload")
    _config(tmo, 'kill_grace = "2s"\n')  # back to what the daemon started with
    assert "no change" in tmo.ok("daemon", "reload")
    assert tmo("doctor").returncode == 0


def test_reload_of_a_removed_config_goes_back_to_defaults(tmo: Tmo, daemon: DaemonControl) -> None:
    _config(tmo, 'orphan_policy = "keep"\n')
    daemon.start()
    Path(tmo.home / "config.toml").unlink()
    assert daemon.status()["config_changed"] is True
    assert "orphan_policy" in tmo.ok("daemon", "reload")
    assert daemon.status()["config_changed"] is False


def test_a_config_broken_while_the_daemon_runs_still_lets_the_user_stop_it(
    tmo: Tmo, daemon: DaemonControl
) -> None:
    pid = daemon.start()
    _config(tmo, 'kill_grase = "7s"\n')
    status = tmo("daemon", "status")
    assert status.returncode == 2 and f"running (pid {pid})" in status.stdout, status.stdout
    assert "kill_grase" in status.stdout
    shown = json.loads(tmo("daemon", "status", "--json").stdout)
    assert (shown["running"], shown["pid"]) == (True, pid) and "kill_grase" in shown["config_error"]
    stopped = tmo("daemon", "stop")
    assert stopped.returncode == 0 and f"daemon stopped (pid {pid})" in stopped.stdout, stopped.stderr
    assert not pid_alive(pid)


def test_doctor_reports_a_linked_config_file_as_a_bad_check(tmo: Tmo, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.toml"
    target.write_text('kill_grace = "1s"\n')
    tmo.ok("add", "--", "true")  # the home exists
    (tmo.home / "config.toml").symlink_to(target)
    result = tmo("doctor", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 1 and report["ok"] is False, result.stderr
    (config,) = [c for c in report["checks"] if c["name"] == "config"]
    assert config["ok"] is False and "symbolic link" in config["message"]

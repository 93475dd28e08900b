"""Issue 5 acceptance: reboots, plain restarts, retries, bad state and the systemd unit, driven
through the installed CLI and daemon as real processes."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tmux_orchestrator.config import load_settings
from tmux_orchestrator.testing import end_tmux_server, retry_until

TMO = [sys.executable, "-m", "tmux_orchestrator"]


class Home:
    """A test home and the daemons started on it (stopped by pid at the end)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("TMO_", "TMUX"))}
        self.env.update(TMO_HOME=str(path), TMO_RECONCILE_INTERVAL="0.3", TMO_BOOT_ID="boot-a")
        self.daemons: list[subprocess.Popen[bytes]] = []

    def tmo(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*TMO, *args], env={**self.env, **env}, capture_output=True,
                                text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"tmo {' '.join(args)} failed: {result.stderr}")
        return result

    def start_daemon(self, **env: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([*TMO, "daemon", "run", "--quiet"], env={**self.env, **env},
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self.daemons.append(proc)
        retry_until(lambda: self.tmo("daemon", "status", check=False).returncode == 0,
                    message="daemon ready")
        return proc

    def project(self, project_id: int) -> dict[str, object]:
        data: dict[str, object] = json.loads(self.tmo("show", str(project_id), "--json").stdout)
        return data

    def events(self) -> list[dict[str, object]]:
        out = self.tmo("events", "--json", "--last", "0").stdout
        return [json.loads(line) for line in out.splitlines()]

    def stop_all(self) -> None:
        for proc in self.daemons:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


@pytest.fixture
def home(tmo_home: Path) -> Iterator[Home]:
    h = Home(tmo_home)
    try:
        yield h
    finally:
        h.stop_all()


def _kill_server(home: Home) -> None:
    end_tmux_server(load_settings(home.path).socket_path)


def _sigkill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def test_reboot_requeues_running_projects_by_default(home: Home) -> None:
    daemon = home.start_daemon()
    pid = int(home.tmo("add", "--", "sleep", "600").stdout)
    retry_until(lambda: home.project(pid)["status"] == "processing" and home.project(pid)["pane_pid"])
    _sigkill(daemon)
    _kill_server(home)  # a reboot takes every session with it
    home.start_daemon(TMO_BOOT_ID="boot-b")
    retry_until(lambda: home.project(pid)["status"] == "processing" and home.project(pid)["attempt"] == 2,
                message="the project to run again")
    kinds = [e["kind"] for e in home.events() if e["project_id"] in (pid, None)]
    assert "reboot_detected" in kinds
    assert kinds.count("requeued") == 1
    assert not [e for e in home.events() if e["outcome"] == "lost"]


def test_reboot_with_fail_policy_and_paused_queue(home: Home) -> None:
    (home.path / "config.toml").write_text('reboot_policy = "fail"\npause_after_reboot = true\n')
    daemon = home.start_daemon()
    first = int(home.tmo("add", "--", "sleep", "600").stdout)
    retry_until(lambda: home.project(first)["pane_pid"])
    second = int(home.tmo("add", "--", "true").stdout)
    _sigkill(daemon)
    _kill_server(home)
    home.start_daemon(TMO_BOOT_ID="boot-b")
    retry_until(lambda: home.project(first)["status"] == "failed")
    assert home.project(first)["outcome"] == "lost"
    status = json.loads(home.tmo("daemon", "status", "--json").stdout)
    assert status["paused"] is True
    assert home.project(second)["status"] == "queued"  # paused: nothing new starts
    home.tmo("resume")
    retry_until(lambda: home.project(second)["status"] == "completed", message="resume to run it")


def test_plain_restart_adopts_and_is_not_a_reboot(home: Home) -> None:
    daemon = home.start_daemon()
    pid = int(home.tmo("add", "--", "sh", "-c", "sleep 1.5; exit 5").stdout)
    retry_until(lambda: home.project(pid)["pane_pid"])
    session_id = home.project(pid)["session_id"]
    _sigkill(daemon)
    home.start_daemon()  # same boot id
    assert home.project(pid)["status"] == "processing"
    assert home.project(pid)["session_id"] == session_id
    retry_until(lambda: home.project(pid)["status"] == "failed", message="the adopted project to end")
    project = home.project(pid)
    assert (project["exit_code"], project["outcome"], project["attempt"]) == (5, "exited", 1)
    assert "reboot_detected" not in [e["kind"] for e in home.events()]


def test_project_that_ended_while_daemon_was_down_keeps_its_exit_code(home: Home) -> None:
    daemon = home.start_daemon()
    pid = int(home.tmo("add", "--", "sh", "-c", "sleep 0.5; exit 9").stdout)
    retry_until(lambda: home.project(pid)["pane_pid"])
    _sigkill(daemon)
    retry_until(lambda: not home.tmo("sessions", "--json").stdout.strip("[]\n "),
                message="the session to end while no daemon runs")
    home.start_daemon()
    retry_until(lambda: home.project(pid)["status"] == "failed")
    assert home.project(pid)["exit_code"] == 9
    assert home.project(pid)["outcome"] == "exited"


def test_retries_back_off_and_keep_the_last_error(home: Home) -> None:
    home.start_daemon()
    pid = int(home.tmo("add", "--max-retries", "2", "--retry-delay", "0.3s", "--",
                       "sh", "-c", "exit 4").stdout)
    retry_until(lambda: home.project(pid)["status"] == "failed" and home.project(pid)["retry_count"] == 2,
                timeout=20, message="two retries and a final failure")
    project = home.project(pid)
    assert project["error_message"] == "exited with code 4"
    assert project["attempt"] == 3
    events = [e for e in home.events() if e["project_id"] == pid]
    starts = [e["at"] for e in events if e["kind"] == "started"]
    assert [e["kind"] for e in events].count("retried") == 2
    from datetime import datetime

    times = [datetime.fromisoformat(str(t)) for t in starts]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.3 and gaps[1] >= 0.6  # exponential backoff: 0.3 s, then 0.6 s


def test_manual_retry_of_a_failed_project(home: Home) -> None:
    home.start_daemon()
    pid = int(home.tmo("add", "--", "sh", "-c", "exit 2").stdout)
    retry_until(lambda: home.project(pid)["status"] == "failed")
    home.tmo("retry", str(pid))
    retry_until(lambda: home.project(pid)["attempt"] == 2 and home.project(pid)["status"] == "failed")
    assert home.project(pid)["retry_count"] == 1


def test_sigterm_exits_zero_within_a_second_and_leaves_sessions(home: Home) -> None:
    daemon = home.start_daemon()
    pid = int(home.tmo("add", "--", "sleep", "600").stdout)
    retry_until(lambda: home.project(pid)["pane_pid"])
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(1.0) == 0
    assert home.project(pid)["status"] == "processing"
    assert json.loads(home.tmo("sessions", "--json").stdout)[0]["project_id"] == pid


def test_not_a_database_is_refused_and_left_alone(home: Home) -> None:
    db = home.path / "tmo.db"
    db.write_bytes(b"this is not sqlite, it is my notes\n" * 100)
    before = db.read_bytes()
    result = home.tmo("list", check=False)
    assert result.returncode == 1
    assert "not a tmux-orchestrator database" in result.stderr
    assert "Traceback" not in result.stderr
    assert db.read_bytes() == before


def test_newer_schema_is_refused(home: Home) -> None:
    home.tmo("pause")  # creates the database (read commands create nothing)
    with sqlite3.connect(home.path / "tmo.db") as conn:
        conn.execute("PRAGMA user_version = 99")
    result = home.tmo("list", check=False)
    assert result.returncode == 1
    assert "newer than this tmux-orchestrator supports" in result.stderr


def test_invalid_config_and_unusable_home_get_clear_errors(home: Home, tmp_path: Path) -> None:
    (home.path / "config.toml").write_text("kill_grace = [oops\n")
    result = home.tmo("list", check=False)
    assert result.returncode == 2 and "invalid config file" in result.stderr
    (home.path / "config.toml").write_text('orphan_policy = "sometimes"\n')
    result = home.tmo("list", check=False)
    assert result.returncode == 2 and "orphan_policy" in result.stderr
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    result = home.tmo("list", check=False, TMO_HOME=str(not_a_dir))
    assert result.returncode == 2 and "is a file" in result.stderr
    result = home.tmo("list", check=False, TMO_HOME=str(not_a_dir / "home"))
    assert result.returncode == 2 and "cannot use TMO_HOME" in result.stderr
    assert "Traceback" not in result.stderr
    assert not_a_dir.read_text() == "x"


def test_systemd_unit_keeps_projects_alive_on_stop(home: Home, tmp_path: Path) -> None:
    unit = home.tmo("daemon", "install-systemd", "--user", "--print").stdout
    assert "KillMode=process" in unit
    assert "Restart=on-failure" in unit and "RestartSec=" in unit
    assert f"TMO_HOME={home.path}" in unit
    result = home.tmo("daemon", "install-systemd", "--user", XDG_CONFIG_HOME=str(tmp_path))
    name = f"tmux-orchestrator-{home.path.name}-{load_settings(home.path).home_key}"
    written = tmp_path / "systemd" / "user" / f"{name}.service"
    assert written.read_text() == unit
    assert f"systemctl --user enable --now {name}" in result.stdout

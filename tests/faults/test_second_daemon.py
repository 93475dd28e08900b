"""Break 7: a second daemon on the same database (another home, the same ``--database-url``) is
refused, names the holder, and never judges the first daemon's projects by its own tmux server."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from acceptance.support import DaemonControl, Tmo, pid_alive, wait_session


def test_a_second_daemon_on_the_same_database_is_refused(tmo: Tmo, daemon: DaemonControl) -> None:
    database = tmo.home / "shared.db"
    tmo.env["TMO_DATABASE_URL"] = f"sqlite:///{database}"
    project = tmo.add("sleep", "600", options=["--name", "first-home"])
    first = daemon.start()
    session = wait_session(tmo, project)

    other_home = Path(tempfile.mkdtemp(prefix="tmo-other-"))
    other = Tmo(other_home)
    other.env["TMO_DATABASE_URL"] = f"sqlite:///{database}"
    other_daemon = DaemonControl(other)
    try:
        result = other("daemon", "start")
        assert result.returncode != 0, result.stdout
        assert "Traceback" not in result.stderr
        assert str(tmo.home) in result.stderr or str(first) in result.stderr, result.stderr
        time.sleep(5.0)  # two reconcile passes of a daemon that should not be running
        assert tmo.status_of(project) == "processing"
        assert session in tmo.tmux_session_names()
        assert not [e for e in tmo.events() if e["outcome"] == "lost"]
        assert pid_alive(first)
    finally:
        other_daemon.stop_all()
        other.end_server()
        shutil.rmtree(other_home, ignore_errors=True)

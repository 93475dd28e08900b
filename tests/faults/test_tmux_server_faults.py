"""Breaks 3 and 4: tmux reuses session ids after a restart; losing the keeper session or the
socket file is not losing the server."""

from __future__ import annotations

import os
import signal
import time

from acceptance.support import DaemonControl, Tmo, pid_alive, wait_session
from tmux_orchestrator.testing import retry_until

#: Two reconcile passes at the default interval (2 s), and some: long enough for a wrong "lost".
TWO_PASSES = 6.0


def _pane_pid(tmo: Tmo, session: str) -> int:
    out = tmo.tmux("display-message", "-p", "-t", f"={session}:", "#{pane_pid}").stdout.strip()
    assert out.isdigit(), out
    return int(out)


def test_a_reused_session_id_is_not_the_old_projects_session(tmo: Tmo, daemon: DaemonControl) -> None:
    old = tmo.add("sleep", "600", options=["--name", "old"])
    daemon.start("--concurrency", "3")
    wait_session(tmo, old)
    old_id = tmo.project(old)["session_id"]
    server = tmo.server_pid()
    assert server is not None
    os.kill(server, signal.SIGKILL)
    retry_until(lambda: not pid_alive(server), timeout=10, message="the tmux server to die")
    # New projects start on a new server, where tmux numbers sessions from $0 again.
    news = [tmo.add("sleep", "600", options=["--name", f"new{n}"]) for n in range(2)]
    sessions = {n: wait_session(tmo, n) for n in news}
    reused = [n for n in news if tmo.project(n)["session_id"] == old_id]
    assert reused, "tmux did not reuse the id: the test did not exercise the break"
    new, new_session = reused[0], sessions[reused[0]]
    tmo("cancel", str(old))
    time.sleep(1.0)
    assert new_session in tmo.tmux_session_names(), "the old project's cancel killed the new session"
    assert tmo.status_of(new) == "processing"
    kinds = [e["kind"] for e in tmo.events() if e["project_id"] == old]
    assert "session_killed" not in kinds and "output_saved" not in kinds, kinds


def test_losing_the_keeper_session_loses_nothing(tmo: Tmo, daemon: DaemonControl) -> None:
    project = tmo.add("sleep", "600", options=["--name", "kept"])
    daemon.start()
    session = wait_session(tmo, project)
    pane = _pane_pid(tmo, session)
    server = tmo.server_pid()
    result = tmo.tmux("kill-session", "-t", "=_tmo_keep")
    assert result.returncode == 0, result.stderr
    time.sleep(TWO_PASSES)
    assert tmo.status_of(project) == "processing"
    assert pid_alive(pane), "the project's process was killed"
    assert session in tmo.tmux_session_names()
    assert "_tmo_keep" in tmo.tmux_session_names(), "the keeper was not recreated"
    assert tmo.server_pid() == server
    assert not [e for e in tmo.events() if e["outcome"] == "lost"]


def test_losing_the_socket_file_loses_nothing(tmo: Tmo, daemon: DaemonControl) -> None:
    project = tmo.add("sleep", "600", options=["--name", "unlinked"])
    daemon.start()
    session = wait_session(tmo, project)
    pane = _pane_pid(tmo, session)
    server = tmo.server_pid()
    assert server is not None
    tmo.socket_path.unlink()  # what a tmp cleaner does
    time.sleep(TWO_PASSES)
    assert tmo.socket_path.exists(), "the socket was not restored"
    assert tmo.server_pid() == server, "a second server answers on the socket"
    assert tmo.status_of(project) == "processing"
    assert pid_alive(pane)
    assert session in tmo.tmux_session_names()
    assert not [e for e in tmo.events() if e["outcome"] == "lost"]
    # A second server would live on unreachable: the socket's server must be the only one we made.
    tmo.ok("cancel", str(project))
    retry_until(lambda: not pid_alive(pane), timeout=15, message="the project's process to end")

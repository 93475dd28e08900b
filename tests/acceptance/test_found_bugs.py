"""Product bugs found while writing the acceptance tests. Each test fails until its bug is fixed.

1. Integers beyond SQLite's signed 64-bit INTEGER crash ``tmo`` with a Python traceback
   (``OverflowError: Python int too large to convert to SQLite INTEGER``, raised by the sqlite3
   module in ``store/sqlite.py``) and exit 1. The CLI's integer parameters are bare ``type=int`` with
   no range (``add --priority`` and the ``PROJECT_ID``/``IDS`` arguments of ``show``, ``complete``,
   ``fail``, ``cancel``, ``retry``, ``remove`` in ``cli/projects.py``; ``logs``/``attach`` in
   ``cli/sessions.py``; ``events --since/--project``; ``list --limit``), ``Orchestrator.enqueue``
   does not range-check ``priority``, and ``main()`` in ``cli/__init__.py`` only turns
   ``sqlite3.Error``/``OSError`` into ``tmo: error:``. Expected: a huge ``--priority`` is a usage
   error (exit 2, one error line, no traceback, nothing written); a huge id is an unknown id (exit 1
   ``tmo: error: no project with id ...``, or exit 2 as a usage error), never a traceback.

2. When the home's tmux server dies (crash, OOM kill, ``tmux kill-server``), the daemon marks the
   running project failed/``lost`` (``Reconciler._server_lost`` -> ``Reconciler.lose`` in
   ``reconcile.py``) and, by its retry policy, runs it again, but it never ends the lost attempt's
   processes. The wrapper (``wrapper.py``) traps HUP with a no-op, so the hang-up of the dying
   server reaches only the wrapper, never the project command: the command keeps running without a
   session, invisible to ``tmo sessions``/``cleanup``, and after a retry two copies of the same
   project run at once. ``lose`` knows the attempt's process group (``project.pane_pid``) and should
   signal it (SIGTERM, grace, SIGKILL) before the project is failed or requeued.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from acceptance.support import DaemonControl, Tmo, db_snapshot, end_pid, pid_alive, poll, wait_session
from tmux_orchestrator.testing import retry_until

HUGE = str(2**63)  # one past SQLite's largest INTEGER


def test_out_of_range_priority_is_a_clean_usage_error_not_a_traceback(tmo: Tmo) -> None:
    tmo.add("echo", "baseline")
    before = db_snapshot(tmo.home)
    result = tmo("add", "--priority", HUGE, "--", "echo", "hi")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith(("tmo: error:", "Error:"))]
    assert len(errors) == 1, result.stderr
    assert "priority" in errors[0]
    assert db_snapshot(tmo.home) == before


@pytest.mark.parametrize("command", ["show", "complete", "fail", "cancel", "retry", "remove"])
def test_out_of_range_id_is_a_clean_error_not_a_traceback(tmo: Tmo, command: str) -> None:
    tmo.add("echo", "baseline")
    before = db_snapshot(tmo.home)
    result = tmo(command, HUGE)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (1, 2), result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith(("tmo: error:", "Error:"))]
    assert len(errors) == 1, result.stderr
    assert db_snapshot(tmo.home) == before


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def test_a_project_lost_with_its_tmux_server_has_its_processes_ended_before_it_is_retried(
    tmo: Tmo, daemon: DaemonControl
) -> None:
    work = tmo.home / "lost-work"
    work.mkdir()
    # Each attempt records the pid of its command, which then idles as `sleep 600`.
    project_id = tmo.add("sh", "-c", 'echo $$ > "pid-$TMO_ATTEMPT"; exec sleep 600',
                         options=["--dir", str(work), "--max-retries", "1"])
    daemon.start()
    wait_session(tmo, project_id)
    first = poll(lambda: _read_pid(work / "pid-1"), timeout=5, message="attempt 1's pid")
    first_group = os.getpgid(first)
    server = tmo.server_pid()
    assert server is not None
    try:
        end_pid(server)  # the home's tmux server dies (as with `tmux kill-server` or a crash)
        retry_until(lambda: _read_pid(work / "pid-2"), timeout=15, message="the retry (attempt 2)")
        lost = [e for e in tmo.events() if e["project_id"] == project_id and e["kind"] == "failed"]
        assert lost and lost[0]["outcome"] == "lost", lost
        retry_until(lambda: not pid_alive(first), timeout=5.0, interval=0.05,
                    message=(f"attempt 1's command (pid {first}) to be ended; it still runs "
                             "without a session, next to attempt 2"))
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(first_group, signal.SIGKILL)  # what the test started, by its group id

"""Break 1 and 2: a project that ignores SIGTERM must never have two attempts (or its slot's next
project) alive at once, and its session is saved and killed exactly once, whatever ended it.

Default settings throughout (``kill_grace`` 5 s, reconcile every 2 s): the defaults are what broke.
"""

from __future__ import annotations

import time

from acceptance.support import DaemonControl, Tmo, run_sql, wait_session
from faults.support import Ledger, cleanup_counts
from tmux_orchestrator.testing import retry_until

#: Long enough after the old attempt is gone for a second backup or kill to show up: the old
#: reconcile took over a claim after 2 s while the claimer still waited out a 5 s grace.
SETTLE = 8.0


def _assert_once(tmo: Tmo, project_id: int) -> None:
    time.sleep(SETTLE)
    for session, counts in cleanup_counts(tmo, project_id).items():
        assert counts["backup"] <= 1, (session, counts)
        assert counts["kill"] <= 1, (session, counts)


def test_timeout_retry_waits_for_the_stubborn_attempt_to_die(tmo: Tmo, daemon: DaemonControl) -> None:
    ledger = Ledger(tmo.home / "ledger")
    project = tmo.add(*ledger.command("stubborn"),
                      options=["--timeout", "1s", "--max-retries", "1", "--name", "stubborn"])
    daemon.start()
    retry_until(lambda: len(ledger.starts()) >= 2, timeout=30, interval=0.1,
                message="the retry to start")
    assert ledger.violations() == []
    first, second = ledger.starts()[:2]
    assert (first[1], second[1]) == (1, 2)
    _assert_once(tmo, project)
    counts = cleanup_counts(tmo, project)
    first_session = tmo.project(project)["session_name"].rsplit("-r", 1)[0]
    assert counts[first_session]["kill"] == 1, counts
    assert counts[first_session]["backup"] == 1, counts


def test_hand_written_requeue_waits_for_the_old_attempt(tmo: Tmo, daemon: DaemonControl) -> None:
    ledger = Ledger(tmo.home / "ledger")
    project = tmo.add(*ledger.command("stubborn"), options=["--name", "requeued"])
    daemon.start()
    wait_session(tmo, project)
    run_sql(tmo.home, f"UPDATE project_queue SET status='queued' WHERE id={project}")
    retry_until(lambda: len(ledger.starts()) >= 2, timeout=30, interval=0.1,
                message="the second attempt to start")
    assert ledger.violations() == []
    _assert_once(tmo, project)
    tmo.ok("cancel", str(project))


def test_complete_holds_the_slot_until_the_process_is_gone(tmo: Tmo, daemon: DaemonControl) -> None:
    ledger = Ledger(tmo.home / "ledger")
    first = tmo.add(*ledger.command("stubborn", limit=1), options=["--name", "first"])
    second = tmo.add(*ledger.command("sleep:0.2", limit=1), options=["--name", "second"])
    daemon.start("--concurrency", "1")
    wait_session(tmo, first)
    tmo.ok("complete", str(first))
    tmo.wait_status(second, "completed", timeout=30)
    assert ledger.violations() == []
    _assert_once(tmo, first)


def test_a_stubborn_session_is_saved_and_killed_exactly_once(tmo: Tmo, daemon: DaemonControl) -> None:
    # `tmo fail` from outside waits out the grace of a process that ignores SIGTERM while the
    # daemon's reconcile runs: the session is still saved once and killed once.
    ledger = Ledger(tmo.home / "ledger")
    project = tmo.add(*ledger.command("stubborn"), options=["--name", "once"])
    daemon.start()
    session = wait_session(tmo, project)
    failing = tmo.popen("fail", str(project))
    retry_until(lambda: session not in tmo.tmux_session_names(), timeout=30, interval=0.1,
                message="the session to be killed")
    assert failing.wait(30) == 0
    time.sleep(SETTLE)
    counts = cleanup_counts(tmo, project)
    assert counts == {session: {"backup": 1, "kill": 1}}, counts

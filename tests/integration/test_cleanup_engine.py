"""The clean-up engine on real tmux servers and SQLite files: claims, takeover, stages, identity."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tmo_helpers import (
    all_sessions,
    events,
    new_owned_session,
    sql,
    start_project_session,
    wait_reconcile_passes,
)

from tmux_orchestrator.cleanup import Cleaner, Target, owner_gone, process_owner
from tmux_orchestrator.orchestrator import Orchestrator
from tmux_orchestrator.project import Project
from tmux_orchestrator.project import ProjectStatus as S
from tmux_orchestrator.store.sqlite import Claim
from tmux_orchestrator.testing import DaemonThread, retry_until


def _running(orch: Orchestrator, tmp_path: Path, name: str = "p") -> Project:
    orch.enqueue(["sleep", "600"], name=name, project_path=tmp_path)
    claimed = orch.store.claim_next(host=orch.host, max_processing=10, runner=orch.settings.runner)
    assert claimed is not None
    started = start_project_session(orch, claimed, tmp_path)
    orch.store.record_session(claimed.id, session_id=started.session_id, window_id=started.window_id,
                              pane_pid=started.pane_pid, instance=started.instance)
    return orch.get(claimed.id)


def _dead_owner() -> str:
    """The owner string of a process that has exited."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    return f"{os.uname().nodename}:{proc.stdout.strip()}:1:dead"


def test_a_claim_held_by_a_live_owner_is_left_to_it(orchestrator: Orchestrator, tmp_path: Path) -> None:
    project = _running(orchestrator, tmp_path)
    orchestrator.store.transition(project.id, S.COMPLETED, source="api")
    project = orchestrator.get(project.id)
    session = orchestrator.session_of(project)
    first = Cleaner(orchestrator.store, orchestrator.server, orchestrator.settings, source="api")
    claim = Claim(Target.of_project(project, session, reason="x").key, project.session_name or "",
                  project.id, project.attempt, True)
    assert orchestrator.store.claim_cleanup([claim], owner=first.owner, ttl=60, owner_gone=owner_gone)
    second = Cleaner(orchestrator.store, orchestrator.server, orchestrator.settings, source="api")
    assert second.clean([Target.of_project(project, session, reason="y")]) == []
    assert project.session_name in all_sessions(orchestrator), "the second cleaner touched a held session"
    assert events(orchestrator.store, project.id, "output_saved") == []


def test_a_dead_owners_claim_is_taken_over_from_its_stage(orchestrator: Orchestrator, tmp_path: Path) -> None:
    project = _running(orchestrator, tmp_path)
    orchestrator.store.transition(project.id, S.FAILED, source="api")
    project = orchestrator.get(project.id)
    session = orchestrator.session_of(project)
    target = Target.of_project(project, session, reason="taken over")
    dead = _dead_owner()
    assert owner_gone(dead) and not owner_gone(process_owner())
    # The dead cleaner had saved the scrollback (its event is written) before it died.
    orchestrator.store.claim_cleanup([Claim(target.key, target.name, project.id, project.attempt, True)],
                                     owner=dead, ttl=3600, owner_gone=owner_gone)
    orchestrator.store.advance_claim(target.key, owner=dead, stage="saved", source="api",
                                     event=("output_saved", project, target.name, "by the dead one"))
    cleaner = Cleaner(orchestrator.store, orchestrator.server, orchestrator.settings, source="api")
    assert [t.name for t in cleaner.clean([target])] == [target.name]
    assert project.session_name not in all_sessions(orchestrator)
    assert len(events(orchestrator.store, project.id, "output_saved")) == 1, "saved twice"
    assert len(events(orchestrator.store, project.id, "session_killed")) == 1
    assert orchestrator.get(project.id).session_closed_at is not None
    assert orchestrator.store.claims() == []


def test_a_claim_past_its_deadline_is_taken_over(orchestrator: Orchestrator, tmp_path: Path) -> None:
    project = _running(orchestrator, tmp_path)
    orchestrator.store.transition(project.id, S.CANCELLED, source="api")
    project = orchestrator.get(project.id)
    target = Target.of_project(project, orchestrator.session_of(project), reason="late")
    # An owner on another host, which nobody here can check: only its deadline tells.
    orchestrator.store.claim_cleanup([Claim(target.key, target.name, project.id, project.attempt, True)],
                                     owner="elsewhere:1:1:x", ttl=0.05, owner_gone=owner_gone)
    time.sleep(0.1)
    cleaner = Cleaner(orchestrator.store, orchestrator.server, orchestrator.settings, source="api")
    assert len(cleaner.clean([target])) == 1


def test_reconcile_forgets_claims_of_dead_cleaners_on_gone_sessions(
    orchestrator: Orchestrator, tmo_settings: object, tmp_path: Path
) -> None:
    dead = _dead_owner()
    orchestrator.store.claim_cleanup([Claim("1.2/$9/orphan-gone", "orphan-gone")], owner=dead, ttl=3600,
                                     owner_gone=owner_gone)
    assert len(orchestrator.store.claims()) == 1
    daemon = DaemonThread(orchestrator.settings).start()
    try:
        new_owned_session(orchestrator, "orphan-now")  # something for the pass to do
        wait_reconcile_passes(daemon)
        retry_until(lambda: orchestrator.store.claims() == [], message="the stale claim to go")
    finally:
        daemon.stop()


def test_a_session_lingering_on_a_closed_row_is_cleaned_as_lingering(
    orchestrator: Orchestrator, tmp_path: Path
) -> None:
    project = _running(orchestrator, tmp_path, name="closed")
    sql(orchestrator.settings, "UPDATE project_queue SET status='completed', "
        "session_closed_at='2000-01-01 00:00:00.000' WHERE id=?", [project.id])
    project = orchestrator.get(project.id)
    session = orchestrator.session_of(project)
    assert session is not None
    target = Target.of_session(session, project, reason="lingering", kind="lingering_cleaned")
    assert not target.current
    cleaner = Cleaner(orchestrator.store, orchestrator.server, orchestrator.settings, source="api")
    assert len(cleaner.clean([target])) == 1
    assert len(events(orchestrator.store, project.id, "lingering_cleaned")) == 1


def test_tmo_cleanup_leaves_a_session_another_cleaner_holds_and_says_so(
    orchestrator: Orchestrator, tmp_path: Path
) -> None:
    project = _running(orchestrator, tmp_path, name="held")
    orchestrator.store.transition(project.id, S.CANCELLED, source="api")
    project = orchestrator.get(project.id)
    target = Target.of_project(project, orchestrator.session_of(project), reason="x")
    holder = Cleaner(orchestrator.store, orchestrator.server, orchestrator.settings, source="api")
    orchestrator.store.claim_cleanup([Claim(target.key, target.name, project.id, project.attempt, True)],
                                     owner=holder.owner, ttl=60, owner_gone=owner_gone)
    result = subprocess.run([sys.executable, "-m", "tmux_orchestrator", "cleanup"], capture_output=True,
                            text=True, timeout=60, check=False,
                            env={**os.environ, "TMO_HOME": str(orchestrator.settings.home)})
    assert result.returncode == 0, result.stderr
    assert "left to another cleaner" in result.stdout, result.stdout
    assert project.session_name in all_sessions(orchestrator)

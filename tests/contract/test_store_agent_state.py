"""The agent state columns on every backend: set by ``set_agent_state``, reset by status changes
(whoever makes them, hand-written SQL too), one ``state_changed`` event per change."""

from __future__ import annotations

import pytest
from contract_support import Backend, S, add, claim, events

from tmux_orchestrator.agent_state import AgentState, StateSource
from tmux_orchestrator.store.base import Store
from tmux_orchestrator.store.rows import PROJECT_COLUMNS, project_dicts, row_to_project

A = AgentState
REPORTED, ACTIVITY = StateSource.REPORTED, StateSource.ACTIVITY


def running(store: Store) -> tuple[int, int]:
    """A claimed project: ``(id, attempt)``."""
    pid = add(store)
    claim(store)
    return pid, store.get(pid).attempt


def state_events(store: Store, pid: int) -> list[tuple[str | None, str]]:
    return [(e.message, e.source) for e in events(store, pid, kind="state_changed")]


def test_a_queued_project_has_no_state_and_a_started_one_is_unknown(store: Store) -> None:
    pid = add(store)
    queued = store.get(pid)
    assert (queued.agent_state, queued.agent_state_since, queued.agent_state_source) == (None, None, None)
    claim(store)
    started = store.get(pid)
    assert started.agent_state == A.UNKNOWN and started.agent_state_source is None
    assert started.agent_state_since is not None


def test_reported_states_write_one_event_per_change(store: Store) -> None:
    pid, attempt = running(store)
    assert store.set_agent_state(pid, A.WAITING, attempt=attempt, decided_by=REPORTED, source="cli")
    first = store.get(pid)
    assert (first.agent_state, first.agent_state_source) == (A.WAITING, REPORTED)
    # a repeat (a hook fires on every prompt) writes nothing, and keeps the time it began
    assert not store.set_agent_state(pid, A.WAITING, attempt=attempt, decided_by=REPORTED, source="cli")
    assert store.get(pid).agent_state_since == first.agent_state_since
    assert store.set_agent_state(pid, A.WORKING, attempt=attempt, decided_by=REPORTED, source="cli")
    assert store.get(pid).agent_state == A.WORKING
    assert state_events(store, pid) == [("unknown -> waiting (reported)", "cli"),
                                        ("waiting -> working (reported)", "cli")]


def test_activity_decides_until_the_agent_reports(store: Store) -> None:
    pid, attempt = running(store)
    assert store.set_agent_state(pid, A.WORKING, attempt=attempt, decided_by=ACTIVITY, source="daemon")
    assert store.set_agent_state(pid, A.IDLE, attempt=attempt, decided_by=ACTIVITY, source="daemon")
    # the same state, now reported: the source changes, the state does not (no event)
    assert not store.set_agent_state(pid, A.IDLE, attempt=attempt, decided_by=REPORTED, source="cli")
    assert store.get(pid).agent_state_source == REPORTED
    assert not store.set_agent_state(pid, A.WORKING, attempt=attempt, decided_by=ACTIVITY, source="daemon")
    assert (store.get(pid).agent_state, store.get(pid).agent_state_source) == (A.IDLE, REPORTED)
    assert state_events(store, pid) == [("unknown -> working (activity)", "daemon"),
                                        ("working -> idle (activity)", "daemon")]


def test_a_stale_attempt_or_an_ended_project_writes_nothing(store: Store) -> None:
    pid, attempt = running(store)
    before = store.last_event_id()
    assert not store.set_agent_state(pid, A.WAITING, attempt=attempt + 1, decided_by=REPORTED, source="cli")
    assert not store.set_agent_state(pid + 100, A.WAITING, attempt=attempt, decided_by=REPORTED, source="cli")
    store.transition(pid, S.COMPLETED, source="cli")
    after_end = store.last_event_id()
    assert not store.set_agent_state(pid, A.WAITING, attempt=attempt, decided_by=REPORTED, source="cli")
    assert store.get(pid).agent_state is None
    assert store.last_event_id() == after_end and after_end == before + 1


@pytest.mark.parametrize("end", [S.COMPLETED, S.FAILED, S.CANCELLED, S.QUEUED])
def test_a_status_change_clears_the_state(store: Store, end: S) -> None:
    pid, attempt = running(store)
    store.set_agent_state(pid, A.WAITING, attempt=attempt, decided_by=REPORTED, source="cli")
    ended = store.transition(pid, end, source="cli")
    for project in (ended, store.get(pid)):
        assert (project.agent_state, project.agent_state_since, project.agent_state_source) == (
            None, None, None)


def test_hand_written_sql_resets_the_state_too(store: Store, backend: Backend) -> None:
    pid, attempt = running(store)
    store.set_agent_state(pid, A.WAITING, attempt=attempt, decided_by=REPORTED, source="cli")
    backend.sql(f"UPDATE project_queue SET status = 'queued' WHERE id = {pid}")
    assert store.get(pid).agent_state is None
    store.close_session(pid)
    claim(store)
    again = store.get(pid)
    assert (again.agent_state, again.agent_state_source) == (A.UNKNOWN, None)


def test_check_rejects_an_unknown_state_or_source(store: Store, backend: Backend) -> None:
    pid, _ = running(store)
    with pytest.raises(backend.integrity_error):
        backend.sql(f"UPDATE project_queue SET agent_state = 'busy' WHERE id = {pid}")
    with pytest.raises(backend.integrity_error):
        backend.sql(f"UPDATE project_queue SET agent_state_source = 'screen' WHERE id = {pid}")
    assert store.get(pid).agent_state == A.UNKNOWN


def test_json_has_the_state_and_the_fast_path_agrees(store: Store) -> None:
    pid, attempt = running(store)
    store.set_agent_state(pid, A.WAITING, attempt=attempt, decided_by=REPORTED, source="cli")
    add(store, name="queued")
    rows = store.list_columns(PROJECT_COLUMNS.split(", "))
    assert project_dicts(rows) == [row_to_project(r).to_dict() for r in rows]
    by_id = {d["id"]: d for d in project_dicts(rows)}
    assert (by_id[pid]["agent_state"], by_id[pid]["agent_state_source"]) == ("waiting", "reported")
    assert by_id[pid]["agent_state_since"].endswith("+00:00")
    other = next(d for d in by_id.values() if d["id"] != pid)
    assert (other["agent_state"], other["agent_state_since"], other["agent_state_source"]) == (
        None, None, None)

"""Hand-written SQL behaves alike on every backend: from a connection of its own (``sqlite3`` module,
psycopg) and from the command-line clients (``sqlite3``, ``psql``). The guards refuse what
``ALLOWED`` lacks and deleting a row whose session is open; every status change writes one event."""

from __future__ import annotations

import itertools

import pytest
from contract_support import Backend, S, add, claim, events, kinds

from tmux_orchestrator.project import ALLOWED, Outcome, ProjectStatus, can_transition
from tmux_orchestrator.store.base import Store


def test_sql_change_writes_one_sql_event(store: Store, backend: Backend) -> None:
    pid = add(store)
    claim(store)
    before = store.last_event_id()
    assert backend.sql(f"UPDATE project_queue SET status = 'completed' WHERE id = {pid}") == 1
    new = store.events_after(before)
    assert len(new) == 1
    event = new[0]
    assert (event.kind, event.source, event.old_status, event.new_status, event.outcome) == (
        "completed", "sql", "processing", "completed", "manual",
    )
    project = store.get(pid)
    assert project.status == S.COMPLETED
    assert project.outcome == Outcome.MANUAL
    assert project.completed_at is not None


def test_cli_sql_change_writes_one_sql_event(store: Store, backend: Backend) -> None:
    pid = add(store)
    claim(store)
    before = store.last_event_id()
    result = backend.cli(f"UPDATE project_queue SET status='failed' WHERE id={pid};")
    assert result.returncode == 0, result.stderr
    new = store.events_after(before)
    assert [(e.kind, e.source, e.outcome) for e in new] == [("failed", "sql", "manual")]
    project = store.get(pid)
    assert project.status == S.FAILED and project.outcome == Outcome.MANUAL
    assert project.completed_at is not None


def test_sql_names_its_writer_with_changed_by(store: Store, backend: Backend) -> None:
    pid = add(store)
    backend.sql(f"UPDATE project_queue SET status = 'cancelled', changed_by = 'mytool' WHERE id = {pid}")
    backend.sql(f"UPDATE project_queue SET status = 'queued' WHERE id = {pid}")
    changes = [(e.kind, e.source) for e in events(store, pid)][1:]
    assert changes == [("cancelled", "mytool"), ("retried", "sql")]
    assert backend.query(f"SELECT changed_by FROM project_queue WHERE id = {pid}") == [(None,)]


def test_sql_change_after_api_change_is_not_attributed_to_the_api(store: Store, backend: Backend) -> None:
    pid = add(store)
    claim(store)  # written with changed_by='daemon'
    backend.sql(f"UPDATE project_queue SET status = 'queued' WHERE id = {pid}")
    last = events(store, pid)[-1]
    assert (last.kind, last.source) == ("requeued", "sql")


def test_sql_requeue_from_ended_is_retried_and_clears_end_fields(store: Store, backend: Backend) -> None:
    pid = add(store)
    claim(store)
    store.transition(pid, S.FAILED, source="daemon", outcome=Outcome.EXITED, exit_code=4)
    backend.sql(f"UPDATE project_queue SET status = 'queued' WHERE id = {pid}")
    last = events(store, pid)[-1]
    assert (last.kind, last.source, last.old_status) == ("retried", "sql", "failed")
    project = store.get(pid)
    assert project.outcome is None and project.exit_code is None and project.completed_at is None
    assert project.started_at is None


def test_sql_insert_and_delete_write_events(store: Store, backend: Backend) -> None:
    backend.sql("INSERT INTO project_queue (name, command) VALUES ('by-hand', '[\"true\"]')")
    [project] = store.list_projects()
    assert project.status == S.QUEUED and project.command == ["true"]
    backend.sql(f"DELETE FROM project_queue WHERE id = {project.id}")
    assert [(e.kind, e.source) for e in events(store, project.id)] == [("queued", "sql"), ("removed", "sql")]


def test_sql_insert_with_changed_by_is_attributed_and_cleared(store: Store, backend: Backend) -> None:
    backend.sql("INSERT INTO project_queue (name, command, changed_by) VALUES ('x', '[\"true\"]', 'import')")
    [project] = store.list_projects()
    assert [(e.kind, e.source) for e in events(store, project.id)] == [("queued", "import")]
    assert backend.query(f"SELECT changed_by FROM project_queue WHERE id = {project.id}") == [(None,)]


def test_sql_update_not_touching_status_writes_no_event(store: Store, backend: Backend) -> None:
    pid = add(store)
    before = store.last_event_id()
    backend.sql(f"UPDATE project_queue SET priority = 9, status = status WHERE id = {pid}")
    backend.sql(f"UPDATE project_queue SET command = '[\"echo\", \"hi\"]' WHERE id = {pid}")
    assert store.last_event_id() == before
    project = store.get(pid)
    assert project.priority == 9 and project.command == ["echo", "hi"]


@pytest.mark.parametrize(("old", "new"), [
    (old, new) for old, new in itertools.product(ProjectStatus, ProjectStatus) if old != new])
def test_status_guard_allows_exactly_allowed_and_each_change_writes_one_event(
    store: Store, backend: Backend, old: ProjectStatus, new: ProjectStatus
) -> None:
    pid = add(store)
    if old != S.QUEUED:
        backend.sql(f"UPDATE project_queue SET status = 'processing' WHERE id = {pid}")
        if old != S.PROCESSING:
            backend.sql(f"UPDATE project_queue SET status = '{old.value}' WHERE id = {pid}")
    before = store.last_event_id()
    statement = f"UPDATE project_queue SET status = '{new.value}' WHERE id = {pid}"
    if can_transition(old, new):
        assert backend.sql(statement) == 1
        [event] = store.events_after(before)
        assert (event.old_status, event.new_status, event.source, event.project_id) == (
            old.value, new.value, "sql", pid)
        assert store.get(pid).status == new
    else:
        with pytest.raises(backend.integrity_error, match="status change not allowed"):
            backend.sql(statement)
        assert store.get(pid).status == old
        assert store.last_event_id() == before


def test_guard_message_lists_the_allowed_table(store: Store, backend: Backend) -> None:
    pid = add(store)
    result = backend.cli(f"UPDATE project_queue SET status='completed' WHERE id={pid};")
    assert result.returncode != 0
    assert "status change not allowed" in result.stderr
    for old, targets in ALLOWED.items():
        assert f"{old.value} -> {'|'.join(sorted(t.value for t in targets))}" in result.stderr
    assert store.get(pid).status == S.QUEUED
    assert kinds(store, pid) == ["queued"]


def test_check_rejects_unknown_status(store: Store, backend: Backend) -> None:
    pid = add(store)
    claim(store)
    before = store.last_event_id()
    with pytest.raises(backend.integrity_error):
        backend.sql(f"UPDATE project_queue SET status = 'FAILED' WHERE id = {pid}")
    with pytest.raises(backend.integrity_error, match=r"(?i)check"):
        backend.sql("INSERT INTO project_queue (name, command, status) VALUES ('x', '[]', 'FAILED')")
    assert store.get(pid).status == S.PROCESSING
    assert store.last_event_id() == before
    assert len(store.list_projects()) == 1


@pytest.mark.parametrize("how", ["connection", "cli"])
def test_delete_guard_refuses_a_row_whose_session_is_open(store: Store, backend: Backend, how: str) -> None:
    pid = add(store)
    claim(store)
    backend.sql(f"UPDATE project_queue SET status = 'cancelled' WHERE id = {pid}")
    before = store.last_event_id()
    statement = f"DELETE FROM project_queue WHERE id = {pid}"
    if how == "cli":
        result = backend.cli(statement)
        assert result.returncode != 0
        assert "cannot be deleted; cancel it first" in result.stderr
    else:
        with pytest.raises(backend.integrity_error, match="cannot be deleted"):
            backend.sql(statement)
    assert store.get(pid).status == S.CANCELLED
    assert store.last_event_id() == before
    store.close_session(pid)
    assert backend.sql(statement) == 1
    assert kinds(store, pid)[-1] == "removed"


def test_a_refused_statement_in_a_transaction_leaves_nothing(store: Store, backend: Backend) -> None:
    a = add(store)
    b = add(store)
    before = store.last_event_id()
    result = backend.cli(f"BEGIN; UPDATE project_queue SET status='cancelled' WHERE id={a}; "
                         f"UPDATE project_queue SET status='completed' WHERE id={b}; COMMIT;")
    assert result.returncode != 0
    assert store.get(a).status == S.QUEUED
    assert store.last_event_id() == before


def test_ids_given_by_hand_move_the_next_ids_past_them(store: Store, backend: Backend) -> None:
    first = add(store)
    backend.sql(f"INSERT INTO project_queue (id, name, command) "
                f"VALUES ({first + 100}, 'by-id', '[\"true\"]')")
    assert add(store) > first + 100
    last = store.last_event_id()
    backend.sql(f"INSERT INTO events (id, kind, source) VALUES ({last + 50}, 'probe', 'sql')")
    store.append_event("after", source="api")
    assert store.events_after(last + 50)[0].kind == "after"

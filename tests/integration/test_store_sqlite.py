"""SqliteStore on real database files: queue order, claiming, the transition guard and trigger events."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tmo_helpers import events, kinds, sql, sql_cli

from tmux_orchestrator.errors import InvalidTransition, ProjectNotFound, SchemaTooNew, StoreError
from tmux_orchestrator.project import Outcome, ProjectStatus
from tmux_orchestrator.store.base import NewProject
from tmux_orchestrator.store.schema import SCHEMA_VERSION
from tmux_orchestrator.store.sqlite import SqliteStore

S = ProjectStatus


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


@pytest.fixture
def store(path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(path)
    try:
        yield s
    finally:
        s.close()


def add(store: SqliteStore, name: str = "p", priority: int = 0, **kw: object) -> int:
    return store.enqueue(NewProject(command=["true"], name=name, priority=priority, **kw),  # type: ignore[arg-type]
                         source="api").id


def claim(store: SqliteStore, max_processing: int = 100) -> int:
    project = store.claim_next(host="h", max_processing=max_processing)
    assert project is not None
    return project.id


# -- enqueue, get, list ------------------------------------------------------------------------


def test_enqueue_and_get_round_trip(store: SqliteStore) -> None:
    new = NewProject(
        command=["claude", "-p", "spec with spaces.md", "$HOME"], name="my project", priority=5,
        project_path="/tmp/x", spec_path="/tmp/x/spec.md", env={"A": "1", "B": "two words"},
        max_retries=2, retry_delay=1.5, timeout=60.0, idle_timeout=30.0,
    )
    created = store.enqueue(new, source="cli")
    got = store.get(created.id)
    assert got == created
    assert got.status == S.QUEUED
    assert got.command == ["claude", "-p", "spec with spaces.md", "$HOME"]
    assert got.name == "my project"
    assert got.env == {"A": "1", "B": "two words"}
    assert (got.priority, got.max_retries, got.retry_delay) == (5, 2, 1.5)
    assert (got.timeout, got.idle_timeout) == (60.0, 30.0)
    assert got.enqueued_at is not None and abs(datetime.now(UTC) - got.enqueued_at) < timedelta(seconds=30)
    assert got.attempt == 0 and got.session_name is None and got.outcome is None


def test_enqueue_without_name_names_it_after_its_id(store: SqliteStore) -> None:
    project = store.enqueue(NewProject(command=["true"]), source="api")
    assert project.name == f"project-{project.id}"


def test_get_unknown_raises_project_not_found(store: SqliteStore) -> None:
    with pytest.raises(ProjectNotFound) as info:
        store.get(999)
    assert info.value.project_id == 999


def test_list_order_processing_first_then_priority_then_age(store: SqliteStore) -> None:
    a = add(store, "a", 0)
    b = add(store, "b", 5)
    c = add(store, "c", 5)
    d = add(store, "d", -1)
    e = add(store, "e", 0)
    assert claim(store) == b  # highest priority, oldest
    assert claim(store) == c
    store.transition(c, S.COMPLETED, source="api")
    f = add(store, "f", 100)
    store.transition(f, S.CANCELLED, source="api")
    order = [p.id for p in store.list_projects()]
    # processing, then queued by priority desc and age, then ended newest first
    assert order == [b, a, e, d, f, c]


def test_list_filters_by_status_and_limits(store: SqliteStore) -> None:
    ids = [add(store, str(i)) for i in range(5)]
    claim(store)
    assert [p.id for p in store.list_projects([S.QUEUED])] == ids[1:]
    assert [p.id for p in store.list_projects([S.PROCESSING])] == ids[:1]
    assert len(store.list_projects(limit=2)) == 2
    assert store.counts() == {"queued": 4, "processing": 1, "completed": 0, "failed": 0, "cancelled": 0}


# -- claim_next --------------------------------------------------------------------------------


def test_claim_next_sets_processing_fields(store: SqliteStore) -> None:
    pid = add(store, "Build #1: it's big")
    project = store.claim_next(host="host-a", max_processing=1)
    assert project is not None and project.id == pid
    assert project.status == S.PROCESSING
    assert project.attempt == 1
    assert project.host == "host-a"
    assert project.session_name == f"Build-1-it-s-big-{pid}"
    assert project.started_at is not None
    assert kinds(store, pid) == ["queued", "started"]


def test_claim_next_respects_max_processing(store: SqliteStore) -> None:
    add(store, "a")
    second = add(store, "b")
    claim(store, max_processing=1)
    assert store.claim_next(host="h", max_processing=1) is None
    assert store.get(second).status == S.QUEUED
    assert store.claim_next(host="h", max_processing=2) is not None


def test_claim_next_picks_highest_priority_then_oldest(store: SqliteStore) -> None:
    low = add(store, "low", 0)
    high1 = add(store, "high1", 10)
    mid = add(store, "mid", 5)
    high2 = add(store, "high2", 10)
    neg = add(store, "neg", -5)
    assert [claim(store) for _ in range(5)] == [high1, high2, mid, low, neg]
    assert store.claim_next(host="h", max_processing=100) is None


def test_claim_next_on_empty_queue_is_none(store: SqliteStore) -> None:
    assert store.claim_next(host="h", max_processing=1) is None


def test_claim_next_skips_projects_not_yet_due(store: SqliteStore) -> None:
    later = add(store, "later", 10)
    claim(store)
    store.transition(later, S.FAILED, source="daemon", outcome=Outcome.EXITED, exit_code=1)
    store.close_session(later)
    store.transition(later, S.QUEUED, source="daemon", not_before=datetime.now(UTC) + timedelta(seconds=60))
    now = add(store, "now", 0)
    assert claim(store) == now  # the higher-priority one waits for its time
    assert store.claim_next(host="h", max_processing=100) is None
    due = store.next_due()
    assert due is not None and 50 < due <= 60
    # once due it is claimed, as attempt 2
    sql(store.path, "UPDATE project_queue SET not_before = '2000-01-01 00:00:00.000' WHERE id = ?", [later])
    project = store.claim_next(host="h", max_processing=100)
    assert project is not None and project.id == later and project.attempt == 2
    assert project.session_name == f"later-{later}-r2"
    assert store.next_due() is None


def test_claim_next_waits_for_previous_session_to_be_closed(store: SqliteStore) -> None:
    pid = add(store)
    claim(store)
    store.transition(pid, S.QUEUED, source="api")  # requeued while its session is still open
    assert store.claim_next(host="h", max_processing=10) is None
    assert store.close_session(pid)
    assert claim(store) == pid


# -- transitions -------------------------------------------------------------------------------


def test_transition_not_allowed_raises_and_changes_nothing(store: SqliteStore) -> None:
    pid = add(store)
    before = store.last_event_id()
    with pytest.raises(InvalidTransition) as info:
        store.transition(pid, S.COMPLETED, source="api")
    assert (info.value.old, info.value.new) == ("queued", "completed")
    assert store.get(pid).status == S.QUEUED
    assert store.last_event_id() == before


def test_transition_expected_mismatch_raises(store: SqliteStore) -> None:
    pid = add(store)
    claim(store)
    store.transition(pid, S.FAILED, source="daemon", outcome=Outcome.EXITED, exit_code=1)
    with pytest.raises(InvalidTransition):
        store.transition(pid, S.QUEUED, source="api", expected=S.CANCELLED)
    assert store.get(pid).status == S.FAILED


def test_transition_unknown_project_raises_not_found(store: SqliteStore) -> None:
    with pytest.raises(ProjectNotFound):
        store.transition(12345, S.CANCELLED, source="api")
    assert store.last_event_id() == 0


def test_transition_to_terminal_records_outcome_and_times(store: SqliteStore) -> None:
    pid = add(store)
    claim(store)
    failed = store.transition(pid, S.FAILED, source="daemon", outcome=Outcome.EXITED, exit_code=3,
                              error_message="exited with code 3")
    assert (failed.outcome, failed.exit_code) == (Outcome.EXITED, 3)
    assert failed.error_message == "exited with code 3"
    assert failed.completed_at is not None
    requeued = store.transition(pid, S.QUEUED, source="api")
    assert requeued.outcome is None and requeued.exit_code is None and requeued.completed_at is None
    assert requeued.started_at is None


def test_every_api_status_change_writes_exactly_one_event(store: SqliteStore) -> None:
    pid = add(store, "ev")
    claim(store)
    store.transition(pid, S.FAILED, source="daemon", outcome=Outcome.EXITED, exit_code=2,
                     error_message="boom")
    store.close_session(pid)
    store.transition(pid, S.QUEUED, source="cli")
    claim(store)
    store.transition(pid, S.QUEUED, source="api")
    store.close_session(pid)
    claim(store)
    store.transition(pid, S.COMPLETED, source="daemon", outcome=Outcome.EXITED, exit_code=0)
    got = events(store, pid)
    assert [(e.kind, e.old_status, e.new_status, e.source) for e in got] == [
        ("queued", None, "queued", "api"),
        ("started", "queued", "processing", "daemon"),
        ("failed", "processing", "failed", "daemon"),
        ("retried", "failed", "queued", "cli"),
        ("started", "queued", "processing", "daemon"),
        ("requeued", "processing", "queued", "api"),
        ("started", "queued", "processing", "daemon"),
        ("completed", "processing", "completed", "daemon"),
    ]
    assert got[2].outcome == "exited" and got[2].exit_code == 2 and got[2].message == "boom"
    assert got[-1].outcome == "exited" and got[-1].exit_code == 0


def test_non_status_writes_write_no_status_events(store: SqliteStore) -> None:
    pid = add(store)
    claim(store)
    before = store.last_event_id()
    store.record_session(pid, session_id="$9", window_id="@9", pane_pid=99999)
    store.set_setting("concurrency", "3")
    store.close_session(pid)
    assert store.last_event_id() == before
    project = store.get(pid)
    assert (project.session_id, project.window_id, project.pane_pid) == ("$9", "@9", 99999)


# -- hand-written SQL --------------------------------------------------------------------------


def test_python_connection_sql_change_writes_one_sql_event(store: SqliteStore, path: Path) -> None:
    pid = add(store)
    claim(store)
    before = store.last_event_id()
    assert sql(path, "UPDATE project_queue SET status = 'completed' WHERE id = ?", [pid]) == 1
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


def test_sqlite3_cli_sql_change_writes_one_sql_event(store: SqliteStore, path: Path) -> None:
    pid = add(store)
    claim(store)
    before = store.last_event_id()
    result = sql_cli(path, f"UPDATE project_queue SET status='failed' WHERE id={pid};")
    assert result.returncode == 0, result.stderr
    new = store.events_after(before)
    assert [(e.kind, e.source, e.outcome) for e in new] == [("failed", "sql", "manual")]
    project = store.get(pid)
    assert project.status == S.FAILED and project.outcome == Outcome.MANUAL
    assert project.completed_at is not None


def test_sql_change_after_api_change_is_not_attributed_to_the_api(store: SqliteStore, path: Path) -> None:
    pid = add(store)
    claim(store)  # written with changed_by='daemon'
    sql(path, "UPDATE project_queue SET status = 'queued' WHERE id = ?", [pid])
    last = events(store, pid)[-1]
    assert (last.kind, last.source) == ("requeued", "sql")


def test_sql_requeue_from_ended_is_retried_and_clears_end_fields(store: SqliteStore, path: Path) -> None:
    pid = add(store)
    claim(store)
    store.transition(pid, S.FAILED, source="daemon", outcome=Outcome.EXITED, exit_code=4)
    sql(path, "UPDATE project_queue SET status = 'queued' WHERE id = ?", [pid])
    last = events(store, pid)[-1]
    assert (last.kind, last.source, last.old_status) == ("retried", "sql", "failed")
    project = store.get(pid)
    assert project.outcome is None and project.exit_code is None and project.completed_at is None


def test_sql_insert_and_delete_write_events(store: SqliteStore, path: Path) -> None:
    sql(path, "INSERT INTO project_queue (name, command) VALUES ('by-hand', '[\"true\"]')")
    [project] = store.list_projects()
    assert project.status == S.QUEUED
    sql(path, "DELETE FROM project_queue WHERE id = ?", [project.id])
    assert [(e.kind, e.source) for e in events(store, project.id)] == [("queued", "sql"), ("removed", "sql")]


def test_sql_update_not_touching_status_writes_no_event(store: SqliteStore, path: Path) -> None:
    pid = add(store)
    before = store.last_event_id()
    sql(path, "UPDATE project_queue SET priority = 9, status = status WHERE id = ?", [pid])
    assert store.last_event_id() == before
    assert store.get(pid).priority == 9


@pytest.mark.parametrize(
    ("setup", "target"),
    [
        ("queued", "completed"),
        ("queued", "failed"),
        ("completed", "processing"),
        ("completed", "failed"),
        ("failed", "completed"),
        ("cancelled", "processing"),
    ],
)
def test_invalid_hand_written_transition_rejected_by_trigger(
    store: SqliteStore, path: Path, setup: str, target: str
) -> None:
    pid = add(store)
    if setup != "queued":
        claim(store)
        store.transition(pid, S(setup), source="api")
    before = store.last_event_id()
    with pytest.raises(sqlite3.IntegrityError, match="status change not allowed"):
        sql(path, "UPDATE project_queue SET status = ? WHERE id = ?", [target, pid])
    assert store.get(pid).status == S(setup)
    assert store.last_event_id() == before


def test_invalid_transition_via_sqlite3_cli_is_rejected(store: SqliteStore, path: Path) -> None:
    pid = add(store)
    result = sql_cli(path, f"UPDATE project_queue SET status='completed' WHERE id={pid};")
    assert result.returncode != 0
    assert "status change not allowed" in result.stderr
    assert store.get(pid).status == S.QUEUED
    assert kinds(store, pid) == ["queued"]


def test_check_rejects_unknown_status(store: SqliteStore, path: Path) -> None:
    pid = add(store)
    claim(store)
    before = store.last_event_id()
    with pytest.raises(sqlite3.IntegrityError):
        sql(path, "UPDATE project_queue SET status = 'FAILED' WHERE id = ?", [pid])
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        sql(path, "INSERT INTO project_queue (name, command, status) VALUES ('x', '[]', 'FAILED')")
    assert store.get(pid).status == S.PROCESSING
    assert store.last_event_id() == before
    assert len(store.list_projects()) == 1


# -- sessions, removal, settings ---------------------------------------------------------------


def test_close_session_returns_true_exactly_once(store: SqliteStore) -> None:
    pid = add(store)
    claim(store)
    assert store.close_session(pid) is True
    assert store.close_session(pid) is False
    assert store.get(pid).session_closed_at is not None


def test_close_session_true_for_exactly_one_of_many_racing_connections(
    store: SqliteStore, path: Path
) -> None:
    pid = add(store)
    claim(store)
    stores = [SqliteStore(path) for _ in range(8)]
    results: list[bool] = []
    barrier = threading.Barrier(len(stores))

    def race(s: SqliteStore) -> None:
        barrier.wait()
        results.append(s.close_session(pid))

    threads = [threading.Thread(target=race, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for s in stores:
        s.close()
    assert sorted(results) == [False] * 7 + [True]


def test_close_session_needs_a_session_and_matching_name(store: SqliteStore) -> None:
    pid = add(store)
    assert store.close_session(pid) is False  # never had a session
    claim(store)
    assert store.close_session(pid, "some-other-name") is False
    assert store.close_session(pid, store.get(pid).session_name) is True


def test_open_sessions_lists_unclosed_only(store: SqliteStore) -> None:
    a = add(store)
    b = add(store)
    add(store)
    claim(store)
    claim(store)
    store.close_session(a)
    assert [p.id for p in store.open_sessions()] == [b]


def test_set_exit_code_only_fills_a_missing_code(store: SqliteStore) -> None:
    pid = add(store)
    claim(store)
    store.transition(pid, S.CANCELLED, source="api", outcome=Outcome.CANCELLED)
    store.set_exit_code(pid, 143)
    store.set_exit_code(pid, 0)
    project = store.get(pid)
    assert project.exit_code == 143 and project.status == S.CANCELLED


def test_remove_writes_removed_event(store: SqliteStore) -> None:
    pid = add(store, "gone")
    removed = store.remove(pid, source="cli")
    assert removed.id == pid
    with pytest.raises(ProjectNotFound):
        store.get(pid)
    last = events(store, pid)[-1]
    assert (last.kind, last.source, last.old_status) == ("removed", "cli", "queued")
    assert last.project_name == "gone"
    assert len(events(store, pid, "removed")) == 1


def test_remove_of_processing_project_is_refused(store: SqliteStore) -> None:
    pid = add(store)
    claim(store)
    before = store.last_event_id()
    with pytest.raises(InvalidTransition):
        store.remove(pid, source="cli")
    assert store.get(pid).status == S.PROCESSING
    assert store.last_event_id() == before


def test_append_event_and_filters(store: SqliteStore) -> None:
    a = add(store)
    b = add(store)
    store.append_event("session_killed", source="daemon", project=store.get(a), message="m")
    store.append_event("daemon_started", source="daemon")
    assert [e.kind for e in store.events_after(0, project_id=a)] == ["queued", "session_killed"]
    assert [e.project_id for e in store.events_after(0, kinds=["queued"])] == [a, b]
    assert [e.kind for e in store.events_after(0)][-1] == "daemon_started"
    assert len(store.events_after(0, limit=2)) == 2
    assert store.events_after(store.last_event_id()) == []


def test_settings_round_trip(store: SqliteStore) -> None:
    assert store.get_setting("concurrency") is None
    assert store.get_setting("concurrency", "1") == "1"
    store.set_setting("concurrency", "2")
    store.set_setting("concurrency", "4")
    assert store.get_setting("concurrency") == "4"


def test_changes_token_moves_on_commit_by_another_connection(store: SqliteStore, path: Path) -> None:
    token = store.changes_token()
    assert store.changes_token() == token
    sql(path, "INSERT INTO settings (key, value) VALUES ('x', 'y')")
    assert store.changes_token() != token


# -- the database file -------------------------------------------------------------------------


def test_schema_version_in_user_version(store: SqliteStore, path: Path) -> None:
    assert store.schema_version() == SCHEMA_VERSION
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_reopening_keeps_data(path: Path) -> None:
    first = SqliteStore(path)
    pid = first.enqueue(NewProject(command=["true"], name="kept"), source="api").id
    first.close()
    second = SqliteStore(path)
    try:
        assert second.get(pid).name == "kept"
        assert second.schema_version() == SCHEMA_VERSION
    finally:
        second.close()


def test_empty_file_is_initialised(path: Path) -> None:
    path.write_bytes(b"")
    store = SqliteStore(path)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.list_projects() == []
    finally:
        store.close()


@pytest.mark.parametrize(
    "content",
    [
        b"hello, this is not a database\n" * 200,
        bytes(range(256)) * 64,
        b"SQLite format 3\x00" + b"\x01" * 4000,
    ],
)
def test_non_database_file_raises_store_error_and_is_unchanged(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    with pytest.raises(StoreError):
        SqliteStore(path)
    assert path.read_bytes() == content


def test_higher_user_version_raises_schema_too_new(path: Path) -> None:
    SqliteStore(path).close()
    sql(path, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaTooNew, match="newer"):
        SqliteStore(path)
    assert issubclass(SchemaTooNew, StoreError)


def test_open_in_missing_directory_creates_it(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "a" / "b" / "q.db")
    try:
        assert (tmp_path / "a" / "b" / "q.db").exists()
    finally:
        store.close()


_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from tmux_orchestrator.store.base import NewProject
    from tmux_orchestrator.store.sqlite import SqliteStore

    db, go, worker, count = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    deadline = time.monotonic() + 30
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.001)
    store = SqliteStore(db)
    for i in range(count):
        store.enqueue(NewProject(command=["true"], name=f"w{worker}-{i}"), source=f"w{worker}")
    store.close()
    """
)


def test_concurrent_writer_processes_lose_nothing(tmp_path: Path, path: Path) -> None:
    # Each process opens the not-yet-existing database at the same moment, then enqueues 50.
    workers, count = 4, 50
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(go), str(w), str(count)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for w in range(workers)
    ]
    go.touch()
    outputs = [p.communicate(timeout=90) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "locked" not in err
    store = SqliteStore(path)
    try:
        projects = store.list_projects()
        assert len(projects) == workers * count
        assert len({p.id for p in projects}) == workers * count
        assert {p.name for p in projects} == {f"w{w}-{i}" for w in range(workers) for i in range(count)}
        queued = events(store, kind="queued")
        assert len(queued) == workers * count
        assert {e.source for e in queued} == {f"w{w}" for w in range(workers)}
        assert store.schema_version() == SCHEMA_VERSION
    finally:
        store.close()


def test_concurrent_claims_never_claim_twice(path: Path) -> None:
    setup = SqliteStore(path)
    ids = [setup.enqueue(NewProject(command=["true"]), source="api").id for _ in range(40)]
    setup.close()
    stores = [SqliteStore(path) for _ in range(4)]
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(s: SqliteStore) -> None:
        while (project := s.claim_next(host="h", max_processing=1000)) is not None:
            with lock:
                claimed.append(project.id)

    threads = [threading.Thread(target=worker, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    check = stores[0]
    try:
        assert sorted(claimed) == ids
        assert len(events(check, kind="started")) == 40
    finally:
        for s in stores:
            s.close()

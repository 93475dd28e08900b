"""The schema on every backend: one version, the same tables and columns, old ones upgraded, newer ones
refused, nothing created by a read; and the change token a daemon waits on."""

from __future__ import annotations

import select
from pathlib import Path

import pytest
from contract_support import Backend, S, SqliteBackend, add, claim

from tmux_orchestrator.errors import NoDatabase, SchemaTooNew, StoreError
from tmux_orchestrator.store import schema, schema_pg
from tmux_orchestrator.store.base import Store
from tmux_orchestrator.testing import retry_until


def test_schema_version_is_the_same_for_both_backends(store: Store) -> None:
    assert schema.SCHEMA_VERSION == schema_pg.SCHEMA_VERSION == len(schema_pg.MIGRATIONS)
    assert store.schema_version() == schema.SCHEMA_VERSION


def test_tables_and_columns_are_the_sqlite_schemas(store: Store, backend: Backend, tmp_path: Path) -> None:
    reference = SqliteBackend(tmp_path / "reference.db")
    reference.open()
    try:
        expected = reference.columns()
    finally:
        reference.close_all()
    assert set(expected) == {"project_queue", "events", "settings", "cleanup_claims", "hosts", "messages",
                             "checkins"}
    assert backend.columns() == expected


def test_reopening_keeps_data(backend: Backend) -> None:
    first = backend.open()
    pid = add(first, "kept")
    first.close()
    second = backend.open()
    assert second.get(pid).name == "kept"
    assert second.schema_version() == schema.SCHEMA_VERSION


def test_a_newer_schema_is_refused(backend: Backend) -> None:
    backend.open().close()
    backend.set_schema_version(schema.SCHEMA_VERSION + 1)
    for create in (True, False):
        with pytest.raises(SchemaTooNew, match="newer"):
            backend.open(create=create)
    assert issubclass(SchemaTooNew, StoreError)


def test_an_old_schema_opens_and_is_upgraded(backend: Backend) -> None:
    backend.apply_migrations(1)
    backend.sql("INSERT INTO project_queue (name, command) VALUES ('old', '[\"true\"]')")
    store = backend.open()
    assert store.schema_version() == schema.SCHEMA_VERSION
    [old] = store.list_projects()
    assert (old.name, old.required_labels, old.pinned_host, old.runner) == ("old", [], None, None)
    project = store.claim_next(host="h", max_processing=1, labels=frozenset({"x"}))
    assert project is not None and project.id == old.id and project.host == "h"
    assert store.hosts() == [] and store.claims() == []


def test_a_read_creates_nothing(backend: Backend) -> None:
    with pytest.raises(NoDatabase, match="no database at"):
        backend.open(create=False)
    if isinstance(backend, SqliteBackend):
        assert not backend.path.exists()
    else:
        assert backend.columns() == {}
    add(backend.open())
    assert len(backend.open(create=False).list_projects()) == 1


def test_changes_token_moves_on_commit_by_another_connection(store: Store, backend: Backend) -> None:
    token = store.changes_token()
    assert store.changes_token() == token
    backend.sql("INSERT INTO settings (key, value) VALUES ('x', 'y')")
    # SQLite's moves at once; PostgreSQL's when the notification arrives (a moment after the commit)
    retry_until(lambda: store.changes_token() != token, message="the change token to move")
    moved = store.changes_token()
    other = backend.open()
    pid = add(other)
    retry_until(lambda: store.changes_token() != moved, message="the change token to move again")
    moved = store.changes_token()
    claim(other)
    other.transition(pid, S.CANCELLED, source="api")
    retry_until(lambda: store.changes_token() != moved, message="the change token to move on a claim")


def test_change_fd_becomes_readable_on_a_commit_elsewhere(store: Store, backend: Backend) -> None:
    fd = store.change_fd()
    if isinstance(backend, SqliteBackend):
        assert fd is None  # SQLite's changes are polled with changes_token
        return
    assert fd is not None
    store.changes_token()
    assert select.select([fd], [], [], 0)[0] == []
    token = store.changes_token()
    backend.sql("INSERT INTO project_queue (name, command) VALUES ('by-hand', '[\"true\"]')")
    readable, _, _ = select.select([fd], [], [], 30)
    assert readable == [fd]
    assert store.changes_token() > token
    # taken: the socket is quiet again until the next change
    assert select.select([fd], [], [], 0)[0] == []
    assert store.change_fd() == fd

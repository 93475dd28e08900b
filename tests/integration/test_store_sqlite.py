"""What only the SQLite store has: the file, its journal mode and its version pragma.

Everything the Store contract says (queue order, claims, the guards, events, hand-written SQL, hosts,
clean-up claims, concurrency) is tested on SQLite and PostgreSQL alike in ``tests/contract``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tmux_orchestrator.errors import StoreError
from tmux_orchestrator.store.schema import SCHEMA_VERSION
from tmux_orchestrator.store.sqlite import SqliteStore


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


# -- the database file -------------------------------------------------------------------------


def test_schema_version_in_user_version(store: SqliteStore, path: Path) -> None:
    assert store.schema_version() == SCHEMA_VERSION
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


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


def test_open_in_missing_directory_creates_it(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "a" / "b" / "q.db")
    try:
        assert (tmp_path / "a" / "b" / "q.db").exists()
    finally:
        store.close()

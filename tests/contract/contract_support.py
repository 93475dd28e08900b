"""The backends the contract suite runs on, and helpers its tests share.

A :class:`Backend` is one database of one kind (a SQLite file in the test's directory, or a fresh
PostgreSQL database): it opens stores on it, and runs hand-written SQL the way a person would, from
a connection of its own (``sql``, ``query``) or with the command-line client (``sqlite3``, ``psql``).
"""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from tmux_orchestrator.project import ProjectStatus
from tmux_orchestrator.store.base import Event, NewProject, Store
from tmux_orchestrator.store.postgres import PostgresStore
from tmux_orchestrator.store.schema_pg import VERSION_TABLE
from tmux_orchestrator.store.sqlite import SqliteStore

S = ProjectStatus


class Backend:
    """One database of one backend kind."""

    #: ``sqlite`` or ``postgres``.
    kind: str
    #: What the driver raises for a refused statement (a trigger, a CHECK).
    integrity_error: type[Exception]
    #: What the driver raises for any error.
    error: type[Exception]

    def __init__(self) -> None:
        self._opened: list[Store] = []

    @property
    def url(self) -> str:
        """The database URL a process would be given (``TMO_DATABASE_URL``)."""
        raise NotImplementedError

    def open(self, *, create: bool = True) -> Store:
        """A new store on this database (closed at the end of the test)."""
        store = self._open(create)
        self._opened.append(store)
        return store

    def _open(self, create: bool) -> Store:
        raise NotImplementedError

    def close_all(self) -> None:
        for store in self._opened:
            store.close()

    def sql(self, statement: str) -> int:
        """Run one hand-written statement on a connection of its own; the rows it changed."""
        raise NotImplementedError

    def connect(self) -> Any:
        """A DB-API connection of its own in autocommit mode: ``BEGIN`` / ``COMMIT`` by hand."""
        raise NotImplementedError

    #: The statement that opens a write transaction by hand.
    begin = "BEGIN"

    def query(self, statement: str) -> list[tuple[Any, ...]]:
        """The rows of one hand-written query, from a connection of its own."""
        raise NotImplementedError

    def cli(self, statement: str) -> subprocess.CompletedProcess[str]:
        """Run statements with the backend's command-line client in its own process."""
        raise NotImplementedError

    def set_schema_version(self, version: int) -> None:
        """Write a schema version by hand (as a newer or older release would have left it)."""
        raise NotImplementedError

    def apply_migrations(self, count: int) -> None:
        """Create the schema of an old release: its first ``count`` migrations only."""
        raise NotImplementedError

    def columns(self) -> dict[str, set[str]]:
        """``{table: {column, ...}}`` of the tables of tmo's schema (the version table aside)."""
        raise NotImplementedError


class SqliteBackend(Backend):
    kind = "sqlite"
    integrity_error = sqlite3.IntegrityError
    error = sqlite3.Error

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def _open(self, create: bool) -> Store:
        return SqliteStore(self.path, create=create)

    begin = "BEGIN IMMEDIATE"

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)

    def connect(self) -> sqlite3.Connection:
        return self._connect()

    def sql(self, statement: str) -> int:
        conn = self._connect()
        try:
            return conn.execute(statement).rowcount
        finally:
            conn.close()

    def query(self, statement: str) -> list[tuple[Any, ...]]:
        conn = self._connect()
        try:
            return [tuple(r) for r in conn.execute(statement).fetchall()]
        finally:
            conn.close()

    def cli(self, statement: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sqlite3", "-bail", "-cmd", ".timeout 30000", str(self.path), statement],
                              capture_output=True, text=True, timeout=60)

    def set_schema_version(self, version: int) -> None:
        self.sql(f"PRAGMA user_version = {version}")

    def apply_migrations(self, count: int) -> None:
        from tmux_orchestrator.store.schema import MIGRATIONS

        conn = self._connect()
        try:
            for migration in MIGRATIONS[:count]:
                conn.executescript(migration)
            conn.execute(f"PRAGMA user_version = {count}")
        finally:
            conn.close()

    def columns(self) -> dict[str, set[str]]:
        tables = [r[0] for r in self.query("SELECT name FROM sqlite_master WHERE type = 'table' "
                                           "AND name NOT LIKE 'sqlite_%'")]
        return {t: {r[1] for r in self.query(f"PRAGMA table_info({t})")} for t in tables}


class PostgresBackend(Backend):
    kind = "postgres"
    integrity_error = psycopg.IntegrityError
    error = psycopg.Error

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url

    @property
    def url(self) -> str:
        return self._url

    def _open(self, create: bool) -> Store:
        return PostgresStore(self._url, create=create)

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self._url, autocommit=True)

    def sql(self, statement: str) -> int:
        with psycopg.connect(self._url, autocommit=True) as conn:
            return conn.execute(statement).rowcount

    def query(self, statement: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self._url, autocommit=True) as conn:
            return [tuple(r) for r in conn.execute(statement).fetchall()]

    def cli(self, statement: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self._url, "-c", statement],
                              capture_output=True, text=True, timeout=60)

    def set_schema_version(self, version: int) -> None:
        self.sql(f"UPDATE {VERSION_TABLE} SET version = {version}")

    def apply_migrations(self, count: int) -> None:
        from tmux_orchestrator.store.schema_pg import MIGRATIONS

        with psycopg.connect(self._url) as conn:
            conn.execute(f"CREATE TABLE {VERSION_TABLE} (version integer NOT NULL)")
            conn.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES ({count})")
            for migration in MIGRATIONS[:count]:
                conn.execute(migration)

    def columns(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for table, column in self.query(
                "SELECT table_name, column_name FROM information_schema.columns "
                f"WHERE table_schema = current_schema() AND table_name != '{VERSION_TABLE}'"):
            out.setdefault(table, set()).add(column)
        return out


# -- helpers -----------------------------------------------------------------------------------------
def add(store: Store, name: str = "p", priority: int = 0, **kw: Any) -> int:
    """Queue a project running ``true``; its id."""
    return store.enqueue(NewProject(command=["true"], name=name, priority=priority, **kw), source="api").id


def claim(store: Store, max_processing: int = 100, host: str = "h") -> int:
    """Claim the next project (there must be one); its id."""
    project = store.claim_next(host=host, max_processing=max_processing)
    assert project is not None
    return project.id


def events(store: Store, project_id: int | None = None, kind: str | None = None) -> list[Event]:
    """Every event, or a project's, or of a kind."""
    return store.events_after(0, project_id=project_id, kinds=[kind] if kind else None, limit=1_000_000)


def kinds(store: Store, project_id: int) -> list[str]:
    """The kinds of a project's events, in order."""
    return [e.kind for e in events(store, project_id)]


def statuses(values: Sequence[str]) -> list[ProjectStatus]:
    return [ProjectStatus(v) for v in values]

"""The contract suite: every test runs once on SQLite and once on PostgreSQL.

The ``postgres`` half uses a fresh database per test on ``$TMO_TEST_PG_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``) and fails, never skips, when that server does not
answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from contract_support import Backend, PostgresBackend, SqliteBackend

from tmux_orchestrator.store.base import Store
from tmux_orchestrator.testing import fresh_postgres_database


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """One empty database of each backend kind."""
    if request.param == "sqlite":
        sqlite = SqliteBackend(tmp_path / "queue.db")
        try:
            yield sqlite
        finally:
            sqlite.close_all()
        return
    with fresh_postgres_database() as url:
        postgres = PostgresBackend(url)
        try:
            yield postgres
        finally:
            postgres.close_all()


@pytest.fixture
def store(backend: Backend) -> Store:
    """A store on the test's database (the schema created)."""
    return backend.open()

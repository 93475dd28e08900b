"""The status guard trigger is generated from ALLOWED and enforces exactly that table (store/schema.py)."""

from __future__ import annotations

import itertools
import re
import sqlite3
from pathlib import Path

import pytest

from tmux_orchestrator.project import ALLOWED, ProjectStatus, can_transition
from tmux_orchestrator.store.schema import MIGRATIONS, SCHEMA_VERSION, transition_guard_sql


def _parsed_guard() -> set[tuple[str, str]]:
    sql = transition_guard_sql()
    edges: set[tuple[str, str]] = set()
    for old, targets in re.findall(r"\(OLD\.status = '(\w+)' AND NEW\.status IN \(([^)]*)\)\)", sql):
        for target in re.findall(r"'(\w+)'", targets):
            edges.add((old, target))
    return edges


def test_guard_sql_lists_exactly_the_allowed_edges() -> None:
    expected = {(old.value, new.value) for old, targets in ALLOWED.items() for new in targets}
    assert _parsed_guard() == expected


def test_guard_sql_is_a_before_update_trigger_with_abort() -> None:
    sql = transition_guard_sql()
    assert "BEFORE UPDATE OF status ON project_queue" in sql
    assert "RAISE(ABORT" in sql
    assert "NEW.status IS NOT OLD.status" in sql


@pytest.fixture
def db(tmp_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(tmp_path / "schema.db", isolation_level=None)
    conn.executescript(MIGRATIONS[0])
    return conn


@pytest.mark.parametrize(("old", "new"), list(itertools.product(ProjectStatus, ProjectStatus)))
def test_guard_allows_exactly_allowed_by_behaviour(
    db: sqlite3.Connection, old: ProjectStatus, new: ProjectStatus
) -> None:
    db.execute("INSERT INTO project_queue (name, command, status) VALUES ('p', '[]', ?)", (old.value,))
    try:
        db.execute("UPDATE project_queue SET status = ? WHERE id = 1", (new.value,))
        applied = True
    except sqlite3.IntegrityError as exc:
        assert "status change not allowed" in str(exc)
        applied = False
    status = db.execute("SELECT status FROM project_queue WHERE id = 1").fetchone()[0]
    if old == new:
        assert applied
        assert status == old.value
    else:
        assert applied is can_transition(old, new)
        assert status == (new.value if applied else old.value)


def test_schema_version_is_number_of_migrations() -> None:
    assert SCHEMA_VERSION == len(MIGRATIONS) >= 1


def test_check_constraint_rejects_unknown_status(db: sqlite3.Connection) -> None:
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        db.execute("INSERT INTO project_queue (name, command, status) VALUES ('p', '[]', 'FAILED')")

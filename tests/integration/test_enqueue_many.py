"""``Orchestrator.enqueue_many``: one transaction, every item validated first, events per project."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tmux_orchestrator.errors import InvalidBatch, UsageError
from tmux_orchestrator.orchestrator import Orchestrator
from tmux_orchestrator.project import ProjectStatus


def _counts(orch: Orchestrator) -> tuple[int, int]:
    projects = len(orch.list_projects())
    events = len(orch.store.events_after(0, limit=1_000_000))
    return projects, events


def test_enqueue_many_queues_all_in_order_with_one_event_each(
    orchestrator: Orchestrator, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.md"
    spec.write_text("# spec")
    items: list[dict[str, Any]] = [
        {"command": ["true"], "project_path": tmp_path},
        {"command": ("sleep", "1"), "name": "sleeper", "priority": 5, "project_path": str(tmp_path),
         "env": {"A": "b"}, "max_retries": 2, "retry_delay": 1.5, "timeout": 60, "idle_timeout": 30},
        {"command": ["echo", "hi"], "spec_path": spec, "project_path": tmp_path},
    ]
    projects = orchestrator.enqueue_many(items)
    assert [p.status for p in projects] == [ProjectStatus.QUEUED] * 3
    assert [p.id for p in projects] == sorted(p.id for p in projects)
    first, second, third = projects
    assert first.command == ["true"] and first.name == "true"
    assert second.name == "sleeper" and second.priority == 5 and second.env == {"A": "b"}
    assert (second.max_retries, second.retry_delay, second.timeout, second.idle_timeout) == (2, 1.5, 60, 30)
    assert third.name == "spec" and third.spec_path == str(spec.resolve())
    assert third.project_path == str(tmp_path.resolve())
    # stored exactly as enqueue() would store it
    assert orchestrator.get(second.id) == second
    queued = [e for e in orchestrator.store.events_after(0) if e.kind == "queued"]
    assert sorted(e.project_id for e in queued if e.project_id) == [p.id for p in projects]
    assert {e.source for e in queued} == {"api"}
    # claimed in priority order like any other project
    orchestrator.store.set_setting("concurrency", "10")
    claimed = orchestrator.store.claim_next(host="h", max_processing=10)
    assert claimed is not None and claimed.id == second.id


def test_enqueue_many_of_nothing_is_nothing(orchestrator: Orchestrator) -> None:
    assert orchestrator.enqueue_many([]) == []
    assert _counts(orchestrator) == (0, 0)


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"name": "no command"}, "missing command"),
        ({"command": []}, "missing command"),
        ({"command": "echo hi"}, "list of words"),
        ({"command": ["true"], "project_path": "/no/such/dir"}, "does not exist"),
        ({"command": ["true"], "spec_path": "/no/such/spec.md"}, "does not exist"),
        ({"command": ["true"], "env": {"1BAD": "x"}}, "environment variable name"),
        ({"command": ["true"], "env": {"GOOD": 3}}, "must be a string"),
        ({"command": ["true"], "priority": 2**31}, "priority"),
        ({"command": ["true"], "priority": "high"}, "invalid literal"),
        ({"command": ["true"], "max_retries": -1}, "max_retries"),
        ({"command": ["true"], "retry_delay": -1}, "retry delay"),
        ({"command": ["true"], "timeout": 0}, "timeout must be positive"),
        ({"command": ["true"], "timeout": float("nan")}, "timeout must be positive"),
        ({"command": ["true"], "colour": "blue"}, "unknown field(s) colour"),
    ],
)
def test_one_invalid_item_queues_nothing(
    orchestrator: Orchestrator, tmp_path: Path, item: dict[str, Any], expected: str
) -> None:
    orchestrator.enqueue(["echo", "before"], project_path=tmp_path)
    before = _counts(orchestrator)
    good = {"command": ["true"], "project_path": tmp_path}
    with pytest.raises(InvalidBatch) as caught:
        orchestrator.enqueue_many([good, good, item, good])
    assert isinstance(caught.value, UsageError) and caught.value.exit_code == 2
    assert [n for n, _ in caught.value.errors] == [3]
    assert expected in caught.value.errors[0][1], caught.value.errors
    assert _counts(orchestrator) == before


def test_every_invalid_item_is_reported(orchestrator: Orchestrator, tmp_path: Path) -> None:
    items: list[dict[str, Any]] = [
        {"command": ["true"], "project_path": tmp_path},
        {"command": []},
        {"command": ["true"], "project_path": tmp_path},
        {"command": ["true"], "priority": 2**40, "project_path": tmp_path},
    ]
    with pytest.raises(InvalidBatch) as caught:
        orchestrator.enqueue_many(items)
    assert [n for n, _ in caught.value.errors] == [2, 4]
    assert "project 2:" in str(caught.value) and "project 4:" in str(caught.value)
    assert _counts(orchestrator) == (0, 0)


def test_enqueue_validation_is_shared_with_enqueue(orchestrator: Orchestrator) -> None:
    with pytest.raises(UsageError, match="list of words"):
        orchestrator.enqueue("echo hi")
    with pytest.raises(UsageError, match="retry delay"):
        orchestrator.enqueue(["true"], retry_delay=float("inf"))


def test_a_large_batch_is_one_transaction(orchestrator: Orchestrator, tmp_path: Path) -> None:
    items = [{"command": ["echo", str(n)], "project_path": tmp_path} for n in range(2000)]
    token = orchestrator.store.changes_token()
    watcher = Orchestrator(orchestrator.settings)
    try:
        seen = watcher.store.changes_token()
        projects = orchestrator.enqueue_many(items)
        assert len(projects) == 2000
        assert [p.command[1] for p in projects] == [str(n) for n in range(2000)]
        # another connection sees one commit: data_version moved on, and every row at once
        assert watcher.store.changes_token() != seen
        assert len(watcher.store.list_projects([ProjectStatus.QUEUED])) == 2000
    finally:
        watcher.close()
    assert orchestrator.store.changes_token() == token  # our own commits do not count

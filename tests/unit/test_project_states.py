"""The status state machine and the exit-code outcome mapping (project.py)."""

from __future__ import annotations

import itertools

import pytest

from tmux_orchestrator.project import (
    ALLOWED,
    TERMINAL,
    Outcome,
    Project,
    ProjectStatus,
    can_transition,
    outcome_for_exit,
    predecessors,
)

S = ProjectStatus

#: The transitions DESIGN.md section 3 names, plus processing -> queued (requeue).
EXPECTED_EDGES = {
    (S.QUEUED, S.PROCESSING),
    (S.QUEUED, S.CANCELLED),
    (S.PROCESSING, S.COMPLETED),
    (S.PROCESSING, S.FAILED),
    (S.PROCESSING, S.CANCELLED),
    (S.PROCESSING, S.QUEUED),
    (S.COMPLETED, S.QUEUED),
    (S.FAILED, S.QUEUED),
    (S.CANCELLED, S.QUEUED),
}


def test_status_values_are_the_column_values() -> None:
    assert [s.value for s in ProjectStatus] == ["queued", "processing", "completed", "failed", "cancelled"]
    assert str(S.PROCESSING) == "processing"
    assert S("failed") is S.FAILED


def test_allowed_has_an_entry_for_every_status() -> None:
    assert set(ALLOWED) == set(ProjectStatus)


def test_allowed_table_is_exactly_the_designed_edges() -> None:
    edges = {(old, new) for old, targets in ALLOWED.items() for new in targets}
    assert edges == EXPECTED_EDGES


@pytest.mark.parametrize(("old", "new"), list(itertools.product(ProjectStatus, ProjectStatus)))
def test_can_transition_matches_the_table(old: ProjectStatus, new: ProjectStatus) -> None:
    assert can_transition(old, new) is ((old, new) in EXPECTED_EDGES)


def test_no_status_may_transition_to_itself() -> None:
    assert not any(can_transition(s, s) for s in ProjectStatus)


@pytest.mark.parametrize("new", list(ProjectStatus))
def test_predecessors_is_the_inverse_of_allowed(new: ProjectStatus) -> None:
    assert predecessors(new) == frozenset(old for old, n in EXPECTED_EDGES if n == new)


def test_predecessors_of_queued_and_processing() -> None:
    assert predecessors(S.PROCESSING) == {S.QUEUED}
    assert predecessors(S.QUEUED) == {S.PROCESSING, S.COMPLETED, S.FAILED, S.CANCELLED}
    assert predecessors(S.COMPLETED) == {S.PROCESSING}


def test_terminal_statuses() -> None:
    assert frozenset({S.COMPLETED, S.FAILED, S.CANCELLED}) == TERMINAL
    assert [s for s in ProjectStatus if s.is_terminal] == [S.COMPLETED, S.FAILED, S.CANCELLED]
    assert not S.QUEUED.is_terminal
    assert not S.PROCESSING.is_terminal


def test_terminal_statuses_only_lead_back_to_queued() -> None:
    for status in TERMINAL:
        assert ALLOWED[status] == {S.QUEUED}


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (0, Outcome.EXITED),
        (1, Outcome.EXITED),
        (3, Outcome.EXITED),
        (127, Outcome.EXITED),
        (128, Outcome.EXITED),
        (129, Outcome.SIGNAL),
        (130, Outcome.SIGNAL),
        (137, Outcome.SIGNAL),
        (143, Outcome.SIGNAL),
        (255, Outcome.SIGNAL),
    ],
)
def test_outcome_for_exit(code: int, outcome: Outcome) -> None:
    assert outcome_for_exit(code) is outcome


def test_project_to_dict_is_json_ready() -> None:
    from datetime import UTC, datetime

    when = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    project = Project(
        id=4, name="n", status=S.FAILED, command=["a", "b"], outcome=Outcome.TIMEOUT, enqueued_at=when
    )
    data = project.to_dict()
    assert data["status"] == "failed"
    assert data["outcome"] == "timeout"
    assert data["enqueued_at"] == "2024-05-06T07:08:09.000000+00:00"
    assert data["command"] == ["a", "b"]
    assert project.is_terminal

"""Check-ins (``tmo checkin``) and conditional messages on every backend: stored as given, their last
delivery and pending message read from their messages, deleted with the end of the attempt they were
added to (by trigger, whoever ends it)."""

from __future__ import annotations

import pytest
from contract_support import Backend, add, claim

from tmux_orchestrator.message import MessageKind, MessageStatus
from tmux_orchestrator.project import Outcome, ProjectStatus
from tmux_orchestrator.store.base import Store


def test_a_checkin_reads_its_messages_and_ends_with_its_attempt(store: Store) -> None:
    project_id = add(store)
    other = add(store, "other")
    claim(store)
    claim(store)
    checkin = store.add_checkin(project_id, 1, 2.5, "status?")
    kept = store.add_checkin(other, 1, 60, "still there")
    assert (checkin.every, checkin.body, checkin.last_at, checkin.pending) == (2.5, "status?", None, False)
    assert (checkin.due_at - checkin.created_at).total_seconds() == 2.5
    assert store.checkins([project_id]) == [checkin]
    assert store.checkins() == [checkin, kept]

    message = store.add_message(project_id, 1, MessageKind.TEXT, "status?", when_waiting=True,
                                checkin_id=checkin.id)
    assert (message.when_waiting, message.checkin_id) == (True, checkin.id)
    assert store.checkins([project_id])[0].pending
    store.update_message(message.id, expected=MessageStatus.QUEUED, status=MessageStatus.DELIVERED)
    delivered = store.get_message(message.id)
    assert delivered is not None
    now = store.checkins([project_id])[0]
    assert (now.pending, now.last_at) == (False, delivered.delivered_at)

    store.transition(project_id, ProjectStatus.COMPLETED, source="test", outcome=Outcome.MANUAL)
    assert store.checkins() == [kept]
    assert store.remove_checkin(kept.id) == kept
    assert store.remove_checkin(kept.id) is None
    assert store.checkins() == []


def test_a_period_that_is_not_a_positive_number_is_refused_by_hand_too(store: Store,
                                                                        backend: Backend) -> None:
    project_id = add(store)
    for every in ("'soon'", "0", "-1"):
        with pytest.raises(Exception, match=r"(?i)check|invalid input"):
            backend.sql(f"INSERT INTO checkins (project_id, attempt, every, body) "
                        f"VALUES ({project_id}, 1, {every}, 'hi')")
    assert store.checkins() == []

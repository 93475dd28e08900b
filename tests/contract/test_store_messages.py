"""Messages (``tmo send``) on every backend: queued with the body as given, moved only from the
status expected (so two writers never both deliver or both fail one), delivered_at stamped."""

from __future__ import annotations

from contract_support import add, claim

from tmux_orchestrator.message import MessageKind, MessageStatus
from tmux_orchestrator.project import ProjectStatus
from tmux_orchestrator.store.base import Store

BODY = "a; # $() ' \" \\ / ünï ✓\nsecond line;"


def test_a_message_is_stored_as_given_and_moves_only_from_the_expected_status(store: Store) -> None:
    project_id = add(store)
    claim(store)
    message = store.add_message(project_id, 1, MessageKind.TEXT, BODY)
    assert (message.body, message.status, message.tries, message.delivered_at) == (
        BODY, MessageStatus.QUEUED, 0, None)
    assert store.messages(MessageStatus.QUEUED, [project_id]) == [message]
    assert store.messages(MessageStatus.QUEUED, [project_id + 1]) == []

    assert store.update_message(message.id, expected=MessageStatus.QUEUED,
                                status=MessageStatus.DELIVERING)
    # A second deliverer (or a waiter failing it) finds it no longer queued: nothing changes.
    assert not store.update_message(message.id, expected=MessageStatus.QUEUED,
                                    status=MessageStatus.FAILED, reason="late")
    assert store.update_message(message.id, expected=MessageStatus.DELIVERING,
                                status=MessageStatus.DELIVERED, tries=2)
    done = store.get_message(message.id)
    assert done is not None
    assert (done.status, done.reason, done.tries) == (MessageStatus.DELIVERED, None, 2)
    assert done.delivered_at is not None and done.created_at is not None
    assert store.get_message(message.id + 1) is None


def test_keys_are_a_list(store: Store) -> None:
    project_id = add(store)
    message = store.add_message(project_id, 0, MessageKind.KEYS, '["C-c", "Enter"]')
    assert message.keys == ["C-c", "Enter"]
    assert message.to_dict()["body"] == ["C-c", "Enter"]


def test_queued_messages_to_an_attempt_that_ended_are_stale(store: Store) -> None:
    running = add(store, "running")
    ended = add(store, "ended")
    claim(store)
    claim(store)
    live = store.add_message(running, 1, MessageKind.TEXT, "to the running attempt")
    old_attempt = store.add_message(running, 0, MessageKind.TEXT, "to an attempt before it")
    late = store.add_message(ended, 1, MessageKind.TEXT, "to a project that ended")
    store.transition(ended, ProjectStatus.CANCELLED, source="api")
    assert [m.id for m in store.stale_messages()] == [old_attempt.id, late.id]
    assert live.id not in [m.id for m in store.stale_messages()]
    store.update_message(late.id, expected=MessageStatus.QUEUED, status=MessageStatus.FAILED, reason="x")
    assert [m.id for m in store.stale_messages()] == [old_attempt.id]  # only queued ones

"""Every event ``kind`` tmo writes (``docs/events.md``): what ``tmo events --kind`` and a route's
``on = [...]`` may name, so a misspelt kind is an error instead of a filter that never matches."""

from __future__ import annotations

#: Status changes, written by the database triggers (one per change).
STATUS_KINDS: tuple[str, ...] = (
    "queued", "started", "completed", "failed", "cancelled", "retried", "requeued", "removed",
)
#: Session and daemon actions.
ACTION_KINDS: tuple[str, ...] = (
    "output_saved", "backup_failed", "session_killed", "lingering_cleaned", "processes_killed",
    "kill_unconfirmed", "orphan_found", "keeper_restored", "socket_restored", "run_dir_restored",
    "host_fenced", "daemon_started", "daemon_stopped", "server_started", "reboot_detected",
    "queue_paused", "queue_resumed", "config_reloaded", "config_reload_failed",
    "message_delivered", "message_failed", "checkin_added", "checkin_due", "checkin_removed",
)
#: What a running project's agent does (``agent_state.py``): one event per change of its state.
AGENT_KINDS: tuple[str, ...] = ("state_changed",)
#: Written by the dispatcher about its own deliveries; hooks never run on them.
DELIVERY_KINDS: tuple[str, ...] = ("hook_failed", "hook_suppressed", "webhook_failed", "email_failed")

#: Every kind, in the order ``docs/events.md`` lists them.
EVENT_KINDS: tuple[str, ...] = STATUS_KINDS + ACTION_KINDS + AGENT_KINDS + DELIVERY_KINDS


def unknown_kind(kind: str, where: str) -> str | None:
    """The error for ``kind`` when it is not a known kind (None when it is): names it, ``where`` it
    was given and every known kind."""
    if kind in EVENT_KINDS:
        return None
    return f"unknown event kind {kind!r} in {where}; known kinds: {', '.join(EVENT_KINDS)}"

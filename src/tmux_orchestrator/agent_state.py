"""What a running project's agent is doing: working, waiting for input, idle, or unknown.

A project's agent state lives in three columns of ``project_queue`` (``agent_state``,
``agent_state_since``, ``agent_state_source``); the status-change triggers clear them when the project
ends or is requeued and set ``unknown`` when it starts. Two sources decide it, best first:

* ``reported``: the agent said so itself (``tmo state``, which its hooks call: ``tmo agent-hooks``);
* ``activity``: the daemon saw the project's log grow (``working``) or stay still for
  ``agent_idle_after`` seconds (``idle``).

Once an agent has reported, activity no longer decides for that attempt: an agent thinking quietly
for a minute is still working, and one waiting at its prompt may redraw a clock.
"""

from __future__ import annotations

import enum


class AgentState(enum.StrEnum):
    """What a running project's agent is doing. Values are what ``agent_state`` holds."""

    #: Busy with a prompt (it reported so, or its output grows).
    WORKING = "working"
    #: Waiting for input: an answer, an approval, the next prompt.
    WAITING = "waiting"
    #: Printed nothing for a while and never said what it does.
    IDLE = "idle"
    #: Running, nothing known yet.
    UNKNOWN = "unknown"


class StateSource(enum.StrEnum):
    """Which source decided a project's agent state. Values are what ``agent_state_source`` holds."""

    #: The agent said so (``tmo state``).
    REPORTED = "reported"
    #: The daemon's look at the project's output.
    ACTIVITY = "activity"


#: The states an agent may report with ``tmo state``.
REPORTABLE = (AgentState.WORKING, AgentState.WAITING, AgentState.IDLE)


def change(old_state: str | None, old_source: str | None, new: AgentState,
           source: StateSource) -> tuple[bool, bool]:
    """``(write, changed)``: whether setting ``new`` from ``source`` writes the row, and whether the
    state itself changes (a ``state_changed`` event).

    Activity never overrides a reported state; the same state from the same source writes nothing
    (an agent hook calls ``tmo state`` on every prompt: most calls are repeats).
    """
    if source is StateSource.ACTIVITY and old_source == StateSource.REPORTED:
        return False, False
    changed = old_state != new.value
    return changed or old_source != source.value, changed


def describe(old_state: str | None, new: AgentState, source: StateSource) -> str:
    """The ``message`` of a ``state_changed`` event: ``working -> waiting (reported)``."""
    return f"{old_state or 'unknown'} -> {new.value} ({source.value})"

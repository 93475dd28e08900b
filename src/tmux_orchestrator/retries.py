"""The retry policy: which failures are retried, and when."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from tmux_orchestrator.errors import InvalidTransition
from tmux_orchestrator.project import Outcome, Project, ProjectStatus
from tmux_orchestrator.store.base import Store

log = logging.getLogger(__name__)

#: Outcomes after which a project's retry policy applies (a human's ``fail`` or ``cancel`` is final).
RETRYABLE = frozenset(
    {Outcome.EXITED, Outcome.SIGNAL, Outcome.TIMEOUT, Outcome.IDLE, Outcome.LOST, Outcome.SPAWN_ERROR}
)
#: Longest delay between automatic retries, whatever the backoff says (unless ``--retry-delay``
#: itself is longer).
MAX_RETRY_DELAY = 3600.0
#: Longest timeout, idle timeout or retry delay a project may have: ten years, far below what a
#: date can hold (a longer one is surely a typo).
MAX_DURATION = 3650 * 86400.0


def retry_delay(project: Project) -> float:
    """Seconds before the next automatic retry: ``retry_delay`` doubled per retry so far."""
    delay = project.retry_delay * (2.0 ** min(project.retry_count, 64))
    delay = min(delay, max(project.retry_delay, MAX_RETRY_DELAY), MAX_DURATION)
    return float(delay) if delay >= 0 else 0.0  # a hand-edited negative or NaN delay: at once


def requeue_after_failure(store: Store, project: Project, *, source: str) -> Project:
    """Apply ``project``'s retry policy after an automatic failure; returns the new state.

    The retry is counted in the same statement that queues the project again: a retry that did not
    happen is never counted. The next attempt is claimed only once this attempt's session and
    processes are confirmed gone (see :mod:`tmux_orchestrator.cleanup`).
    """
    if (
        project.status != ProjectStatus.FAILED
        or project.outcome not in RETRYABLE
        or project.retry_count >= project.max_retries
    ):
        return project
    delay = retry_delay(project)
    not_before = datetime.now(UTC) + timedelta(seconds=delay) if delay > 0 else None
    try:
        project = store.transition(project.id, ProjectStatus.QUEUED, source=source, not_before=not_before,
                                   expected=ProjectStatus.FAILED, count_retry=True)
    except InvalidTransition:
        return store.get(project.id)
    log.info("project %s will be retried (%s of %s) in %.0fs", project.id, project.retry_count,
             project.max_retries, delay,
             extra={"project_id": project.id, "session_name": project.session_name})
    return project

"""Delivers the messages of ``tmo send`` to the panes of the projects this daemon runs.

One worker thread, woken by the daemon on every database change. For a text message:

1. the row goes ``queued`` -> ``delivering`` *before* anything reaches the pane;
2. the text is pasted as one bracketed paste from a named buffer (never typed key by key);
3. after ``send_settle_delay`` Enter is pressed, as a separate key;
4. Enter (never the text) is pressed again, at most :data:`ENTER_RETRIES` times, only while the
   screen is exactly as it was right after the paste, and the paste had visibly changed it: the
   text is then most likely still sitting unsubmitted. When unsure, nothing is sent again;
5. the row becomes ``delivered`` (or ``failed`` with a reason), with a ``message_delivered`` /
   ``message_failed`` event.

A message marked ``when_waiting`` (``tmo send --when-waiting``, every check-in) stays queued until
the project's agent state is ``waiting`` or ``idle``. Each pass first queues such a message for every
check-in that is due (:mod:`~tmux_orchestrator.checkin`).

A daemon killed between 1 and 5 leaves the row ``delivering``: the next daemon fails it ("daemon
stopped during delivery") rather than risk pasting it twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from tmux_orchestrator.agent_state import AgentState
from tmux_orchestrator.config import Settings
from tmux_orchestrator.errors import OrchestratorError, ProjectNotFound
from tmux_orchestrator.message import Message, MessageKind, MessageStatus
from tmux_orchestrator.project import Project
from tmux_orchestrator.store.base import Store
from tmux_orchestrator.tmux import OrchestratorServer

log = logging.getLogger(__name__)

#: How many times Enter may be pressed again when the pasted text still sits unsubmitted.
ENTER_RETRIES = 2
#: The reason given to a message a daemon was delivering when it stopped.
INTERRUPTED = "daemon stopped during delivery; not pasted again, so it may or may not have arrived"


class MessageSender:
    """Delivers queued messages of running projects, one at a time, on its own thread."""

    def __init__(self, *, store: Store, server: OrchestratorServer, settings: Settings,
                 running: Callable[[], dict[int, Project]]) -> None:
        self.store = store
        self.server = server
        self.settings = settings
        #: The projects this daemon runs now, by id (their current attempt's row).
        self.running = running
        self._wanted = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Fail what a stopped daemon left half delivered, then start the worker thread."""
        for message in self.store.messages(MessageStatus.DELIVERING, list(self.running())):
            self._finish(message, MessageStatus.DELIVERING, MessageStatus.FAILED, INTERRUPTED)
        self._thread = threading.Thread(target=self._work, name="tmo-send", daemon=True)
        self._thread.start()
        self.wake()

    def stop(self) -> None:
        """Stop the worker (a delivery under way is finished first)."""
        self._stopping = True
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wake(self) -> None:
        """Look for queued messages now (the database changed)."""
        self._wanted.set()

    def _work(self) -> None:
        while not self._stopping:
            # Woken by the daemon on a change; the timeout covers a change it did not see.
            self._wanted.wait(timeout=1.0)
            self._wanted.clear()
            if self._stopping:
                return
            try:
                self.deliver_queued()
            except Exception as exc:
                log.error("message delivery failed: %s", exc, exc_info=exc)
                time.sleep(0.5)

    def deliver_queued(self) -> None:
        """Deliver every queued message of the projects running here, oldest first; fail those
        whose attempt ended before they could be (any host may: the row says which attempt)."""
        for stale in self.store.stale_messages():
            self._finish(stale, MessageStatus.QUEUED, MessageStatus.FAILED,
                         f"attempt {stale.attempt} of project {stale.project_id} was no longer running")
        running = self.running()
        self.queue_due_checkins(running)
        waiting: dict[int, bool] = {}
        for message in self.store.messages(MessageStatus.QUEUED, list(running)):
            if self._stopping:
                return
            project = running.get(message.project_id)
            if project is None:
                continue
            if message.when_waiting and not self._waits(message, waiting):
                continue
            if message.attempt != project.attempt:
                self._finish(message, MessageStatus.QUEUED, MessageStatus.FAILED,
                             f"attempt {message.attempt} ended before delivery")
                continue
            if not self.store.update_message(message.id, expected=MessageStatus.QUEUED,
                                             status=MessageStatus.DELIVERING):
                continue  # failed meanwhile (its attempt ended)
            try:
                tries = self._deliver(message, project)
            except (OrchestratorError, ValueError) as exc:
                # ValueError: a row written by hand that cannot be sent (keys that are not a JSON
                # list, text that is not UTF-8): it fails alone, the others go on.
                self._finish(message, MessageStatus.DELIVERING, MessageStatus.FAILED, str(exc))
                continue
            self._finish(message, MessageStatus.DELIVERING, MessageStatus.DELIVERED, None, tries)

    def queue_due_checkins(self, running: dict[int, Project]) -> None:
        """Queue one ``when_waiting`` message for each due check-in of the projects running here
        that has none pending."""
        now = datetime.now(UTC)
        for checkin in self.store.checkins(list(running)):
            project = running.get(checkin.project_id)
            if (project is None or project.attempt != checkin.attempt or checkin.pending
                    or checkin.due_at > now):
                continue
            try:
                message = self.store.add_message(checkin.project_id, checkin.attempt, MessageKind.TEXT,
                                                 checkin.body, when_waiting=True, checkin_id=checkin.id)
            except (OrchestratorError, ValueError) as exc:
                # A check-in written by hand that can never be sent (its text is not UTF-8): removed
                # with its event, instead of failing every delivery pass of this daemon.
                self.store.remove_checkin(checkin.id)
                self.store.append_event("checkin_removed", source="daemon", project=project,
                                        message=f"check-in {checkin.id} cannot be sent: {exc}")
                continue
            self.store.append_event("checkin_due", source="daemon", project=project,
                                    message=f"check-in {checkin.id} due: message {message.id} held "
                                            "until the agent waits")

    def _waits(self, message: Message, known: dict[int, bool]) -> bool:
        """Whether the agent of the message's project is ``waiting`` or ``idle`` now (read once per
        pass and project: the daemon's own rows do not follow ``tmo state``)."""
        if message.project_id not in known:
            try:
                project = self.store.get(message.project_id)
            except ProjectNotFound:
                project = None
            known[message.project_id] = (
                project is not None and project.attempt == message.attempt
                and project.agent_state in (AgentState.WAITING, AgentState.IDLE))
        return known[message.project_id]

    def _deliver(self, message: Message, project: Project) -> int:
        """Paste and submit (or send the keys of) one message; returns how many Enters or sends."""
        if not project.session_id:
            raise OrchestratorError("the project has no session")
        pane = self.server.pane_of(project.session_id)
        if message.kind == MessageKind.KEYS:
            self.server.send_keys(pane, message.keys)
            return 1
        before = self.server.screen(pane)
        self.server.paste(pane, message.body.encode())
        time.sleep(self.settings.send_settle_delay)
        pasted = self.server.screen(pane)
        self.server.send_keys(pane, ["Enter"])
        tries = 1
        while tries <= ENTER_RETRIES and pasted != before:
            time.sleep(self.settings.send_settle_delay)
            if self.server.screen(pane) != pasted:
                break  # the screen moved on: the Enter was taken
            log.info("message %s: the pasted text still sits unsubmitted; pressing Enter again",
                     message.id)
            self.server.send_keys(pane, ["Enter"])
            tries += 1
        return tries

    def _finish(self, message: Message, expected: MessageStatus, status: MessageStatus,
                reason: str | None, tries: int | None = None) -> None:
        if not self.store.update_message(message.id, expected=expected, status=status, reason=reason,
                                         tries=tries):
            return
        try:
            project: Project | None = self.store.get(message.project_id)
        except ProjectNotFound:
            project = None  # removed meanwhile: the event still says what became of the message
        what = f"message {message.id} ({message.kind.value}, {len(message.body.encode())} bytes)"
        if message.checkin_id is not None:
            what += f" of check-in {message.checkin_id}"
        if status == MessageStatus.DELIVERED:
            done = (f"{what} delivered, Enter pressed {tries} time(s)"
                    if message.kind == MessageKind.TEXT else f"{what} delivered")
            self.store.append_event("message_delivered", source="daemon", project=project,
                                    message=done)
        else:
            self.store.append_event("message_failed", source="daemon", project=project,
                                    message=f"{what} failed: {reason}")
            log.warning("%s failed: %s", what, reason)

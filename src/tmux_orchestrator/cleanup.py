"""Clean-up: the one way a session goes away.

Whatever ended a project (its exit, ``tmo complete``/``fail``/``cancel``, a timeout, a marker, a
hand-written SQL change, a requeue) and whoever noticed (the daemon, the CLI, the API, reconcile),
its session is cleaned up here, in these steps, for one session or a thousand at once:

1. **claim** it in the database, with an owner (host, pid and process start) and a deadline; a
   claim is taken over only after its deadline or once its owner is known to be dead, and it keeps
   its stage, so nothing is done twice;
2. **save** the scrollback (``logs/<id>-<attempt>.scrollback.txt``): ``output_saved``, or
   ``backup_failed`` when it cannot be written, which never stops the kill;
3. **signal** the process group: SIGTERM, up to ``kill_grace`` seconds, then SIGKILL;
4. **kill** the session by exact identity (server instance, ``$id`` and name);
5. **confirm** that the session and its process group are gone;
6. **record**, in one transaction: the claim is dropped, the row's session is closed (which frees
   the slot and lets the next attempt be claimed) and the events of what happened are written: a
   kill event only for a kill that happened.

A slot is therefore free only once the old attempt's processes are really gone. A session that
cannot be confirmed gone (a process stuck in the kernel) keeps its slot; the claim is released so
the next pass tries again, and ``kill_unconfirmed`` says so once.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tmux_orchestrator.config import Settings
from tmux_orchestrator.errors import OrchestratorError, TmuxError
from tmux_orchestrator.home import replace_private
from tmux_orchestrator.processes import (
    group_alive,
    group_exists,
    is_running,
    is_same_process,
    marked_processes,
    process_start,
)
from tmux_orchestrator.project import Project
from tmux_orchestrator.store.base import Claim, EventRow, Store, session_key
from tmux_orchestrator.tmux import OrchestratorServer, SessionInfo

log = logging.getLogger(__name__)

#: Seconds to confirm that a killed session and its process group are gone.
CONFIRM_WAIT = 5.0
#: A claim's deadline: the grace, the confirmation and this margin. Past it, anyone takes over.
CLAIM_MARGIN = 15.0
#: How often the waits look again.
POLL = 0.01
#: Seconds a session whose processes all exited gets to close by itself before it is killed.
SETTLE_WAIT = 0.2



def process_owner() -> str:
    """A new claim owner in this process: ``host:pid:process start:cleaner``. Each
    :class:`Cleaner` is its own owner, so two in one process (the API beside an in-process
    daemon) never both hold one claim."""
    return f"{socket.gethostname()}:{os.getpid()}:{process_start(os.getpid())}:{secrets.token_hex(4)}"


def owner_gone(owner: str) -> bool:
    """True when the process that wrote ``owner`` is known to be dead (same host only)."""
    host, _, rest = owner.partition(":")
    pid, _, rest = rest.partition(":")
    start = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another host: only its deadline tells
    return not is_same_process(int(pid), start)


@dataclass
class Target:
    """One session to clean up.

    ``session`` is the session as listed just now (None when it is not on the server any more);
    ``instance``, ``session_id`` and ``pane_pid`` are what was recorded for it, which identify it
    when it is no longer listed and find what is left of its process group.
    """

    name: str
    project: Project | None
    reason: str
    session: SessionInfo | None = None
    attempt: int | None = None
    instance: str | None = None
    session_id: str | None = None
    pane_pid: int | None = None
    #: Event kind of the kill: ``session_killed``, or ``lingering_cleaned`` from reconcile.
    kind: str = "session_killed"
    #: It is the project's current session: closing it frees the project's slot.
    current: bool = False
    #: The pane's process group may be signalled by its id. True when the session was seen alive
    #: (or the daemon watched it): a group id is never reused while a member lives. Otherwise
    #: leftovers are found by their ``TMO_PROJECT_ID``/``TMO_HOME`` in /proc.
    trusted_group: bool = True
    #: When the attempt started (Unix time): processes that started before it are never its own.
    since: float | None = None
    # -- progress, filled in by the cleaner --------------------------------------------------
    signalled: bool = False
    escaped: list[int] = field(default_factory=list)
    killed_session: bool = False
    sigkilled: bool = False
    leftovers: int = 0
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of_project(cls, project: Project, session: SessionInfo | None, *, reason: str,
                   kind: str = "session_killed") -> Target:
        """The current session of ``project`` (``session`` as listed now, if it is)."""
        return cls(
            name=project.session_name or "", project=project, reason=reason, session=session,
            attempt=project.attempt, instance=project.server_instance, session_id=project.session_id,
            pane_pid=(session.pane_pid if session else None) or project.pane_pid, kind=kind,
            current=True, trusted_group=session is not None,
            since=project.started_at.timestamp() if project.started_at else None,
        )

    @classmethod
    def of_session(cls, session: SessionInfo, project: Project | None, *, reason: str,
                   kind: str = "session_killed") -> Target:
        """A listed session: an older attempt of ``project``, or an orphan (``project`` None)."""
        # The row's current session, not closed yet: closing it frees the row's slot. (A closed
        # row with its session still alive is lingering: the slot was freed already.)
        current = project is not None and project.session_closed_at is None and session.is_session(
            project.server_instance, project.session_id, project.session_name, project.id)
        attempt = project.attempt if current and project is not None else None
        if project is not None and not current:
            attempt = _attempt_of(session.name, project.id)
        since = float(session.created) if session.created else None  # the session's own start
        return cls(name=session.name, project=project, reason=reason, session=session, attempt=attempt,
                   instance=session.instance, session_id=session.session_id, pane_pid=session.pane_pid,
                   kind=kind, current=current, since=since)

    @property
    def key(self) -> str:
        """The session's claim key: server instance, ``$id`` and name."""
        if self.session is not None:
            return self.session.key
        return session_key(self.instance, self.session_id, self.name)

    @property
    def gone(self) -> bool:
        """Filled in: the session and its processes were confirmed gone."""
        return "gone" in self.notes


class Cleaner:
    """Cleans sessions up, exactly once whoever calls: see the module docstring."""

    def __init__(self, store: Store, server: OrchestratorServer, settings: Settings, *,
                 source: str, owner: str | None = None) -> None:
        self.store = store
        self.server = server
        self.settings = settings
        self.source = source
        self.owner = owner or process_owner()
        #: The attempts' marked processes found by the last /proc scan (:meth:`_scan`), with the
        #: time each started.
        self._marks: dict[tuple[int, int], list[tuple[int, float]]] = {}

    # -- the whole sequence --------------------------------------------------------------------
    def clean(self, targets: Sequence[Target], *, grace: float | None = None) -> list[Target]:
        """Claim, save, signal, kill, confirm and record ``targets``; returns those this call
        cleaned (confirmed gone and recorded). Targets another cleaner holds are left to it."""
        grace = self.settings.kill_grace if grace is None else grace
        held = self._claim(targets, ttl=grace + CONFIRM_WAIT + CLAIM_MARGIN)
        if not held:
            return []
        self._look(held)
        held = self._save(held)
        held = self._signal(held, grace)
        self._kill_sessions([t for t, _ in held])
        return self._confirm(held)

    def exited_and_gone(self, target: Target, *, wait: float = 0.05) -> bool:
        """For a project whose command exited by itself: True once its process group is gone and
        its session with it, within a few milliseconds. Nothing is signalled or killed, nothing
        written; False when something is left (a child that ignores the hang-up, a window the user
        opened in the session): then it needs :meth:`clean`, with its backup and its events."""
        pgid = target.pane_pid if target.trusted_group else None
        deadline = time.monotonic() + wait
        # The wrapper's last act was its FIFO line: its group is gone as soon as tmux has reaped
        # it. killpg(0) answers in microseconds; the /proc look (zombies nobody reaps, children
        # left behind) only once, at the end.
        while pgid and group_exists(pgid):
            if time.monotonic() >= deadline:
                if group_alive(pgid):
                    return False
                break
            time.sleep(0.0002)
        if pgid is None:
            self._scan()
            if self._leftovers(target):
                return False
        # tmux destroys the session once it has read the last of the pane's output (killing it
        # sooner could cut that from the log): look until it has.
        session = target.session
        known = self.server.known_instance
        if session is None or (target.instance and known and target.instance != known):
            return True
        try:
            deadline = time.monotonic() + SETTLE_WAIT
            while self.server.has(session.session_id):
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.001)
        except TmuxError:
            return False
        return True

    def stop_offline(self, targets: Sequence[Target], *, grace: float | None = None) -> None:
        """Stop ``targets`` without the database (it is out of reach): SIGTERM, the grace, SIGKILL,
        kill-session. Nothing is claimed or recorded; the caller records what it did once the
        database answers again. Only for fencing a host that lost its shared database."""
        grace = self.settings.kill_grace if grace is None else grace
        self._scan()
        for target in targets:
            target.escaped = self._leftovers(target)
            target.signalled = self._send(target, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(self._running(t) for t in targets):
            time.sleep(POLL)
        self._scan()
        for target in targets:
            if self._running(target) or self._leftovers(target):
                target.sigkilled = self._send(target, signal.SIGKILL, rescan=True)
        self._kill_sessions(list(targets))

    # -- steps ---------------------------------------------------------------------------------
    def _claim(self, targets: Sequence[Target], *, ttl: float) -> list[tuple[Target, str]]:
        claims = [Claim(t.key, t.name, t.project.id if t.project else None, t.attempt, t.current)
                  for t in targets if t.name]
        stages = self.store.claim_cleanup(claims, owner=self.owner, ttl=ttl, owner_gone=owner_gone)
        return [(t, stages[t.key]) for t in targets if t.key in stages]

    def _look(self, held: list[tuple[Target, str]]) -> None:
        """Keep a target's session only if the server lists it now with the same instance, ``$id``
        and name: capturing or killing by ``$id`` alone could hit another project's session on a
        restarted server, where tmux numbers sessions from ``$0`` again."""
        if not any(t.session is not None for t, _ in held):
            return
        try:
            listed = {s.key: s for s in self.server.list_all()}
        except TmuxError as exc:
            log.warning("cannot list sessions before a clean-up: %s", exc)
            return
        for target, _ in held:
            if target.session is not None:
                found = listed.get(target.session.key)
                # and its own @tmo_project tag names the target's project (a row's ids may have been
                # edited by hand to another project's session)
                if (found is not None and target.project is not None and found.project_id is not None
                        and found.project_id != target.project.id):
                    found = None
                target.session = found

    def _save(self, held: list[tuple[Target, str]]) -> list[tuple[Target, str]]:
        """Save the scrollback of every live session not saved yet; each saved or failed backup is
        an event written with the claim's move to ``saved``."""
        todo = [t for t, stage in held if stage == "claimed" and t.session is not None]
        saving = {id(t) for t in todo}
        texts: dict[str, str] = {}
        if todo:
            try:
                texts = self.server.capture_many([t.session.session_id for t in todo if t.session])
            except TmuxError as exc:
                log.warning("scrollbacks not captured: %s", exc)
        kept: list[tuple[Target, str]] = []
        for target, stage in held:
            if id(target) in saving:
                event = self._backup(target, texts.get(target.session.session_id) if target.session else None)
                if not self.store.advance_claim(target.key, owner=self.owner, stage="saved", event=event,
                                                source=self.source):
                    continue  # taken over meanwhile: the new owner goes on from here
                stage = "saved"
            kept.append((target, stage))
        return kept

    def _backup(self, target: Target, text: str | None) -> EventRow | None:
        """Write one scrollback; the event that says how it went (None: nothing to save)."""
        if text is None:
            return None  # the session vanished before it could be captured: its log has it all
        path = self.backup_path(target)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            replace_private(path, text)  # a planted link is replaced, never written through
        except OSError as exc:
            log.warning("scrollback of %s not saved to %s: %s", target.name, path, exc,
                        extra=_extra(target))
            return ("backup_failed", target.project, target.name, f"{path}: {exc.strerror or exc}")
        return ("output_saved", target.project, target.name, f"{path} ({len(text)} bytes)")

    def backup_path(self, target: Target) -> Path:
        """Where the scrollback of ``target`` goes: one file per project attempt."""
        if target.project is None:
            return self.settings.logs_dir / f"orphan-{target.name}.scrollback.txt"
        return self.settings.scrollback_path(target.project.id, target.attempt or target.project.attempt)

    def _signal(self, held: list[tuple[Target, str]], grace: float) -> list[tuple[Target, str]]:
        """SIGTERM every target's processes, give them ``grace`` seconds together, SIGKILL what is
        left. A target's processes are its pane's process group and whatever left the group but
        carries the attempt's ``TMO_*`` marks (looked up once here, then followed by pid)."""
        kept: list[tuple[Target, str]] = []
        self._scan()
        for target, stage in held:
            if stage != "signalled" and not self.store.advance_claim(
                    target.key, owner=self.owner, stage="signalled", event=None, source=self.source):
                continue
            kept.append((target, "signalled"))
            target.escaped = self._leftovers(target)
            # Only what this cleaner itself signals counts as a kill: a claim taken over after its
            # owner signalled may find everything already gone (killed from outside, say), and a
            # kill event is written only for a kill that happened.
            target.signalled = self._send(target, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(self._running(t) for t, _ in kept):
            time.sleep(POLL)
        self._scan()
        for target, _ in kept:
            if self._running(target) or self._leftovers(target):
                target.sigkilled = self._send(target, signal.SIGKILL, rescan=True) or target.sigkilled
        return kept

    def _send(self, target: Target, sig: int, *, rescan: bool = False) -> bool:
        """Signal what is left of the target's processes; True if anything got the signal."""
        sent = False
        if target.trusted_group:
            pgid = target.pane_pid
            if pgid and pgid > 1 and group_alive(pgid):
                try:
                    os.killpg(pgid, sig)
                    sent = True
                except ProcessLookupError:
                    pass
                except PermissionError:
                    log.warning("not allowed to signal process group %s", pgid, extra=_extra(target))
        if rescan:
            target.escaped = sorted(set(target.escaped) | set(self._leftovers(target)))
        for pid in target.escaped:
            try:
                os.kill(pid, sig)
                sent = True
            except (ProcessLookupError, PermissionError):
                pass
        target.leftovers = max(target.leftovers, len(target.escaped))
        return sent

    def _scan(self) -> None:
        """Look up every process carrying this home's ``TMO_*`` marks, once for all targets."""
        self._marks = marked_processes(self.settings.home) or {}

    def _leftovers(self, target: Target) -> list[int]:
        """Live processes carrying the attempt's ``TMO_PROJECT_ID``, ``TMO_ATTEMPT`` and ``TMO_HOME``,
        in or out of its process group (a reused group id never matches), as of the last
        :meth:`_scan`."""
        if target.project is None or not target.attempt or target.since is None:
            return []
        # A process that started before the attempt did is not the attempt's, whatever marks it
        # carries (one of yours could copy them): the second of slack is the clocks' rounding.
        return [pid for pid, started in self._marks.get((target.project.id, target.attempt), [])
                if started >= target.since - 1.0]

    def _running(self, target: Target) -> bool:
        """Cheap: the group, or a process followed by pid, still runs."""
        if target.trusted_group and group_alive(target.pane_pid):
            return True
        return any(is_running(pid) for pid in target.escaped)

    def _alive(self, target: Target) -> bool:
        """Thorough: :meth:`_running`, or any process of the attempt found by the last scan."""
        return self._running(target) or bool(self._leftovers(target))

    def _kill_sessions(self, targets: list[Target]) -> None:
        live = [t.session for t in targets if t.session is not None]
        if not live:
            return
        try:
            killed = {s.key for s in self.server.kill(live)}
        except TmuxError as exc:
            log.warning("kill-session failed: %s", exc)
            return
        for target in targets:
            if target.session is not None and target.session.key in killed:
                target.killed_session = True

    def _confirm(self, held: list[tuple[Target, str]]) -> list[Target]:
        """Wait until each session and its processes are gone; record those that are."""
        pending = [t for t, _ in held]
        done: list[Target] = []
        deadline = time.monotonic() + CONFIRM_WAIT
        while pending:
            self._scan()
            try:
                listed = {s.key for s in self.server.list_all()}
            except TmuxError as exc:
                log.warning("cannot confirm sessions gone: %s", exc)
                listed = None
            still: list[Target] = []
            for target in pending:
                # only a session this clean-up found (instance, $id, name and tag) can be "still
                # there"; one it never found is gone as far as it is concerned
                session_there = target.session is not None and target.session.key in (listed or set())
                if listed is None or session_there or self._alive(target):
                    still.append(target)
                else:
                    target.notes.append("gone")
                    self._finish(target, events=self.kill_events(target))
                    done.append(target)
            pending = still
            if not pending or time.monotonic() >= deadline:
                break
            for target in pending:  # whatever survived the first round
                if self._alive(target):
                    target.sigkilled = self._send(target, signal.SIGKILL) or target.sigkilled
            self._kill_sessions([t for t in pending if t.session is not None])
            time.sleep(0.05)
        for target in pending:
            self._unconfirmed(target)
        return done

    def kill_events(self, target: Target) -> list[EventRow]:
        """The events of what this clean-up did to ``target``: nothing unless it killed something."""
        if not (target.signalled or target.killed_session or target.sigkilled):
            return []
        how = ("SIGKILL after the grace" if target.sigkilled
               else "ended after SIGTERM" if target.signalled else "session killed")
        if target.session is None and target.leftovers:
            return [("processes_killed", target.project, target.name,
                     f"{target.reason}: {target.leftovers} leftover process(es), {how}")]
        return [(target.kind, target.project, target.name, f"{target.reason} ({how})")]

    def _finish(self, target: Target, *, events: list[EventRow]) -> None:
        close = (target.project.id, target.attempt) if target.current and target.project and target.attempt \
            else None
        self.store.finish_cleanup(target.key, close=close, events=events, source=self.source)
        if target.project is not None and target.attempt:
            remove_run_files(self.settings, target.project.id, target.attempt, current=target.current)
        if events:
            log.info("%s: session %s %s", target.kind, target.name, events[0][3], extra=_extra(target))

    _reported: set[str] = set()
    _reported_lock = threading.Lock()

    def _unconfirmed(self, target: Target) -> None:
        """The session or a process survived SIGKILL (stuck in the kernel): keep the slot, let the
        next pass try again, and say so once."""
        self.store.release_claim(target.key, owner=self.owner)
        with self._reported_lock:
            first = target.key not in self._reported
            self._reported.add(target.key)
        log.error("session %s or its processes did not go away after SIGKILL; its slot stays taken",
                  target.name, extra=_extra(target))
        if first:
            try:
                message = f"{target.reason}: still there {CONFIRM_WAIT:g}s after SIGKILL"
                self.store.append_event("kill_unconfirmed", source=self.source, project=target.project,
                                        session_name=target.name, message=message)
            except OrchestratorError as exc:
                log.warning("cannot record kill_unconfirmed: %s", exc)


def remove_run_files(settings: Settings, project_id: int, attempt: int, *, current: bool = True) -> None:
    """Remove an attempt's wrapper, started marker and exit files, and (for the project's
    ``current`` attempt) its marker file: its session is gone, so nothing of it can write them any
    more (removing them earlier raced the wrapper's own writes)."""
    paths = [settings.run_dir / f"{project_id}-{attempt}.{suffix}" for suffix in ("sh", "started", "exit")]
    if current:
        paths.append(settings.marker_path(project_id))
    for path in paths:
        try:
            path.unlink()  # a link is removed, never followed
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove run file %s of project %s: %s", path.name, project_id, exc)


def _attempt_of(name: str, project_id: int) -> int | None:
    """The attempt a session name says (``<slug>-<id>`` is 1, ``<slug>-<id>-r<n>`` is n)."""
    base, _, suffix = name.rpartition("-r")
    if base.endswith(f"-{project_id}") and suffix.isdigit():
        return int(suffix)
    return 1 if name.endswith(f"-{project_id}") else None


def _extra(target: Target) -> dict[str, object]:
    return {"project_id": target.project.id if target.project else None, "session_name": target.name}


class CleanupQueue:
    """Runs clean-ups on worker threads, so waiting out a grace never delays a hand-off.

    Targets queued while the workers are busy are cleaned together by the next free worker, in one
    batch (one capture chain, one grace for all, one kill chain); a target already being cleaned is
    not queued twice. Workers start on demand, up to ``max_workers``; ``on_done`` is called after
    each batch (the daemon wakes its loop to fill the freed slots).
    """

    def __init__(self, cleaner: Cleaner, on_done: Callable[[], None], *, max_workers: int = 8,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self.cleaner = cleaner
        self._on_done = on_done
        self._on_error = on_error or (lambda exc: log.error("clean-up failed: %s", exc, exc_info=exc))
        self._max = max_workers
        self._cond = threading.Condition()
        self._pending: list[tuple[Target, float | None]] = []
        self._keys: set[str] = set()
        self._projects: dict[int, int] = {}
        self._workers = 0
        self._idle = 0

    def submit(self, targets: Sequence[Target], *, grace: float | None = None) -> None:
        """Clean ``targets`` soon (those already queued or being cleaned are skipped)."""
        with self._cond:
            for target in targets:
                if target.key in self._keys:
                    continue
                self._keys.add(target.key)
                if target.project is not None:
                    self._projects[target.project.id] = self._projects.get(target.project.id, 0) + 1
                self._pending.append((target, grace))
            if not self._pending:
                return
            if self._idle:
                self._cond.notify()
            elif self._workers < self._max:
                self._workers += 1
                threading.Thread(target=self._work, name=f"tmo-cleanup-{self._workers}", daemon=True).start()

    def busy(self, key: str) -> bool:
        """True while the session with ``key`` is queued or being cleaned."""
        with self._cond:
            return key in self._keys

    def busy_project(self, project_id: int) -> bool:
        """True while a session of ``project_id`` is queued or being cleaned."""
        with self._cond:
            return project_id in self._projects

    def idle(self) -> bool:
        """True when nothing is queued or being cleaned."""
        with self._cond:
            return not self._keys

    def in_flight(self) -> int:
        """How many sessions are queued or being cleaned."""
        with self._cond:
            return len(self._keys)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._idle += 1
                    self._cond.wait()
                    self._idle -= 1
                grace = self._pending[0][1]
                batch = [t for t, g in self._pending if g == grace][:500]
                chosen = {id(t) for t in batch}
                self._pending = [(t, g) for t, g in self._pending if id(t) not in chosen]
            try:
                self.cleaner.clean(batch, grace=grace)
            except BaseException as exc:  # noqa: BLE001 - a worker must survive any batch
                self._on_error(exc)
            finally:
                with self._cond:
                    for target in batch:
                        self._keys.discard(target.key)
                        if target.project is not None:
                            left = self._projects.get(target.project.id, 1) - 1
                            if left:
                                self._projects[target.project.id] = left
                            else:
                                self._projects.pop(target.project.id, None)
                self._on_done()

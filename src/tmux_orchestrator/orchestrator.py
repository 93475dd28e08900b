"""The public API: :class:`Orchestrator` (alias ``TmuxOrchestratorScheduler``).

The CLI and the daemon call this API; its method names keep the original scheduler's vocabulary
(``mark_project_complete``, ``get_next_project_atomic``, ``tmux_manager``, ``_find_lingering_sessions``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tmux_orchestrator.checkin import Checkin
from tmux_orchestrator.config import Settings, load_settings
from tmux_orchestrator.durations import format_duration_exact
from tmux_orchestrator.environment import CapturedEnvironment, capture_environment, is_env_name
from tmux_orchestrator.errors import (
    InvalidBatch,
    InvalidTransition,
    NotRunning,
    OrchestratorError,
    ProjectNotFound,
    TmuxError,
    UsageError,
)
from tmux_orchestrator.inputs import check_project, check_text
from tmux_orchestrator.message import FINAL, Message, MessageKind, MessageStatus
from tmux_orchestrator.project import Outcome, Project, ProjectStatus
from tmux_orchestrator.retries import MAX_DURATION, MAX_RETRY_DELAY, RETRYABLE, requeue_after_failure
from tmux_orchestrator.store import NewProject, open_store
from tmux_orchestrator.store.base import Host

if TYPE_CHECKING:
    # Loaded on first use, not at import: `tmo add` and the other commands that only touch the
    # database never need the tmux, reconcile and clean-up layers (several ms of every start).
    from tmux_orchestrator.cleanup import Cleaner, Target
    from tmux_orchestrator.reconcile import SessionRow
    from tmux_orchestrator.tmux import OrchestratorServer, SessionInfo, Tmux, TmuxSessionManager

log = logging.getLogger(__name__)

__all__ = ["MAX_RETRY_DELAY", "RETRYABLE", "Orchestrator", "TmuxOrchestratorScheduler"]


#: The keyword arguments of :meth:`Orchestrator.enqueue`, which ``enqueue_many`` items may hold.
_ENQUEUE_KEYS = frozenset({
    "command", "name", "priority", "project_path", "spec_path", "env", "max_retries", "retry_delay",
    "timeout", "idle_timeout", "host", "requires",
})


class Orchestrator:
    """A queue of projects, each run in its own tmux session on this home's dedicated server."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        home: Path | str | None = None,
        database_url: str | None = None,
        source: str | None = None,
        create: bool = True,
    ) -> None:
        self.settings = settings or load_settings(home, database_url)
        # create=False (read and diagnostic commands): make nothing, fail on a missing database.
        if create:
            self.settings.ensure_dirs()
        else:
            self.settings.check_dirs()
        self.store = open_store(self.settings, create=create)
        #: Recorded as the source of every change made through this object: ``api`` by default,
        #: ``hook`` inside a hook (``TMO_HOOK=1``), so hooks never fire on their own changes.
        self.source = source or ("hook" if os.environ.get("TMO_HOOK") == "1" else "api")
        self.host = self.settings.host

    @cached_property
    def tmux(self) -> Tmux:
        """The tmux client of this home's own server (its socket is checked before every call)."""
        from tmux_orchestrator.tmux import Tmux

        return Tmux(self.settings.socket_path, owner_mark=self.settings.owner_tag,
                    private_dir=self.settings.socket_dir_private)

    @cached_property
    def server(self) -> OrchestratorServer:
        """This home's tmux server, seen through our owner tag."""
        from tmux_orchestrator.tmux import OrchestratorServer

        return OrchestratorServer(self.tmux, self.settings.owner_tag)

    @cached_property
    def tmux_manager(self) -> TmuxSessionManager:
        """Session operations restricted to sessions this orchestrator owns."""
        from tmux_orchestrator.tmux import TmuxSessionManager

        return TmuxSessionManager(self.server, self._stop_sessions)

    @cached_property
    def cleaner(self) -> Cleaner:
        """The one clean-up engine (:mod:`tmux_orchestrator.cleanup`)."""
        from tmux_orchestrator.cleanup import Cleaner

        return Cleaner(self.store, self.server, self.settings, source=self.source)

    def close(self) -> None:
        """Release the database connection."""
        self.store.close()

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- queue -------------------------------------------------------------------------------
    def enqueue(
        self,
        command: Sequence[str],
        *,
        name: str = "",
        priority: int = 0,
        project_path: str | Path | None = None,
        spec_path: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        max_retries: int = 0,
        retry_delay: float = 0.0,
        timeout: float | None = None,
        idle_timeout: float | None = None,
        host: str | None = None,
        requires: Sequence[str] = (),
        capture_env: bool | Mapping[str, str] = False,
    ) -> Project:
        """Queue a project. Validates everything first: bad input changes nothing.

        ``host`` pins it to one host (only that host's daemon runs it); ``requires`` names labels a
        host must all have (``TMO_HOST_LABELS``) to run it.

        The project runs with the daemon's base environment plus ``env``. With ``capture_env=True``
        it also gets this process's environment, as ``tmo add`` does (``env`` wins; see
        :meth:`captured_environment`); a mapping captures that environment instead. The API never
        captures unless asked: a program that embeds it rarely means to hand its own environment on.
        """
        project = self.store.enqueue(
            self.new_project(
                command, name=name, priority=priority, project_path=project_path, spec_path=spec_path,
                env=self._with_captured(env, capture_env), max_retries=max_retries,
                retry_delay=retry_delay, timeout=timeout, idle_timeout=idle_timeout, host=host,
                requires=requires,
            ),
            source=self.source,
        )
        log.info("queued project %s (%s)", project.id, project.name,
                 extra={"project_id": project.id, "session_name": None})
        self.poke_daemon()
        return project

    def enqueue_many(self, projects: Sequence[Mapping[str, Any]], *,
                     capture_env: bool | Mapping[str, str] = False) -> list[Project]:
        """Queue many projects in one transaction: all of them, or (on any invalid one) none.

        Each item holds the keyword arguments of :meth:`enqueue` (``command`` required; ``name``,
        ``priority``, ``project_path``, ``spec_path``, ``env``, ``max_retries``, ``retry_delay``,
        ``timeout``, ``idle_timeout`` optional). Every item is validated before anything is written;
        if any is invalid, :class:`InvalidBatch` (a :class:`UsageError`) lists every invalid item
        with its position (1-based) and nothing is queued. Returns the
        queued projects in the order given. ``tmo add --from-file`` uses this. ``capture_env`` is
        that of :meth:`enqueue`, for every item (captured once).
        """
        captured = self._with_captured({}, capture_env)
        news: list[NewProject] = []
        errors: list[tuple[int, str]] = []
        for number, item in enumerate(projects, start=1):
            unknown = set(item) - _ENQUEUE_KEYS
            if unknown:
                errors.append((number, f"unknown field(s) {', '.join(sorted(unknown))}"))
            elif "command" not in item:
                errors.append((number, "missing command"))
            else:
                try:
                    if captured:
                        item = {**item, "env": {**captured, **dict(item.get("env") or {})}}
                    news.append(self.new_project(**item))
                except (UsageError, TypeError, ValueError) as exc:
                    errors.append((number, str(exc)))
        if errors:
            raise InvalidBatch(errors)
        queued = self.store.enqueue_many(news, source=self.source)
        if queued:
            log.info("queued %s projects (ids %s-%s)", len(queued), queued[0].id, queued[-1].id,
                     extra={"project_id": None, "session_name": None})
            self.poke_daemon()
        return queued

    def captured_environment(self, environ: Mapping[str, str] | None = None) -> CapturedEnvironment:
        """``environ`` (default: this process's environment) as a project queued from it gets it:
        without the variables that never travel (``TMUX``, ``TERM``, ``PWD``, ``TMO_*`` ...: see
        ``environment.NOT_CAPTURED``), those ``env_exclude`` in config.toml names, and those that
        cannot be passed on (named in ``skipped``)."""
        return capture_environment(environ, self.settings.env_exclude)

    def _with_captured(self, env: Mapping[str, str] | None,
                       capture_env: bool | Mapping[str, str]) -> Mapping[str, str] | None:
        """``env`` over the captured environment, when ``capture_env`` asks for one."""
        if capture_env is False:
            return env
        captured = self.captured_environment(None if capture_env is True else capture_env)
        warning = captured.warning()
        if warning:
            log.warning("%s", warning)
        return {**captured.env, **dict(env or {})}

    def new_project(
        self,
        command: Sequence[str],
        *,
        name: str = "",
        priority: int = 0,
        project_path: str | Path | None = None,
        spec_path: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        max_retries: int = 0,
        retry_delay: float = 0.0,
        timeout: float | None = None,
        idle_timeout: float | None = None,
        host: str | None = None,
        requires: Sequence[str] = (),
    ) -> NewProject:
        """Validate one project's fields (raises :class:`UsageError`) and return the row to insert."""
        if isinstance(command, (str, bytes)):
            raise UsageError("the command must be a list of words (argv), e.g. [\"make\", \"test\"]")
        argv = [str(a) for a in command]
        if not argv or not argv[0].strip():
            raise UsageError("missing command: give the program and its arguments, e.g. [\"make\", \"test\"]")
        check_project(argv, name=str(name), env={str(k): str(v) for k, v in dict(env or {}).items()},
                      project_path=None if project_path is None else str(project_path),
                      spec_path=None if spec_path is None else str(spec_path))
        directory = Path(project_path).expanduser() if project_path else Path.cwd()
        check_text(str(directory), "the directory")  # the current one may be hostile too
        if not directory.exists():
            raise UsageError(f"directory {directory} does not exist")
        if not directory.is_dir():
            raise UsageError(f"{directory} is not a directory")
        spec: Path | None = None
        if spec_path:
            spec = Path(spec_path).expanduser()
            if not spec.exists():
                raise UsageError(f"spec file {spec} does not exist")
            if not spec.is_file():
                raise UsageError(f"{spec} is not a file")
            spec = spec.resolve()
        for key, text in dict(env or {}).items():
            if not isinstance(key, str) or not is_env_name(key):
                raise UsageError(
                    f"invalid environment variable name {key!r}; use K=V with K in [A-Za-z_][A-Za-z0-9_]*"
                )
            if not isinstance(text, str):
                raise UsageError(f"environment variable {key}: the value must be a string")
        if isinstance(priority, bool) or not -(2**31) <= int(priority) < 2**31:
            raise UsageError("priority must be between -2147483648 and 2147483647")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise UsageError("max_retries must be a whole number, 0 or more")
        for label, value in (("timeout", timeout), ("idle timeout", idle_timeout)):
            if value is not None and not value > 0:  # `not >`: NaN is refused too
                raise UsageError(f"{label} must be positive")
            if value is not None and value > MAX_DURATION:
                raise UsageError(f"{label} must be at most {MAX_DURATION // 86400:.0f} days")
        if not isinstance(retry_delay, (int, float)) or not retry_delay >= 0 or retry_delay == float("inf"):
            raise UsageError("retry delay must be a finite number of seconds, 0 or more")
        if retry_delay > MAX_DURATION:
            raise UsageError(f"retry delay must be at most {MAX_DURATION // 86400:.0f} days")
        if host is not None and not is_label(host):
            raise UsageError(f"host name {host!r} is not valid; use letters, digits, '.', '_' and '-'")
        if isinstance(requires, str):
            requires = [requires]
        for label in requires:
            if not is_label(label):
                raise UsageError(f"label {label!r} is not valid; use letters, digits, '.', '_' and '-'")
        return NewProject(
            command=argv,
            name=name or (spec.stem if spec else Path(argv[0]).name),
            priority=int(priority),
            project_path=str(directory.resolve()),
            spec_path=str(spec) if spec else None,
            env=dict(env or {}),
            max_retries=max_retries,
            retry_delay=retry_delay,
            timeout=timeout,
            idle_timeout=idle_timeout,
            pinned_host=host,
            required_labels=sorted(set(requires)),
        )

    def get(self, project_id: int) -> Project:
        """The project ``project_id``; raises ``ProjectNotFound``."""
        return self.store.get(project_id)

    def list_projects(self, statuses: Sequence[ProjectStatus] | None = None) -> list[Project]:
        """Projects in queue order."""
        return self.store.list_projects(list(statuses) if statuses else None)

    def get_next_project_atomic(self) -> Project | None:
        """Claim the next queued project (status becomes ``processing``); None if none is due.

        Lingering sessions are cleaned first (pre-dequeue cleanup), and the daemon's concurrency
        limit is respected: a slot counts as taken until the session of the project that held it
        is confirmed gone. The caller is responsible for starting the claimed project.
        """
        self.cleanup_lingering()
        limit = self.store.concurrency()
        return self.store.claim_next(host=self.host, max_processing=limit, runner=self.settings.runner)

    # -- ending projects ---------------------------------------------------------------------
    def mark_project_complete(
        self,
        project_id: int,
        success: bool = True,
        *,
        reason: str | None = None,
        outcome: Outcome = Outcome.MANUAL,
    ) -> Project:
        """End a project and clean up its session. Safe to call twice.

        A running project becomes ``completed`` (or ``failed``), which writes its event. A project
        that is already ended, for instance by ``UPDATE project_queue SET status='completed'``, keeps
        its status; its session, if still alive, is saved and killed, with its events.
        """
        project = self.store.get(project_id)
        if project.status == ProjectStatus.PROCESSING:
            try:
                project = self.store.transition(
                    project_id,
                    ProjectStatus.COMPLETED if success else ProjectStatus.FAILED,
                    source=self.source,
                    outcome=outcome,
                    error_message=None if success else (reason or "marked failed"),
                    expected=ProjectStatus.PROCESSING,
                )
            except InvalidTransition:
                project = self.store.get(project_id)  # ended meanwhile by someone else
        elif project.status == ProjectStatus.QUEUED:
            raise InvalidTransition(
                project_id, "queued", "completed" if success else "failed (cancel a queued project)"
            )
        self.cleanup_session(project, reason="completed" if success else "failed")
        self.poke_daemon()
        return self.store.get(project_id)

    def fail(self, project_id: int, reason: str | None = None) -> Project:
        """End a running project as failed (``tmo fail``)."""
        return self.mark_project_complete(project_id, success=False, reason=reason)

    def cancel(self, project_id: int) -> Project:
        """Cancel a queued or running project; a running one's session is saved and killed."""
        result = self.cancel_many([project_id])[0][1]
        if isinstance(result, OrchestratorError):
            raise result
        return result

    def cancel_many(self, project_ids: Sequence[int]) -> list[tuple[int, Project | OrchestratorError]]:
        """Cancel many projects; running ones are saved and killed together in a few tmux calls.

        Returns, per id, the cancelled project or the error that kept it from being cancelled.
        """
        results: list[tuple[int, Project | OrchestratorError]] = []
        ended: list[Project] = []
        for project_id in project_ids:
            try:
                project = self.store.get(project_id)
                if project.status not in (ProjectStatus.QUEUED, ProjectStatus.PROCESSING):
                    raise InvalidTransition(project_id, project.status.value, "cancelled")
                project = self.store.transition(
                    project_id, ProjectStatus.CANCELLED, source=self.source,
                    outcome=Outcome.CANCELLED, error_message="cancelled",
                )
            except OrchestratorError as exc:
                results.append((project_id, exc))
                continue
            results.append((project_id, project))
            if project.session_name and project.session_closed_at is None:
                ended.append(project)
        if ended:
            self.clean_projects(ended, reason="cancelled")
        self.poke_daemon()
        return results

    def retry(self, project_id: int) -> Project:
        """Queue an ended project again (``tmo retry``); counts as a retry.

        Its next attempt starts once the session of the last one is confirmed gone.
        """
        project = self.store.get(project_id)
        if not project.is_terminal:
            raise InvalidTransition(
                project_id, project.status.value, "queued (only ended projects can be retried)"
            )
        self.cleanup_session(project, reason="retried")
        project = self.store.transition(project_id, ProjectStatus.QUEUED, source=self.source,
                                        count_retry=True)
        self.poke_daemon()
        return project

    def requeue_after_failure(self, project: Project) -> Project:
        """Apply ``project``'s retry policy after an automatic failure; returns the new state."""
        return requeue_after_failure(self.store, project, source=self.source)

    def remove(self, project_id: int) -> Project:
        """Delete an ended or queued project from the queue (its events and logs stay)."""
        project = self.store.get(project_id)
        if project.status == ProjectStatus.PROCESSING:
            raise InvalidTransition(project_id, "processing", "removed (cancel it first)")
        self.cleanup_session(project, reason="removed")
        return self.store.remove(project_id, source=self.source)

    # -- sessions ----------------------------------------------------------------------------
    def session_of(self, project: Project) -> SessionInfo | None:
        """The live owned session of ``project``'s current attempt, if any: the same server
        instance, ``$id`` and name (tmux reuses ``$id``s after a restart)."""
        if not project.session_name:
            return None
        from tmux_orchestrator.reconcile import find_session

        return find_session(project, self.server.list_owned())

    def cleanup_session(self, project: Project, *, reason: str, grace: float | None = None) -> bool:
        """Save the output of ``project``'s session, then stop and kill it: exactly once, whoever
        calls. Returns True if this call cleaned it up (False: nothing to do, or someone else is)."""
        if not project.session_name or project.session_closed_at is not None:
            return False
        return bool(self.clean_projects([project], reason=reason, grace=grace))

    def clean_projects(self, projects: Sequence[Project], *, reason: str,
                       grace: float | None = None) -> list[Target]:
        """Clean up the current sessions of ``projects`` with the one engine; returns what this
        call cleaned. Sessions run by another daemon (another home or host) are left to it, as
        are sessions not recorded yet (the daemon creating them kills them itself)."""
        from tmux_orchestrator.cleanup import Target
        from tmux_orchestrator.reconcile import find_session, is_ours

        mine = [p for p in projects if p.session_name and is_ours(p, self.settings)]
        if not mine:
            return []
        try:
            owned = self.server.list_owned()
        except TmuxError as exc:
            log.warning("cannot list sessions (%s); the daemon's reconcile will clean up", exc)
            return []
        targets: list[Target] = []
        for project in mine:
            session = find_session(project, owned)
            if session is None and project.session_id is None:
                continue  # never recorded: its launcher (or the next daemon start) settles it
            target = Target.of_project(project, session, reason=reason)
            targets.append(target)
        if not targets:
            return []
        if any(t.pane_pid and _in_session_of(t.pane_pid) for t in targets):
            self._clean_detached(targets, reason)
            return []
        return self.cleaner.clean(targets, grace=grace)

    def _clean_detached(self, targets: Sequence[Target], reason: str) -> None:
        """Clean up from a fresh process in a session of its own.

        The caller runs inside a session it is about to stop (an agent's own ``tmo complete``):
        the SIGTERM meant for the project would cut its clean-up short. A new process, not a fork
        (a fork would carry this process's open SQLite connection, which SQLite forbids), does it;
        this one waits for it, if it lives that long.
        """
        env = {k: v for k, v in os.environ.items()
               if k not in ("TMO_PROJECT_ID", "TMO_ATTEMPT", "TMO_DONE_FILE", "TMUX", "TMUX_PANE")}
        env["TMO_DATABASE_URL"] = self.settings.database_url  # in the environment: argv shows in `ps`
        argv = [sys.executable, "-m", "tmux_orchestrator", "--home", str(self.settings.home),
                "_cleanup", "--reason", reason,
                *[str(t.project.id) for t in targets if t.project is not None]]
        child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        child.wait()

    def kill_sessions_batch(
        self, rows: Sequence[SessionRow], *, event: str | None = None, grace: float = 0.5
    ) -> list[SessionInfo]:
        """Save and kill many owned sessions together (``tmo cleanup``); returns those this call
        cleaned up. Each gets ``output_saved`` and ``event`` (default ``lingering_cleaned`` for a
        project's session, ``session_killed`` for an orphan)."""
        from tmux_orchestrator.cleanup import Target

        targets = [
            Target.of_session(r.session, r.project, reason=r.reason, kind=event or (
                "lingering_cleaned" if r.project is not None else "session_killed"))
            for r in rows if r.session.owner == self.server.owner_tag
        ]
        cleaned = self.cleaner.clean(targets, grace=grace)
        return [t.session for t in cleaned if t.session is not None]

    def _stop_sessions(self, sessions: list[SessionInfo]) -> list[SessionInfo]:
        """``tmux_manager.kill_session``: the one engine, with each session's project if it has one."""
        from tmux_orchestrator.cleanup import Target
        from tmux_orchestrator.reconcile import classify

        rows = {r.session.key: r for r in classify(sessions, self.store)}
        targets = [Target.of_session(s, rows[s.key].project if s.key in rows else None,
                                     reason="killed through tmux_manager") for s in sessions]
        return [t.session for t in self.cleaner.clean(targets) if t.session is not None]

    def _find_lingering_sessions(self, active_sessions: Sequence[str]) -> list[str]:
        """Names in ``active_sessions`` that belong to projects which are no longer running.

        A session is lingering when its project has ended (or was requeued), or when it belongs to
        an earlier attempt of its project. Sessions with no project at all are orphans, not
        lingering (see :func:`tmux_orchestrator.reconcile.classify`).
        """
        from tmux_orchestrator.reconcile import classify

        wanted = set(active_sessions)
        return [r.session.name for r in classify(self.server.list_owned(), self.store)
                if r.state == "lingering" and r.session.name in wanted]

    def cleanup_lingering(self) -> list[str]:
        """Kill lingering sessions now (``tmo cleanup`` and pre-dequeue cleanup)."""
        from tmux_orchestrator.cleanup import Target
        from tmux_orchestrator.reconcile import classify

        rows = [r for r in classify(self.server.list_owned(), self.store) if r.state == "lingering"]
        if not rows:
            return []
        targets = [Target.of_session(r.session, r.project, reason=f"lingering ({r.reason})",
                                     kind="lingering_cleaned") for r in rows]
        return [t.name for t in self.cleaner.clean(targets)]

    # -- daemon ---------------------------------------------------------------------------
    def pause(self, host: str | None = None) -> None:
        """Stop claiming projects (running ones go on), on every host or only on ``host``;
        survives daemon restarts."""
        self._set_paused(True, host)

    def resume(self, host: str | None = None) -> None:
        """Claim projects again after :meth:`pause` (of the queue, or of ``host``)."""
        self._set_paused(False, host)

    def _set_paused(self, paused: bool, host: str | None) -> None:
        if host is None:
            self.store.set_setting("paused", "1" if paused else "0")
        else:
            if host not in {h.name for h in self.store.hosts()}:
                raise UsageError(f"no host named {host!r} (see `tmo hosts`)")
            self.store.set_host(host, paused=paused)
        self.store.append_event("queue_paused" if paused else "queue_resumed", source=self.source,
                                message=f"host {host}" if host else None)
        self.poke_daemon()

    def requeue(self, project_id: int) -> Project:
        """Stop a running project and queue it again (``tmo requeue``): its next attempt starts
        once this one's session is gone, on whichever host claims it. Not a retry."""
        project = self.store.get(project_id)
        if project.status != ProjectStatus.PROCESSING:
            raise InvalidTransition(project_id, project.status.value, "requeued (only a running project)")
        project = self.store.transition(project_id, ProjectStatus.QUEUED, source=self.source,
                                        expected=ProjectStatus.PROCESSING)
        self.cleanup_session(project, reason="requeued")
        self.poke_daemon()
        return self.store.get(project_id)

    # -- talking to a running project ---------------------------------------------------------
    def send(self, project_id: int, text: str | None = None, *, keys: Sequence[str] = (),
             when_waiting: bool = False) -> Message:
        """Queue ``text`` (pasted, then submitted with Enter) or ``keys`` (tmux key names such as
        ``C-c``) for the running project ``project_id``; the daemon running it delivers it exactly
        once (:mod:`~tmux_orchestrator.sending`), with ``when_waiting`` only once its agent is
        ``waiting`` or ``idle``. Raises :class:`NotRunning` if it does not run."""
        if (text is None) == (not keys):
            raise UsageError("give either a text or --keys KEY..., not both or neither")
        if text is not None:
            if not text:
                raise UsageError("the text is empty; give the text to send")
            if "\0" in text:
                raise UsageError("the text contains a NUL character; remove it")
            kind, body = MessageKind.TEXT, text
        else:
            for key in keys:
                if not key or not key.isprintable() or " " in key:
                    raise UsageError(f"{key!r} is not a tmux key name; give names such as C-c, "
                                     "Enter, Escape, Up")
            kind, body = MessageKind.KEYS, json.dumps(list(keys))
        project = self._running_project(project_id, "send to a running project")
        message = self.store.add_message(project_id, project.attempt, kind, body,
                                         when_waiting=when_waiting)
        self.poke_daemon()
        return message

    def _running_project(self, project_id: int, hint: str) -> Project:
        project = self.store.get(project_id)
        if project.status != ProjectStatus.PROCESSING:
            raise NotRunning(f"project {project_id} is not running (it is {project.status.value}); "
                             f"{hint}")
        return project

    def add_checkin(self, project_id: int, text: str, *, every: float) -> Checkin:
        """Send ``text`` to the running project ``project_id`` every ``every`` seconds, each time
        only once its agent is ``waiting`` or ``idle`` (:mod:`~tmux_orchestrator.checkin`); it ends
        with the project's run. Raises :class:`NotRunning` if it does not run."""
        if not text:
            raise UsageError("the check-in text is empty; give the text to send")
        if "\0" in text:
            raise UsageError("the text contains a NUL character; remove it")
        if not 0 < every <= MAX_DURATION:
            raise UsageError("--every must be more than 0 and at most 10 years, e.g. 30m")
        project = self._running_project(project_id, "add check-ins to a running project")
        checkin = self.store.add_checkin(project_id, project.attempt, every, text)
        self.store.append_event("checkin_added", source=self.source, project=project,
                                message=f"check-in {checkin.id} every {format_duration_exact(every)}")
        self.poke_daemon()
        return checkin

    def checkins(self) -> list[Checkin]:
        """Every check-in of a running project, oldest first."""
        return self.store.checkins()

    def remove_checkin(self, checkin_id: int) -> Checkin:
        """Delete check-in ``checkin_id`` (a message of it already queued is still delivered)."""
        checkin = self.store.remove_checkin(checkin_id)
        if checkin is None:
            raise UsageError(f"no check-in {checkin_id}; see tmo checkin --list")
        try:
            project: Project | None = self.store.get(checkin.project_id)
        except ProjectNotFound:
            project = None
        self.store.append_event("checkin_removed", source=self.source, project=project,
                                message=f"check-in {checkin.id} removed")
        return checkin

    def message(self, message_id: int) -> Message:
        """The message ``message_id`` (:meth:`send`)."""
        message = self.store.get_message(message_id)
        if message is None:
            raise UsageError(f"no message {message_id}")
        return message

    def wait_message(self, message_id: int, *, timeout: float | None = None) -> Message:
        """Wait until message ``message_id`` is delivered or failed; returns it as it is then (still
        ``queued``/``delivering`` when ``timeout`` ran out). A message not delivered when its
        project's attempt has ended is failed here: no daemon will deliver it any more."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            message = self.message(message_id)
            if message.status in FINAL:
                return message
            project = self.store.get(message.project_id)
            if project.status != ProjectStatus.PROCESSING or project.attempt != message.attempt:
                self.store.update_message(
                    message_id, expected=message.status, status=MessageStatus.FAILED,
                    reason=f"attempt {message.attempt} of project {project.id} ended before it was "
                           "delivered")
                continue
            if deadline is not None and time.monotonic() >= deadline:
                return message
            time.sleep(0.05)

    def peek(self, project_id: int, *, lines: int | None = None) -> str:
        """The running project's pane as plain text now: its screen, or its last ``lines`` lines."""
        project = self.store.get(project_id)
        if project.status != ProjectStatus.PROCESSING:
            raise NotRunning(f"project {project_id} is not running (it is {project.status.value}); "
                             f"its saved output: tmo logs {project_id}")
        from tmux_orchestrator.reconcile import is_ours

        if not is_ours(project, self.settings):
            raise NotRunning(f"project {project_id} runs on host {project.host}; run tmo peek there")
        session = self.session_of(project)
        if session is None:
            raise NotRunning(f"project {project_id} has no live session (it is starting or ending); "
                             "try again")
        return self.server.screen(self.server.pane_of(session.session_id), lines=lines)

    def hosts(self) -> list[Host]:
        """Every host of the queue (``tmo hosts``)."""
        return self.store.hosts()

    def is_paused(self) -> bool:
        """True while the queue is paused."""
        return self.store.get_setting("paused", "0") == "1"

    def poke_daemon(self) -> None:
        """Wake the daemon at once (it would notice the change within ``db_poll_interval``)."""
        fifo = self.settings.fifo_path
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError:
            return  # no daemon listening (ENXIO) or no FIFO yet
        try:
            os.write(fd, b"poke\n")
        except OSError:
            pass
        finally:
            os.close(fd)


def is_label(text: str) -> bool:
    """True for a host name or label: ``[A-Za-z0-9._-]``, 1 to 64 characters."""
    return bool(_LABEL.fullmatch(text))


_LABEL = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _in_session_of(pane_pid: int) -> bool:
    """True if this process belongs to the pane's process session or group (runs inside it)."""
    try:
        return os.getsid(0) == pane_pid or os.getpgid(0) == pane_pid
    except OSError:
        return False


#: The original scheduler's name, kept for its users.
TmuxOrchestratorScheduler = Orchestrator

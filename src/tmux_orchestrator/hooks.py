"""Hooks: commands run on chosen events, given the event as JSON on stdin and ``TMO_EVENT_*`` variables.

A hook is a ``[[hooks]]`` table of ``$TMO_HOME/config.toml``::

    [[hooks]]
    name = "notify"                       # unique; names its cursor
    on = ["completed", "failed"]          # event kinds, or ["*"]
    command = "notify-send \\"tmo\\" \\"$TMO_EVENT_PROJECT_NAME $TMO_EVENT_KIND\\""  # /bin/sh -c
    # command = ["/usr/local/bin/on-tmo-event", "--verbose"]        # or an argv, no shell
    projects = [12]                       # optional: only these project ids ...
    project_names = ["build-*"]           # ... or projects whose name matches one of these globs
    timeout = "30s"                       # then its process group is killed
    env = { CHANNEL = "ops" }             # added to its environment
    pass_env = ["MATRIX_TOKEN"]           # variables of the daemon's environment it also gets
    max_attempts = 1                      # runs per event before it counts as failed
    max_runs = 20                         # circuit breaker: runs per project ...
    max_runs_window = "10m"               # ... within this window

This module holds what every delivery channel shares (:class:`Route`, the config readers,
:func:`summarize`) and what is special to hooks (:class:`HookSpec`, :func:`run_hook`,
:class:`Breaker`). The threads that run them live in :mod:`tmux_orchestrator.dispatch`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import signal
import string
import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tmux_orchestrator.durations import parse_duration
from tmux_orchestrator.environment import base_environment
from tmux_orchestrator.errors import ConfigError
from tmux_orchestrator.home import user_umask
from tmux_orchestrator.kinds import DELIVERY_KINDS as _DELIVERY_KINDS
from tmux_orchestrator.kinds import unknown_kind
from tmux_orchestrator.redact import without_password
from tmux_orchestrator.store.base import Event

#: Kinds the dispatcher itself records. Hooks never run on them; a failure to deliver one of them
#: to a webhook or e-mail is logged but not recorded again, so failures cannot feed on themselves.
DELIVERY_KINDS = frozenset(_DELIVERY_KINDS)

#: ``TMO_EVENT_<NAME>`` variables a hook gets, one per event field.
EVENT_FIELDS = (
    "id", "kind", "project_id", "project_name", "old_status", "new_status", "outcome", "exit_code",
    "source", "session_name", "message", "at",
)


# -- config readers shared by hooks, webhooks and e-mails -------------------------------------------
class TableReader:
    """Reads one TOML table (``[[hooks]]`` entry, ``[smtp]``, ...) with clear errors."""

    def __init__(self, raw: object, where: str, known: set[str]) -> None:
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where} must be a table, not {type(raw).__name__}")
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(
                f"unknown key {unknown[0]!r} in {where}; known keys: {', '.join(sorted(known))}"
            )
        self.raw: Mapping[str, Any] = raw
        self.where = where

    def error(self, key: str, expected: str) -> ConfigError:
        """A ConfigError naming the key, the table and what was expected."""
        return ConfigError(f"{key} in {self.where} must be {expected}, not {self.raw.get(key)!r}")

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        """A string value."""
        value = self.raw.get(key)
        if value is None:
            if required:
                raise ConfigError(f"{self.where} needs {key} = \"...\"")
            return default
        if not isinstance(value, str) or (required and not value.strip()):
            raise self.error(key, "a non-empty string" if required else "a string")
        return value

    def number(self, key: str, default: int, *, minimum: int = 0) -> int:
        """An integer value of at least ``minimum``."""
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(key, f"an integer >= {minimum}")
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        """A boolean value."""
        value = self.raw.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, "true or false")
        return value

    def duration(self, key: str, default: float) -> float:
        """A duration (``30``, ``"30s"``, ``"5m"``) in seconds, more than zero."""
        value = self.raw.get(key)
        if value is None:
            return default
        try:
            seconds = float(value) if isinstance(value, int | float) and not isinstance(
                value, bool) else parse_duration(str(value))
        except ValueError as exc:
            raise ConfigError(f"{key} in {self.where}: {exc}") from exc
        if seconds <= 0:
            raise self.error(key, "a duration above zero")
        return seconds

    def strings(self, key: str, *, required: bool = False) -> list[str]:
        """A list of strings (a single string counts as a list of one)."""
        value = self.raw.get(key)
        if value is None:
            if required:
                raise ConfigError(f"{self.where} needs {key} = [...]")
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(key, "a list of non-empty strings")
        if required and not value:
            raise self.error(key, "a non-empty list")
        return list(value)

    def mapping(self, key: str) -> dict[str, str]:
        """A table of string values (``env``, ``headers``)."""
        value = self.raw.get(key, {})
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str | int | float) for k, v in value.items()
        ):
            raise self.error(key, "a table of strings, e.g. { NAME = \"value\" }")
        return {k: str(v) for k, v in value.items()}


@dataclass(frozen=True)
class Route:
    """Which events a channel wants: kinds (or ``*``), and optionally some projects only.

    ``projects`` (ids) and ``project_names`` (globs) add up: an event matches when its project is
    listed by either. An event without a project never matches a route that names projects.
    """

    kinds: frozenset[str]
    projects: frozenset[int] = frozenset()
    project_names: tuple[str, ...] = ()

    @property
    def all_kinds(self) -> bool:
        """True for ``on = ["*"]``."""
        return "*" in self.kinds

    def matches(self, event: Event) -> bool:
        """Whether ``event`` is one this route wants."""
        if not self.all_kinds and event.kind not in self.kinds:
            return False
        if not self.projects and not self.project_names:
            return True
        if event.project_id is None:
            return False
        if event.project_id in self.projects:
            return True
        name = event.project_name or ""
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.project_names)

    @classmethod
    def read(cls, table: TableReader) -> Route:
        """The route of a ``[[hooks]]``/``[[webhooks]]``/``[[emails]]`` table; a kind that no event
        has is an error (a misspelt one would never match)."""
        on = table.strings("on", required=True)
        for kind in on:
            error = None if kind == "*" else unknown_kind(kind, f"on of {table.where}")
            if error:
                raise ConfigError(error)
        ids = table.raw.get("projects", [])
        if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids
        ):
            raise table.error("projects", "a list of project ids, e.g. [12, 13]")
        return cls(frozenset(on), frozenset(ids), tuple(table.strings("project_names")))


ROUTE_KEYS = {"on", "projects", "project_names"}


# -- event rendering --------------------------------------------------------------------------------
def event_payload(event: Event) -> dict[str, Any]:
    """The documented JSON form of an event (``docs/events.md``)."""
    return event.to_dict()


def summarize(event: Event) -> str:
    """One line for people: ``project 12 (api) failed: exited (3) - exited with code 3``."""
    parts: list[str] = []
    if event.project_id is not None:
        parts.append(f"project {event.project_id} ({event.project_name})")
    parts.append(event.kind.replace("_", " "))
    text = " ".join(parts)
    if event.outcome and event.kind in ("completed", "failed", "cancelled"):
        code = f" ({event.exit_code})" if event.exit_code is not None else ""
        text += f": {event.outcome}{code}"
    if event.message:
        text += f" - {event.message}"
    return text


def template_values(event: Event) -> dict[str, str]:
    """Values a ``${name}`` template may use: every event field, ``summary`` and ``host``."""
    values = {name: "" if value is None else str(value) for name, value in event_payload(event).items()}
    values["summary"] = summarize(event)
    values["host"] = os.uname().nodename
    return values


def render(template: str, event: Event, *, json_escape: bool = False) -> str:
    """Fill ``${field}`` placeholders of ``template`` (JSON-escaped inside a JSON body)."""
    values = template_values(event)
    if json_escape:
        values = {k: json.dumps(v)[1:-1] for k, v in values.items()}
    return string.Template(template).safe_substitute(values)


# -- hooks ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HookSpec:
    """One ``[[hooks]]`` table."""

    name: str
    route: Route
    #: argv to run; a string command becomes ``["/bin/sh", "-c", command]``.
    argv: tuple[str, ...]
    timeout: float = 30.0
    env: Mapping[str, str] = field(default_factory=dict)
    max_attempts: int = 1
    max_runs: int = 20
    max_runs_window: float = 600.0
    #: Variables of the daemon's environment passed on (a hook gets only the base environment).
    pass_env: tuple[str, ...] = ()

    KEYS = ROUTE_KEYS | {
        "name", "command", "timeout", "env", "max_attempts", "max_runs", "max_runs_window", "pass_env",
    }

    @property
    def cursor_key(self) -> str:
        """Settings key of this hook's delivery cursor."""
        return f"cursor.hook.{self.name}"

    @classmethod
    def read(cls, raw: object, index: int) -> HookSpec:
        """Parse ``[[hooks]]`` entry number ``index`` (0-based); raises ConfigError."""
        table = TableReader(raw, f"[[hooks]] #{index + 1}", cls.KEYS)
        name = table.text("name", required=True)
        assert name is not None
        table.where = f"[[hooks]] {name!r}"
        command = table.raw.get("command")
        if isinstance(command, str) and command.strip():
            argv: tuple[str, ...] = ("/bin/sh", "-c", command)
        elif isinstance(command, list) and command and all(isinstance(a, str) for a in command):
            argv = tuple(command)
        else:
            raise table.error("command", "a shell command string or a non-empty argv list")
        route = Route.read(table)
        delivery = sorted(route.kinds & DELIVERY_KINDS)
        if delivery:
            raise ConfigError(f"{table.where} is on {delivery[0]!r}, but hooks never run on delivery "
                              "events (so a failing hook cannot feed on itself); use a webhook or e-mail")
        return cls(
            name=name,
            route=route,
            argv=argv,
            timeout=table.duration("timeout", 30.0),
            env=table.mapping("env"),
            max_attempts=table.number("max_attempts", 1, minimum=1),
            max_runs=table.number("max_runs", 20, minimum=1),
            max_runs_window=table.duration("max_runs_window", 600.0),
            pass_env=tuple(table.strings("pass_env")),
        )

    def wants(self, event: Event) -> bool:
        """Whether this hook runs for ``event``.

        Never for changes made from inside a hook (source ``hook``) nor for the dispatcher's own
        ``hook_*``/``webhook_*``/``email_*`` events: a hook cannot trigger itself directly.
        """
        if event.source == "hook" or event.kind in DELIVERY_KINDS:
            return False
        if event.kind.startswith(("hook_", "webhook_", "email_")):
            return False
        return self.route.matches(event)


def hook_environment(spec: HookSpec, event: Event, *, home: Path, database_url: str) -> dict[str, str]:
    """The environment of a hook run, chosen, not the daemon's (which may hold its secrets): the base
    environment (:mod:`tmux_orchestrator.environment`), the variables its ``pass_env`` names,
    ``TMO_EVENT_*``, ``TMO_HOME``, ``TMO_DATABASE_URL`` without a password, ``TMO_HOOK=1``, its env."""
    env = base_environment()
    env.update({k: os.environ[k] for k in spec.pass_env if k in os.environ})
    payload = event_payload(event)
    for name in EVENT_FIELDS:
        value = payload.get(name)
        env[f"TMO_EVENT_{name.upper()}"] = "" if value is None else str(value)
    env["TMO_HOME"] = str(home)
    # `tmo` in a hook finds the database; a password stays out (a PostgreSQL client reads ~/.pgpass)
    env["TMO_DATABASE_URL"] = without_password(database_url)
    env["TMO_HOOK"] = "1"
    env["TMO_HOOK_NAME"] = spec.name
    env.update(spec.env)
    return env


@dataclass(frozen=True)
class HookResult:
    """How one hook run went."""

    ok: bool
    #: ``exited with code 3``, ``timed out after 30s``, ``cannot run: ...``; empty when ok.
    error: str
    #: The last part of its combined stdout and stderr.
    output: str
    seconds: float


#: Characters of a hook's output kept for the log and the ``hook_failed`` message.
OUTPUT_TAIL = 2000


def run_hook(
    spec: HookSpec, event: Event, env: Mapping[str, str], *, cwd: Path,
    on_start: Callable[[subprocess.Popen[bytes] | None], None] | None = None,
) -> HookResult:
    """Run ``spec`` once for ``event``: JSON on stdin, a timeout, then its process group is killed.

    The hook runs in a process group of its own; whatever it leaves running there when it exits or
    times out is killed too (``setsid`` detaches something on purpose). ``on_start`` is told the
    process when it starts and None when it has ended, so a stopping daemon can end it.
    """
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(spec.argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, cwd=str(cwd), env=dict(env), start_new_session=True,
            umask=user_umask(),  # what a hook writes is the user's, not tmo's private files
        )
    except OSError as exc:
        return HookResult(False, f"cannot run {spec.argv[0]}: {exc.strerror or exc}", "",
                          time.monotonic() - started)
    if on_start is not None:
        on_start(proc)
    try:
        return _wait_hook(spec, event, proc, started)
    finally:
        if on_start is not None:
            on_start(None)


def _wait_hook(spec: HookSpec, event: Event, proc: subprocess.Popen[bytes], started: float) -> HookResult:
    data = (json.dumps(event_payload(event)) + "\n").encode()
    error = ""
    try:
        out, _ = proc.communicate(data, timeout=spec.timeout)
    except subprocess.TimeoutExpired:
        error = f"timed out after {spec.timeout:g}s"
        out = _kill_group(proc)
    else:
        # The hook may have left children running in its group (a `cmd &`): end them too.
        _signal_group(proc.pid, signal.SIGKILL)
        if proc.returncode != 0:
            code = proc.returncode
            error = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
    text = out.decode(errors="replace")[-OUTPUT_TAIL:].strip()
    return HookResult(not error, error, text, time.monotonic() - started)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _kill_group(proc: subprocess.Popen[bytes], grace: float = 1.0) -> bytes:
    """SIGTERM the hook's process group, SIGKILL after ``grace``; returns what it printed."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    _signal_group(proc.pid, signal.SIGKILL)
    return out or b""


class Breaker:
    """Per-project circuit breaker of one hook: at most ``limit`` runs within ``window`` seconds.

    Loop safety beyond the ``hook`` source: a hook that ends a project which the daemon then runs
    again (``tmo retry``, hand-written SQL) would otherwise run forever. Past the limit, runs are
    skipped; :meth:`allow` reports the first skip of a streak so exactly one event records it.
    """

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._runs: dict[int | None, deque[float]] = {}
        self._tripped: set[int | None] = set()

    def allow(self, project_id: int | None, now: float | None = None) -> tuple[bool, bool]:
        """``(run it, first skip of a streak)`` for a run about ``project_id`` at ``now``."""
        now = time.monotonic() if now is None else now
        runs = self._runs.setdefault(project_id, deque())
        while runs and now - runs[0] >= self.window:
            runs.popleft()
        if len(runs) < self.limit:
            runs.append(now)
            self._tripped.discard(project_id)
            return True, False
        first = project_id not in self._tripped
        self._tripped.add(project_id)
        return False, first


def end_hook(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a running hook's process group (the daemon is stopping and cannot wait for it)."""
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGKILL)

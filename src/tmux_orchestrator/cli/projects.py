"""Queue commands: add, list, show, complete, fail, cancel, retry, remove, pause, resume."""

from __future__ import annotations

import json
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from tmux_orchestrator.cli.app import (
    PRIORITY,
    PROJECT_ID,
    Context,
    cli,
    json_option,
    note_if_no_daemon,
    pass_context,
    print_json,
    print_table,
    project_id_from_env,
)
from tmux_orchestrator.durations import format_duration, format_duration_exact, parse_duration
from tmux_orchestrator.errors import InvalidBatch, OrchestratorError, UsageError
from tmux_orchestrator.inputs import check_text, safe_text
from tmux_orchestrator.project import Project, ProjectStatus
from tmux_orchestrator.store.rows import PROJECT_COLUMNS, parse_time_or_none, project_dicts


class Duration(click.ParamType):  # type: ignore[type-arg]
    """A click type for ``30s``, ``5m``, ``2h``, ``1d`` or plain seconds."""

    name = "duration"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()
STATUS_CHOICE = click.Choice([s.value for s in ProjectStatus])


def _checked_path(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--dir`` / ``--spec`` checked in the CLI's words, naming the flag (the API names neither)."""
    if value is None:
        return None
    flag, directory = param.opts[0], param.name == "directory"
    kind = "directory" if directory else "file"
    what = "directory" if directory else "spec file"
    check_text(value, f"the {what} ({flag})")
    path = Path(value).expanduser()
    if not path.exists():
        raise UsageError(f"{what} {value} does not exist; pass an existing {flag}")
    if path.is_dir() != directory:
        raise UsageError(f"{value} is not a {kind}; pass a {kind} as {flag}")
    return value


def _parse_env(pairs: tuple[str, ...]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not K=V", param_hint="'--env'")
        env[key] = value
    return env


@cli.command(context_settings={"ignore_unknown_options": False})
@click.option("--name", default="", help="Project name (default: spec file stem or command).")
@click.option("--priority", "-p", type=PRIORITY, default=0, show_default=True, help="Higher runs first.")
@click.option("--dir", "directory", callback=_checked_path,
              help="Working directory (default: the current one).")
@click.option("--spec", callback=_checked_path,
              help="Spec file the project works on (exported as TMO_SPEC_FILE).")
@click.option("--env", "env_pairs", multiple=True, metavar="K=V",
              help="Environment variable; repeatable; wins over the captured environment.")
@click.option("--no-env", "no_env", is_flag=True,
              help="Do not capture this shell's environment: the project gets the daemon's base "
                   "environment and --env only.")
@click.option("--timeout", type=DURATION, help="Maximum run time, e.g. 2h; then SIGTERM, SIGKILL.")
@click.option("--idle-timeout", type=DURATION, help="Fail when the project prints nothing this long.")
@click.option("--max-retries", type=click.IntRange(min=0), default=0, show_default=True,
              help="Automatic retries after a failure (exponential backoff).")
@click.option("--retry-delay", type=DURATION, default=0.0, help="Delay before the first retry, e.g. 30s.")
@click.option("--host", "pinned_host", metavar="NAME",
              help="Run it only on this host (its daemon's TMO_HOST); default: any host.")
@click.option("--requires", "requires", multiple=True, metavar="LABEL[,LABEL]",
              help="Run it only on a host with all these labels (TMO_HOST_LABELS); repeatable.")
@click.option("--from-file", "from_file", metavar="FILE",
              type=click.Path(exists=True, dir_okay=False, allow_dash=True),
              help="Queue one project per line of FILE ('-': stdin), a command line or a JSON object; "
                   "every line is checked before any is queued. The other options are defaults.")
@json_option
@click.argument("command", nargs=-1, required=False, type=click.UNPROCESSED)
@pass_context
def add(ctx: Context, name: str, priority: int, directory: str | None, spec: str | None,
        env_pairs: tuple[str, ...], no_env: bool, timeout: float | None,
        idle_timeout: float | None, max_retries: int, retry_delay: float, pinned_host: str | None,
        requires: tuple[str, ...], from_file: str | None, as_json: bool,
        command: tuple[str, ...]) -> None:
    """Queue a project: `tmo add [OPTIONS] -- COMMAND [ARG]...`; prints its id.

    The project runs in the current directory (or --dir) with this shell's environment (PATH, API
    keys ...), captured now and kept with it, minus per-shell variables and those `env_exclude` in
    config.toml names; --env adds or overrides variables, --no-env captures none.

    With `--from-file FILE`, queue one project per line of FILE in one transaction and print their
    ids. A line is either a command (split into words like a shell does, but never run by one) or a
    JSON object with the keys command (list of words, or a string), name, priority, dir, spec, env
    (object), timeout, idle_timeout, max_retries and retry_delay (durations: seconds or e.g. "30s").
    Empty lines and lines starting with # are skipped. If any line is invalid, nothing is queued.
    """
    if from_file is not None:
        if command:
            raise click.UsageError("give either --from-file FILE or a command after `--`, not both",
                                   ctx=click.get_current_context())
        defaults: dict[str, Any] = {
            "name": name, "priority": priority, "project_path": directory, "spec_path": spec,
            "env": _environment(ctx, env_pairs, no_env), "timeout": timeout, "idle_timeout": idle_timeout,
            "max_retries": max_retries, "retry_delay": retry_delay, "host": pinned_host,
            "requires": _labels(requires),
        }
        _add_from_file(ctx, from_file, defaults, as_json)
        return
    if not command or not command[0].strip():
        raise UsageError("missing command: give it after `--`, e.g. tmo add -- claude -p spec.md")
    project = ctx.orch.enqueue(
        list(command), name=name, priority=priority, project_path=directory, spec_path=spec,
        env=_environment(ctx, env_pairs, no_env), timeout=timeout, idle_timeout=idle_timeout,
        max_retries=max_retries, retry_delay=retry_delay, host=pinned_host, requires=_labels(requires),
    )
    if as_json:
        print_json(project.to_dict())
    else:
        click.echo(project.id)
    note_if_no_daemon(ctx, f"project {project.id} waits in the queue")


def _environment(ctx: Context, env_pairs: tuple[str, ...], no_env: bool) -> dict[str, str]:
    """The project's environment: this shell's as captured (unless ``--no-env``), ``--env`` over it.
    Variables that cannot travel are named in one warning; they never stop the add."""
    explicit = _parse_env(env_pairs)
    if no_env:
        return explicit
    captured = ctx.orch.captured_environment()
    warning = captured.warning()
    if warning:
        click.echo(f"tmo: warning: {safe_text(warning)}", err=True)
    return {**captured.env, **explicit}


def _labels(values: tuple[str, ...]) -> list[str]:
    """``--requires gpu,big --requires fast`` as one list."""
    return [label.strip() for value in values for label in value.split(",") if label.strip()]


#: Keys of a JSON line of ``tmo add --from-file``, and the ``enqueue`` argument each one sets.
_BATCH_KEYS = {
    "command": "command", "name": "name", "priority": "priority", "dir": "project_path",
    "spec": "spec_path", "env": "env", "timeout": "timeout", "idle_timeout": "idle_timeout",
    "max_retries": "max_retries", "retry_delay": "retry_delay", "host": "host", "requires": "requires",
}


def _batch_item(text: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """One line of ``--from-file`` as ``enqueue`` keyword arguments; ValueError says what is wrong."""
    item = dict(defaults)
    if not text.startswith("{"):
        item["command"] = shlex.split(text)  # ValueError on an unclosed quote
        return item
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise ValueError("invalid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise ValueError("a JSON line must be an object")
    unknown = sorted(set(data) - set(_BATCH_KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(_BATCH_KEYS)}")
    for key, value in data.items():
        if key == "command":
            if isinstance(value, str):
                value = shlex.split(value)
            if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
                raise ValueError("command must be a list of strings or a command line")
        elif key in ("name", "dir", "spec", "host"):
            if not isinstance(value, str) and not (value is None and key != "name"):
                raise ValueError(f"{key} must be a string")
        elif key == "requires":
            if isinstance(value, str):
                value = _labels((value,))
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise ValueError('requires must be a list of labels, e.g. ["gpu"]')
        elif key in ("priority", "max_retries"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{key} must be a whole number")
        elif key == "env":
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise ValueError('env must be an object of strings, e.g. {"K": "V"}')
            value = {**defaults.get("env", {}), **value}
        elif value is not None or key == "retry_delay":  # durations: seconds or "30s", "5m", ...
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ValueError(f"{key} must be a duration: seconds, or e.g. \"30s\", \"5m\"")
            value = parse_duration(str(value))
        item[_BATCH_KEYS[key]] = value
    if "command" not in data:
        raise ValueError("missing command")
    return item


def _add_from_file(ctx: Context, path: str, defaults: dict[str, Any], as_json: bool) -> None:
    """``tmo add --from-file``: check every line, then queue them all in one transaction."""
    label = "stdin" if path == "-" else path
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {label}: {exc}") from None
    items: list[dict[str, Any]] = []
    lines: list[int] = []
    errors: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            items.append(_batch_item(stripped, defaults))
            lines.append(number)
        except ValueError as exc:
            errors.append((number, str(exc)))
    if not errors and not items:
        raise UsageError(f"{label} holds no project to queue (one command or JSON object per line)")
    if errors:  # still check the lines that parsed, so one run reports every bad line
        for number, item in zip(lines, items, strict=True):
            try:
                ctx.orch.new_project(**item)
            except (OrchestratorError, TypeError, ValueError) as exc:
                errors.append((number, str(exc)))
        errors.sort()
    else:
        try:
            projects = ctx.orch.enqueue_many(items)
        except InvalidBatch as exc:  # positions among the items -> line numbers of the file
            errors = [(lines[position - 1], message) for position, message in exc.errors]
    if errors:
        shown = "; ".join(f"line {n}: {message}" for n, message in errors[:20])
        more = f"; ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise UsageError(f"{label}: {len(errors)} invalid line(s), nothing queued: {shown}{more}")
    if as_json:
        print_json([p.to_dict() for p in projects])
    else:
        click.echo("\n".join(str(p.id) for p in projects))
    note_if_no_daemon(ctx, f"the {len(projects)} project(s) wait in the queue")


def _age(when: datetime | None) -> str:
    if when is None:
        return ""
    return format_duration((datetime.now(UTC) - when).total_seconds())


def _runtime(project: Project) -> str:
    if project.started_at is None:
        return ""
    end = project.completed_at or datetime.now(UTC)
    return format_duration(max(0.0, (end - project.started_at).total_seconds()))


def _outcome(project: Project) -> str:
    return _outcome_text(project.outcome.value if project.outcome else None, project.exit_code)


def _outcome_text(outcome: str | None, exit_code: int | None) -> str:
    if outcome is None:
        return ""
    if exit_code is not None and outcome in ("exited", "signal"):
        return f"{outcome}({exit_code})"
    return outcome


@cli.command("list")
@click.option("--status", "-s", "statuses", multiple=True, type=STATUS_CHOICE,
              help="Only projects with this status; repeatable.")
@click.option("--limit", type=click.IntRange(min=1, max=2**63 - 1), help="Show at most this many projects.")
@json_option
@pass_context
def list_(ctx: Context, statuses: tuple[str, ...], limit: int | None, as_json: bool) -> None:
    """List projects: running first, then queued by priority, then the most recently ended."""
    # Only the columns shown, as plain tuples, with times converted in SQL (age_s, runtime_s), and
    # the JSON form read straight from the rows: building a Project per row made `tmo list` at
    # 10,000 rows twice as slow.
    wanted = [ProjectStatus(s) for s in statuses] or None
    if as_json:
        print_json(project_dicts(ctx.store.list_columns(PROJECT_COLUMNS.split(", "), wanted, limit)))
        return
    # Said on stderr, before the table: the table (and --json) stay what scripts parse.
    if ctx.store.get_setting("paused", "0") == "1":
        click.echo("tmo: the queue is paused: no project starts until `tmo resume`", err=True)
    note_if_no_daemon(ctx, "queued projects wait")
    print_table(
        ["ID", "STATUS", "AGENT", "OUTCOME", "PRI", "NAME", "SESSION", "RUNTIME", "QUEUED"],
        [
            # AGENT: what a running project's agent does (a reset trigger keeps it empty otherwise)
            [pid, status, agent or "", _outcome_text(outcome, exit_code), priority, name,
             _session_cell(status, session, not_before),
             "" if runtime is None else format_duration(runtime),
             # a hand-typed time that does not parse is shown as it is stored
             queued if age is None else format_duration(age) + " ago"]
            for (pid, status, agent, outcome, exit_code, priority, name, session, runtime, age, queued,
                 not_before)
            in ctx.store.list_columns(["id", "status", "agent_state", "outcome", "exit_code", "priority",
                                       "name", "session_name", "runtime_s", "age_s", "enqueued_at",
                                       "not_before"], wanted, limit)
        ],
    )


def _session_cell(status: str, session: str | None, not_before: str | datetime | None) -> str:
    """The SESSION column. A queued project's session is its last attempt's, gone: for one waiting
    for its retry, when that starts (``retry in 30s``) instead."""
    if status != ProjectStatus.QUEUED:
        return session or ""
    when = parse_time_or_none(not_before)
    wait = 0.0 if when is None else (when - datetime.now(UTC)).total_seconds()
    return f"retry in {format_duration(wait)}" if wait > 0 else ""


@cli.command()
@click.argument("project_id", type=PROJECT_ID)
@click.option("--env", "show_env", is_flag=True,
              help="Print the project's environment, values included (API keys too), as K=V lines "
                   "(--json: one object); the other outputs give the variable names only.")
@json_option
@pass_context
def show(ctx: Context, project_id: int, show_env: bool, as_json: bool) -> None:
    """Show every detail of one project, with its log file and saved scrollback."""
    project = ctx.existing.get(project_id)
    if show_env:
        if as_json:
            print_json(dict(sorted(project.env.items())))
        for key, value in ([] if as_json else sorted(project.env.items())):
            click.echo(f"{key}={safe_text(shlex.quote(value))}")  # as a shell reads it back
        return
    data = project.to_dict()
    if as_json:
        print_json(data)
        return
    data["log_file"] = str(ctx.settings.log_path(project_id))
    data["scrollback_file"] = ctx.settings.saved_scrollback(project_id, project.attempt)
    width = max(len(k) for k in data)
    for key, value in data.items():
        if key == "command" and isinstance(value, list):
            value = shlex.join(value)  # as a shell reads it back: words with spaces stay one word
        if key in ("problems", "required_labels") and isinstance(value, list):
            value = ("; " if key == "problems" else ", ").join(value)
        if key == "env_names" and isinstance(value, list) and value:
            # Names only: the captured environment holds API keys (`--env` prints the values).
            value = f"{len(value)} variable(s): {' '.join(value)}"
        if key in _DURATIONS and isinstance(value, float):  # not a hand-typed value shown as stored
            value = format_duration_exact(value)
        if value in (None, "", {}, []):
            continue
        if key == "outcome":
            value = _outcome(project)
        click.echo(f"{key.ljust(width)}  {safe_text(str(value))}")


#: Fields of a project that are durations, shown as given (``4h``, ``1m30s``) by ``tmo show``.
_DURATIONS = frozenset({"timeout", "idle_timeout", "retry_delay"})


@cli.command()
@click.argument("project_id", type=PROJECT_ID, required=False)
@pass_context
def complete(ctx: Context, project_id: int | None) -> None:
    """Mark a project completed and kill its session (ID defaults to $TMO_PROJECT_ID)."""
    pid = project_id_from_env(project_id, "complete")
    project = ctx.existing.mark_project_complete(pid, success=True)
    _ended_as(project, ProjectStatus.COMPLETED)


@cli.command()
@click.argument("project_id", type=PROJECT_ID, required=False)
@click.option("--reason", help="Why it failed (stored as the error message).")
@pass_context
def fail(ctx: Context, project_id: int | None, reason: str | None) -> None:
    """Mark a project failed and kill its session (ID defaults to $TMO_PROJECT_ID)."""
    pid = project_id_from_env(project_id, "fail")
    if reason is not None:
        check_text(reason, "the reason")  # stored and printed as the error message
    project = ctx.existing.fail(pid, reason=reason)
    _ended_as(project, ProjectStatus.FAILED)


def _ended_as(project: Project, wanted: ProjectStatus) -> None:
    """Report the project's status; exit 1 when it had already ended otherwise (it is left as it
    was: an ended project is changed only by `tmo retry`)."""
    if project.status != wanted:
        raise OrchestratorError(f"project {project.id} had already ended as {project.status.value}; "
                                f"left as it was (`tmo retry {project.id}` runs it again)")
    click.echo(f"project {project.id}: {project.status.value}")


def _each(ctx: Context, ids: tuple[int, ...], verb: str) -> None:
    """Apply the API method ``verb`` to every id and report each."""
    results: list[tuple[int, Project | OrchestratorError]] = []
    for project_id in ids:
        try:
            results.append((project_id, getattr(ctx.existing, verb)(project_id)))
        except OrchestratorError as exc:
            results.append((project_id, exc))
    _report(results, "removed" if verb == "remove" else None)


def _report(results: list[tuple[int, Project | OrchestratorError]], status: str | None) -> None:
    """One line per project (errors on stderr); exit 1 if any failed."""
    failed = False
    for project_id, result in results:
        if isinstance(result, OrchestratorError):
            click.echo(f"tmo: error: {safe_text(str(result))}", err=True)
            failed = True
        else:
            click.echo(f"project {project_id}: {status or result.status.value}")
    if failed:
        raise click.exceptions.Exit(1)


@cli.command()
@click.argument("ids", type=PROJECT_ID, nargs=-1, required=True)
@pass_context
def cancel(ctx: Context, ids: tuple[int, ...]) -> None:
    """Cancel queued or running projects (running sessions are saved, then killed together)."""
    _report(ctx.existing.cancel_many(ids), "cancelled")


@cli.command()
@click.argument("ids", type=PROJECT_ID, nargs=-1, required=True)
@pass_context
def retry(ctx: Context, ids: tuple[int, ...]) -> None:
    """Queue ended projects again."""
    _each(ctx, ids, "retry")


@cli.command()
@click.argument("ids", type=PROJECT_ID, nargs=-1, required=True)
@pass_context
def remove(ctx: Context, ids: tuple[int, ...]) -> None:
    """Delete queued or ended projects from the queue (events and logs are kept)."""
    _each(ctx, ids, "remove")


@cli.command()
@click.option("--host", metavar="NAME", help="Only this host stops claiming (see `tmo hosts`).")
@pass_context
def pause(ctx: Context, host: str | None) -> None:
    """Stop starting new projects (running ones go on), on every host or one."""
    ctx.orch.pause(host)
    click.echo(f"host {host} paused" if host else "queue paused")


@cli.command()
@click.option("--host", metavar="NAME", help="Only this host claims again.")
@pass_context
def resume(ctx: Context, host: str | None) -> None:
    """Start projects again after `tmo pause`."""
    ctx.orch.resume(host)
    click.echo(f"host {host} resumed" if host else "queue resumed")


@cli.command()
@click.argument("ids", type=PROJECT_ID, nargs=-1, required=True)
@pass_context
def requeue(ctx: Context, ids: tuple[int, ...]) -> None:
    """Stop running projects and queue them again (the next attempt waits for the old one to be
    gone; any host may take it). Not counted as a retry."""
    _each(ctx, ids, "requeue")

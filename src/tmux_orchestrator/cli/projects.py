"""Queue commands: add, list, show, complete, fail, cancel, retry, remove, pause, resume."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from tmux_orchestrator.cli.app import (
    PRIORITY,
    PROJECT_ID,
    Context,
    cli,
    json_option,
    pass_context,
    print_json,
    print_table,
    project_id_from_env,
)
from tmux_orchestrator.durations import format_duration, parse_duration
from tmux_orchestrator.errors import OrchestratorError
from tmux_orchestrator.project import Project, ProjectStatus


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
@click.option("--dir", "directory", help="Working directory (default: the current one).")
@click.option("--spec", help="Spec file the project works on (exported as TMO_SPEC_FILE).")
@click.option("--env", "env_pairs", multiple=True, metavar="K=V", help="Environment variable; repeatable.")
@click.option("--timeout", type=DURATION, help="Maximum run time, e.g. 2h; then SIGTERM, SIGKILL.")
@click.option("--idle-timeout", type=DURATION, help="Fail when the project prints nothing this long.")
@click.option("--max-retries", type=click.IntRange(min=0), default=0, show_default=True,
              help="Automatic retries after a failure (exponential backoff).")
@click.option("--retry-delay", type=DURATION, default=0.0, help="Delay before the first retry, e.g. 30s.")
@json_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_context
def add(ctx: Context, name: str, priority: int, directory: str | None, spec: str | None,
        env_pairs: tuple[str, ...], timeout: float | None, idle_timeout: float | None,
        max_retries: int, retry_delay: float, as_json: bool, command: tuple[str, ...]) -> None:
    """Queue a project: `tmo add [OPTIONS] -- COMMAND [ARG]...`; prints its id."""
    project = ctx.orch.enqueue(
        list(command), name=name, priority=priority, project_path=directory, spec_path=spec,
        env=_parse_env(env_pairs), timeout=timeout, idle_timeout=idle_timeout,
        max_retries=max_retries, retry_delay=retry_delay,
    )
    if as_json:
        print_json(project.to_dict())
    else:
        click.echo(project.id)


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
    if project.outcome is None:
        return ""
    if project.exit_code is not None and project.outcome.value in ("exited", "signal"):
        return f"{project.outcome.value}({project.exit_code})"
    return project.outcome.value


LIST_FIELDS = (
    "id", "name", "status", "outcome", "exit_code", "priority", "session_name", "error_message",
    "enqueued_at", "started_at", "completed_at", "attempt", "retry_count", "max_retries",
    "project_path", "spec_path", "command",
)


def _fields(data: dict[str, object]) -> dict[str, object]:
    return {k: data[k] for k in LIST_FIELDS}


@cli.command("list")
@click.option("--status", "-s", "statuses", multiple=True, type=STATUS_CHOICE,
              help="Only projects with this status; repeatable.")
@click.option("--limit", type=click.IntRange(min=1, max=2**63 - 1), help="Show at most this many projects.")
@json_option
@pass_context
def list_(ctx: Context, statuses: tuple[str, ...], limit: int | None, as_json: bool) -> None:
    """List projects: running first, then queued by priority, then the most recently ended."""
    projects = ctx.orch.store.list_projects([ProjectStatus(s) for s in statuses] or None, limit)
    if as_json:
        print_json([_fields(p.to_dict()) for p in projects])
        return
    print_table(
        ["ID", "STATUS", "OUTCOME", "PRI", "NAME", "SESSION", "RUNTIME", "QUEUED"],
        [
            [p.id, p.status.value, _outcome(p), p.priority, p.name, p.session_name or "",
             _runtime(p), _age(p.enqueued_at) + " ago"]
            for p in projects
        ],
    )


@cli.command()
@click.argument("project_id", type=PROJECT_ID)
@json_option
@pass_context
def show(ctx: Context, project_id: int, as_json: bool) -> None:
    """Show every detail of one project."""
    project = ctx.orch.get(project_id)
    data = project.to_dict()
    data["log_file"] = str(ctx.settings.log_path(project_id))
    data["scrollback_file"] = str(ctx.settings.scrollback_path(project_id))
    if as_json:
        print_json(data)
        return
    width = max(len(k) for k in data)
    for key, value in data.items():
        if key == "command":
            value = " ".join(value)
        if value in (None, "", {}, []):
            continue
        if key == "outcome":
            value = _outcome(project)
        click.echo(f"{key.ljust(width)}  {value}")


@cli.command()
@click.argument("project_id", type=PROJECT_ID, required=False)
@pass_context
def complete(ctx: Context, project_id: int | None) -> None:
    """Mark a project completed and kill its session (ID defaults to $TMO_PROJECT_ID)."""
    pid = project_id_from_env(project_id, "complete")
    project = ctx.orch.mark_project_complete(pid, success=True)
    click.echo(f"project {pid}: {project.status.value}")


@cli.command()
@click.argument("project_id", type=PROJECT_ID, required=False)
@click.option("--reason", help="Why it failed (stored as the error message).")
@pass_context
def fail(ctx: Context, project_id: int | None, reason: str | None) -> None:
    """Mark a project failed and kill its session (ID defaults to $TMO_PROJECT_ID)."""
    pid = project_id_from_env(project_id, "fail")
    project = ctx.orch.fail(pid, reason=reason)
    click.echo(f"project {pid}: {project.status.value}")


def _each(ctx: Context, ids: tuple[int, ...], verb: str) -> None:
    """Apply the API method ``verb`` to every id and report each."""
    results: list[tuple[int, Project | OrchestratorError]] = []
    for project_id in ids:
        try:
            results.append((project_id, getattr(ctx.orch, verb)(project_id)))
        except OrchestratorError as exc:
            results.append((project_id, exc))
    _report(results, "removed" if verb == "remove" else None)


def _report(results: list[tuple[int, Project | OrchestratorError]], status: str | None) -> None:
    """One line per project (errors on stderr); exit 1 if any failed."""
    failed = False
    for project_id, result in results:
        if isinstance(result, OrchestratorError):
            click.echo(f"tmo: error: {result}", err=True)
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
    _report(ctx.orch.cancel_many(ids), "cancelled")


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
@pass_context
def pause(ctx: Context) -> None:
    """Stop starting new projects (running ones go on)."""
    ctx.orch.pause()
    click.echo("queue paused")


@cli.command()
@pass_context
def resume(ctx: Context) -> None:
    """Start projects again after `tmo pause`."""
    ctx.orch.resume()
    click.echo("queue resumed")

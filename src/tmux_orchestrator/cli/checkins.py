"""Check-ins: ``tmo checkin ID --every 30m TEXT``, ``--list`` and ``--remove N``."""

from __future__ import annotations

import click

from tmux_orchestrator.checkin import Checkin
from tmux_orchestrator.cli.app import PROJECT_ID, Context, cli, json_option, pass_context, print_json
from tmux_orchestrator.cli.projects import DURATION
from tmux_orchestrator.durations import format_duration_exact
from tmux_orchestrator.errors import UsageError
from tmux_orchestrator.timestamps import format_time


@cli.command()
@click.argument("project_id", type=PROJECT_ID, required=False)
@click.argument("words", nargs=-1, required=False)
@click.option("--every", type=DURATION, help="How often, e.g. 30m: counted from the last delivery.")
@click.option("--list", "as_list", is_flag=True, help="List the check-ins of running projects.")
@click.option("--remove", type=PROJECT_ID, metavar="N", help="Remove check-in N.")
@json_option
@pass_context
def checkin(ctx: Context, project_id: int | None, words: tuple[str, ...], every: float | None,
            as_list: bool, remove: int | None, as_json: bool) -> None:
    """Send TEXT to a running project every --every, each time only once its agent is waiting or
    idle (never while it works). It ends when the project does.

    \b
    tmo checkin 12 --every 30m "Report progress; commit what works."
    tmo checkin --list [--json]
    tmo checkin --remove N
    """
    if sum((as_list, remove is not None, project_id is not None)) != 1:
        raise UsageError("give a project ID with --every and the TEXT, or --list, or --remove N")
    if as_list:
        checkins = ctx.existing.checkins()
        if as_json:
            print_json([c.to_dict() for c in checkins])
        else:
            _print_table(checkins)
        return
    if remove is not None:
        gone = ctx.existing.remove_checkin(remove)
        click.echo(f"check-in {gone.id} of project {gone.project_id} removed")
        return
    assert project_id is not None
    if every is None:
        raise UsageError("give --every, e.g. --every 30m")
    if len(words) != 1:
        raise UsageError("give the text as one argument (quote it)")
    added = ctx.existing.add_checkin(project_id, words[0], every=every)
    if as_json:
        print_json(added.to_dict())
    else:
        click.echo(f"check-in {added.id} to project {project_id} every {format_duration_exact(every)}")


def _print_table(checkins: list[Checkin]) -> None:
    rows = [("ID", "PROJECT", "EVERY", "DUE", "TEXT")]
    for c in checkins:
        text = c.body.replace("\n", " ")
        rows.append((str(c.id), str(c.project_id), format_duration_exact(c.every),
                     "pending" if c.pending else format_time(c.due_at),
                     text if len(text) <= 50 else text[:49] + "…"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row[:4], widths, strict=True)) + "  " + row[4])

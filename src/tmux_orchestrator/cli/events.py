"""``tmo events``: the event log, optionally followed live (JSON lines with ``--json``)."""

from __future__ import annotations

import json
import time

import click

from tmux_orchestrator.cli.app import PROJECT_ID, Context, cli, pass_context
from tmux_orchestrator.errors import NoDatabase, UsageError
from tmux_orchestrator.inputs import safe_text
from tmux_orchestrator.kinds import unknown_kind
from tmux_orchestrator.store import Event, Store
from tmux_orchestrator.timestamps import format_time


def _text(event: Event) -> str:
    parts = [format_time(event.at), f"#{event.id}", event.kind]
    if event.project_id is not None:
        parts.append(f"project {event.project_id} ({event.project_name})")
    if event.old_status or event.new_status:
        if event.old_status and event.new_status and event.kind not in (
            "session_killed", "output_saved", "lingering_cleaned"
        ):
            parts.append(f"{event.old_status}->{event.new_status}")
    if event.outcome:
        code = f"({event.exit_code})" if event.exit_code is not None else ""
        parts.append(f"outcome={event.outcome}{code}")
    parts.append(f"source={event.source}")
    if event.session_name:
        parts.append(f"session={event.session_name}")
    if event.message:
        parts.append(f"- {event.message}")
    return safe_text(" ".join(parts))  # names and messages are stored text: one line, no escapes


@cli.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they happen.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--since", type=click.IntRange(min=0, max=2**63 - 1),
              help="Only events with an id above this.")
@click.option("--last", "-n", "last", type=click.IntRange(min=0), default=20, show_default=True,
              help="Without --since: start with the last N events (0 = all).")
@click.option("--project", "project_id", type=PROJECT_ID, help="Only events of this project.")
@click.option("--kind", "kinds", multiple=True,
              help="Only events of this kind (see docs/events.md); repeatable.")
@pass_context
def events(ctx: Context, follow: bool, as_json: bool, since: int | None, last: int,
           project_id: int | None, kinds: tuple[str, ...]) -> None:
    """Print the event log: one line per status change and session action."""
    for kind in kinds:
        error = unknown_kind(kind, "--kind")
        if error:
            raise UsageError(error)
    store = _wait_for_database(ctx) if follow else ctx.existing.store
    if since is None:
        since = 0
        if last:
            newest = store.last_event_id()
            recent = store.events_after(max(0, newest - 5000), project_id=project_id,
                                        kinds=list(kinds) or None, limit=100000)
            since = recent[-last].id - 1 if len(recent) >= last else max(0, newest - 5000)
    cursor = since
    token = -1
    while True:
        current = store.changes_token()
        if current != token or token == -1:
            token = current
            batch = store.events_after(cursor, project_id=project_id, kinds=list(kinds) or None)
            for event in batch:
                click.echo(json.dumps(event.to_dict()) if as_json else _text(event))
                cursor = event.id
            if batch:
                # Nothing new from other writers reaches us unless data_version moves, but a
                # batch at the limit means more are waiting right now.
                token = -1 if len(batch) >= 1000 else token
        if not follow:
            return
        time.sleep(0.02)


def _wait_for_database(ctx: Context) -> Store:
    """The store, once the database exists: ``--follow`` on a fresh home waits for the first
    ``tmo add`` (like ``tail -F``) instead of creating the database itself."""
    told = False
    while True:
        try:
            return ctx.existing.store
        except NoDatabase as exc:
            if not told:
                click.echo(f"tmo: {exc}; waiting for it", err=True)
                told = True
        time.sleep(0.1)

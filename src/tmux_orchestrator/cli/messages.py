"""Talking to a running project: ``tmo send`` and ``tmo peek``."""

from __future__ import annotations

import sys

import click

from tmux_orchestrator.cli.app import PROJECT_ID, Context, cli, json_option, pass_context, print_json
from tmux_orchestrator.errors import UsageError
from tmux_orchestrator.message import MessageStatus


@cli.command()
@click.argument("project_id", type=PROJECT_ID)
@click.argument("words", nargs=-1, required=False)
@click.option("--keys", "as_keys", is_flag=True,
              help="The words are tmux key names (C-c, Enter, Escape, Up), sent as keys.")
@click.option("--wait", is_flag=True,
              help="Wait until it is delivered (exit 0) or failed (exit 1).")
@click.option("--when-waiting", is_flag=True,
              help="Hold it until the agent is waiting (or idle), then deliver it.")
@json_option
@pass_context
def send(ctx: Context, project_id: int, words: tuple[str, ...], as_keys: bool, wait: bool,
         when_waiting: bool, as_json: bool) -> None:
    """Send TEXT to a running project, typed into its program and submitted with Enter, once.

    The text is pasted as one bracketed paste, then Enter is pressed after the settle delay
    (`send_settle_delay`): every byte arrives unchanged. With --keys, the words are key names.
    The daemon running the project delivers it; --wait waits for the outcome. With --when-waiting
    it is held until the agent's state (tmo state) is waiting or idle.
    """
    if not words:
        raise UsageError("nothing to send; give the TEXT, or --keys KEY...")
    if as_keys:
        message = ctx.existing.send(project_id, keys=list(words), when_waiting=when_waiting)
    elif len(words) > 1:
        raise UsageError("give the text as one argument (quote it), or use --keys for key names")
    else:
        message = ctx.existing.send(project_id, words[0], when_waiting=when_waiting)
    if wait:
        message = ctx.existing.wait_message(message.id)
    if as_json:
        print_json(message.to_dict())
    elif message.status == MessageStatus.FAILED:
        click.echo(f"tmo: error: message {message.id} to project {project_id} failed: "
                   f"{message.reason}", err=True)
    else:
        click.echo(f"message {message.id} to project {project_id}: {message.status.value}")
    if message.status == MessageStatus.FAILED:
        sys.exit(1)


@cli.command()
@click.argument("project_id", type=PROJECT_ID)
@click.option("--lines", "-n", type=click.IntRange(min=1, max=1_000_000),
              help="The last N lines, scrollback included (default: the visible screen).")
@pass_context
def peek(ctx: Context, project_id: int, lines: int | None) -> None:
    """Print a running project's pane as plain text, as it is now (read-only)."""
    click.echo(ctx.existing.peek(project_id, lines=lines), nl=False)

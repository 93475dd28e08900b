"""Agent commands: ``tmo state`` (what an agent's hooks call) and ``tmo agent-hooks``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from tmux_orchestrator.cli.app import Context, cli, pass_context, project_id_from_env
from tmux_orchestrator.inputs import safe_text


@cli.command()
@click.argument("state", type=click.Choice(["working", "waiting", "idle"]))
@pass_context
def state(ctx: Context, state: str) -> None:
    """Record what the agent of this project's session does (its hooks call this).

    Run inside a project's session: it uses $TMO_PROJECT_ID and $TMO_ATTEMPT. Prints nothing; a
    call from an attempt that no longer runs is ignored. A change writes a `state_changed` event.
    """
    from tmux_orchestrator.agent_state import AgentState, StateSource

    pid = project_id_from_env(None, f"state {state}")
    attempt = os.environ.get("TMO_ATTEMPT", "")
    if not (attempt.isascii() and attempt.isdigit()):
        shown = "not set" if not attempt else f"{safe_text(attempt)!r}, not a number"
        raise click.UsageError(f"TMO_ATTEMPT is {shown}: run `tmo state` inside a project's session")
    ctx.store.set_agent_state(pid, AgentState(state), attempt=int(attempt),
                              decided_by=StateSource.REPORTED, source="cli")


@cli.command("agent-hooks")
@click.argument("agent", type=click.Choice(["claude"]))
@click.option("--print", "print_only", is_flag=True, help="Print the settings JSON (the default).")
@click.option("--install", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Merge them into DIR/.claude/settings.local.json, keeping everything else.")
def agent_hooks(agent: str, print_only: bool, directory: Path | None) -> None:
    """The hook settings that make AGENT report its state with `tmo state`.

    Claude Code: UserPromptSubmit reports working; Stop and Notification report waiting. The hooks
    do nothing outside a tmo session and never block the agent.
    """
    from tmux_orchestrator.agent_hooks import claude_settings, install_claude_hooks

    if print_only and directory is not None:
        raise click.UsageError("--print and --install are exclusive: give one")
    if directory is None:
        click.echo(json.dumps(claude_settings(), indent=2))
        return
    path = install_claude_hooks(directory)
    click.echo(f"installed tmo's {agent} hooks in {safe_text(str(path))}")

"""The hook settings that make an agent report its state to tmo (``tmo agent-hooks``).

Claude Code runs the commands of ``hooks`` in its settings files on its own events
(``.claude/settings.local.json`` in a project: the user's, never committed). Each hook here calls
``tmo state``: a prompt submitted means the agent works; a stop (its answer is done) or a
notification (it needs a permission, or waits for input) means it waits.

The command does nothing outside a tmo session (no ``$TMO_PROJECT_ID``: the same directory used by
hand) and always exits 0: Claude Code treats exit code 2 of a ``UserPromptSubmit`` or ``Stop`` hook
as "block" (it would drop the prompt, or refuse to stop), and nothing tmo could say is worth that.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from tmux_orchestrator.errors import UsageError

#: The agents tmo writes hook settings for.
AGENTS = ("claude",)

#: Claude Code hook event -> the state it means.
CLAUDE_EVENTS = {"UserPromptSubmit": "working", "Stop": "waiting", "Notification": "waiting"}

#: Seconds Claude Code waits for the hook (its default is 60): a database out of reach must not
#: hold the agent for long.
HOOK_TIMEOUT = 10

#: Where ``--install DIR`` writes, under ``DIR``.
CLAUDE_SETTINGS = Path(".claude") / "settings.local.json"


def state_command(state: str) -> str:
    """The shell command of a hook reporting ``state``: silent, exit 0 whatever happens."""
    return f'[ -z "$TMO_PROJECT_ID" ] || tmo state {state} || true'


def claude_settings() -> dict[str, Any]:
    """The Claude Code settings (a ``hooks`` object) that report the agent's state to tmo."""
    return {"hooks": {event: [_claude_group(state)] for event, state in CLAUDE_EVENTS.items()}}


def _claude_group(state: str) -> dict[str, Any]:
    # No "matcher": these events do not use one.
    return {"hooks": [{"type": "command", "command": state_command(state), "timeout": HOOK_TIMEOUT}]}


def merge_claude_settings(existing: dict[str, Any]) -> dict[str, Any]:
    """``existing`` settings with tmo's hooks added: every other key, event and hook kept; a hook
    already there (an earlier install) not added twice."""
    merged = dict(existing)
    hooks = merged.get("hooks", {})
    if not isinstance(hooks, dict):
        raise UsageError("its \"hooks\" is not a JSON object; fix or remove it, then install again")
    hooks = dict(hooks)
    for event, state in CLAUDE_EVENTS.items():
        groups = hooks.get(event, [])
        if not isinstance(groups, list):
            raise UsageError(f"its hooks.{event} is not a JSON list; fix or remove it, then install again")
        command = state_command(state)
        present = any(isinstance(g, dict) and isinstance(g.get("hooks"), list)
                      and any(isinstance(h, dict) and h.get("command") == command for h in g["hooks"])
                      for g in groups)
        hooks[event] = groups if present else [*groups, _claude_group(state)]
    merged["hooks"] = hooks
    return merged


def install_claude_hooks(directory: Path) -> Path:
    """Merge tmo's hooks into ``directory/.claude/settings.local.json`` (created if missing); the
    path written. A file that is not a JSON object is refused (:class:`UsageError`), untouched."""
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory; give the project's directory")
    path = directory / CLAUDE_SETTINGS
    existing: dict[str, Any] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if text is not None and text.strip():
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"{path} is not valid JSON ({exc}); fix it, then install again") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"{path} is not a JSON object; fix it, then install again")
        existing = loaded
    try:
        merged = merge_claude_settings(existing)
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None
    path.parent.mkdir(exist_ok=True)
    # Written whole, then renamed: Claude Code may read the file at any moment.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".settings.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(merged, out, indent=2)
            out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path

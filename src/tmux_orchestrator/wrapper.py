"""The wrapper that runs a project's command inside its pane and reports how it ended.

The wrapper is a small POSIX sh script written per attempt to ``$TMO_HOME/run/<id>-<attempt>.sh``
(mode 0600: it holds the project's environment). It

* leaves ``<id>-<attempt>.started`` (a shell builtin, no fork): a daemon that died before it recorded
  the session still learns that the attempt ran, and never runs it twice as "never started";
* runs the command in the project's directory with ``TMO_PROJECT_ID``, ``TMO_HOME``,
  ``TMO_DONE_FILE`` and the project's own variables;
* keeps the exit code in ``<id>-<attempt>.exit`` (a builtin ``printf``, no fork), so a daemon that
  was down when the project ended still finds the real code after its restart;
* then, as its last act, pushes ``exit <id> <attempt> <code>`` into the daemon's FIFO, which wakes
  the daemon about 0.5 ms after the exit (``tmux-facts.md`` section 2). The FIFO is opened
  read-write (``1<>``), so the write never blocks when no daemon is listening. Nothing of the
  wrapper runs after it, so the daemon finds the project's process group gone a moment later and
  frees the slot (a slot is free only once the group is gone).

The wrapper traps INT and TERM with a no-op handler (not an ignore: ignored signals would be
inherited by the command) so that it outlives a signalled command long enough to report its code.
HUP is deliberately not trapped: when the terminal goes away (the session is killed from outside, or
the tmux server dies) the wrapper, as session leader, dies at once and the kernel then hangs up the
whole foreground process group, so the command does not live on without a session. Such an end has
no recorded code and the daemon reports the project ``lost``.
"""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from tmux_orchestrator.config import Settings
from tmux_orchestrator.environment import is_env_name
from tmux_orchestrator.home import read_private, replace_private, user_umask
from tmux_orchestrator.project import Project
from tmux_orchestrator.redact import without_password


def wrapper_script(settings: Settings, project: Project) -> str:
    """The sh source of the wrapper for ``project``'s current attempt."""
    exit_path = settings.exit_path(project.id, project.attempt)
    env = {
        **project.env,
        "TMO_HOME": str(settings.home),
        "TMO_PROJECT_ID": str(project.id),
        "TMO_ATTEMPT": str(project.attempt),
        "TMO_DONE_FILE": str(settings.marker_path(project.id)),
        "TMO_SESSION_NAME": project.session_name or "",
    }
    if project.spec_path:
        env["TMO_SPEC_FILE"] = project.spec_path
    if settings.database_url:  # `tmo complete` in the pane finds the database, never its password
        env["TMO_DATABASE_URL"] = without_password(settings.database_url)
    exports = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items() if is_env_name(k))
    q = shlex.quote
    started = settings.started_path(project.id, project.attempt)
    tmux = shutil.which("tmux") or "tmux"
    option = exit_option(project.id, project.attempt)
    return f"""# tmux-orchestrator wrapper: project {project.id}, attempt {project.attempt}
trap : INT TERM
{exports}
umask 077; set -C; printf '' > {q(str(started))}; set +C; umask {user_umask():03o}
{_command_line(project.command)}
rc=$?
umask 077; set -C
printf '%s\\n' "$rc" 2>/dev/null > {q(str(exit_path))} || \\
  {q(tmux)} -S {q(str(settings.socket_path))} set-option -s {option} "$rc" 2>/dev/null
printf 'exit %s %s %s\\n' {project.id} {project.attempt} "$rc" 1<> {q(str(settings.fifo_path))}
exit "$rc"
"""


def exit_option(project_id: int, attempt: int) -> str:
    """The tmux server option where a wrapper leaves its exit code when no file can hold it."""
    return f"@tmo_exit_{project_id}_{attempt}"


_INTEGER = re.compile(r"-?[0-9]+")


def _command_line(argv: list[str]) -> str:
    """``argv`` as sh words. The first word is always quoted, so sh never reads it as a
    reserved word (``if``, ``done``) or an assignment (``x=1``)."""
    first = "'" + argv[0].replace("'", "'\"'\"'") + "'"
    return " ".join([first, *(shlex.quote(word) for word in argv[1:])])


def write_wrapper(settings: Settings, project: Project) -> Path:
    """Write the wrapper of the current attempt (0600, renamed into place: a link planted at its
    path is replaced, never written through); returns its path."""
    path = settings.run_dir / f"{project.id}-{project.attempt}.sh"
    replace_private(path, wrapper_script(settings, project))
    return path


@dataclass(frozen=True)
class ExitMessage:
    """``exit <id> <attempt> <code>`` as read from the FIFO."""

    project_id: int
    attempt: int
    exit_code: int


def parse_fifo_line(line: str) -> ExitMessage | None:
    """The exit message in ``line``, or None for pokes and garbage."""
    parts = line.split()
    if len(parts) == 4 and parts[0] == "exit" and all(_INTEGER.fullmatch(p) for p in parts[1:]):
        return ExitMessage(int(parts[1]), int(parts[2]), int(parts[3]))
    return None


def read_exit_file(path: Path) -> int | None:
    """The exit code the wrapper left in ``path``, or None if there is none (yet)."""
    try:
        data = read_private(path, limit=64)  # never through a planted link
    except OSError:
        return None
    text = (data or b"").decode(errors="replace").strip()
    return int(text) if _INTEGER.fullmatch(text) else None


_SUCCESS = {"", "0", "ok", "success", "succeeded", "done", "complete", "completed", "pass", "passed"}
_FAILURE = {"fail", "failed", "failure", "error", "errored", "1", "false"}


@dataclass(frozen=True)
class Marker:
    """What a project wrote into its ``$TMO_DONE_FILE``."""

    success: bool
    message: str | None


def parse_marker(text: str) -> Marker:
    """Read a marker file: first word success/failure (empty = success), the rest a message.

    Accepted first words: ``ok``, ``success``, ``done``, ``completed``, ``0`` ... for success and
    ``fail``, ``failed``, ``error``, ``1`` ... for failure; a first word that is neither counts as
    success and the whole text is kept as the message.
    """
    stripped = text.strip()
    parts = stripped.split(None, 1)
    word = parts[0].rstrip(":").lower() if parts else ""
    message = parts[1].strip() if len(parts) > 1 else None
    if word in _FAILURE:
        return Marker(False, message)
    if word in _SUCCESS:
        return Marker(True, message)
    return Marker(True, stripped or None)

"""Session commands: sessions, cleanup, attach, logs."""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import click

from tmux_orchestrator.cli.app import (
    PROJECT_ID,
    Context,
    cli,
    json_option,
    pass_context,
    print_json,
    print_table,
)
from tmux_orchestrator.errors import OrchestratorError, ProjectNotFound
from tmux_orchestrator.home import log_closed_marker, open_private
from tmux_orchestrator.inputs import safe_text
from tmux_orchestrator.output import PlainText, last_lines, last_lines_start
from tmux_orchestrator.project import Outcome, Project, ProjectStatus
from tmux_orchestrator.reconcile import classify_sessions, is_ours


@cli.command()
@json_option
@pass_context
def sessions(ctx: Context, as_json: bool) -> None:
    """List the sessions this orchestrator owns, marking lingering and orphaned ones."""
    rows = classify_sessions(ctx.existing)
    if as_json:
        print_json([r.to_dict() for r in rows])
        return
    now = datetime.now(UTC).timestamp()
    print_table(
        ["SESSION", "ID", "PROJECT", "STATUS", "STATE", "AGE", "ATTACHED"],
        [
            [r.session.name, r.session.session_id, r.project_id or "", r.project_status or "",
             r.state, f"{int(now - r.session.created)}s" if r.session.created else "",
             "yes" if r.session.attached else ""]
            for r in rows
        ],
    )


@cli.command()
@click.option("--dry-run", "-n", is_flag=True, help="Only list what would be killed, and why.")
@click.option("--pattern", help="Only sessions whose whole name matches this glob (e.g. 'build-*').")
@json_option
@pass_context
def cleanup(ctx: Context, dry_run: bool, pattern: str | None, as_json: bool) -> None:
    """Kill lingering and orphaned sessions (saved first), in one batched tmux call."""
    orch = ctx.existing if dry_run else ctx.orch  # a dry run creates nothing
    rows = [r for r in classify_sessions(orch) if r.state in ("lingering", "orphaned")]
    if pattern:
        rows = [r for r in rows if fnmatch.fnmatchcase(r.session.name, pattern)]
    killed: set[str] = set()
    held: dict[str, str] = {}
    if not dry_run and rows:
        killed = {s.session_id for s in orch.kill_sessions_batch(rows)}
        # what another cleaner (the daemon, another tmo) is cleaning up is left to it
        held = {c["session_key"]: c["owner"] for c in orch.store.claims()}
    if as_json:
        print_json([{**r.to_dict(), "killed": r.session.session_id in killed,
                     "left_to": held.get(r.session.key)} for r in rows])
        return
    if not rows:
        click.echo("nothing to clean up")
        return
    failed = False
    for r in rows:
        if dry_run:
            verb = "would kill"
        elif r.session.session_id in killed:
            verb = "killed"
        elif r.session.key in held:
            verb = f"left to another cleaner ({held[r.session.key]}):"
        else:
            verb, failed = "could not kill", True
        click.echo(safe_text(f"{verb} {r.session.name} ({r.session.session_id}): {r.reason}"))
    if failed:
        raise click.exceptions.Exit(1)


@cli.command()
@click.argument("project_id", type=PROJECT_ID)
@click.option("--read-only", "-r", is_flag=True, help="Attach without sending keys.")
@click.option("--ssh", "via_ssh", is_flag=True,
              help="If the project runs on another host, attach there: `ssh -t HOST tmo attach ID`.")
@pass_context
def attach(ctx: Context, project_id: int, read_only: bool, via_ssh: bool) -> None:
    """Attach this terminal to a running project's session (detach with C-b d; inside your own
    tmux, C-b C-b d, as a line printed first says)."""
    project = ctx.existing.get(project_id)
    if project.status == ProjectStatus.PROCESSING and not is_ours(project, ctx.settings) and project.host:
        remote = ["ssh", "-t", project.host, "tmo", "attach", str(project_id), *(["-r"] if read_only else [])]
        if not via_ssh:
            raise OrchestratorError(
                f"project {project_id} runs on host {project.host}, not here ({ctx.settings.host}); "
                f"attach there, or run `tmo attach {project_id} --ssh` ({' '.join(remote)})")
        _need_terminal(project_id)
        sys.stdout.flush()
        os.execvp(remote[0], remote)
    session = ctx.existing.session_of(project)
    if session is None:
        raise OrchestratorError(
            f"project {project_id} has no live session (status {project.status.value}); "
            f"see its output with `tmo logs {project_id}`"
        )
    _need_terminal(project_id)
    attach_cmd = ["attach-session", *(["-r"] if read_only else []), "-t", session.session_id]
    argv = ctx.existing.tmux.argv([attach_cmd])
    env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
    if os.environ.get("TMUX"):
        click.echo(f"tmo: {nested_detach_hint()}", err=True)
    sys.stdout.flush()
    os.execvpe(argv[0], argv, env)


def _need_terminal(project_id: int) -> None:
    """Refuse to attach without a terminal, in one line (tmux would say "open terminal failed")."""
    if not sys.stdin.isatty():
        raise OrchestratorError(
            f"`tmo attach` needs a terminal and stdin is not one; run it in a terminal, or read "
            f"project {project_id}'s output with `tmo logs {project_id}`")


#: The prefix key of tmo's own server: it reads no configuration (``-f /dev/null``).
TMO_PREFIX = "C-b"


def nested_detach_hint() -> str:
    """How to detach a client of tmo's server attached inside the user's own tmux (``$TMUX``).

    The nested client is told apart by its keys, not by a prefix of its own: a prefix set on tmo's
    server would hold for every client of the session (one attached from a plain terminal too), and
    ``C-a``, the usual other choice, is a key the program in the pane may need (readline, agents).
    The user's tmux is only read, never changed.
    """
    try:  # the user's prefix for the session we run in (-A: inherited from the global one)
        outer = subprocess.run(["tmux", "show-options", "-Av", "prefix"], capture_output=True,
                               text=True, timeout=5, stdin=subprocess.DEVNULL, check=False)
        prefix = outer.stdout.strip() if outer.returncode == 0 and outer.stdout.strip() else TMO_PREFIX
    except (OSError, subprocess.SubprocessError):
        prefix = TMO_PREFIX  # tmux's default
    if prefix == TMO_PREFIX:
        return (f"inside your own tmux: detach this session with {TMO_PREFIX} {TMO_PREFIX} d "
                f"({TMO_PREFIX} d detaches your own tmux client)")
    return f"inside your own tmux (prefix {prefix}): detach this session with {TMO_PREFIX} d"


@cli.command("_cleanup", hidden=True)
@click.option("--reason", default="completed")
@click.argument("ids", type=PROJECT_ID, nargs=-1)
@pass_context
def cleanup_detached(ctx: Context, reason: str, ids: tuple[int, ...]) -> None:
    """Clean up the sessions of projects, from a process of its own (see ``Orchestrator``)."""
    projects = []
    for project_id in ids:
        try:
            projects.append(ctx.orch.get(project_id))
        except ProjectNotFound:
            continue
    ctx.orch.clean_projects(projects, reason=reason)


@cli.command()
@click.argument("project_id", type=PROJECT_ID)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until the project ends.")
@click.option("--scrollback", is_flag=True, help="Print the scrollback saved when the session was killed.")
@click.option("--plain", is_flag=True,
              help="Remove terminal escapes (colours, titles, cursor moves) and apply \\r and backspace "
                   "overwrites: readable text of a TUI program. A line is printed once it is complete; one "
                   "longer than 65536 characters is split into lines that long.")
@click.option("--lines", "-n", type=click.IntRange(min=0), metavar="N",
              help="Only the last N lines (like tail -n); with --follow, then the new output.")
@pass_context
def logs(ctx: Context, project_id: int, follow: bool, scrollback: bool, plain: bool,
         lines: int | None) -> None:
    """Print a project's complete output (raw terminal bytes, every attempt)."""
    project = ctx.existing.get(project_id)
    path = _saved_scrollback(ctx, project) if scrollback else ctx.settings.log_path(project_id)
    follow = follow and not scrollback
    out = LogPrinter(sys.stdout.buffer, plain=plain)
    position = 0
    if not scrollback and not follow:
        _wait_until_written(project, path)
    if path.exists():
        with _open_log(path) as fh:
            if lines is None:
                while chunk := fh.read(1 << 16):
                    out.write(chunk)
            else:
                fh.seek(last_lines_start(fh, lines))
                out.write_last(fh.read(), lines, final=not follow)
            position = fh.tell()
    elif not follow:
        what = "saved scrollback" if scrollback else "output"
        raise OrchestratorError(f"no {what} for project {project_id} yet ({path})")
    if follow:
        _follow(ctx, project_id, path, position, out)
    out.close()


def _follow(ctx: Context, project_id: int, path: Path, position: int, out: LogPrinter) -> None:
    """Print what is appended to ``path`` from ``position`` on, until the project has ended."""
    ended_at: float | None = None
    while True:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size > position:
            with _open_log(path) as fh:
                fh.seek(position)
                out.write(fh.read(size - position))
                position = size
        if ended_at is None:
            try:
                project = ctx.existing.get(project_id)
            except ProjectNotFound:
                return
            if project.status not in (ProjectStatus.QUEUED, ProjectStatus.PROCESSING):
                _wait_until_written(project, path)
                ended_at = time.monotonic()  # one more read: what the pipe wrote meanwhile
                continue
        else:
            return
        time.sleep(0.1)


#: The longest `tmo logs` waits for the pipe of a project that just ended to write its last output.
WRITER_WAIT = 3.0


def _wait_until_written(project: Project, path: Path) -> None:
    """For a project whose session ended a moment ago, wait (at most :data:`WRITER_WAIT`) until the
    pane's pipe has written the last of its output to ``path``, as the marker it leaves then says
    (:func:`~tmux_orchestrator.home.log_closed_marker`): the end is recorded once the session is
    gone, with up to a pipe's worth of output (64 KB) still on its way."""
    ended = project.session_closed_at or project.completed_at
    if (not project.status.is_terminal or project.session_id is None or ended is None
            or not path.exists() or (datetime.now(UTC) - ended).total_seconds() > 60):
        return
    marker = log_closed_marker(path)
    deadline = time.monotonic() + WRITER_WAIT
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


class LogPrinter:
    """Writes a log to a binary stream, raw or as plain text (:class:`PlainText`), flushing as it
    goes so that a follower sees each piece at once."""

    def __init__(self, stream: BinaryIO, *, plain: bool) -> None:
        self.stream = stream
        self.plain = PlainText() if plain else None

    def write(self, data: bytes) -> None:
        """Print ``data`` (as plain text: the lines it completes)."""
        self.stream.write(self.plain.feed(data) if self.plain else data)
        self.stream.flush()

    def write_last(self, data: bytes, count: int, *, final: bool) -> None:
        """Print the last ``count`` lines of ``data``: as plain text, of the lines left once escapes
        are removed (a cursor move may have made two of one). ``final``: nothing follows."""
        if self.plain:
            data = self.plain.feed(data) + (self.plain.flush() if final else b"")
        self.stream.write(last_lines(data, count))
        self.stream.flush()

    def close(self) -> None:
        """Print the last line of plain text, even without its newline."""
        if self.plain:
            self.stream.write(self.plain.flush())
            self.stream.flush()


def _saved_scrollback(ctx: Context, project: Project) -> Path:
    """The latest saved scrollback of ``project`` (one file per attempt); the error says why there
    is none and where the output is."""
    path = ctx.settings.saved_scrollback(project.id, project.attempt)
    if path is not None:
        return path
    if project.attempt == 0:
        raise OrchestratorError(f"project {project.id} has no saved scrollback: it has not run yet")
    if project.status == ProjectStatus.PROCESSING:
        why = "its session still runs (a scrollback is saved when tmo kills a session)"
    elif project.outcome in (Outcome.EXITED, Outcome.SIGNAL):  # of its last attempt
        why = "its session ended by itself, with its command, so there was nothing left to save"
    else:
        why = "a scrollback is saved only when tmo kills a session that is still open"
    raise OrchestratorError(f"project {project.id} has no saved scrollback: {why}; its complete output "
                            f"is in its log: `tmo logs {project.id}`")


def _open_log(path: Path) -> BinaryIO:
    """A project's log or scrollback for reading, never through a link planted in its place."""
    try:
        return os.fdopen(open_private(path, os.O_RDONLY | os.O_NONBLOCK), "rb")
    except OSError as exc:
        raise OrchestratorError(f"cannot read {path}: {exc.strerror or exc}") from None

"""``tmo demo``: watch three small projects start, run, finish and their sessions vanish."""

from __future__ import annotations

import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import click

from tmux_orchestrator.cli.app import CONTEXT_SETTINGS, cli
from tmux_orchestrator.cli.events import _text
from tmux_orchestrator.config import load_settings
from tmux_orchestrator.orchestrator import Orchestrator
from tmux_orchestrator.project import ProjectStatus
from tmux_orchestrator.service import start_daemon, stop_daemon


def _demo_projects() -> list[tuple[str, list[str]]]:
    tmo = f"{shlex.quote(sys.executable)} -m tmux_orchestrator"
    return [
        ("count-to-five", ["sh", "-c", "for i in 1 2 3 4 5; do echo step $i; sleep 0.3; done"]),
        ("agent-says-done", ["sh", "-c", f"echo working on the spec; sleep 1; {tmo} complete; sleep 60"]),
        ("exits-with-3", ["sh", "-c", "echo something went wrong; sleep 0.5; exit 3"]),
    ]


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.option("--home", "demo_home", type=click.Path(file_okay=False),
              help="Use this home instead of a temporary one (kept afterwards).")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=1, show_default=True)
def demo(demo_home: str | None, concurrency: int) -> None:
    """Run a demo queue on SQLite in a temporary home and show it live."""
    home = Path(demo_home) if demo_home else Path(tempfile.mkdtemp(prefix="tmo-demo-"))
    settings = load_settings(home, f"sqlite:///{home / 'tmo.db'}")
    orch = Orchestrator(settings, source="cli")
    click.echo(f"demo home: {home}  (tmux socket {settings.socket_path})")
    try:
        pid = start_daemon(settings, concurrency=concurrency)
        click.echo(f"daemon started (pid {pid}), concurrency {concurrency}\n")
        cursor = orch.store.last_event_id()
        ids = [orch.enqueue(argv, name=name, project_path=home).id for name, argv in _demo_projects()]
        deadline = time.monotonic() + 60
        shown_sessions: list[str] | None = None
        while time.monotonic() < deadline:
            for event in orch.store.events_after(cursor):
                click.echo(_text(event))
                cursor = event.id
            sessions = orch.tmux_manager.get_active_sessions()
            if sessions != shown_sessions:
                click.echo(f"    tmux sessions now: {', '.join(sessions) if sessions else '(none)'}")
                shown_sessions = sessions
            done = all(orch.get(i).status.is_terminal for i in ids)
            if done and not sessions:
                break
            time.sleep(0.05)
        click.echo("")
        for project_id in ids:
            project = orch.get(project_id)
            click.echo(f"project {project.id} {project.name:<16} {project.status.value:<10} "
                       f"outcome={project.outcome} exit={project.exit_code}")
        left = orch.tmux_manager.get_active_sessions()
        click.echo(f"owned sessions left: {len(left)}")
        all_done = all(orch.get(i).status != ProjectStatus.PROCESSING for i in ids)
        if left or not all_done:
            raise click.ClickException("demo did not finish cleanly")
    finally:
        try:
            stop_daemon(settings)
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass
        orch.server.kill_server()
        orch.close()
        if not demo_home:
            shutil.rmtree(home, ignore_errors=True)
            settings.socket_path.unlink(missing_ok=True)

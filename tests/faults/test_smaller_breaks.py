"""Break 8: the smaller ones, each reproduced on the old code."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from acceptance.support import DaemonControl, Tmo, run_sql
from faults.support import Ledger
from tmux_orchestrator.testing import retry_until


def test_run_files_do_not_pile_up(tmo: Tmo, daemon: DaemonControl) -> None:
    ids = [tmo.add("sleep", "0.1", options=["--name", f"quick{n}"]) for n in range(8)]
    daemon.start("--concurrency", "1")
    for project in ids:
        tmo.wait_status(project, "completed", timeout=20)
    time.sleep(2.0)  # the wrappers' last file operations are long done
    left = sorted(p.name for p in (tmo.home / "run").iterdir() if p.name[0].isdigit())
    assert left == [], left


def test_complete_inside_a_session_does_not_fork_its_open_database(tmo: Tmo, daemon: DaemonControl) -> None:
    # The project's `tmo complete` runs in a Python whose os.fork is gone: a clean-up that forks the
    # process holding the SQLite connection fails, one that starts a fresh process works.
    code = "import os; del os.fork; from tmux_orchestrator.cli import main; main(['complete'])"
    project = tmo.add("sh", "-c", f"{sys.executable} -c \"{code}\"; sleep 600",
                      options=["--name", "forkless"])
    daemon.start()
    ended = tmo.wait_status(project, "completed", timeout=20)
    session = ended["session_name"]
    retry_until(lambda: session not in tmo.tmux_session_names(), timeout=20, message="the session to go")
    time.sleep(3.0)
    kinds = [e["kind"] for e in tmo.events() if e["project_id"] == project]
    assert kinds.count("session_killed") == 1 and "lingering_cleaned" not in kinds, kinds
    saved = [p for p in (tmo.home / "logs").iterdir() if "scrollback" in p.name]
    assert saved and all("Traceback" not in p.read_text() for p in saved)


def test_a_bad_event_row_does_not_stop_hooks(tmo: Tmo, daemon: DaemonControl) -> None:
    out = tmo.home / "hook.out"
    (tmo.home / "config.toml").write_text(
        f'[[hooks]]\nname = "note"\non = ["completed"]\ncommand = ["sh", "-c", "cat >> {out}"]\n')
    daemon.start()
    first = tmo.add("true", options=["--name", "first"])
    retry_until(lambda: out.exists() and "first" in out.read_text(), timeout=20, message="the first hook")
    # A hand-written event row with a timestamp that does not parse.
    run_sql(tmo.home, "INSERT INTO events (kind, source, at) VALUES ('completed', 'sql', 'not a time')")
    second = tmo.add("true", options=["--name", "second"])
    tmo.wait_status(second, "completed", timeout=20)
    retry_until(lambda: "second" in out.read_text(), timeout=20,
                message="the hook to fire after the bad row")
    assert first != second


class _Redirecting(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.seen.append(f"POST {self.path}")
        self.send_response(302)
        self.send_header("Location", "/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self.seen.append(f"GET {self.path}")
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def redirecting_server() -> Iterator[ThreadingHTTPServer]:
    _Redirecting.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_redirected_webhook_is_not_delivered(
    tmo: Tmo, daemon: DaemonControl, redirecting_server: ThreadingHTTPServer
) -> None:
    port = redirecting_server.server_address[1]
    (tmo.home / "config.toml").write_text(
        f'[[webhooks]]\nname = "moved"\nurl = "http://127.0.0.1:{port}/hook"\non = ["completed"]\n'
        'max_attempts = 1\n')
    daemon.start()
    project = tmo.add("true", options=["--name", "hooked"])
    tmo.wait_status(project, "completed", timeout=20)
    retry_until(lambda: any(e["kind"] == "webhook_failed" for e in tmo.events()), timeout=20,
                message="a webhook_failed event for the redirect")
    failed = [e for e in tmo.events() if e["kind"] == "webhook_failed"]
    assert "redirect" in (failed[0]["message"] or "").lower(), failed


def test_retry_count_moves_with_the_transition(tmo: Tmo) -> None:
    project = tmo.add("true", options=["--name", "counted"])
    tmo.ok("cancel", str(project))
    # A fault injected in the database: every change back to queued is refused.
    run_sql(tmo.home, "CREATE TRIGGER no_requeue BEFORE UPDATE OF status ON project_queue "
                      "WHEN NEW.status = 'queued' BEGIN SELECT RAISE(ABORT, 'injected fault'); END")
    result = tmo("retry", str(project))
    assert result.returncode != 0
    shown = json.loads(tmo.ok("show", str(project), "--json"))
    assert (shown["status"], shown["retry_count"]) == ("cancelled", 0), shown


def test_each_attempt_keeps_its_own_scrollback_and_session_name(tmo: Tmo, daemon: DaemonControl) -> None:
    project = tmo.add("sh", "-c", 'echo "this is attempt $TMO_ATTEMPT"; sleep 600',
                      options=["--name", "twice", "--timeout", "1s", "--max-retries", "1"])
    daemon.start()
    ended = tmo.wait_status(project, "failed", timeout=30)
    assert ended["attempt"] == 2
    names = {1: f"twice-{project}", 2: f"twice-{project}-r2"}
    retry_until(lambda: not (set(names.values()) & tmo.tmux_session_names()), timeout=20,
                message="both sessions to go")
    time.sleep(1.0)
    saved = {e["session_name"]: e["message"] for e in tmo.events()
             if e["project_id"] == project and e["kind"] == "output_saved"}
    assert set(saved) == set(names.values()), saved
    texts = {}
    for attempt, name in names.items():
        path = saved[name].split(" (")[0]
        texts[attempt] = open(path).read()
    assert "this is attempt 1" in texts[1] and "this is attempt 2" not in texts[1]
    assert "this is attempt 2" in texts[2]


def test_a_started_but_unrecorded_session_is_not_run_again(tmo: Tmo, daemon: DaemonControl) -> None:
    # A daemon that died between creating a session and recording it: the session ran (the ledger
    # says so) and was then killed from outside. The next daemon must not requeue it as "never
    # started" (max_retries is 0: it may run once).
    from tmux_orchestrator.config import load_settings
    from tmux_orchestrator.orchestrator import Orchestrator

    ledger = Ledger(tmo.home / "ledger")
    project = tmo.add(*ledger.command("stubborn"), options=["--name", "half"])
    orch = Orchestrator(load_settings(tmo.home))
    try:
        _start_without_recording(orch)
        retry_until(lambda: len(ledger.starts()) == 1, timeout=20, message="the project to run")
        session = f"half-{project}"
        assert tmo.tmux("kill-session", "-t", f"={session}").returncode == 0
    finally:
        orch.close()
    daemon.start()
    ended = tmo.wait_status(project, "failed", "completed", "queued", timeout=20)
    time.sleep(3.0)
    assert len(ledger.starts()) == 1, ledger.starts()
    assert tmo.project(project)["status"] == "failed", ended
    assert tmo.project(project)["outcome"] == "lost"


def _start_without_recording(orch: Any) -> None:
    """Claim and start the next project as the old daemon did, then 'die' before recording it."""
    from tmux_orchestrator.wrapper import write_wrapper

    claimed = orch.store.claim_next(host=orch.host, max_processing=1)
    assert claimed is not None
    orch.server.ensure_running()
    script = write_wrapper(orch.settings, claimed)
    orch.server.start_session(name=claimed.session_name, project_id=claimed.id,
                              cwd=str(orch.settings.home), argv=["/bin/sh", str(script)],
                              log_path=orch.settings.log_path(claimed.id))


def test_cancel_racing_a_claim_leaves_no_session(tmo: Tmo) -> None:
    # The daemon claimed the project; before it created the session, `tmo cancel` ended it.
    from tmux_orchestrator.config import load_settings
    from tmux_orchestrator.daemon import Daemon
    from tmux_orchestrator.orchestrator import Orchestrator

    ledger = Ledger(tmo.home / "ledger")
    project = tmo.add(*ledger.command("sleep:600"), options=["--name", "raced"])
    orch = Orchestrator(load_settings(tmo.home), source="daemon")
    try:
        claimed = orch.store.claim_next(host=orch.host, max_processing=1)
        assert claimed is not None and claimed.id == project
        tmo.ok("cancel", str(project))
        orch.server.ensure_running()
        Daemon(orch, install_signal_handlers=False).launch(claimed)
        assert f"raced-{project}" not in tmo.tmux_session_names()
        assert tmo.status_of(project) == "cancelled"
    finally:
        orch.close()


def test_a_session_started_for_a_project_cancelled_meanwhile_is_killed(tmo: Tmo) -> None:
    # The cancel lands after the daemon's last look and before it records the new session: the
    # session is killed at once (never watched, never left running), once.
    from tmux_orchestrator.config import load_settings
    from tmux_orchestrator.daemon import Daemon
    from tmux_orchestrator.orchestrator import Orchestrator

    ledger = Ledger(tmo.home / "ledger")
    project = tmo.add(*ledger.command("sleep:600"), options=["--name", "late"])
    orch = Orchestrator(load_settings(tmo.home), source="daemon")
    try:
        daemon = Daemon(orch, install_signal_handlers=False)
        claimed = orch.store.claim_next(host=orch.host, max_processing=1, runner=orch.settings.runner)
        assert claimed is not None
        orch.server.ensure_running()
        spec = daemon.launcher._spec(claimed)
        started = orch.server.start_session(name=spec.name, project_id=spec.project_id, cwd=spec.cwd,
                                            argv=spec.argv, log_path=spec.log_path)
        tmo.ok("cancel", str(project))
        daemon.launcher._started(claimed, started)
        retry_until(lambda: f"late-{project}" not in tmo.tmux_session_names(), timeout=15,
                    message="the late session to be killed")
        assert project not in daemon.running
        retry_until(lambda: tmo.project(project)["session_closed_at"] is not None, timeout=15,
                    message="the session to be closed")
        time.sleep(1.0)
        kinds = [e["kind"] for e in tmo.events() if e["project_id"] == project]
        assert kinds.count("session_killed") == 1, kinds
        assert tmo.status_of(project) == "cancelled"
    finally:
        orch.close()

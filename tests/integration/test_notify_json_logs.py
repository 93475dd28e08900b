"""`tmo daemon run --log-json`: scheduler.log as JSON lines, every line about a project tagged with it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tmux_orchestrator.config import Settings
from tmux_orchestrator.orchestrator import Orchestrator
from tmux_orchestrator.project import ProjectStatus
from tmux_orchestrator.testing import retry_until


def log_lines(settings: Settings) -> list[dict[str, Any]]:
    path = settings.scheduler_log
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_every_json_log_line_about_a_project_carries_its_id_and_session_name(
    tmo_settings: Settings, orchestrator: Orchestrator, tmp_path: Path,
) -> None:
    tmo_settings.config_path.write_text("""
[[hooks]]
name = "broken"
on = ["failed"]
command = "exit 9"
""")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tmux_orchestrator", "daemon", "run", "--quiet", "--log-json"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        ok = orchestrator.enqueue(["true"], name="ok", project_path=tmp_path)
        bad = orchestrator.enqueue(["sh", "-c", "exit 3"], name="bad", project_path=tmp_path)
        slow = orchestrator.enqueue(["sleep", "600"], name="slow", project_path=tmp_path, timeout=0.5)
        stopped = orchestrator.enqueue(["sleep", "600"], name="stopped", project_path=tmp_path)
        retry_until(lambda: orchestrator.get(stopped.id).session_id, timeout=20, message="the 4th start")
        orchestrator.cancel(stopped.id)
        retry_until(lambda: any("hook broken failed" in r["message"] and r["project_id"] == slow.id
                                for r in log_lines(tmo_settings)), timeout=20,
                    message="the hook failure about the timed-out project")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)

    assert orchestrator.get(slow.id).status == ProjectStatus.FAILED
    records = log_lines(tmo_settings)
    about_projects = [r for r in records if re.search(r"\bproject \d+", r["message"])]
    assert {ok.id, bad.id, slow.id, stopped.id} <= {r.get("project_id") for r in about_projects}
    for record in about_projects:
        assert "project_id" in record and "session_name" in record, record
        mentioned = int(re.findall(r"\bproject (\d+)", record["message"])[0])
        assert record["project_id"] == mentioned, record
    sessions = {r["project_id"]: r["session_name"] for r in about_projects if r["session_name"]}
    assert sessions[ok.id] == orchestrator.get(ok.id).session_name
    assert sessions[slow.id] == orchestrator.get(slow.id).session_name

"""`tmo events --follow`: hand-written SQL changes reach a follower within 100 ms; filters hold."""

from __future__ import annotations

import json
import queue
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tmux_orchestrator.config import Settings
from tmux_orchestrator.orchestrator import Orchestrator


class Follower:
    """``tmo events --follow --json ...`` as a child process, its lines read on a thread."""

    def __init__(self, *options: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tmux_orchestrator", "events", "--follow", "--json", *options],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )
        self.lines: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), json.loads(line)))

    def next(self, timeout: float = 15.0) -> tuple[float, dict[str, Any]]:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no event line within {timeout}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # our own child, by its pid
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def follow(tmo_settings: Settings) -> Iterator[Callable[..., Follower]]:
    started: list[Follower] = []

    def start(*options: str) -> Follower:
        started.append(Follower(*options))
        return started[-1]

    yield start
    for follower in started:
        follower.stop()


def run_sql(settings: Settings, statement: str) -> None:
    """One hand-written statement from its own connection, committed at once (as sqlite3 would)."""
    assert settings.database_path is not None
    conn = sqlite3.connect(settings.database_path, timeout=30, isolation_level=None)
    try:
        conn.execute(statement)
    finally:
        conn.close()


def insert(settings: Settings, name: str) -> None:
    run_sql(settings, f"INSERT INTO project_queue (name, command) VALUES ('{name}', '[\"true\"]')")


def test_a_hand_written_sql_change_reaches_a_follower_within_100_ms(
    tmo_settings: Settings, orchestrator: Orchestrator, follow: Callable[..., Follower],
) -> None:
    follower = follow("--since", str(orchestrator.store.last_event_id()))
    insert(tmo_settings, "warm-up")
    follower.next()  # the follower is up and reading
    delays = []
    for n in range(5):
        before = time.monotonic()
        insert(tmo_settings, f"by-hand-{n}")
        arrived, event = follower.next(timeout=5)
        assert (event["kind"], event["project_name"], event["source"]) == ("queued", f"by-hand-{n}", "sql")
        delays.append(arrived - before)
    assert max(delays) < 0.1, f"delays {[f'{d * 1000:.0f} ms' for d in delays]}"


def test_follow_since_project_and_kind_select_the_events(
    tmo_settings: Settings, orchestrator: Orchestrator, follow: Callable[..., Follower],
) -> None:
    insert(tmo_settings, "before")
    since = orchestrator.store.last_event_id()
    insert(tmo_settings, "mine")
    insert(tmo_settings, "other")
    mine = {p.name: p.id for p in orchestrator.list_projects()}["mine"]
    backlog = follow("--since", str(since))
    filtered = follow("--project", str(mine), "--kind", "cancelled", "--since", "0")
    assert [backlog.next()[1]["project_name"] for _ in range(2)] == ["mine", "other"]

    run_sql(tmo_settings, "UPDATE project_queue SET status = 'cancelled' WHERE name = 'other'")
    run_sql(tmo_settings, f"UPDATE project_queue SET status = 'cancelled' WHERE id = {mine}")
    _, first = filtered.next()
    assert (first["kind"], first["project_id"], first["old_status"], first["source"]) == (
        "cancelled", mine, "queued", "sql")
    assert [backlog.next()[1]["project_name"] for _ in range(2)] == ["other", "mine"]

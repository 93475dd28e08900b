"""A tmux server that keeps dying does not make the daemon spin: restarts back off."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from tmux_orchestrator.config import Settings
from tmux_orchestrator.orchestrator import Orchestrator
from tmux_orchestrator.testing import DaemonThread, retry_until


def _kill_server(orchestrator: Orchestrator) -> None:
    pid = retry_until(orchestrator.tmux.server_pid, message="the tmux server to be up")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # our test's own server, by its pid
    retry_until(lambda: orchestrator.tmux.server_pid() != pid, message="the server to be gone")


def test_repeated_server_deaths_back_off_and_recover(
    orchestrator: Orchestrator, daemon_factory: Callable[..., DaemonThread], tmo_settings: Settings
) -> None:
    tmo_settings.reconcile_interval = 0.05
    daemon = daemon_factory()
    reconciler = daemon.daemon.reconciler

    def restarts() -> int:
        return len(orchestrator.store.events_after(0, kinds=["server_started"]))

    for expected in (1, 2, 3):
        _kill_server(orchestrator)

        def restarted(n: int = expected) -> bool:
            return restarts() >= n

        retry_until(restarted, message=f"restart {expected}")
    # Three deaths within a minute: the next restart waits instead of hammering tmux.
    backoff_until = time.time() + (reconciler.retry_server_at - time.monotonic())
    assert backoff_until > time.time()
    _kill_server(orchestrator)
    retry_until(lambda: restarts() == 4, timeout=5, message="the restart after the backoff")
    fourth = orchestrator.store.events_after(0, kinds=["server_started"])[-1]
    assert fourth.at.timestamp() >= backoff_until - 0.01  # not one restart before the backoff ended
    # and the queue works again
    project = orchestrator.enqueue(["true"], project_path=tmo_settings.home)
    retry_until(lambda: orchestrator.get(project.id).status.value == "completed", message="a project to run")

"""What the chaos tests share: a ``tmo daemon run`` child the test may SIGKILL at any moment."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path


class DaemonProcess:
    """``tmo daemon run`` of one home as a child process; counts the SIGKILLs it was given."""

    def __init__(self, home: Path, env: dict[str, str], *, concurrency: int, log_name: str,
                 stop_wait: float) -> None:
        self.home = home
        self.env = env
        self.concurrency = concurrency
        self.log_name = log_name
        self.stop_wait = stop_wait
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        with open(self.home / self.log_name, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tmux_orchestrator", "daemon", "run", "--concurrency",
                 str(self.concurrency), "--quiet"],
                env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.kills += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_wait)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

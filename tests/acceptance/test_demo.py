"""Requirement 10: `tmo demo` runs its little queue and leaves no owned session behind."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from acceptance.support import TMO, Tmo, cmdline, end_pid, pid_alive
from tmux_orchestrator.testing import end_tmux_server


@pytest.fixture
def demo_output(tmo: Tmo, tmp_path: Path) -> Iterator[Path]:
    """A file for the demo's output; whatever the demo started and left running is ended by pid."""
    out = tmp_path / "demo.out"
    yield out
    text = out.read_text(errors="replace") if out.exists() else ""
    for match in re.finditer(r"daemon started \(pid (\d+)\)", text):
        pid = int(match.group(1))
        if pid_alive(pid) and "daemon" in cmdline(pid):
            end_pid(pid)
    for match in re.finditer(r"\(tmux socket (\S+)\)", text):
        end_tmux_server(Path(match.group(1)))


def test_demo_exits_0_and_leaves_no_owned_sessions(tmo: Tmo, demo_output: Path) -> None:
    with open(demo_output, "w") as out:
        proc = subprocess.run([TMO, "demo"], stdout=out, stderr=subprocess.PIPE, text=True,
                              env=tmo.env, cwd=str(tmo.home), timeout=90, check=False)
    text = demo_output.read_text()
    assert proc.returncode == 0, f"{text}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    assert "owned sessions left: 0" in text, text
    socket = re.search(r"\(tmux socket (\S+)\)", text)
    assert socket, text
    assert not Path(socket.group(1)).exists() or subprocess.run(
        ["tmux", "-S", socket.group(1), "-f", "/dev/null", "list-sessions"],
        capture_output=True, check=False,
    ).returncode != 0, "the demo's tmux server is still running"

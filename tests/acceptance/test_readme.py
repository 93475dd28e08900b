"""The README's examples work as written on a fresh machine."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from acceptance.support import DaemonControl, Tmo

README = Path(__file__).resolve().parents[2] / "README.md"


def _python_example() -> str:
    match = re.search(r"### Python API\n```python\n(.*?)```", README.read_text(), re.S)
    assert match, "the README has no Python API example"
    return match.group(1)


@pytest.mark.parametrize("with_daemon", [False, True], ids=["fresh-home", "daemon-running"])
def test_the_python_example_runs_as_written(tmo: Tmo, daemon: DaemonControl, with_daemon: bool) -> None:
    if with_daemon:
        daemon.start()
    result = subprocess.run([sys.executable, "-c", _python_example()], cwd=str(tmo.home), env=tmo.env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] in ("queued", "processing"), result.stdout
    (project,) = tmo.projects()
    assert project["status"] == "completed"
    # whoever claimed it, its session (if the daemon started one) is gone with its completion
    assert tmo.session_names() == set()


def test_the_sql_example_waits_for_the_daemon() -> None:
    # The sqlite3 CLI fails at once with "database is locked" while the daemon writes, unless told
    # to wait: the example must tell it.
    lines = [line for line in README.read_text().splitlines() if line.startswith("sqlite3 ")]
    assert lines and all('-cmd ".timeout' in line for line in lines), lines

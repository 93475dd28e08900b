"""``tmo add --from-file``: many projects from a file or stdin in one transaction; any bad line
queues nothing and is reported with its line number."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from acceptance.support import TMO, Tmo, db_snapshot


def _write(tmo: Tmo, text: str) -> Path:
    path = tmo.home / "batch.txt"
    path.write_text(text)
    return path


def test_commands_and_json_lines_are_queued_in_order(tmo: Tmo) -> None:
    work = tmo.home / "work"
    work.mkdir()
    path = _write(tmo, "\n".join([
        "# one project per line",
        "echo 'hello world'",
        "",
        json.dumps({"command": ["sleep", "1"], "name": "sleeper", "priority": 7, "dir": str(work),
                    "env": {"COLOUR": "blue"}, "timeout": "5m", "max_retries": 2,
                    "retry_delay": "30s"}),
        json.dumps({"command": "sh -c 'exit 3'", "idle_timeout": 90}),
    ]) + "\n")
    out = tmo.ok("add", "--from-file", str(path), "--priority", "2", "--env", "A=1", "--no-env")
    ids = [int(line) for line in out.split()]
    assert len(ids) == 3 and ids == sorted(ids)
    first, second, third = (tmo.project(i) for i in ids)
    assert first["command"] == ["echo", "hello world"] and first["priority"] == 2
    assert tmo.env_of(ids[0]) == {"A": "1"}
    assert second["name"] == "sleeper" and second["priority"] == 7
    assert second["project_path"] == str(work.resolve())
    assert tmo.env_of(ids[1]) == {"A": "1", "COLOUR": "blue"}
    assert (second["timeout"], second["max_retries"], second["retry_delay"]) == (300.0, 2, 30.0)
    assert third["command"] == ["sh", "-c", "exit 3"] and third["idle_timeout"] == 90.0
    queued = [e for e in tmo.events() if e["kind"] == "queued"]
    assert sorted(e["project_id"] for e in queued) == ids
    assert {e["source"] for e in queued} == {"cli"}


def test_stdin_and_json_output(tmo: Tmo) -> None:
    result = subprocess.run([TMO, "add", "--from-file", "-", "--json"], input="true\nfalse\n",
                            capture_output=True, text=True, env=tmo.env, cwd=tmo.home, timeout=60)
    assert result.returncode == 0, result.stderr
    projects = json.loads(result.stdout)
    assert [p["command"] for p in projects] == [["true"], ["false"]]
    assert [p["status"] for p in projects] == ["queued", "queued"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("echo 'unclosed", "No closing quotation"),
        ('{"command": ["true"', "invalid JSON"),
        ('{"name": "no command"}', "missing command"),
        ('{"command": ["true"], "colour": "blue"}', "unknown key(s) colour"),
        ('{"command": ["true"], "priority": "high"}', "priority must be a whole number"),
        ('{"command": ["true"], "timeout": "soon"}', "invalid duration"),
        ('{"command": ["true"], "dir": "/no/such/dir"}', "does not exist"),
        ('{"command": ["true"], "env": {"1BAD": "x"}}', "environment variable name"),
        ('{"command": []}', "missing command"),
    ],
)
def test_a_bad_line_queues_nothing_and_names_its_line(tmo: Tmo, line: str, expected: str) -> None:
    tmo.add("echo", "before")
    before = db_snapshot(tmo.home)
    path = _write(tmo, f"true\n# comment\n{line}\nfalse\n")
    result = tmo("add", "--from-file", str(path))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(errors) == 1 and errors[0].startswith("tmo: error:"), result.stderr
    assert "line 3:" in errors[0] and expected in errors[0], errors[0]
    assert "nothing queued" in errors[0]
    assert db_snapshot(tmo.home) == before


def test_every_bad_line_is_reported_at_once(tmo: Tmo) -> None:
    path = _write(tmo, 'true\n{"command": 3}\ntrue\n{"command": ["x"], "dir": "/no/such/dir"}\n')
    result = tmo("add", "--from-file", str(path))
    assert result.returncode == 2
    assert "2 invalid line(s)" in result.stderr
    assert "line 2:" in result.stderr and "line 4:" in result.stderr
    assert db_snapshot(tmo.home).projects == 0


def test_file_and_command_together_or_empty_file_are_usage_errors(tmo: Tmo) -> None:
    path = _write(tmo, "true\n")
    both = tmo("add", "--from-file", str(path), "--", "echo", "hi")
    assert both.returncode == 2 and "not both" in both.stderr
    empty = _write(tmo, "# nothing\n\n")
    result = tmo("add", "--from-file", str(empty))
    assert result.returncode == 2 and "no project" in result.stderr
    missing = tmo("add", "--from-file", str(tmo.home / "missing.txt"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert db_snapshot(tmo.home).projects == 0


def test_a_batch_runs_under_the_daemon(tmo: Tmo) -> None:
    path = _write(tmo, "".join(f"sh -c 'exit {n % 2}'\n" for n in range(6)))
    ids = [int(x) for x in tmo.ok("add", "--from-file", str(path)).split()]
    tmo.ok("daemon", "start", "--concurrency", "3")
    try:
        finals = [tmo.wait_status(i, "completed", "failed", timeout=30) for i in ids]
    finally:
        tmo.ok("daemon", "stop")
    assert [p["status"] for p in finals] == ["completed", "failed"] * 3
    assert [p["exit_code"] for p in finals] == [0, 1] * 3

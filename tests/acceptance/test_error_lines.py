"""Issue 13, defect 3: every error is one line on stderr, ``tmo: error: ...``, exit 2 for bad usage
and 1 for a failure; never click's usage block, never a traceback, never raw tmux text."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

import pytest

from acceptance.support import DaemonControl, Tmo, wait_session


@dataclass(frozen=True)
class Bad:
    """A bad invocation, its exit code and words its error line must hold (``{file}``: a file)."""

    argv: tuple[str, ...]
    exit_code: int
    says: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)


#: id -> bad invocation. Exit 2: the command line is wrong; exit 1: the request failed.
CASES = {
    "unknown-option": Bad(("list", "--bogus"), 2, ("--bogus",)),
    "unknown-option-before-command": Bad(("--bogus", "list"), 2, ("--bogus",)),
    "unknown-option-suggested": Bad(("list", "--jsn"), 2, ("--jsn", "--json")),
    "option-without-its-value": Bad(("list", "--status"), 2, ("--status",)),
    "missing-argument": Bad(("show",), 2, ("PROJECT_ID",)),
    "extra-argument": Bad(("list", "extra"), 2, ("extra",)),
    "id-not-a-number": Bad(("show", "abc"), 2, ("abc",)),
    "bad-priority": Bad(("add", "--priority", "high", "--", "true"), 2, ("--priority", "high")),
    "bad-duration": Bad(("add", "--timeout", "3x", "--", "true"), 2, ("--timeout", "3x")),
    "bad-choice": Bad(("list", "--status", "nope"), 2, ("--status", "nope", "queued")),
    "unknown-command": Bad(("lst",), 2, ("lst", "list")),
    "unknown-daemon-command": Bad(("daemon", "strat"), 2, ("strat", "start")),
    "empty-command": Bad(("add", "--", ""), 2, ("command", "--")),
    "dir-is-a-file": Bad(("add", "--dir", "{file}", "--", "true"), 2, ("{file}", "is not a directory")),
    "dir-missing": Bad(("add", "--dir", "{file}.d", "--", "true"), 2, ("{file}.d", "does not exist")),
    "spec-is-a-directory": Bad(("add", "--spec", "{home}", "--", "true"), 2, ("{home}", "is not a file")),
    "project-id-env-not-a-number": Bad(("complete",), 2, ("TMO_PROJECT_ID", "'abc'", "not a number"),
                                       env={"TMO_PROJECT_ID": "abc"}),
    "unknown-project": Bad(("show", "9999"), 1, ("9999",)),
    # (`tmo daemon stop` with no daemon is no error: it exits 0, like `systemctl stop`)
}


def assert_one_error_line(result: subprocess.CompletedProcess[str], exit_code: int) -> str:
    """Exit ``exit_code``, and stderr is exactly one ``tmo: error:`` line; returns it."""
    shown = f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert result.returncode == exit_code, shown
    for text in (result.stdout, result.stderr):
        assert "Traceback" not in text and "Usage:" not in text, shown
    lines = result.stderr.splitlines()
    assert len(lines) == 1, shown
    assert lines[0].startswith("tmo: error: "), shown
    assert lines[0].count("error:") == 1, shown
    return lines[0]


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_bad_invocation_gets_one_error_line(tmo: Tmo, case: Bad) -> None:
    tmo.add("true")  # a database with one project: the errors are not about a missing database
    a_file = tmo.home / "a-file"
    a_file.write_text("x")

    def fill(text: str) -> str:
        return text.replace("{file}", str(a_file)).replace("{home}", str(tmo.home))

    result = tmo(*map(fill, case.argv), env=case.env)
    line = assert_one_error_line(result, case.exit_code)
    for words in map(fill, case.says):
        assert words in line, line
    assert result.stdout == ""


def test_help_is_unchanged_by_the_error_format(tmo: Tmo) -> None:
    result = tmo("list", "--help")
    assert result.returncode == 0 and result.stdout.startswith("Usage: tmo list"), result
    assert result.stderr == ""


def test_attach_without_a_terminal_says_so_in_one_line(tmo: Tmo, daemon: DaemonControl) -> None:
    daemon.start()
    project_id = tmo.add("sleep", "600")
    wait_session(tmo, project_id)
    result = tmo("attach", str(project_id))  # the runner's stdin is /dev/null: no terminal
    line = assert_one_error_line(result, 1)
    assert "terminal" in line, line
    assert "open terminal failed" not in line  # tmux's own words
    tmo.ok("cancel", str(project_id))


def test_a_failed_daemon_start_says_error_once(tmo: Tmo) -> None:
    # A tmux server on the home's socket that this home did not start: `daemon run` refuses it.
    made = tmo.tmux("new-session", "-d", "-s", "not-ours", "sleep", "600")
    assert made.returncode == 0, made.stderr
    result = tmo("daemon", "start")
    line = assert_one_error_line(result, 1)
    assert "did not start" in line and "@tmo_home" in line, line

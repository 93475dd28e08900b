"""``tmo add`` captures the caller's environment (issue 13, defect 1): a project runs with the
``PATH`` and variables of the shell that queued it, not with the daemon's, minus the variables that
must not travel (built-in ones and ``env_exclude`` in config.toml); ``--env`` wins; ``--no-env``
keeps only the daemon's base environment. ``--dir`` defaults to the caller's working directory."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from acceptance.support import DaemonControl, Tmo, db_snapshot

#: Prints the variables the test looks at, one ``NAME=value`` per line (``-`` when unset).
_REPORT = ('for v in FOO TERM TMUX SHLVL KEEP_ME TMO_ATTEMPT; do '
           'printf "%s=%s\\n" "$v" "$(printenv "$v" || echo -)"; done > env.txt')


def _ran(tmo: Tmo, project_id: int, work: Path) -> dict[str, str]:
    """Wait for the project to complete; the variables it saw."""
    project = tmo.wait_status(project_id, "completed", "failed")
    assert project["status"] == "completed", project
    lines = (work / "env.txt").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


def _tool_dir(tmo: Tmo) -> Path:
    """A directory holding ``path-tool``, a program on no PATH but the caller's."""
    bin_dir = tmo.home / "callers-bin"
    bin_dir.mkdir()
    tool = bin_dir / "path-tool"
    tool.write_text("#!/bin/sh\necho found-on-the-callers-path > tool.txt\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def test_a_project_gets_the_callers_environment_and_path(tmo: Tmo, daemon: DaemonControl) -> None:
    daemon.start()  # its environment has neither FOO nor the tool's directory
    work = tmo.home / "work"
    work.mkdir()
    bin_dir = _tool_dir(tmo)
    caller = {"FOO": "bar", "PATH": f"{bin_dir}{os.pathsep}{tmo.env['PATH']}",
              "TERM": "caller-term", "TMUX": "/tmp/callers-tmux,1,0", "SHLVL": "7",
              "TMO_ATTEMPT": "99"}
    result = tmo("add", "--dir", str(work), "--", "sh", "-c", f"path-tool; {_REPORT}", env=caller)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    seen = _ran(tmo, int(result.stdout), work)
    assert (work / "tool.txt").read_text().strip() == "found-on-the-callers-path"
    assert seen["FOO"] == "bar"
    # Per-shell and per-terminal variables of the caller do not travel: tmux sets the pane's own.
    assert seen["TERM"] not in ("caller-term", "-")
    assert seen["TMUX"] != "/tmp/callers-tmux,1,0"
    assert seen["SHLVL"] != "7"
    assert seen["TMO_ATTEMPT"] == "1"  # the project's own, never the caller's
    stored = tmo.env_of(int(result.stdout))
    assert stored["FOO"] == "bar" and stored["PATH"] == caller["PATH"]
    assert not {"TERM", "TMUX", "SHLVL", "TMO_ATTEMPT", "TMO_HOME"} & set(stored)


def test_env_option_wins_and_no_env_keeps_the_daemons_base(tmo: Tmo, daemon: DaemonControl) -> None:
    daemon.start()
    overridden, plain = tmo.home / "overridden", tmo.home / "plain"
    overridden.mkdir()
    plain.mkdir()
    first = tmo("add", "--dir", str(overridden), "--env", "FOO=from-option", "--",
                "sh", "-c", _REPORT, env={"FOO": "from-shell"})
    second = tmo("add", "--no-env", "--dir", str(plain), "--env", "KEEP_ME=1", "--",
                 "sh", "-c", _REPORT, env={"FOO": "from-shell"})
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert _ran(tmo, int(first.stdout), overridden)["FOO"] == "from-option"
    seen = _ran(tmo, int(second.stdout), plain)
    assert seen["FOO"] == "-" and seen["KEEP_ME"] == "1"
    assert tmo.env_of(int(second.stdout)) == {"KEEP_ME": "1"}


def test_env_exclude_in_config_keeps_variables_out_of_the_database(tmo: Tmo) -> None:
    (tmo.home / "config.toml").write_text('env_exclude = ["SECRET_*", "AWS_*"]\n')
    project_id = tmo.add("true", env={"SECRET_TOKEN": "hunter2-hunter2", "AWS_KEY": "akia",
                                      "KEEP_ME": "yes"})
    env = tmo.env_of(project_id)
    assert env["KEEP_ME"] == "yes"
    assert "SECRET_TOKEN" not in env and "AWS_KEY" not in env
    assert b"hunter2-hunter2" not in (tmo.home / "tmo.db").read_bytes()


def test_from_file_captures_too_unless_no_env(tmo: Tmo) -> None:
    batch = tmo.home / "batch.txt"
    batch.write_text('true\n{"command": ["false"], "env": {"FOO": "line"}}\n')
    captured = [int(x) for x in tmo.ok("add", "--from-file", str(batch), env={"FOO": "shell"}).split()]
    assert [tmo.env_of(i)["FOO"] for i in captured] == ["shell", "line"]
    assert "PATH" in tmo.env_of(captured[0])
    bare = [int(x) for x in tmo.ok("add", "--no-env", "--from-file", str(batch),
                                   env={"FOO": "shell"}).split()]
    assert [tmo.env_of(i) for i in bare] == [{}, {"FOO": "line"}]


def test_dir_defaults_to_the_callers_working_directory(tmo: Tmo) -> None:
    here = tmo.home / "somewhere" / "deep"
    here.mkdir(parents=True)
    project_id = tmo.add("true", cwd=here)
    assert tmo.project(project_id)["project_path"] == str(here.resolve())


def test_a_variable_that_cannot_travel_is_skipped_with_a_warning(
    tmo: Tmo, daemon: DaemonControl
) -> None:
    daemon.start()
    work = tmo.home / "work"
    work.mkdir()
    # An undecodable byte (as subprocess passes a surrogate-escaped str) and a name no shell can
    # export: neither stops the add, the queue or the other variables.
    caller = {"FOO": "bar", "BAD_BYTES": os.fsdecode(b"caf\xe9"), "NOT-A-NAME": "x"}
    result = tmo("add", "--dir", str(work), "--", "sh", "-c", _REPORT, env=caller)
    assert result.returncode == 0, result.stderr
    warnings = result.stderr.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("tmo: warning:"), result.stderr
    assert "BAD_BYTES (not valid UTF-8)" in warnings[0] and "NOT-A-NAME" in warnings[0]
    project_id = int(result.stdout)
    env = tmo.env_of(project_id)
    assert "BAD_BYTES" not in env and "NOT-A-NAME" not in env
    assert _ran(tmo, project_id, work)["FOO"] == "bar"


def test_captured_values_stay_private(tmo: Tmo) -> None:
    tmo.add("true", env={"API_KEY": "sk-very-secret"})
    assert stat.S_IMODE((tmo.home / "tmo.db").stat().st_mode) == 0o600
    shown = tmo.ok("show", "1")
    assert "sk-very-secret" not in shown  # `show` lists names; `show --env` has the values
    assert "API_KEY" in shown
    added = tmo("add", "--json", "--", "true", env={"API_KEY": "sk-very-secret"})
    for printed in (tmo.ok("show", "1", "--json"), tmo.ok("list", "--json"), added.stdout):
        # what scripts, logs and CI output see: names only
        assert "sk-very-secret" not in printed and "API_KEY" in printed, printed
    assert json.loads(tmo.ok("show", "1", "--env", "--json"))["API_KEY"] == "sk-very-secret"
    assert "API_KEY=sk-very-secret" in tmo.ok("show", "1", "--env").splitlines()
    assert db_snapshot(tmo.home).projects == 2

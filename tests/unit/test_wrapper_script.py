"""The per-attempt wrapper: FIFO and marker parsing, exit files, and the generated sh script run for real."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tmux_orchestrator.config import Settings, load_settings
from tmux_orchestrator.project import Project, ProjectStatus
from tmux_orchestrator.wrapper import (
    ExitMessage,
    Marker,
    parse_fifo_line,
    parse_marker,
    read_exit_file,
    wrapper_script,
    write_wrapper,
)

# -- parse_fifo_line ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("exit 1 2 3", ExitMessage(1, 2, 3)),
        ("exit 12 1 0\n", ExitMessage(12, 1, 0)),
        ("  exit 7 3 143  ", ExitMessage(7, 3, 143)),
        ("exit 5 1 -1", ExitMessage(5, 1, -1)),
    ],
)
def test_parse_fifo_line_exit_messages(line: str, message: ExitMessage) -> None:
    assert parse_fifo_line(line) == message


@pytest.mark.parametrize(
    "line",
    ["", "poke", "poke\n", "exit", "exit 1 2", "exit 1 2 3 4", "exit a 1 0", "exit 1 b 0", "exit 1 1 c",
     "EXIT 1 1 0", "quit 1 1 0", "exit 1.5 1 0", "\x00\xff garbage"],
)
def test_parse_fifo_line_ignores_pokes_and_garbage(line: str) -> None:
    assert parse_fifo_line(line) is None


# -- parse_marker ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "marker"),
    [
        ("", Marker(True, None)),
        ("\n", Marker(True, None)),
        ("ok", Marker(True, None)),
        ("done\n", Marker(True, None)),
        ("success: all tests pass", Marker(True, "all tests pass")),
        ("COMPLETED", Marker(True, None)),
        ("0", Marker(True, None)),
        ("failed: reason", Marker(False, "reason")),
        ("failed: the build broke\nsecond line", Marker(False, "the build broke\nsecond line")),
        ("FAIL", Marker(False, None)),
        ("error disk full", Marker(False, "disk full")),
        ("1", Marker(False, None)),
        ("false", Marker(False, None)),
        ("shipped it", Marker(True, "shipped it")),
    ],
)
def test_parse_marker(text: str, marker: Marker) -> None:
    assert parse_marker(text) == marker


# -- read_exit_file ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "code"), [("0\n", 0), ("3", 3), ("143\n", 143), (" 7 \n", 7), ("-1", -1)])
def test_read_exit_file_reads_the_code(tmp_path: Path, text: str, code: int) -> None:
    path = tmp_path / "1-1.exit"
    path.write_text(text)
    assert read_exit_file(path) == code


@pytest.mark.parametrize("text", ["", "\n", "abc", "3 4", "1.5"])
def test_read_exit_file_garbage_is_none(tmp_path: Path, text: str) -> None:
    path = tmp_path / "1-1.exit"
    path.write_text(text)
    assert read_exit_file(path) is None


def test_read_exit_file_missing_is_none(tmp_path: Path) -> None:
    assert read_exit_file(tmp_path / "nope.exit") is None


# -- wrapper_script ----------------------------------------------------------------------------

HOSTILE_ARGS = [
    "plain",
    "two words",
    "$HOME",
    "${PATH}",
    "$(touch pwned-subst)",
    "`touch pwned-backtick`",
    "'single'",
    '"double"',
    "it's",
    "back\\slash",
    "semi;colon",
    ";",
    "a;",
    "&& touch pwned-and",
    "| touch pwned-pipe",
    "> redirected",
    "*",
    "?",
    "~",
    "~/x",
    "#comment",
    "#{pid}",
    "#(touch pwned-tmux)",
    "new\nline",
    "tab\there",
    "ünïcödé 🚀",
    "",
    "-n",
    "%s",
]


@pytest.fixture
def wrap_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in list(os.environ):
        if key.startswith("TMO_"):
            monkeypatch.delenv(key)
    settings = load_settings(tmp_path / "home")
    settings.ensure_dirs()
    return settings


@pytest.fixture
def fifo(wrap_settings: Settings) -> Iterator[int]:
    """The daemon's end-event FIFO, opened read-write and non-blocking by the test."""
    os.mkfifo(wrap_settings.fifo_path, 0o600)
    fd = os.open(wrap_settings.fifo_path, os.O_RDWR | os.O_NONBLOCK)
    try:
        yield fd
    finally:
        os.close(fd)


def _project(command: list[str], *, env: dict[str, str] | None = None, attempt: int = 1,
             project_id: int = 42) -> Project:
    return Project(
        id=project_id,
        name="wrapped",
        status=ProjectStatus.PROCESSING,
        command=command,
        env=env or {},
        attempt=attempt,
        session_name=f"wrapped-{project_id}",
    )


def _run(settings: Settings, project: Project, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = write_wrapper(settings, project)
    return subprocess.run(["/bin/sh", str(script)], cwd=cwd, capture_output=True, text=True, timeout=20,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})


def _read_fifo(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return b""


def test_wrapper_script_is_valid_sh(wrap_settings: Settings, tmp_path: Path) -> None:
    project = _project(["prog", *HOSTILE_ARGS], env={"A": "$(touch x)", "B": "it's \"q\""})
    path = tmp_path / "w.sh"
    path.write_text(wrapper_script(wrap_settings, project))
    result = subprocess.run(["/bin/sh", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_wrapper_script_is_valid_bash_too(wrap_settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "w.sh"
    path.write_text(wrapper_script(wrap_settings, _project(["prog", *HOSTILE_ARGS])))
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_wrapper_passes_hostile_argv_exactly(wrap_settings: Settings, fifo: int, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    printer = ["python3", "-c",
               "import json, sys; open('args.json', 'w').write(json.dumps(sys.argv[1:]))"]
    project = _project([*printer, *HOSTILE_ARGS])
    result = _run(wrap_settings, project, work)
    assert result.returncode == 0, result.stderr
    import json

    assert json.loads((work / "args.json").read_text()) == HOSTILE_ARGS
    # nothing was interpreted by a shell
    assert sorted(p.name for p in work.iterdir()) == ["args.json"]
    assert not list(tmp_path.glob("**/pwned*"))


def test_wrapper_exports_environment(wrap_settings: Settings, fifo: int, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = {"PLAIN": "v", "SPACES": "a b  c", "DOLLAR": "$HOME $(touch pwned)", "QUOTES": "it's \"x\"",
           "NEWLINE": "l1\nl2", "EMPTY": "", "_UNDER": "u"}
    dump = ["python3", "-c", "import json, os; open('env.json', 'w').write(json.dumps(dict(os.environ)))"]
    project = _project(dump, env=env, project_id=9, attempt=2)
    result = _run(wrap_settings, project, work)
    assert result.returncode == 0, result.stderr
    import json

    seen = json.loads((work / "env.json").read_text())
    for key, value in env.items():
        assert seen[key] == value
    assert seen["TMO_PROJECT_ID"] == "9"
    assert seen["TMO_ATTEMPT"] == "2"
    assert seen["TMO_HOME"] == str(wrap_settings.home)
    assert seen["TMO_DONE_FILE"] == str(wrap_settings.marker_path(9))
    assert seen["TMO_SESSION_NAME"] == "wrapped-9"
    assert not (work / "pwned").exists()


def test_wrapper_skips_invalid_env_names(wrap_settings: Settings, fifo: int, tmp_path: Path) -> None:
    project = _project(["sh", "-c", "echo ran > out"], env={"1BAD": "x", "A-B": "y", "": "z", "GOOD": "g"})
    result = _run(wrap_settings, project, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out").read_text() == "ran\n"


def test_wrapper_project_env_cannot_override_tmo_variables(
    wrap_settings: Settings, fifo: int, tmp_path: Path
) -> None:
    project = _project(["sh", "-c", 'printf "%s" "$TMO_PROJECT_ID" > out'], env={"TMO_PROJECT_ID": "999"},
                       project_id=5)
    assert _run(wrap_settings, project, tmp_path).returncode == 0
    assert (tmp_path / "out").read_text() == "5"


@pytest.mark.parametrize("code", [0, 1, 3, 42, 255])
def test_wrapper_writes_exit_file_and_fifo_message(
    wrap_settings: Settings, fifo: int, tmp_path: Path, code: int
) -> None:
    project = _project(["sh", "-c", f"exit {code}"], project_id=11, attempt=3)
    result = _run(wrap_settings, project, tmp_path)
    assert result.returncode == code
    exit_path = wrap_settings.exit_path(11, 3)
    assert exit_path.read_text() == f"{code}\n"
    assert read_exit_file(exit_path) == code
    assert not Path(f"{exit_path}.tmp").exists()
    data = _read_fifo(fifo)
    assert data == f"exit 11 3 {code}\n".encode()
    assert parse_fifo_line(data.decode()) == ExitMessage(11, 3, code)


def test_wrapper_reports_signal_exit_as_128_plus_signal(
    wrap_settings: Settings, fifo: int, tmp_path: Path
) -> None:
    project = _project(["sh", "-c", "kill -TERM $$"], project_id=3)
    result = _run(wrap_settings, project, tmp_path)
    assert result.returncode == 143
    assert read_exit_file(wrap_settings.exit_path(3, 1)) == 143
    assert _read_fifo(fifo) == b"exit 3 1 143\n"


def test_wrapper_outlives_a_term_sent_to_its_group(
    wrap_settings: Settings, fifo: int, tmp_path: Path
) -> None:
    # The wrapper traps TERM with a no-op so it can report the code of a command that was signalled.
    project = _project(["sh", "-c", "sleep 0.2; kill -TERM 0; sleep 5"], project_id=8)
    script = write_wrapper(wrap_settings, project)
    proc = subprocess.Popen(["/bin/sh", str(script)], cwd=tmp_path, start_new_session=True)
    try:
        assert proc.wait(timeout=20) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
    assert read_exit_file(wrap_settings.exit_path(8, 1)) == 143
    assert _read_fifo(fifo) == b"exit 8 1 143\n"


def test_wrapper_does_not_block_without_a_fifo_reader(wrap_settings: Settings, tmp_path: Path) -> None:
    # No daemon: the FIFO exists but nobody holds it open. The wrapper must still finish.
    os.mkfifo(wrap_settings.fifo_path, 0o600)
    result = _run(wrap_settings, _project(["true"], project_id=2), tmp_path)
    assert result.returncode == 0
    assert read_exit_file(wrap_settings.exit_path(2, 1)) == 0


def test_wrapper_runs_in_the_given_directory(wrap_settings: Settings, fifo: int, tmp_path: Path) -> None:
    work = tmp_path / "dir with spaces"
    work.mkdir()
    assert _run(wrap_settings, _project(["sh", "-c", "pwd > where"]), work).returncode == 0
    assert (work / "where").read_text().strip() == str(work)


def test_write_wrapper_is_private(wrap_settings: Settings) -> None:
    path = write_wrapper(wrap_settings, _project(["true"], env={"SECRET": "s3cret"}))
    assert path == wrap_settings.run_dir / "42-1.sh"
    assert path.stat().st_mode & 0o777 == 0o600
    assert "s3cret" in path.read_text()


def test_wrapper_exports_spec_file_when_set(wrap_settings: Settings, fifo: int, tmp_path: Path) -> None:
    project = _project(["sh", "-c", 'printf "%s" "$TMO_SPEC_FILE" > out'])
    project.spec_path = "/some where/spec.md"
    assert _run(wrap_settings, project, tmp_path).returncode == 0
    assert (tmp_path / "out").read_text() == "/some where/spec.md"

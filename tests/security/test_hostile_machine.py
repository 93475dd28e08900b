"""Issue 11: a home no other user can read or hijack, and inputs that cannot smuggle anything in.

One test per point of the issue. Each plants the attacker's files (or servers) itself, then runs the
installed ``tmo`` (as root, and as a non-root user where it matters) and asserts that nothing planted
was read, written or run: canary files a hook or a project would create do not exist, and every
file a link points at keeps its content and modification time. The trust model is in
``docs/security.md``.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from acceptance.support import TMO, DaemonControl, Tmo, db_snapshot, poll, tmo_environment
from security.users import User, end_server, start_server, tmux_as, user_environment
from tmux_orchestrator.config import Settings, load_settings
from tmux_orchestrator.hooks import HookSpec, Route, hook_environment
from tmux_orchestrator.project import Project, ProjectStatus
from tmux_orchestrator.store.base import Event
from tmux_orchestrator.wrapper import wrapper_script

# -- helpers ---------------------------------------------------------------------------------------


def run_tmo(home: Path, *args: str, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The installed ``tmo`` as root, for ``home``, started with the usual umask 022."""
    return subprocess.run(
        [TMO, *args], capture_output=True, text=True, timeout=timeout, check=False, cwd="/",
        env={**tmo_environment(home), **(env or {})}, stdin=subprocess.DEVNULL, umask=0o022,
    )


def refused(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    """``tmo`` exited ``code`` with one line on stderr holding every fragment."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tmo: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def fingerprint(path: Path) -> tuple[bytes, int]:
    """What must not change about a file a planted link points at."""
    return path.read_bytes(), path.stat().st_mtime_ns


def tree(path: Path) -> list[tuple[str, int, int, bytes | str]]:
    """Every entry under ``path``: name, mode, owner, and content or link target."""
    found = []
    for entry in sorted(path.rglob("*")):
        info = entry.lstat()
        body: bytes | str = os.readlink(entry) if entry.is_symlink() else (
            entry.read_bytes() if entry.is_file() else b"")
        found.append((str(entry.relative_to(path)), info.st_mode, info.st_uid, body))
    return found


def as_attacker_write(attacker: User, path: Path, text: str, mode: str = "666") -> None:
    script = 'printf "%s" "$1" > "$2" && chmod "$3" "$2"'
    result = attacker.run(["sh", "-c", script, "sh", text, str(path), mode])
    assert result.returncode == 0, result.stderr


def hook_config(canary: Path, stolen: Path) -> str:
    """A config.toml whose hook would run on every event, prove it ran, and steal the database."""
    return (f'[[hooks]]\nname = "pwn"\non = ["*"]\n'
            f"command = 'touch {canary}; cp \"$TMO_HOME/tmo.db\" {stolen}'\n")


@pytest.fixture
def servers() -> Iterator[list[Path]]:
    """Sockets whose tmux servers are ended (by pid) at the end of the test, whoever started them."""
    sockets: list[Path] = []
    yield sockets
    for path in sockets:
        end_server(path)


# -- 1. a home made by someone else ----------------------------------------------------------------


def test_1_a_home_someone_else_made_or_may_write_is_refused_before_anything_in_it_is_read(
    attacker: User, victim: User, shared: Path, tmp_path: Path, servers: list[Path],
) -> None:
    home = shared / "tmo-home"
    canary, stolen = shared / "hook-ran", shared / "stolen.db"
    precious = tmp_path / "precious.txt"
    precious.write_text("root's file\n")
    before = fingerprint(precious)
    # The attacker makes the home first: world-writable, a hook on every event, a lock file link.
    assert attacker.run(["mkdir", str(home)]).returncode == 0
    assert attacker.run(["chmod", "777", str(home)]).returncode == 0
    as_attacker_write(attacker, home / "config.toml", hook_config(canary, stolen))
    assert attacker.run(["ln", "-s", str(precious), str(home / "daemon.lock")]).returncode == 0
    planted = tree(home)
    servers.append(home / "tmux.sock")

    for args in (["add", "--", "true"], ["list"], ["doctor"], ["daemon", "run"], ["daemon", "start"]):
        refused(run_tmo(home, *args), 2, f"refusing home {home}: owned by uid {attacker.uid}",
                "not you (uid 0", "fix:")
    # a non-root user is refused the same way
    as_victim = victim.tmo("add", "--", "true", env=user_environment(victim, TMO_HOME=str(home)))
    refused(as_victim, 2, f"refusing home {home}: owned by uid {attacker.uid}", f"not you (uid {victim.uid}")

    assert not canary.exists() and not stolen.exists(), "the attacker's hook ran"
    assert fingerprint(precious) == before, "the lock file link was written through"
    assert tree(home) == planted, "something was written into the attacker's home"

    # A home of ours that others may write is refused too (they could plant all of the above) ...
    open_home = tmp_path / "open-home"
    open_home.mkdir()
    os.chmod(open_home, 0o777)
    refused(run_tmo(open_home, "list"), 2, f"refusing home {open_home}: writable by group and others",
            "mode 0777", f"chmod 700 {open_home}")
    # ... and so is a config.toml that is not ours, or that others may write.
    home2 = tmp_path / "home2"
    home2.mkdir(mode=0o700)
    config = home2 / "config.toml"
    config.write_text(hook_config(canary, stolen))
    os.chown(config, attacker.uid, attacker.gid)
    refused(run_tmo(home2, "daemon", "run"), 2, f"refusing config file {config}: owned by uid {attacker.uid}")
    os.chown(config, 0, 0)
    os.chmod(config, 0o664)
    refused(run_tmo(home2, "daemon", "run"), 2, f"refusing config file {config}: writable by group")
    assert not canary.exists() and not stolen.exists()


# -- 2. files follow the umask ---------------------------------------------------------------------


def _modes(home: Path) -> dict[str, int]:
    return {str(p.relative_to(home)): stat.S_IMODE(p.lstat().st_mode) for p in home.rglob("*")
            if not p.is_socket()}


def test_2_everything_under_the_home_is_private_whatever_the_umask(
    attacker: User, shared: Path, tmp_path: Path, servers: list[Path],
) -> None:
    home = shared / "home"  # where the attacker can reach it
    home.mkdir()
    os.chmod(home, 0o755)  # an existing home others may read, as users make them
    servers.append(home / "tmux.sock")
    secret = "API-KEY-sekrit-2f9c"
    work = tmp_path / "work"
    work.mkdir()
    project = run_tmo(home, "add", "--env", f"API_KEY={secret}", "--dir", str(work), "--", "echo", "out")
    assert project.returncode == 0, project.stderr
    assert run_tmo(home, "daemon", "start").returncode == 0
    try:
        poll(lambda: json.loads(run_tmo(home, "show", "1", "--json").stdout)["status"] == "completed" or None,
             message="the project to complete")
    finally:
        run_tmo(home, "daemon", "stop")

    assert stat.S_IMODE(home.stat().st_mode) == 0o700, "the home was left open to others"
    modes = _modes(home)
    for name in ("tmo.db", "scheduler.log", "daemon.out", "daemon.lock", "logs", "run", "logs/1.log"):
        assert name in modes, sorted(modes)
    open_to_others = {name: f"{mode:04o}" for name, mode in modes.items() if mode & 0o077}
    assert not open_to_others, open_to_others
    read = attacker.run(["cat", str(home / "tmo.db")])
    assert read.returncode != 0 and secret not in read.stdout

    # A database given by --database-url outside the home is private too (-wal and -shm with it) ...
    outside = shared / "db"
    outside.mkdir()
    os.chmod(outside, 0o755)
    db = outside / "queue.db"
    assert run_tmo(home, "--database-url", f"sqlite:///{db}", "add", "--", "true").returncode == 0
    for path in outside.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))
    # ... and one an older version made with the umask is made private once, with a warning.
    old = outside / "old.db"
    sqlite3.connect(old).close()
    os.chmod(old, 0o644)
    result = run_tmo(home, "--database-url", f"sqlite:///{old}", "add", "--", "true")
    assert result.returncode == 0, result.stderr
    assert "made it private" in result.stderr
    assert stat.S_IMODE(old.stat().st_mode) == 0o600


def test_projects_and_hooks_keep_the_users_umask(tmo: Tmo, daemon: DaemonControl) -> None:
    """tmo's own files are private; what a project or a hook writes in the user's directories is not."""
    (tmo.home / "config.toml").write_text(
        '[[hooks]]\nname = "umask"\non = ["completed"]\ncommand = \'umask > "$TMO_HOME/hook-umask"\'\n')
    work = tmo.home / "work"
    work.mkdir()
    project = tmo.add("sh", "-c", "umask > project-umask", options=["--dir", str(work)])
    daemon.start()
    tmo.wait_status(project, "completed")
    poll(lambda: (tmo.home / "hook-umask").exists() or None, message="the hook to run")
    umask = os.umask(0o022)
    os.umask(umask)
    assert (work / "project-umask").read_text().strip() == f"{umask:04o}"
    assert (tmo.home / "hook-umask").read_text().strip() == f"{umask:04o}"


# -- 3. the socket directory can be squatted ---------------------------------------------------------


def _fallback(home: Path, tmpdir: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("TMUX_TMPDIR", str(tmpdir))
    settings = load_settings(home)
    assert settings.socket_path.parent == tmpdir / f"tmo-{os.geteuid()}", settings.socket_path
    return settings


def test_3_a_squatted_socket_directory_and_a_server_that_is_not_ours_are_refused(
    attacker: User, victim: User, shared: Path, tmp_path: Path, servers: list[Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Root's home is too long for a socket inside it: the socket goes to $TMUX_TMPDIR/tmo-0/.
    home = tmp_path / ("h" * 100)
    settings = _fallback(home, shared, monkeypatch)
    sock = settings.socket_path
    squat = sock.parent
    servers.append(sock)
    # The attacker made that directory first and runs a server of their own on the socket, with a
    # keeper and even the right ownership mark (the home's path, so its key, is no secret).
    assert attacker.run(["mkdir", "-m", "755", str(squat)]).returncode == 0
    start_server(attacker, sock, ";", "set-option", "-s", "@tmo_home", settings.owner_tag, ";",
                 "new-session", "-d", "-s", "_tmo_keep", "sleep 600")
    sessions_before = tmux_as(attacker, sock, "list-sessions", "-F", "#{session_name}").stdout
    canary = shared / "project-ran"
    env = {"TMUX_TMPDIR": str(shared)}

    assert run_tmo(home, "add", "--", "touch", str(canary), env=env).returncode == 0
    fragments = (f"refusing tmux socket directory {squat}: owned by uid {attacker.uid}", "fix:")
    refused(run_tmo(home, "sessions", env=env), 2, *fragments)
    refused(run_tmo(home, "daemon", "run", env=env), 2, *fragments)
    assert tmux_as(attacker, sock, "list-sessions", "-F", "#{session_name}").stdout == sessions_before
    assert tmux_as(attacker, sock, "show-options", "-gv", "history-limit").stdout.strip() == "2000"
    assert not canary.exists(), "a project ran on the attacker's server"
    assert json.loads(run_tmo(home, "list", "--json", env=env).stdout)[0]["status"] == "queued"

    # A directory of ours that others may enter is refused too, as tmux refuses its own ...
    end_server(sock, attacker)
    subprocess.run(["rm", "-rf", str(squat)], check=True)
    squat.mkdir(mode=0o755)
    os.chmod(squat, 0o755)
    refused(run_tmo(home, "sessions", env=env), 2,
            f"refusing tmux socket directory {squat}: open to other users", "mode 0755")
    # ... and so is a socket in it that is not ours (whoever could put it there).
    os.chmod(squat, 0o700)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock))
    os.chown(sock, attacker.uid, attacker.gid)
    try:
        refused(run_tmo(home, "sessions", env=env), 2,
                f"refusing tmux socket {sock}: owned by uid {attacker.uid}")
    finally:
        listener.close()
        sock.unlink()

    # A non-root user whose tmo-<uid> the attacker made first is refused the same way.
    vsquat = shared / f"tmo-{victim.uid}"
    assert attacker.run(["mkdir", "-m", "777", str(vsquat)]).returncode == 0
    vhome = shared / ("v" * 100)
    venv = user_environment(victim, TMO_HOME=str(vhome), TMUX_TMPDIR=str(shared))
    assert victim.tmo("add", "--", "touch", str(canary), env=venv).returncode == 0
    result = victim.tmo("daemon", "run", env=venv)
    refused(result, 2, f"refusing tmux socket directory {vsquat}: owned by uid {attacker.uid}")
    assert list(vsquat.iterdir()) == [] and not canary.exists()


# -- 4. symlinks are followed ------------------------------------------------------------------------


def _plant(link: Path, target: Path, text: str) -> tuple[bytes, int]:
    target.write_text(text)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return fingerprint(target)


def test_4_links_planted_in_the_home_are_never_written_through_or_read(
    tmo: Tmo, daemon: DaemonControl, tmp_path: Path,
) -> None:
    victims = tmp_path / "victims"
    victims.mkdir()
    tmo.ok("pause")  # creates the home; nothing starts while the links are planted
    lock = _plant(tmo.home / "daemon.lock", victims / "lock-target", "do not truncate\n")
    started = tmo("daemon", "start")
    assert started.returncode != 0 and "refusing lock file" in started.stderr, started.stderr
    assert "symbolic link" in started.stderr
    assert fingerprint(victims / "lock-target") == lock, "the lock file link was truncated or written"
    (tmo.home / "daemon.lock").unlink()

    first = tmo.add("true", cwd=tmp_path)
    second = tmo.add("true", cwd=tmp_path)
    run, logs = tmo.home / "run", tmo.home / "logs"
    planted = {
        "wrapper": _plant(run / f"{first}-1.sh", victims / "wrapper-target", "#!/bin/sh\necho original\n"),
        "exit": _plant(run / f"{first}-1.exit", victims / "exit-target", "original\n"),
        "started": _plant(run / f"{first}-1.started", victims / "started-target", "original\n"),
        "log": _plant(logs / f"{second}.log", victims / "log-target", "original log\n"),
    }
    daemon.start()
    tmo.ok("resume")
    done = tmo.wait_status(first, "completed")
    assert (done["outcome"], done["exit_code"]) == ("exited", 0)
    spawn = tmo.wait_status(second, "failed")
    assert spawn["outcome"] == "spawn_error" and "refusing log file" in spawn["error_message"]
    for name, target in {"wrapper": "wrapper-target", "exit": "exit-target", "started": "started-target",
                         "log": "log-target"}.items():
        assert fingerprint(victims / target) == planted[name], f"the {name} link was written through"


def test_4_a_marker_link_is_not_read_as_a_marker(tmo: Tmo, daemon: DaemonControl, tmp_path: Path) -> None:
    victims = tmp_path / "victims"
    victims.mkdir()
    tmo.ok("pause")
    waiting = tmo.add("sleep", "600", cwd=tmp_path)
    target = _plant(tmo.home / "run" / f"{waiting}.done", victims / "marker-target", "failed: planted\n")
    ender = tmo.add("sh", "-c", 'echo ok > "$TMO_DONE_FILE"; sleep 600', cwd=tmp_path)
    daemon.start("--concurrency", "2")
    tmo.ok("resume")
    tmo.wait_status(ender, "completed")  # the daemon looked at every running project's marker
    assert tmo.status_of(waiting) == "processing", "a planted link was read as the project's marker"
    assert fingerprint(victims / "marker-target") == target


def test_4_a_scrollback_link_is_not_written_through(tmo: Tmo, daemon: DaemonControl, tmp_path: Path) -> None:
    victims = tmp_path / "victims"
    victims.mkdir()
    project = tmo.add("sh", "-c", "echo hello; sleep 600", cwd=tmp_path)
    target = _plant(tmo.home / "logs" / f"{project}-1.scrollback.txt", victims / "scrollback-target",
                    "mine\n")
    daemon.start()
    tmo.wait_status(project, "processing")
    tmo.ok("cancel", str(project))
    assert fingerprint(victims / "scrollback-target") == target


# -- 5. hostile text -------------------------------------------------------------------------------


def test_5_hostile_text_is_refused_at_the_door_and_stored_text_is_printed_safely(
    tmo: Tmo, tmp_path: Path,
) -> None:
    canary = tmp_path / "canary"
    cases = [
        (["add", "--name", "evil\x1b[2Jname", "--", "true"], "the name contains a control character (\\x1b)"),
        (["add", "--name", "two\nlines", "--", "true"], "the name contains a control character (\\n)"),
        (["add", "--", "sh", "-c", "echo \x1b]0;owned\x07"],
         "argument 3 of the command contains a control character (\\x1b)"),
        (["add", "--dir", f"{tmp_path}/x\ny", "--", "true"], "the directory (--dir) contains a control"),
        (["add", "--env", "K=a\udcffb", "--", "true"],
         "environment variable K: the value is not valid UTF-8"),
    ]
    for args, message in cases:
        result = tmo(*args)
        refused(result, 2, message)
        assert "\x1b" not in result.stderr
    non_utf8 = subprocess.run([TMO, "add", "--", "echo", b"\xff\xfe"], capture_output=True, check=False,
                              env=tmo.env, timeout=60)
    assert non_utf8.returncode == 2
    assert non_utf8.stderr.strip() == b"tmo: error: argument 2 of the command is not valid UTF-8"
    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n".join(json.dumps(item) for item in (
        {"command": ["sh", "-c", f"true\u0000touch {canary}"]},
        {"command": ["true"], "name": "x\u0000y"},
        {"command": ["true"], "env": {"K": "a\u0000b"}},
    )) + "\n")
    refused(tmo("add", "--from-file", str(batch)), 2, "3 invalid line(s), nothing queued",
            "line 1: argument 3 of the command contains a NUL byte", "line 2: the name contains a NUL byte",
            "line 3: environment variable K: the value contains a NUL byte")
    assert db_snapshot(tmo.home).projects == 0 and not canary.exists()
    # A script of several lines is a legitimate command.
    assert tmo("add", "--", "sh", "-c", "echo a\n\techo b").returncode == 0

    # Text stored anyway (by hand, by an older version) is printed with visible escapes.
    hostile = "x\x1b]0;owned\x07\x1b[2J\nFAKE ROW"
    conn = sqlite3.connect(tmo.home / "tmo.db", isolation_level=None)
    conn.execute("UPDATE project_queue SET name = ?, error_message = ? WHERE id = 1", (hostile, hostile))
    conn.execute("INSERT INTO events (kind, source, message) VALUES ('note', 'sql', ?)", (hostile,))
    conn.close()
    for args, lines in ((["list"], 2), (["show", "1"], None), (["events", "--last", "0"], None)):
        out = tmo.ok(*args)
        assert not any(c in out for c in "\x1b\x07"), (args, out)
        assert "x\\x1b]0;owned\\x07\\x1b[2J\\nFAKE ROW" in out, out
        assert not any(line.startswith("FAKE ROW") for line in out.splitlines()), out
        if lines is not None:
            assert len(out.splitlines()) == lines, out
    assert tmo.projects()[0]["name"] == hostile  # JSON carries it exactly, escaped


# -- 6. secrets leak -------------------------------------------------------------------------------


def _closed_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = int(probe.getsockname()[1])
    probe.close()
    return port


def test_6_secrets_stay_with_the_daemon_and_out_of_panes_hooks_logs_and_events(
    tmo: Tmo, daemon: DaemonControl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret, password = "webhook-s3cret-7c1d", "hunter2pass"
    (tmo.home / "config.toml").write_text(f"""
[[webhooks]]
url = "http://hookuser:{password}@127.0.0.1:{_closed_port()}/tmo"
on = ["completed"]
max_attempts = 1
timeout = "2s"
secret_env = "TMO_TEST_WEBHOOK_SECRET"

[[hooks]]
name = "envdump"
on = ["completed"]
command = 'env > "$TMO_HOME/hook-env.txt"'
""")
    work = tmp_path / "work"
    work.mkdir()
    # Without the variable, every command but the daemon works ...
    project = tmo.add("sh", "-c", "env > pane-env.txt", options=["--dir", str(work)])
    tmo.ok("list")
    # ... and the daemon says what is missing before it starts anything.
    refused(tmo("daemon", "run"), 2, "secret_env names TMO_TEST_WEBHOOK_SECRET, which is not set")
    started = tmo("daemon", "start", env={"TMO_TEST_WEBHOOK_SECRET": secret})
    assert started.returncode == 0, started.stderr  # (stopped by the `daemon` fixture)
    tmo.wait_status(project, "completed")
    failed = poll(lambda: [e for e in tmo.events() if e["kind"] == "webhook_failed"] or None,
                  timeout=30, message="the webhook to fail")
    poll(lambda: (tmo.home / "hook-env.txt").exists() or None, message="the hook to run")

    pane_env = (work / "pane-env.txt").read_text()
    hook_env = (tmo.home / "hook-env.txt").read_text()
    for env_text in (pane_env, hook_env):
        assert secret not in env_text and "TMO_TEST_WEBHOOK_SECRET" not in env_text
    assert f"TMO_PROJECT_ID={project}" in pane_env and "TMO_EVENT_KIND=completed" in hook_env
    assert "127.0.0.1" in failed[0]["message"]
    for text in (json.dumps(tmo.events()), (tmo.home / "scheduler.log").read_text(),
                 (tmo.home / "daemon.out").read_text()):
        assert password not in text

    # A database URL with a password never reaches a pane or a hook (tmo there uses ~/.pgpass).
    monkeypatch.setenv("TMO_TEST_WEBHOOK_SECRET", secret)
    settings = load_settings(tmo.home, "postgresql://tmo:pgpass-99@db.example/queue")
    project_row = Project(id=1, name="p", status=ProjectStatus.PROCESSING, command=["true"])
    script = wrapper_script(settings, project_row)
    assert "pgpass-99" not in script and "postgresql://tmo@db.example/queue" in script
    spec = HookSpec(name="h", route=Route(frozenset({"*"})), argv=("true",))
    event = Event(id=1, at=datetime.now(UTC), kind="queued", source="cli")
    env = hook_environment(spec, event, home=tmo.home, database_url=settings.database_url)
    assert env["TMO_DATABASE_URL"] == "postgresql://tmo@db.example/queue"
    assert secret not in env.values()


# -- 7. read commands create state -------------------------------------------------------------------


READ_COMMANDS = (
    ["list"], ["show", "99999"], ["events"], ["logs", "1"], ["sessions"], ["daemon", "status"], ["stats"],
    ["cleanup", "--dry-run"], ["complete", "1"],
)


def test_7_read_and_diagnostic_commands_create_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "x.db"
    refused(run_tmo(tmp_path / "home", "--database-url", f"sqlite:///{missing}", "list"), 1,
            f"no database at {missing}", "`tmo add` or `tmo daemon start` creates it")
    assert not (tmp_path / "no").exists()
    assert not (tmp_path / "home").exists()

    home = tmp_path / "fresh"
    for args in READ_COMMANDS:
        refused(run_tmo(home, *args), 1, f"no database at {home / 'tmo.db'}")
    doctor = run_tmo(home, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "none yet" in doctor.stdout and "not created yet" in doctor.stdout
    assert not home.exists(), "a read command created the home"

    home.mkdir(mode=0o700)
    for args in (*READ_COMMANDS, ["doctor"]):
        run_tmo(home, *args)
    assert list(home.iterdir()) == [], "a read command created something in the home"


# -- 8. a server that is not ours --------------------------------------------------------------------


def test_8_a_server_without_this_homes_mark_is_refused_and_left_untouched(
    tmo: Tmo, tmp_path: Path, servers: list[Path],
) -> None:
    # The user's own tmux server (their default one, say) with their own global settings.
    private = tmp_path / "tmux-0"
    private.mkdir(mode=0o700)
    users_server = private / "default"
    servers.append(users_server)
    start_server(None, users_server, ";", "set-option", "-g", "history-limit", "1234")
    env = {"TMO_TMUX_SOCKET": str(users_server)}
    project = tmo("add", "--", "true", env=env)
    assert project.returncode == 0, project.stderr
    fragments = (f"refusing tmux server on {users_server}: not started by this home",
                 "no @tmo_home mark", "TMO_TMUX_SOCKET")
    refused(tmo("daemon", "run", env=env), 2, *fragments)
    refused(tmo("sessions", env=env), 2, *fragments)
    doctor = tmo("doctor", env=env)
    assert doctor.returncode == 1 and "BAD  tmux server" in doctor.stdout
    # Nothing was changed on it: no keeper, no session, no option.
    assert tmux_as(None, users_server, "list-sessions", "-F", "#{session_name}").stdout.split() == ["bait"]
    for scope, option, value in (("-gv", "history-limit", "1234"), ("-sv", "exit-empty", "on"),
                                 ("-gv", "update-environment", None), ("-sqv", "@tmo_home", "")):
        shown = tmux_as(None, users_server, "show-options", scope, option).stdout.strip()
        if value is not None:
            assert shown == value, (option, shown)
        else:
            assert "DISPLAY" in shown, shown  # tmux's default list, not ours (empty)
    assert tmo.status_of(int(project.stdout)) == "queued"

    # A server tmo started carries the mark and is used.
    tmo.ok("sessions")
    daemon = tmo("daemon", "start")
    assert daemon.returncode == 0, daemon.stderr
    try:
        mark = tmux_as(None, tmo.socket_path, "show-options", "-sqv", "@tmo_home").stdout.strip()
        assert mark == load_settings(tmo.home).owner_tag
        assert "ok   tmux server" in tmo.ok("doctor")
    finally:
        tmo.ok("daemon", "stop")


def test_a_database_path_through_another_users_link_is_refused(
    attacker: User, shared: Path, tmp_path: Path,
) -> None:
    # Found by an adversarial test: the attacker's link in /tmp would point root's tmo at a
    # database of the attacker's choice (another of root's queues, say).
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    link = shared / "db-dir"
    result = attacker.run(["ln", "-s", str(mine), str(link)])
    assert result.returncode == 0, result.stderr
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    tmp_path.chmod(0o700)
    tmo = Tmo(home)
    tmo.env["TMO_DATABASE_URL"] = f"sqlite:///{link / 'tmo.db'}"
    result = tmo("add", "--", "true")
    assert result.returncode != 0 and "symbolic link owned by" in result.stderr, result.stderr
    assert not (mine / "tmo.db").exists()
    # a link of one's own is followed
    own = tmp_path / "own-link"
    own.symlink_to(mine)
    tmo.env["TMO_DATABASE_URL"] = f"sqlite:///{own / 'tmo.db'}"
    assert tmo("add", "--", "true").returncode == 0


def test_a_home_that_is_a_link_of_ones_own_works_for_the_daemon_too(tmp_path: Path) -> None:
    real = tmp_path / "real-home"
    real.mkdir(mode=0o700)
    link = tmp_path / "home-link"
    link.symlink_to(real)
    tmo = Tmo(link)
    control = DaemonControl(tmo)
    try:
        project = tmo.add("true")
        control.start()
        assert tmo.wait_status(project, "completed", "failed", timeout=30)["status"] == "completed"
    finally:
        control.stop_all()
        tmo.end_server()

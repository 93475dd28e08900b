"""home.py and its callers on real files: ownership and mode checks, no-follow opens, the lock, the
database file, and the tmux socket and server checks (docs/security.md)."""

from __future__ import annotations

import logging
import os
import socket
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tmux_orchestrator.errors import (
    ForeignServer,
    NoDatabase,
    UnsafeLogFile,
    UnsafePath,
    UsageError,
)
from tmux_orchestrator.home import (
    check_home,
    ensure_home,
    open_fifo,
    prepare_database,
    prepare_log_file,
    read_config,
    read_marker,
    replace_private,
)
from tmux_orchestrator.lock import DaemonLock
from tmux_orchestrator.orchestrator import Orchestrator
from tmux_orchestrator.store.sqlite import SqliteStore
from tmux_orchestrator.testing import end_tmux_server
from tmux_orchestrator.tmux import Tmux

#: Someone else (``nobody``): files are given to them with chown, which needs root.
OTHER = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown files to another user")


def _target(tmp_path: Path, text: str = "precious\n") -> tuple[Path, tuple[str, int]]:
    target = tmp_path / "target.txt"
    target.write_text(text)
    return target, (target.read_text(), target.stat().st_mtime_ns)


def _same(target: Path, before: tuple[str, int]) -> bool:
    return (target.read_text(), target.stat().st_mtime_ns) == before


# -- the home --------------------------------------------------------------------------------------
def test_a_missing_home_is_created_private_and_its_parents_with_the_users_umask(tmp_path: Path) -> None:
    home = tmp_path / "state" / "tmo"
    assert check_home(home) is False and not home.parent.exists()
    ensure_home(home, [home / "logs", home / "run"])
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "logs").stat().st_mode) == 0o700
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(home.parent.stat().st_mode) == 0o777 & ~umask


def test_a_home_others_may_read_is_made_private_and_one_they_may_write_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    os.chmod(home, 0o755)
    assert check_home(home) is True  # reading commands change nothing
    assert stat.S_IMODE(home.stat().st_mode) == 0o755
    with caplog.at_level(logging.WARNING):
        ensure_home(home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert "made it private" in caplog.text
    os.chmod(home, 0o770)
    with pytest.raises(UnsafePath, match=r"writable by group \(mode 0770\); fix: chmod 700"):
        check_home(home)
    os.chmod(home, 0o700)
    (home / "logs").mkdir(mode=0o777)
    os.chmod(home / "logs", 0o777)
    with pytest.raises(UnsafePath, match=r"refusing directory .*logs: writable by group and others"):
        check_home(home, [home / "logs"])


@needs_root
def test_a_home_of_someone_else_or_behind_their_link_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, OTHER, OTHER)
    with pytest.raises(UnsafePath, match=f"owned by uid {OTHER}.*not you"):
        ensure_home(theirs)
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(mine)
    assert check_home(link) is True  # a link of ours is followed, its target checked
    os.lchown(link, OTHER, OTHER)
    with pytest.raises(UnsafePath, match="a symbolic link owned by uid"):
        check_home(link)


@needs_root
def test_config_toml_must_be_a_file_of_ours_that_others_cannot_write(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    assert read_config(config) is None
    config.write_text("x = 1\n")
    assert read_config(config) == b"x = 1\n"
    os.chown(config, OTHER, OTHER)
    with pytest.raises(UnsafePath, match=r"refusing config file .* owned by uid"):
        read_config(config)
    config.unlink()
    target, _ = _target(tmp_path)
    config.symlink_to(target)
    with pytest.raises(UnsafePath, match="symbolic link"):
        read_config(config)


# -- files -----------------------------------------------------------------------------------------
def test_replace_private_replaces_a_planted_link_and_never_writes_through_it(tmp_path: Path) -> None:
    target, before = _target(tmp_path)
    path = tmp_path / "1-1.sh"
    path.symlink_to(target)
    replace_private(path, "echo new\n")
    assert _same(target, before)
    assert not path.is_symlink() and path.read_text() == "echo new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1-1.sh", "target.txt"]


def test_a_log_file_is_created_private_and_a_link_or_hard_link_refused(tmp_path: Path) -> None:
    log = tmp_path / "1.log"
    assert prepare_log_file(log) == log and stat.S_IMODE(log.stat().st_mode) == 0o600
    target, before = _target(tmp_path)
    link = tmp_path / "2.log"
    link.symlink_to(target)
    with pytest.raises(UnsafeLogFile, match="symbolic link"):
        prepare_log_file(link)
    hard = tmp_path / "3.log"
    os.link(target, hard)
    with pytest.raises(UnsafeLogFile, match="one link"):
        prepare_log_file(hard)
    assert _same(target, before)


def test_a_marker_link_or_fifo_is_no_marker(tmp_path: Path) -> None:
    marker = tmp_path / "1.done"
    assert read_marker(marker) is None
    marker.write_text("failed: tests\n")
    assert read_marker(marker) == "failed: tests\n"
    marker.unlink()
    target, before = _target(tmp_path, "failed: planted\n")
    marker.symlink_to(target)
    assert read_marker(marker) is None
    assert not marker.exists() and not marker.is_symlink() and _same(target, before)
    os.mkfifo(marker)
    assert read_marker(marker) is None  # does not block on a FIFO nobody writes
    assert not marker.exists()


def test_the_fifo_replaces_whatever_was_planted_at_its_path(tmp_path: Path) -> None:
    target, before = _target(tmp_path)
    fifo = tmp_path / "events.fifo"
    fifo.symlink_to(target)
    fd = open_fifo(fifo)
    try:
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and _same(target, before)
        os.write(fd, b"poke\n")
        assert os.read(fd, 5) == b"poke\n"
    finally:
        os.close(fd)


def test_the_lock_file_is_never_followed_nor_truncated(tmp_path: Path) -> None:
    target, before = _target(tmp_path)
    path = tmp_path / "daemon.lock"
    path.symlink_to(target)
    with pytest.raises(UnsafePath, match=r"refusing lock file .*symbolic link"):
        DaemonLock(path).acquire()
    assert _same(target, before)
    path.unlink()
    path.write_text("123456789012\n")  # an older, longer pid
    os.chmod(path, 0o644)
    lock = DaemonLock(path)
    lock.acquire()
    try:
        assert lock.holder_pid() == os.getpid() and DaemonLock(path).running_pid() == os.getpid()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        lock.release()


# -- the database ----------------------------------------------------------------------------------
def test_a_missing_database_is_not_created_by_readers(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "x.db"
    with pytest.raises(NoDatabase, match=f"no database at {path}"):
        SqliteStore(path, create=False)
    assert not (tmp_path / "no").exists()
    SqliteStore(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    SqliteStore(path, create=False).close()


@needs_root
def test_a_database_must_be_ours_not_a_link_in_a_directory_others_cannot_write(tmp_path: Path) -> None:
    db = tmp_path / "tmo.db"
    SqliteStore(db).close()
    target, before = _target(tmp_path)
    link = tmp_path / "link.db"
    link.symlink_to(db)
    with pytest.raises(UnsafePath, match="symbolic link"):
        prepare_database(link, create=True)
    wal = tmp_path / "tmo.db-wal"
    wal.write_bytes(b"planted")
    os.chown(wal, OTHER, OTHER)
    with pytest.raises(UnsafePath, match=f"refusing database file {wal}: owned by uid {OTHER}"):
        prepare_database(db, create=False)
    wal.unlink()
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    with pytest.raises(UnsafePath, match=r"refusing database directory .* writable by group and others"):
        prepare_database(shared / "x.db", create=True)
    assert list(shared.iterdir()) == [] and _same(target, before)


def test_an_existing_database_is_checked_without_being_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Closing any descriptor of a database drops the POSIX locks this process's SQLite connections
    hold on it; so the checks only lstat and chmod."""
    db = tmp_path / "tmo.db"
    store = SqliteStore(db)
    real_open = os.open

    def guarded(path: str | Path, flags: int, mode: int = 0o777, **kwargs: int | None) -> int:
        assert str(path) != str(db), "prepare_database opened the database"
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", guarded)
    try:
        prepare_database(db, create=True)
        prepare_database(db, create=False)
    finally:
        monkeypatch.undo()
        store.close()


def test_the_api_refuses_hostile_text_before_anything_is_stored(orchestrator: Orchestrator) -> None:
    with pytest.raises(UsageError, match="argument 3 of the command contains a NUL byte"):
        orchestrator.enqueue(["sh", "-c", "true\x00rm -rf ~"])
    with pytest.raises(UsageError, match="the name contains a control character"):
        orchestrator.enqueue(["true"], name="x\ny")
    assert orchestrator.list_projects() == []


# -- the tmux socket and server --------------------------------------------------------------------
@pytest.fixture
def socket_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "sock"
    directory.mkdir(mode=0o700)
    yield directory
    for path in directory.glob("*.sock"):
        end_tmux_server(path)


def test_the_server_must_carry_this_homes_mark(socket_dir: Path) -> None:
    path = socket_dir / "s.sock"
    tmux = Tmux(path, owner_mark="tmo:abc", private_dir=True)
    assert tmux.check_owner("tmo:abc") is False  # no server yet
    made = subprocess.run(["tmux", "-S", str(path), "-f", "/dev/null", "new-session", "-d", "-s", "x",
                           "sleep 600"], check=False, capture_output=True, text=True, timeout=30)
    assert made.returncode == 0, made.stderr
    with pytest.raises(ForeignServer, match="it has no @tmo_home mark"):
        tmux.run(["list-sessions"])
    subprocess.run(["tmux", "-S", str(path), "set-option", "-s", "@tmo_home", "tmo:other"], check=True)
    with pytest.raises(ForeignServer, match="its mark is 'tmo:other'"):
        tmux.run(["list-sessions"])
    subprocess.run(["tmux", "-S", str(path), "set-option", "-s", "@tmo_home", "tmo:abc"], check=True)
    assert tmux.run(["list-sessions", "-F", "#{session_name}"]).lines == ["x"]
    assert tmux.check_owner("tmo:abc") is True


def test_a_socket_directory_outside_the_home_must_be_closed_to_others(socket_dir: Path) -> None:
    os.chmod(socket_dir, 0o755)
    with pytest.raises(UnsafePath, match="open to other users"):
        Tmux(socket_dir / "s.sock", private_dir=True).run(["list-sessions"])
    os.chmod(socket_dir, 0o700)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(socket_dir / "s.sock"))
    try:
        if os.geteuid() == 0:
            os.chown(socket_dir / "s.sock", OTHER, OTHER)
            with pytest.raises(ForeignServer, match=r"refusing tmux socket .* owned by uid"):
                Tmux(socket_dir / "s.sock", private_dir=True).run(["list-sessions"])
    finally:
        listener.close()
        (socket_dir / "s.sock").unlink()
    (socket_dir / "s.sock").write_text("not a socket")
    with pytest.raises(ForeignServer, match="not a socket"):
        Tmux(socket_dir / "s.sock").run(["list-sessions"])
    (socket_dir / "s.sock").unlink()


def test_threads_opening_stores_do_not_break_each_others_locks(tmp_path: Path) -> None:
    """Many stores opened at once on one new database, as the daemon's threads do."""
    db = tmp_path / "tmo.db"
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            SqliteStore(db).close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert stat.S_IMODE(db.stat().st_mode) == 0o600

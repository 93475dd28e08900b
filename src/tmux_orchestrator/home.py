"""The state directory (``$TMO_HOME``): who must own it, and how files in it are opened.

tmo is as strict about its home as ssh (``StrictModes``) and tmux are about theirs, because the home
holds every project's environment (API keys), a socket that runs commands and a config file whose
hooks run commands (``docs/security.md``):

* the home, its ``logs/`` and ``run/``, the tmux socket directory and the database's directory must be
  directories owned by the effective user and not writable by group or others. They are checked with
  ``lstat`` before anything in them is read (:func:`check_home`); :func:`ensure_home` also creates a
  missing home 0700 and makes a home that others may read private;
* every file under the home is opened without following a symbolic link in its last component
  (``O_NOFOLLOW``), created private (0600), and, where it must be new, exclusively (``O_EXCL``): a
  link planted in the home can never make us write through it or read it as ours.

Every refusal is an :class:`~tmux_orchestrator.errors.UnsafePath` (or ``ForeignServer``) with one line
that says how to fix it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pwd
import shlex
import stat
from collections.abc import Iterable
from pathlib import Path

from tmux_orchestrator.errors import ConfigError, ForeignServer, NoDatabase, UnsafeLogFile, UnsafePath

log = logging.getLogger(__name__)

# A library configures no logging: its records reach whatever the program using it set up, and
# nothing at all (not logging's last-resort output on stderr) when it set up nothing. The handler
# belongs to the package's top logger; it is added here, not in the package's __init__, because
# importing logging costs 11 ms that `tmo --version` should not pay, and every module that logs
# imports this one (tests/unit/test_library_logging.py checks that). The CLI and the daemon
# configure their own logging (cli.entry.configure_logging, logs.setup_logging).
logging.getLogger("tmux_orchestrator").addHandler(logging.NullHandler())

#: Flags every open of a file in the home carries.
_SAFE = os.O_NOFOLLOW | os.O_CLOEXEC
#: Mode bits of group and others.
_OTHERS = 0o077
#: Mode bits that let group or others write.
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


def _read_umask() -> int:
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


#: The umask the process started with. Projects and hooks run with it (they work in the user's own
#: directories); tmo's own files never depend on it.
_USER_UMASK = _read_umask()


def use_private_umask() -> None:
    """From now on create files 0600 and directories 0700 whatever the code asks (CLI and daemon).

    The API does not call this: it must not change the umask of a program that embeds it, so every
    file of the home is also created with an explicit private mode.
    """
    os.umask(0o077)


def user_umask() -> int:
    """The umask the process started with, for the processes tmo starts on the user's behalf."""
    return _USER_UMASK


# -- errors ----------------------------------------------------------------------------------------
def _who(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _whom(mode: int) -> str:
    return " and ".join(w for bit, w in ((stat.S_IWGRP, "group"), (stat.S_IWOTH, "others")) if mode & bit)


def _is_link_error(exc: OSError, path: Path | str) -> bool:
    # O_NOFOLLOW on a link fails with ELOOP (Linux, macOS) or EMLINK (FreeBSD).
    return exc.errno in (errno.ELOOP, errno.EMLINK) or os.path.islink(path)


def _require(path: Path | str, info: os.stat_result, what: str, *, is_dir: bool,
             fix: str | None = None, root_ok: bool = False) -> None:
    """Refuse ``path`` unless it is a directory/regular file of ours that group and others cannot write."""
    me = os.geteuid()
    kind_ok = stat.S_ISDIR(info.st_mode) if is_dir else stat.S_ISREG(info.st_mode)
    if not kind_ok:
        raise UnsafePath(f"refusing {what} {path}: not a {'directory' if is_dir else 'regular file'}; "
                         f"fix: remove it{'' if is_dir else ' or point tmo elsewhere'}")
    if info.st_uid != me and not (root_ok and info.st_uid == 0):
        raise UnsafePath(
            f"refusing {what} {path}: owned by {_who(info.st_uid)}, not you ({_who(me)}); fix: "
            + (fix or f"chown {me} {path}, or remove it and let tmo create its own")
        )
    if info.st_mode & _OTHERS_WRITE:
        raise UnsafePath(
            f"refusing {what} {path}: writable by {_whom(info.st_mode)} "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); fix: chmod {'700' if is_dir else 'go-w'} {path}"
        )


def _tighten(path: Path | str, info: os.stat_result, fd: int | None = None) -> None:
    """Take group and other bits off a file or directory of ours (older versions followed the umask)."""
    mode = stat.S_IMODE(info.st_mode)
    if mode & _OTHERS:
        if fd is not None:
            os.fchmod(fd, mode & ~_OTHERS)
        else:
            os.chmod(path, mode & ~_OTHERS)
        log.warning("%s was open to other users (mode %04o); made it private (%04o)",
                    path, mode, mode & ~_OTHERS)


def check_links(path: Path, what: str) -> None:
    """Refuse a path that goes through a symbolic link another user owns (anywhere along it): its
    owner can point it elsewhere at any time, to a database or a socket of their choosing. Links of
    ours, or root's, are followed."""
    current = Path(path.absolute().anchor)
    for part in path.absolute().parts[1:]:
        current = current / part
        try:
            info = os.lstat(current)
        except (FileNotFoundError, NotADirectoryError):
            return
        if stat.S_ISLNK(info.st_mode) and info.st_uid not in (os.geteuid(), 0):
            raise UnsafePath(
                f"refusing {what} {path}: it goes through {current}, a symbolic link owned by "
                f"{_who(info.st_uid)}, who can point it anywhere; fix: give the real path"
            )


# -- the home --------------------------------------------------------------------------------------
def _home_info(home: Path) -> os.stat_result:
    """``lstat`` of the home; a symlinked home is followed deliberately, if the link is ours (or
    root's): whoever owns a link can point it elsewhere at any time."""
    info = os.lstat(home)
    if stat.S_ISLNK(info.st_mode):
        if info.st_uid not in (os.geteuid(), 0):
            raise UnsafePath(
                f"refusing home {home}: a symbolic link owned by {_who(info.st_uid)}, who can point it "
                "anywhere; fix: set TMO_HOME to the real directory"
            )
        info = os.stat(home)
    return info


_HOME_FIX = "use a directory you own (or remove it and let tmo create it), or set TMO_HOME elsewhere"


def check_home(home: Path, subdirs: Iterable[Path] = ()) -> bool:
    """Check the home and those of ``subdirs`` that exist, changing nothing; False if there is no home.

    Raises :class:`UnsafePath` for a home (or subdirectory) that is not a directory owned by the
    effective user, or that group or others can write.
    """
    check_links(home.parent, "home")  # the home itself may be a link of ours: _home_info checks it
    try:
        info = _home_info(home)
    except FileNotFoundError:
        return False
    except NotADirectoryError as exc:  # a file where a parent directory should be
        raise ConfigError(f"cannot use TMO_HOME {home}: {exc.strerror}; "
                          "set TMO_HOME to a directory you can write") from None
    _require(home, info, "home", is_dir=True, fix=_HOME_FIX)
    for sub in subdirs:
        try:
            sub_info = os.lstat(sub)
        except FileNotFoundError:
            continue
        _require(sub, sub_info, "directory", is_dir=True)
    return True


def ensure_home(home: Path, subdirs: Iterable[Path] = ()) -> None:
    """Create the home (0700; missing parents with the user's umask) and ``subdirs`` (0700), check them
    as :func:`check_home` does, and take group and other access off them."""
    try:
        info = _home_info(home)
    except FileNotFoundError:
        make_parents(home)
        with contextlib.suppress(FileExistsError):  # made meanwhile: checked below all the same
            os.mkdir(home, 0o700)
        info = _home_info(home)
    _require(home, info, "home", is_dir=True, fix=_HOME_FIX)
    _tighten(home, info)
    for sub in subdirs:
        with contextlib.suppress(FileExistsError):
            os.mkdir(sub, 0o700)
        sub_info = os.lstat(sub)
        _require(sub, sub_info, "directory", is_dir=True)
        _tighten(sub, sub_info)


def make_parents(path: Path) -> None:
    """Create the missing parents of ``path`` with the user's umask (they are the user's directories,
    like ``~/.local/state``, not tmo's)."""
    missing: list[Path] = []
    parent = path.absolute().parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory)
            os.chmod(directory, 0o777 & ~_USER_UMASK)


def read_config(path: Path) -> bytes | None:
    """The bytes of ``config.toml``, None if there is none.

    Its hooks run commands as this user, so it must be a regular file of ours (not a link) that group
    and others cannot write; anything else raises :class:`UnsafePath` before a byte is read.
    """
    try:
        fd = open_private(path, os.O_RDONLY | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if _is_link_error(exc, path):
            raise UnsafePath(f"refusing config file {path}: it is a symbolic link; fix: replace it "
                             "with the file itself") from None
        raise
    with os.fdopen(fd, "rb") as fh:
        _require(path, os.fstat(fd), "config file", is_dir=False)
        return fh.read()


# -- files -----------------------------------------------------------------------------------------
def open_private(path: Path | str, flags: int, *, mode: int = 0o600) -> int:
    """``os.open`` that never follows a symlink in the last component; new files get ``mode``."""
    return os.open(path, flags | _SAFE, mode)


def write_private(path: Path | str, data: str | bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` (created 0600, truncated unless ``exclusive`` refuses an existing
    one). Raises ``OSError`` (``ELOOP`` for a symlink, ``EEXIST`` with ``exclusive``)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = open_private(path, flags)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data)


def replace_private(path: Path | str, data: str | bytes) -> None:
    """Write ``data`` to a new 0600 file and rename it over ``path``: whatever was at ``path`` (a
    planted link included) is replaced, never written through."""
    import secrets  # here: `tmo list` imports this module and never writes a wrapper

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        write_private(tmp, data, exclusive=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_private(path: Path | str, *, limit: int = 1 << 20) -> bytes | None:
    """At most ``limit`` bytes of the regular file ``path``; None if it does not exist.

    Raises ``OSError`` for a symlink (``ELOOP``) or anything that is not a regular file.
    """
    try:
        fd = open_private(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        return fh.read(limit)


def open_append(path: Path | str, what: str) -> int:
    """An fd appending to ``path`` (created 0600); see :func:`open_owned`."""
    return open_owned(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, what)


def open_owned(path: Path | str, flags: int, what: str) -> int:
    """``os.open(path, flags)`` (new files 0600) that refuses a link, or anything but a regular file
    of ours that others cannot write (:class:`UnsafePath`), and makes an existing one private (older
    versions created ``scheduler.log``, ``daemon.out`` and ``daemon.lock`` with the umask)."""
    try:
        fd = open_private(path, flags | os.O_NONBLOCK)
    except OSError as exc:
        if _is_link_error(exc, path):
            raise UnsafePath(f"refusing {what} {path}: it is a symbolic link; fix: remove it") from None
        raise
    try:
        info = os.fstat(fd)
        _require(path, info, what, is_dir=False, fix=f"remove {path}")
        _tighten(path, info, fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def log_closed_marker(path: Path) -> Path:
    """The file a pane's pipe leaves beside its log ``path`` once it has written the last of the
    pane's output (``<id>.log.closed``): the end of a project is recorded when its session is
    gone, while up to a pipe's worth of output may still be on its way to the log."""
    return path.with_name(path.name + ".closed")


def log_pipe_command(path: Path) -> str:
    """The ``pipe-pane`` command for a log: append the pane's output to ``path`` (made safe first,
    :func:`prepare_log_file`), then leave :func:`log_closed_marker` once the pipe is drained."""
    log = prepare_log_file(path)
    log_closed_marker(path).unlink(missing_ok=True)
    # umask: the marker is a file of the home like any other, private (the server's umask is 022)
    return f"umask 077; cat >> {shlex.quote(str(log))}; : > {shlex.quote(str(log_closed_marker(path)))}"


def prepare_log_file(path: Path) -> Path:
    """Create a project's pipe log (0600) before tmux appends to it with ``cat >> path``.

    tmux's ``cat`` follows links, so the file is made (or found) here without following one: a link,
    a hard link, or a file that is not ours raises :class:`UnsafeLogFile` (a ``TmuxError``: the
    project fails to start and nothing is written). Returns ``path``.
    """
    try:
        fd = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK)
    except OSError as exc:
        if _is_link_error(exc, path):
            raise UnsafeLogFile(f"refusing log file {path}: it is a symbolic link; remove it") from None
        raise UnsafeLogFile(f"cannot create log file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_nlink != 1:
            raise UnsafeLogFile(
                f"refusing log file {path}: not a regular file of yours with one link; remove it"
            )
        _tighten(path, info, fd)
    finally:
        os.close(fd)
    return path


def read_marker(path: Path, *, limit: int = 1 << 16) -> str | None:
    """The text a project wrote to its marker file (``$TMO_DONE_FILE``); None if there is none.

    Only a regular file of ours counts. A link (or a FIFO, a file of someone else) is not a marker: it
    is removed (unlinking a link never touches its target), logged, and None is returned.
    """
    try:
        fd = open_private(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if _is_link_error(exc, path):
            _drop(path, "it is a symbolic link")
        else:
            log.warning("cannot read marker %s: %s", path, exc.strerror)
        return None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            _drop(path, "not a regular file of yours")
            return None
        return fh.read(limit).decode("utf-8", "replace")


def open_fifo(path: Path) -> int:
    """The daemon's end-event FIFO, opened ``O_RDWR | O_NONBLOCK`` (never blocks, never sees EOF).

    Whatever else is at ``path`` (a planted link, a regular file) is removed first, never followed;
    the FIFO is made 0600 and must be ours (:class:`UnsafePath` otherwise).
    """
    try:
        is_fifo = stat.S_ISFIFO(os.lstat(path).st_mode)
        if not is_fifo:
            os.unlink(path)  # unlinking a link never touches its target
    except FileNotFoundError:
        is_fifo = False
    if not is_fifo:
        with contextlib.suppress(FileExistsError):
            os.mkfifo(path, 0o600)
    fd = open_private(path, os.O_RDWR | os.O_NONBLOCK)
    info = os.fstat(fd)
    if not stat.S_ISFIFO(info.st_mode) or info.st_uid != os.geteuid():
        os.close(fd)
        raise UnsafePath(f"refusing FIFO {path}: not a FIFO of yours; fix: remove it")
    return fd


def _drop(path: Path, why: str) -> None:
    log.warning("ignored and removed %s: %s", path, why)
    with contextlib.suppress(OSError):
        os.unlink(path)


# -- the database ----------------------------------------------------------------------------------
#: Files SQLite keeps beside a database.
_SQLITE_SIBLINGS = ("-wal", "-shm", "-journal")


def prepare_database(path: Path, *, create: bool) -> None:
    """Make sure the SQLite file ``path`` is safe to open, creating it (0600) when ``create``.

    The database holds the commands tmo runs and their environments, so it must be a regular file of
    ours (not a link), in a directory of ours (or root's) that group and others cannot write: SQLite
    creates ``-wal``/``-journal`` files beside it, and one planted there would be replayed into it.
    Without ``create`` a missing database raises :class:`StoreError` ("no database at ...") and nothing
    is made; with it, the file and a missing directory are created, and the file and its siblings made
    private. SQLite gives ``-wal``/``-shm`` the mode of the database file, so they are 0600 too.

    The file is never opened here: closing any descriptor of a database drops every POSIX lock this
    process holds on it, those of its open SQLite connections included (they would then let another
    process check-point or recover under them). ``lstat`` and ``chmod`` open nothing.
    """
    directory = path.absolute().parent
    check_links(path, "database")
    if create and not directory.exists():
        make_parents(directory)
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
    try:
        dir_info = os.stat(directory)
    except (FileNotFoundError, NotADirectoryError):
        raise _no_database(path) from None
    _require(directory, dir_info, "database directory", is_dir=True, root_ok=True,
             fix=f"keep the database in a directory only you can write (not {directory})")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        if not create:
            raise _no_database(path) from None
        _create_empty(path)
        info = os.lstat(path)
    for file, file_info in ((path, info), *_siblings(path)):
        if stat.S_ISLNK(file_info.st_mode):
            raise UnsafePath(f"refusing database file {file}: it is a symbolic link; fix: give the real "
                             "path in --database-url / TMO_DATABASE_URL, or remove the link")
        if not stat.S_ISREG(file_info.st_mode) or file_info.st_uid != os.geteuid():
            _require(file, file_info, "database file", is_dir=False)  # raises, saying why
        if create:
            # Older versions followed the umask (0644, or 0664 with per-user groups): fix it once.
            _tighten(file, file_info)


def _create_empty(path: Path) -> None:
    """Create the empty file ``path`` (0600), or find it made meanwhile by someone else."""
    try:
        os.mknod(path, stat.S_IFREG | 0o600)  # creates without opening (see prepare_database)
    except FileExistsError:
        return
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EINVAL, errno.ENOSYS):
            raise
        # Where mknod needs privileges (macOS): a new file nobody has opened yet is safe to close.
        with contextlib.suppress(FileExistsError):
            os.close(open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))


def _siblings(path: Path) -> list[tuple[Path, os.stat_result]]:
    found = []
    for suffix in _SQLITE_SIBLINGS:
        sibling = Path(f"{path}{suffix}")
        try:
            found.append((sibling, os.lstat(sibling)))
        except FileNotFoundError:
            continue
    return found


def _no_database(path: Path) -> NoDatabase:
    return NoDatabase(
        f"no database at {path} (nothing queued yet; `tmo add` or `tmo daemon start` creates it)"
    )


# -- the tmux socket -------------------------------------------------------------------------------
def check_socket_dir(directory: Path, *, private: bool) -> bool:
    """Check the directory of the tmux socket; False when it does not exist (no server yet).

    It must be a directory of ours that group and others cannot write. A ``private`` one (the
    ``tmo-<uid>`` fallback in a shared temporary directory, like tmux's own ``tmux-<uid>``) must not
    be open to them at all: another user who made it first could have put a server of their own in it.
    """
    try:
        info = os.lstat(directory)
    except (FileNotFoundError, NotADirectoryError):
        return False
    fix = f"remove {directory} (or set TMO_TMUX_SOCKET / a shorter TMO_HOME) and let tmo create its own"
    check_links(directory, "tmux socket directory")
    if stat.S_ISLNK(info.st_mode):
        if private:  # the shared-/tmp fallback is made by tmo itself: never a link
            raise UnsafePath(f"refusing tmux socket directory {directory}: it is a symbolic link; "
                             f"fix: {fix}")
        info = os.stat(directory)  # a home that is a link of ours (or root's): its target counts
    _require(directory, info, "tmux socket directory", is_dir=True, fix=fix)
    if private and info.st_mode & _OTHERS:
        raise UnsafePath(
            f"refusing tmux socket directory {directory}: open to other users "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); fix: chmod 700 {directory}, or {fix}"
        )
    return True


def check_socket(path: Path) -> os.stat_result | None:
    """``lstat`` of the tmux socket (None when there is none): it must be a socket of ours, as tmux
    itself requires of its socket directory; otherwise :class:`ForeignServer`."""
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISSOCK(info.st_mode):
        raise ForeignServer(f"refusing tmux socket {path}: not a socket; fix: remove it")
    if info.st_uid != os.geteuid():
        raise ForeignServer(
            f"refusing tmux socket {path}: owned by {_who(info.st_uid)}, not you ({_who(os.geteuid())}); "
            "its server is not yours; fix: remove it, or set TMO_TMUX_SOCKET to a socket of your own"
        )
    return info

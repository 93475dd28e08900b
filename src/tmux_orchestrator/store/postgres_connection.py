"""Connections to PostgreSQL: the pool, short transactions, the LISTEN connection, the schema on open.

The store's SQL lives in ``postgres.py``; this module gives it three things:

- :meth:`PgConnection.write` / :meth:`PgConnection.read`: a function run in one short transaction on
  a pooled connection (autocommit off, so every statement of it commits together or not at all),
  retried when PostgreSQL broke a deadlock; reads also when the server dropped an idle connection.
  Driver errors leave as a one-line :class:`StoreError` naming the database, never its password.
- :meth:`PgConnection.changes_token` / :meth:`PgConnection.change_fd`: a dedicated connection (not
  from the pool) that ``LISTEN``\\ s on the ``tmo`` channel, its notifications counted.
- :meth:`PgConnection.open_schema`: the schema checked, created or upgraded under an advisory lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.string import TextLoader

from tmux_orchestrator.errors import NoDatabase, SchemaTooNew, StoreError
from tmux_orchestrator.redact import add_secret, display_url, redact
from tmux_orchestrator.store.schema_pg import (
    LOCK_CLASS,
    MIGRATION_LOCK,
    MIGRATIONS,
    SCHEMA_VERSION,
    VERSION_TABLE,
)

T = TypeVar("T")
Conn = psycopg.Connection[Any]

#: Connections in the pool: the daemon's loop, its clean-up workers and the launcher share a store.
POOL_SIZE = 4
#: Seconds a caller waits for a pooled connection (all busy, or the server unreachable).
POOL_TIMEOUT = 10.0
#: Seconds a new connection may take before it is an error.
CONNECT_TIMEOUT = 10
#: A statement run this many times on a connection is prepared there (the hot ones are prepared at once).
PREPARE_THRESHOLD = 5
#: Attempts of a transaction that PostgreSQL aborted to break a deadlock.
DEADLOCK_ATTEMPTS = 5
# The pool reports each dead connection it drops (after a server restart) as a warning on stderr:
# the store handles those (the transaction runs again on another) and reports what it cannot handle
# as a StoreError. Left alone when someone configured the logger.
if logging.getLogger("psycopg.pool").level == logging.NOTSET:
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

#: Tables whose existence without a version table means another program's tables (or a half schema).
_OUR_TABLES = ("project_queue", "events", "settings", "cleanup_claims", "hosts")


def _configure(conn: Conn) -> None:
    # JSON columns come back as the text they hold, as from SQLite: rows.py parses both alike, and
    # `tmo list --json` gets what it gets from SQLite.
    conn.adapters.register_loader("jsonb", TextLoader)
    conn.adapters.register_loader("json", TextLoader)


class PgConnection:
    """The pool and the LISTEN connection of one :class:`~tmux_orchestrator.store.postgres.PostgresStore`."""

    def __init__(self, url: str) -> None:
        self.url = url
        #: The database as shown in messages (never with its password).
        self.name = display_url(url)
        try:
            password = conninfo_to_dict(url).get("password")
        except psycopg.ProgrammingError as exc:  # not a valid URL or DSN
            raise StoreError(f"database {self.name}: {_one_line(exc)}") from None
        self._password = str(password) if password else None
        # The password reaches no log line of this process (the daemon's log goes through redact).
        add_secret(self._password)
        self._kwargs: dict[str, Any] = {"autocommit": False, "prepare_threshold": PREPARE_THRESHOLD,
                                        "connect_timeout": CONNECT_TIMEOUT}
        self._pool: psycopg_pool.ConnectionPool[Conn] | None = None
        self._listen_lock = threading.Lock()
        self._listener: Conn | None = None
        self._notifications = 0
        self._closed = False

    # -- opening ---------------------------------------------------------------------------------
    def connect(self, **kwargs: Any) -> Conn:
        """A new connection of our own (not from the pool), errors as :class:`StoreError`."""
        try:
            conn = psycopg.connect(self.url, **{**self._kwargs, **kwargs})
        except psycopg.Error as exc:
            raise self.error(exc) from None
        _configure(conn)
        return conn

    def open_pool(self) -> None:
        """Start the pool (after :meth:`open_schema` proved the server answers)."""
        self._pool = psycopg_pool.ConnectionPool(
            self.url, kwargs=self._kwargs, min_size=1, max_size=POOL_SIZE, open=True, name="tmo",
            configure=_configure, timeout=POOL_TIMEOUT, num_workers=1,
        )

    def open_schema(self, *, create: bool) -> int:
        """Check the schema, create or upgrade it (``create``), and return its version.

        Without ``create`` a database with no schema is :class:`NoDatabase` and nothing is written;
        an older schema is upgraded either way (as SQLite's is), a newer one refused.
        """
        try:
            conn = self.connect()
        except StoreError as exc:
            if "does not exist" not in str(exc):
                raise
            if not create:
                raise NoDatabase(f"no database at {self.name} (the server has no such database)") from None
            raise StoreError(f"{exc}; create the database first (createdb, or CREATE DATABASE): tmo "
                             "creates its tables, not the database") from None
        try:
            with conn:
                # Without a lock first: a schema that is there and current (every open but the
                # first) needs nothing more. Anything else is decided under the lock.
                try:
                    version = self._version(conn)
                    conn.commit()
                except pg_errors.UndefinedTable:  # dropped or made by another process meanwhile
                    conn.rollback()
                    version = None
                if version is not None and version > SCHEMA_VERSION:
                    raise self._too_new(version)
                if version != SCHEMA_VERSION:
                    version = self._migrate(conn, create=create)
                return version
        except psycopg.Error as exc:
            raise self.error(exc) from None

    def _too_new(self, version: int) -> SchemaTooNew:
        return SchemaTooNew(f"database {self.name} has schema version {version}, newer than this "
                            f"tmux-orchestrator supports ({SCHEMA_VERSION}); upgrade tmux-orchestrator")

    def _version(self, conn: Conn) -> int | None:
        """The schema version; None when the version table is not there."""
        if VERSION_TABLE not in self._tables(conn):
            return None
        row = conn.execute(f"SELECT max(version) FROM {VERSION_TABLE}").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    @staticmethod
    def _tables(conn: Conn) -> set[str]:
        # One query of pg_class, so one snapshot: the tables of a migration another process
        # commits meanwhile are seen all or none (to_regclass, table by table, goes through a
        # cache that may still say "no such table" for one and already know another).
        rows = conn.execute(
            "SELECT relname FROM pg_catalog.pg_class WHERE relname = ANY(%s) AND relnamespace = "
            "(SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = current_schema())",
            ([VERSION_TABLE, *_OUR_TABLES],)).fetchall()
        return {str(r[0]) for r in rows}

    def _migrate(self, conn: Conn, *, create: bool) -> int:
        # Several processes may open a new database at once: one migrates, the others wait for the
        # lock and then find the schema done. The lock is the session's, taken *before* the
        # transaction that reads the version: a transaction begun earlier may keep a stale view of
        # the catalog (PostgreSQL caches "no such table" until a new transaction or a table lock).
        # DDL is transactional: a failed upgrade leaves nothing behind.
        conn.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, MIGRATION_LOCK))
        conn.commit()
        try:
            with conn.transaction():
                tables = self._tables(conn)
                version = self._version(conn) if VERSION_TABLE in tables else None
                if version is None:
                    if tables:
                        raise StoreError(
                            f"database {self.name} has tables named like tmux-orchestrator's "
                            f"({', '.join(sorted(tables))}) but no {VERSION_TABLE}: they are another "
                            "program's; point TMO_DATABASE_URL elsewhere (or at another schema)")
                    if not create:
                        raise NoDatabase(
                            f"no database at {self.name} (no tmux-orchestrator tables in it yet: nothing "
                            "queued; `tmo add` or `tmo daemon start` creates them)")
                    conn.execute(f"CREATE TABLE {VERSION_TABLE} (version integer NOT NULL)")
                    conn.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (0)")
                    version = 0
                if version > SCHEMA_VERSION:
                    raise self._too_new(version)
                for number in range(version + 1, SCHEMA_VERSION + 1):
                    conn.execute(MIGRATIONS[number - 1], prepare=False)
                    conn.execute(f"UPDATE {VERSION_TABLE} SET version = %s", (number,))
                    version = number
        finally:
            if not conn.broken:
                conn.rollback()  # after a failed transaction, so that the unlock can run
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, MIGRATION_LOCK))
                conn.commit()
        return version

    def close(self) -> None:
        """Close the pool and the LISTEN connection."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        with self._listen_lock:
            self._closed = True
            if self._listener is not None:
                self._listener.close()

    # -- transactions ----------------------------------------------------------------------------
    def write(self, fn: Callable[[Conn], T], *, source: str | None = None) -> T:
        """``fn(conn)`` in one transaction, committed when it returns, rolled back when it raises.

        ``source`` names the writer for the triggers of the whole transaction (``tmo.source``). A
        transaction PostgreSQL aborted to break a deadlock is run again (``fn`` must not have effects
        outside the database), up to :data:`DEADLOCK_ATTEMPTS` times.
        """
        return self._run(fn, source=source, read_only=False)

    def read(self, fn: Callable[[Conn], T], *, snapshot: bool = False) -> T:
        """``fn(conn)`` in one read-only transaction; ``snapshot``: every statement sees the same
        snapshot (``REPEATABLE READ``). Run again once if the server had dropped the connection."""
        return self._run(fn, snapshot=snapshot, read_only=True)

    def _run(self, fn: Callable[[Conn], T], *, read_only: bool, source: str | None = None,
             snapshot: bool = False) -> T:
        pool = self._pool
        if pool is None:
            raise StoreError(f"database {self.name}: the store is closed")
        deadlocks = lost = 0
        while True:
            try:
                conn = pool.getconn()
            except psycopg_pool.PoolTimeout:
                raise StoreError(f"database {self.name}: no connection within {POOL_TIMEOUT:.0f} s "
                                 f"({self._why_unreachable()})") from None
            begun = False
            try:
                with conn.transaction():
                    begun = True
                    if snapshot:
                        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    if source is not None:
                        conn.execute("SELECT set_config('tmo.source', %s, true)", (source,), prepare=True)
                    return fn(conn)
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure) as exc:
                deadlocks += 1
                if deadlocks == DEADLOCK_ATTEMPTS:
                    raise self.error(exc) from None
                time.sleep(0.01 * deadlocks)
            except psycopg.OperationalError as exc:
                # Pooled connections the server dropped while they idled (a restart, a fail-over,
                # an administrator) fail at BEGIN, before anything ran: the transaction runs again
                # on another (the pool drops the dead one). A read may run again also when it
                # failed later; a write then may have committed, and is not run again.
                lost += 1
                if (begun and not (read_only and lost == 1)) or lost > POOL_SIZE + 1:
                    raise self.error(exc) from None
            except psycopg.Error as exc:
                raise self.error(exc) from None
            finally:
                pool.putconn(conn)

    def _why_unreachable(self) -> str:
        try:
            self.connect().close()
        except StoreError as exc:
            return str(exc).removeprefix(f"database {self.name}: ")
        return "every connection is busy"

    def error(self, exc: psycopg.Error) -> StoreError:
        """A driver error as a one-line :class:`StoreError` naming the database (never its password).

        A refusal of one of our triggers keeps its own text (``tmo: `` taken off), as in SQLite.
        """
        primary = exc.diag.message_primary if isinstance(exc, psycopg.DatabaseError) else None
        if primary and primary.startswith("tmo: "):
            return StoreError(primary[len("tmo: "):])
        text = primary or _one_line(exc)
        if self._password:
            text = text.replace(self._password, "***")
        return StoreError(f"database {self.name}: {redact(text)}")

    # -- change notification ---------------------------------------------------------------------
    def change_fd(self) -> int:
        """The socket of the LISTEN connection (opened on first use)."""
        with self._listen_lock:
            return self._listening().pgconn.socket

    def changes_token(self) -> int:
        """Take the notifications that arrived (without waiting) and return how many came so far.

        A lost LISTEN connection is opened again, and that counts as a change: what was notified
        meanwhile is not known. Its socket then is another one: ask :meth:`change_fd` again.
        """
        with self._listen_lock:
            listener = self._listener
            if listener is not None and not listener.closed:
                try:
                    self._notifications += sum(1 for _ in listener.notifies(timeout=0))
                    return self._notifications
                except psycopg.Error:
                    listener.close()
            self._listening()
            return self._notifications

    def _listening(self) -> Conn:
        if self._closed:
            raise StoreError(f"database {self.name}: the store is closed")
        if self._listener is None or self._listener.closed:
            conn = self.connect(autocommit=True)
            try:
                conn.execute("LISTEN tmo")
            except psycopg.Error as exc:
                conn.close()
                raise self.error(exc) from None
            if self._listener is not None:  # opened again: changes may have been missed meanwhile
                self._notifications += 1
            self._listener = conn
        return self._listener


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())

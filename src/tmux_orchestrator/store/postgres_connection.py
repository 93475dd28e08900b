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

import re
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
from tmux_orchestrator.redact import add_secret, redact, without_password
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
#: Tables whose existence without a version table means another program's tables (or a half schema).
_OUR_TABLES = ("project_queue", "events", "settings", "cleanup_claims", "hosts")


def display_url(url: str) -> str:
    """``url`` as it may be shown: no password, neither ``user:pw@`` nor ``?password=``."""
    shown = without_password(url)
    return re.sub(r"([?&])password=[^&]*&?", r"\1", shown).rstrip("?&")


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
            if not create and "does not exist" in str(exc):
                raise NoDatabase(f"no database at {self.name} (nothing queued yet; `tmo add` or "
                                 "`tmo daemon start` creates its schema)") from None
            raise
        try:
            with conn:
                version = self._version(conn)
                conn.commit()
                if version is None and not create:
                    raise NoDatabase(f"no tmux-orchestrator schema in database {self.name} (nothing "
                                     "queued yet; `tmo add` or `tmo daemon start` creates it)")
                if version is None or version < SCHEMA_VERSION:
                    version = self._migrate(conn)
                if version > SCHEMA_VERSION:
                    raise SchemaTooNew(
                        f"database {self.name} has schema version {version}, newer than this "
                        f"tmux-orchestrator supports ({SCHEMA_VERSION}); upgrade tmux-orchestrator"
                    )
                return version
        except psycopg.Error as exc:
            raise self.error(exc) from None

    def _version(self, conn: Conn) -> int | None:
        """The schema version; None for a database without our schema (another program's tables
        are refused: a half-written schema is never taken for ours)."""
        found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)).fetchone()
        if found and found[0]:
            row = conn.execute(f"SELECT max(version) FROM {VERSION_TABLE}").fetchone()
            return int(row[0]) if row and row[0] is not None else 0
        for table in _OUR_TABLES:
            hit = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
            if hit and hit[0]:
                raise StoreError(f"database {self.name} has a table {table} but no {VERSION_TABLE}: it "
                                 "holds tables of another program; point TMO_DATABASE_URL elsewhere")
        return None

    def _migrate(self, conn: Conn) -> int:
        # Several processes may open a new database at once: one migrates, the others wait for its
        # lock and then find the schema done. DDL is transactional: a failed upgrade leaves nothing.
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, MIGRATION_LOCK))
            version = self._version(conn)
            if version is None:
                conn.execute(f"CREATE TABLE {VERSION_TABLE} (version integer NOT NULL)")
                conn.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (0)")
                version = 0
            for number in range(version + 1, SCHEMA_VERSION + 1):
                conn.execute(MIGRATIONS[number - 1], prepare=False)
                conn.execute(f"UPDATE {VERSION_TABLE} SET version = %s", (number,))
                version = number
        return version

    def close(self) -> None:
        """Close the pool and the LISTEN connection."""
        if self._pool is not None:
            self._pool.close()
        with self._listen_lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None

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
        if self._pool is None:
            raise StoreError(f"database {self.name}: the store is closed")
        for attempt in range(DEADLOCK_ATTEMPTS):
            try:
                with self._pool.connection() as conn:
                    try:
                        with conn.transaction():
                            if snapshot:
                                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                            if source is not None:
                                conn.execute("SELECT set_config('tmo.source', %s, true)", (source,),
                                             prepare=True)
                            return fn(conn)
                    except psycopg.OperationalError:
                        # A read on a connection the server dropped while it idled (a restart, a
                        # fail-over) is safe to run again on a new one; a write is not: it may
                        # have committed.
                        if read_only and attempt == 0 and conn.broken:
                            continue
                        raise
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
                if attempt + 1 == DEADLOCK_ATTEMPTS:
                    raise StoreError(f"database {self.name}: still deadlocked after "
                                     f"{DEADLOCK_ATTEMPTS} attempts") from None
                time.sleep(0.01 * (attempt + 1))
            except psycopg_pool.PoolTimeout:
                raise StoreError(f"database {self.name}: no connection within {POOL_TIMEOUT:.0f} s "
                                 f"({self._why_unreachable()})") from None
            except psycopg.Error as exc:
                raise self.error(exc) from None
        raise StoreError(f"database {self.name}: the connection was lost twice")

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
        return StoreError(redact(f"database {self.name}: {text}"))

    # -- change notification ---------------------------------------------------------------------
    def change_fd(self) -> int:
        """The socket of the LISTEN connection (opened on first use)."""
        with self._listen_lock:
            return self._listening().pgconn.socket

    def changes_token(self) -> int:
        """Take the notifications that arrived (without waiting) and return how many came so far.

        A lost LISTEN connection is opened again, and counts as a change: what was notified
        meanwhile is not known. Its socket then is another one: ask :meth:`change_fd` again.
        """
        with self._listen_lock:
            listener = self._listening()
            try:
                self._notifications += sum(1 for _ in listener.notifies(timeout=0))
            except psycopg.Error:
                listener.close()
                self._listener = None
                self._listening()
                self._notifications += 1
            return self._notifications

    def _listening(self) -> Conn:
        if self._listener is None or self._listener.closed:
            conn = self.connect(autocommit=True)
            try:
                conn.execute("LISTEN tmo")
            except psycopg.Error as exc:
                conn.close()
                raise self.error(exc) from None
            self._listener = conn
        return self._listener


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())

"""SQLite store: WAL mode, short ``BEGIN IMMEDIATE`` write transactions, triggers for events.

All SQL of this dialect lives in this module. One connection per store, guarded by a lock so the
daemon's helper threads may share it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from tmux_orchestrator.agent_state import AgentState, StateSource
from tmux_orchestrator.agent_state import change as agent_state_change
from tmux_orchestrator.agent_state import describe as describe_state_change
from tmux_orchestrator.checkin import CHECKIN_SELECT, Checkin
from tmux_orchestrator.errors import (
    InvalidTransition,
    ProjectNotFound,
    SchemaTooNew,
    StoreError,
)
from tmux_orchestrator.home import prepare_database
from tmux_orchestrator.message import MESSAGE_COLUMNS, Message, MessageKind, MessageStatus
from tmux_orchestrator.project import Outcome, Project, ProjectStatus, predecessors
from tmux_orchestrator.store.base import Claim, Event, EventRow, Host, NewProject, session_key
from tmux_orchestrator.store.rows import (
    EPOCH,
    PROJECT_COLUMNS,
    iso_time,
    now_text,
    parse_time,
    parse_time_or_none,
    row_to_checkin,
    row_to_event,
    row_to_host,
    row_to_message,
    row_to_project,
    to_text,
)
from tmux_orchestrator.store.schema import MIGRATIONS, NOW, SCHEMA_VERSION

__all__ = [
    "EPOCH", "Claim", "Host", "SqliteStore", "iso_time", "now_text", "parse_time", "parse_time_or_none",
    "session_key", "to_text",
]

T = TypeVar("T")

#: Seconds a connection waits for another writer before SQLite reports "database is locked".
BUSY_TIMEOUT = 30.0

_PROJECT_COLUMNS = PROJECT_COLUMNS
_ORDER = (
    "ORDER BY CASE status WHEN 'processing' THEN 0 WHEN 'queued' THEN 1 ELSE 2 END, "
    "CASE WHEN status IN ('processing', 'queued') THEN -priority ELSE 0 END, "
    "CASE WHEN status IN ('processing', 'queued') THEN enqueued_at END, "
    "CASE WHEN status IN ('processing', 'queued') THEN id ELSE -id END"
)


#: Queue order as one query per group of statuses (running, queued, ended), concatenated. Each
#: walks the index ``project_queue_claim`` or the rowid in order, where a single ORDER BY over CASE
#: expressions had to sort every row: ``tmo list`` at 10,000 rows is on the interactive path.
#: The result is the order of ``_ORDER``.
_QUEUE_GROUPS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("processing",), "ORDER BY priority DESC, enqueued_at, id"),
    (("queued",), "ORDER BY priority DESC, enqueued_at, id"),
    (("completed", "failed", "cancelled"), "ORDER BY id DESC"),
)
#: What :meth:`SqliteStore.list_columns` may select: the table's columns and two computed ones.
_LISTABLE = {
    **{name: name for name in _PROJECT_COLUMNS.split(", ")},
    # seconds since the project was queued (julianday parses every timestamp form SQLite knows)
    "age_s": "(julianday(:now) - julianday(enqueued_at)) * 86400.0",
    # seconds it ran (until now while it runs); NULL before it started
    "runtime_s": "CASE WHEN started_at IS NOT NULL THEN max(0.0, (julianday(coalesce(completed_at, :now)) "
                 "- julianday(started_at)) * 86400.0) END",
}


class SqliteStore:
    """The embedded default store. See :class:`tmux_orchestrator.store.base.Store`."""

    def __init__(self, path: Path | str, *, synchronous: str = "normal", create: bool = True) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        # A private file of ours, made here (0600) if ``create``: SQLite itself never creates it
        # (``mode=rw``), and gives -wal/-shm the file's mode (docs/security.md).
        try:
            prepare_database(self.path, create=create)
            links = os.stat(self.path).st_nlink
            if links > 1:
                # SQLite keeps the WAL beside the name a database was opened by: two names of one
                # file mean two WALs, two lock sets, and a daemon on each that cannot see the other.
                raise StoreError(
                    f"database {self.path} has {links} names (hard links); SQLite cannot keep a database "
                    "opened under two names consistent: open it by one path and remove the other links"
                )
            uri = str(self.path.absolute()).replace("%", "%25").replace("?", "%3f").replace("#", "%23")
            self._conn = sqlite3.connect(
                f"file:{uri}?mode=rw",
                uri=True,
                timeout=BUSY_TIMEOUT,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,
            )
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc
        self._conn.row_factory = sqlite3.Row
        # Text that is not UTF-8 (written by another program, or `CAST(X'ff' AS TEXT)` by hand)
        # must not make every read of its table fail: it is read with its bad bytes as lone
        # surrogates, which the row reader reports as a problem and the CLI prints escaped.
        self._conn.text_factory = _decode
        try:
            self._setup(synchronous)
        except StoreError:
            self._conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise StoreError(
                f"{self.path} is not a tmux-orchestrator database ({exc}); "
                "point TMO_DATABASE_URL elsewhere or move the file away"
            ) from exc

    # -- connection and schema ---------------------------------------------------------------
    def _setup(self, synchronous: str) -> None:
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        # Read-only checks first: a file we refuse must be left exactly as it was (no WAL switch).
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"database {self.path} has schema version {version}, newer than this "
                f"tmux-orchestrator supports ({SCHEMA_VERSION}); upgrade tmux-orchestrator"
            )
        if version == 0 and self._has_foreign_tables(conn):
            # Another tmo may have created the schema between the two reads (each statement is
            # its own snapshot): its tables and user_version commit together, so read it again.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                raise StoreError(
                    f"{self.path} holds tables of another program; point TMO_DATABASE_URL at a new file"
                )
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if mode != "wal":
            self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL"))
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        conn.execute("PRAGMA foreign_keys = ON")
        if version < SCHEMA_VERSION:
            self._migrate()

    def _migrate(self) -> None:
        with self._write() as conn:
            # Re-read inside the write lock: another process may have migrated meanwhile.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0 and self._has_foreign_tables(conn):
                raise StoreError(
                    f"{self.path} holds tables of another program; "
                    "point TMO_DATABASE_URL at a new file"
                )
            for number in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _split_sql(MIGRATIONS[number - 1]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")

    @staticmethod
    def _has_foreign_tables(conn: sqlite3.Connection) -> bool:
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
        return bool(rows)

    def schema_version(self) -> int:
        """The schema version of the open database."""
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        """Release the connection."""
        with self._lock:
            self._conn.close()

    def _retry(self, fn: Callable[[], T]) -> T:
        # busy_timeout covers most contention; a lock error can still surface (e.g. the WAL
        # switch), so retry a few times before telling the user.
        delay = 0.01
        for _ in range(50):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        return fn()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A short write transaction taken with BEGIN IMMEDIATE (no lock upgrades, no deadlock).

        SQLite's own errors leave as :class:`StoreError` (a full disk, an I/O error, a trigger that
        refused the change), so callers handle one kind of failure, and the transaction is rolled
        back: nothing is half written.
        """
        with self._lock:
            try:
                self._retry(lambda: self._conn.execute("BEGIN IMMEDIATE"))
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            try:
                yield self._conn
            except BaseException as exc:
                if self._conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._error(exc) from exc
                raise
            else:
                try:
                    self._retry(lambda: self._conn.execute("COMMIT"))
                except sqlite3.Error as exc:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                    raise self._error(exc) from exc

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._retry(lambda: self._conn.execute(sql, params).fetchall())
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    def _error(self, exc: sqlite3.Error) -> StoreError:
        """A driver error as a one-line :class:`StoreError` naming the database."""
        text = str(exc)
        if text.startswith("tmo: "):  # raised by one of our triggers: already says what is wrong
            return StoreError(text[len("tmo: "):])
        return StoreError(f"database {self.path}: {text}")

    # -- projects ----------------------------------------------------------------------------
    def enqueue(self, new: NewProject, *, source: str) -> Project:
        """Insert a queued project and return it."""
        with self._write() as conn:
            cur = conn.execute(
                _INSERT, _insert_values(new, now_text(), source),
            )
            project_id = int(cur.lastrowid or 0)
            if not new.name:
                conn.execute(
                    "UPDATE project_queue SET name = ? WHERE id = ?", (f"project-{project_id}", project_id)
                )
        return self.get(project_id)

    def enqueue_many(self, news: list[NewProject], *, source: str) -> list[Project]:
        """Insert many queued projects in one transaction (all or none); return them in order.

        One ``BEGIN IMMEDIATE`` for the whole batch: 10,000 projects take a fraction of a second
        instead of one commit each, and a reader never sees half a batch.
        """
        ids: list[int] = []
        now = now_text()
        with self._write() as conn:
            for new in news:
                cur = conn.execute(_INSERT, _insert_values(new, now, source))
                project_id = int(cur.lastrowid or 0)
                ids.append(project_id)
                if not new.name:
                    conn.execute("UPDATE project_queue SET name = ? WHERE id = ?",
                                 (f"project-{project_id}", project_id))
        if not ids:
            return []
        by_id = {
            r[0]: row_to_project(r)
            for r in self._read(f"SELECT {_PROJECT_COLUMNS} FROM project_queue WHERE id BETWEEN ? AND ?",
                                (min(ids), max(ids)))
        }
        return [by_id[i] for i in ids if i in by_id]

    def get(self, project_id: int) -> Project:
        """The project with ``project_id``; raises ``ProjectNotFound``."""
        if not 0 < project_id < 2**63:
            raise ProjectNotFound(project_id)
        rows = self._read(f"SELECT {_PROJECT_COLUMNS} FROM project_queue WHERE id = ?", (project_id,))
        if not rows:
            raise ProjectNotFound(project_id)
        return row_to_project(rows[0])

    def list_projects(
        self, statuses: list[ProjectStatus] | None = None, limit: int | None = None
    ) -> list[Project]:
        """Projects in queue order: running, then queued by priority and age, then newest ended."""
        return [row_to_project(r) for r in self._select_in_order(_PROJECT_COLUMNS, statuses, limit)]

    def list_columns(
        self, columns: list[str], statuses: list[ProjectStatus] | None = None, limit: int | None = None
    ) -> list[tuple[Any, ...]]:
        """Some columns of the projects, in queue order, as plain tuples (``tmo list``).

        ``columns`` are column names of ``project_queue`` or the computed ``age_s`` (seconds since
        queued) and ``runtime_s`` (seconds run, NULL if never started). No :class:`Project` is
        built and no timestamp parsed: at 10,000 rows that is most of the time of ``list_projects``.
        """
        unknown = [c for c in columns if c not in _LISTABLE]
        if unknown:
            raise ValueError(f"not a listable column: {', '.join(unknown)}")
        return [tuple(r) for r in self._select_in_order(", ".join(_LISTABLE[c] for c in columns),
                                                        statuses, limit)]

    def _select_in_order(
        self, columns: str, statuses: list[ProjectStatus] | None, limit: int | None
    ) -> list[sqlite3.Row]:
        """``SELECT columns`` of the projects with ``statuses`` (all if None), in queue order."""
        wanted = {s.value for s in statuses} if statuses else None
        now = now_text()

        def select() -> list[sqlite3.Row]:
            out: list[sqlite3.Row] = []
            for group, order in _QUEUE_GROUPS:
                chosen = [s for s in group if wanted is None or s in wanted]
                left = None if not limit else limit - len(out)
                if not chosen or (left is not None and left <= 0):
                    continue
                params: dict[str, Any] = {"now": now, "limit": -1 if left is None else left}
                params.update({f"s{n}": status for n, status in enumerate(chosen)})
                marks = ", ".join(f":s{n}" for n in range(len(chosen)))
                out += self._conn.execute(
                    f"SELECT {columns} FROM project_queue WHERE status IN ({marks}) {order} LIMIT :limit",
                    params,
                ).fetchall()
            left = None if not limit else limit - len(out)
            if wanted is None and (left is None or left > 0):
                # Statuses a hand edit slipped past the CHECK constraint: listed last, never hidden.
                known = ", ".join(f"'{s.value}'" for s in ProjectStatus)
                out += self._conn.execute(
                    f"SELECT {columns} FROM project_queue WHERE status NOT IN ({known}) ORDER BY id DESC "
                    "LIMIT :limit", {"now": now, "limit": -1 if left is None else left},
                ).fetchall()
            return out

        def in_snapshot() -> list[sqlite3.Row]:
            # One read transaction, so the groups come from the same snapshot (WAL): a project
            # claimed between two of the queries is neither listed twice nor missed.
            if self._conn.in_transaction:
                return select()
            self._conn.execute("BEGIN")
            try:
                return select()
            finally:
                self._conn.execute("COMMIT")

        with self._lock:
            try:
                return self._retry(in_snapshot)
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    def claim_next(self, *, host: str, max_processing: int, runner: str | None = None,
                   skip: frozenset[int] = frozenset(),
                   labels: frozenset[str] = frozenset()) -> Project | None:
        """Move the next queued project this host may run to ``processing`` (one writer at a time).

        A slot is taken by every project that runs *and* by every session not confirmed gone yet
        (an ended project whose process group is still being stopped): the next project starts only
        once the old one's processes are really gone. A queued project whose previous session is
        still open is not claimable for the same reason. At most ``max_processing`` on ``host``
        (rows of older releases, with no host, count as this host's) and at most the
        ``concurrency.global`` setting over all hosts. A project pinned to another host, or
        requiring a label this host lacks, is passed over; so are the ids in ``skip`` (rows this
        caller could not even fail).
        """
        from tmux_orchestrator.naming import session_name_for

        now = now_text()
        busy_rows = ("(status = 'processing' OR (session_name IS NOT NULL AND session_closed_at IS NULL))")
        with self._write() as conn:
            busy = conn.execute(f"SELECT count(*) FROM project_queue WHERE {busy_rows} "
                                "AND coalesce(host, ?) = ?", (host, host)).fetchone()[0]
            if busy >= max_processing:
                return None
            limit = conn.execute("SELECT value FROM settings WHERE key = 'concurrency.global'").fetchone()
            if limit is not None and str(limit[0]).strip().isdigit():
                if conn.execute(f"SELECT count(*) FROM project_queue WHERE {busy_rows}").fetchone()[0] \
                        >= int(str(limit[0]).strip()):
                    return None
            skipped = ", ".join(str(int(i)) for i in sorted(skip)) or "0"
            # Labels a project requires must all be among the host's; a list a hand edit broke is
            # claimed, and then failed with a message saying what is wrong.
            row = conn.execute(
                "SELECT id, name FROM project_queue AS p "
                "WHERE status = 'queued' "
                # a delay a hand edit broke is due at once: claimed, then failed with a message
                "AND (not_before IS NULL OR not_before <= :now OR julianday(not_before) IS NULL) "
                "AND (session_name IS NULL OR session_closed_at IS NOT NULL) "
                f"AND id NOT IN ({skipped}) "
                "AND (pinned_host IS NULL OR pinned_host = :host) "
                "AND (required_labels = '[]' OR NOT json_valid(required_labels) OR NOT EXISTS ("
                "    SELECT 1 FROM json_each(p.required_labels) AS r "
                "    WHERE r.value NOT IN (SELECT value FROM json_each(:labels)))) "
                "ORDER BY priority DESC, enqueued_at, id LIMIT 1",
                {"now": now, "host": host, "labels": json.dumps(sorted(labels))},
            ).fetchone()
            if row is None:
                return None
            # The attempt is counted in SQL: a hand-typed `attempt` that is not a number must not
            # stop the claim (CAST gives 0 for text).
            attempt = int(conn.execute(
                "SELECT coalesce(CAST(attempt AS INTEGER), 0) + 1 FROM project_queue WHERE id = ?",
                (row["id"],),
            ).fetchone()[0])
            name = row["name"] if isinstance(row["name"], str) else ""
            conn.execute(
                "UPDATE project_queue SET status = 'processing', changed_by = 'daemon', "
                "session_name = ?, session_id = NULL, window_id = NULL, pane_pid = NULL, "
                "server_instance = NULL, session_closed_at = NULL, started_at = ?, attempt = ?, "
                "host = ?, runner = ?, "
                # a delay that is not a time stays, for the launcher to fail the row saying so
                "not_before = CASE WHEN julianday(not_before) IS NULL THEN not_before END "
                "WHERE id = ? AND status = 'queued'",
                (session_name_for(row["id"], name, attempt), now, attempt, host, runner, row["id"]),
            )
        return self.get(row["id"])

    def attempts(self, project_ids: list[int]) -> dict[int, tuple[str, int]]:
        """``{id: (status, attempt)}`` of the given projects (those that still exist)."""
        out: dict[int, tuple[str, int]] = {}
        for start in range(0, len(project_ids), 500):
            chunk = project_ids[start:start + 500]
            marks = ", ".join("?" for _ in chunk)
            for row in self._read(f"SELECT id, status, attempt FROM project_queue WHERE id IN ({marks})",
                                  tuple(chunk)):
                out[row[0]] = (row[1], row[2])
        return out

    def next_due(self) -> float | None:
        """Seconds until the earliest delayed queued project becomes due (None if none waits)."""
        rows = self._read(
            "SELECT min(not_before) FROM project_queue WHERE status = 'queued' AND not_before IS NOT NULL"
        )
        when = parse_time_or_none(rows[0][0]) if rows else None
        if when is None:
            return None
        return (when - datetime.now(UTC)).total_seconds()

    def record_session(
        self, project_id: int, *, session_id: str, window_id: str, pane_pid: int,
        instance: str | None = None, attempt: int | None = None,
    ) -> bool:
        """Store the tmux ids of a started session; False if the project's attempt is no longer
        running (ended or requeued while its session was being created: the caller kills it)."""
        sql = ("UPDATE project_queue SET session_id = ?, window_id = ?, pane_pid = ?, "
               "server_instance = coalesce(?, server_instance) WHERE id = ?")
        params: tuple[Any, ...] = (session_id, window_id, pane_pid, instance, project_id)
        if attempt is not None:
            sql += " AND attempt = ? AND status = 'processing'"
            params += (attempt,)
        with self._write() as conn:
            return conn.execute(sql, params).rowcount == 1

    def set_agent_state(self, project_id: int, state: AgentState, *, attempt: int,
                        decided_by: StateSource, source: str) -> bool:
        """Record the agent state of ``attempt``; True when the state changed (one ``state_changed``
        event, in the same transaction). Nothing is written for an attempt no longer running, for
        activity once the agent has reported, or for a repeat."""
        with self._write() as conn:
            row = conn.execute(
                "SELECT name, session_name, agent_state, agent_state_source FROM project_queue "
                "WHERE id = ? AND attempt = ? AND status = 'processing'", (project_id, attempt)).fetchone()
            if row is None:
                return False
            old = row["agent_state"]
            write, changed = agent_state_change(old, row["agent_state_source"], state, decided_by)
            if not write:
                return False
            conn.execute(
                "UPDATE project_queue SET agent_state = ?, agent_state_source = ?, agent_state_since = "
                f"CASE WHEN agent_state IS ? THEN agent_state_since ELSE {NOW} END WHERE id = ?",
                (state.value, decided_by.value, state.value, project_id))
            if changed:
                conn.execute(
                    "INSERT INTO events (kind, project_id, project_name, new_status, source, session_name, "
                    "message) VALUES ('state_changed', ?, ?, 'processing', ?, ?, ?)",
                    (project_id, row["name"], source, row["session_name"],
                     describe_state_change(old, state, decided_by)))
            return changed

    def transition(
        self,
        project_id: int,
        new: ProjectStatus,
        *,
        source: str,
        outcome: Outcome | None = None,
        exit_code: int | None = None,
        error_message: str | None = None,
        expected: ProjectStatus | None = None,
        not_before: datetime | None = None,
        count_retry: bool = False,
        close_session: bool = False,
        ended_at: datetime | None = None,
    ) -> Project:
        """Apply one allowed status change (``UPDATE ... WHERE status IN (allowed)``).

        ``count_retry`` adds one to ``retry_count`` in the same statement: a retry is counted if
        and only if it happened. ``close_session`` records in the same statement that the
        project's session is gone (a command that exited by itself, its group and session gone).
        ``ended_at`` is when it really ended, if that was before now (an exit recorded late).
        """
        allowed = {expected} if expected else set(predecessors(new))
        allowed &= set(predecessors(new))
        sets = ["status = ?", "changed_by = ?"]
        params: list[Any] = [new.value, source]
        if count_retry:
            sets.append("retry_count = coalesce(CAST(retry_count AS INTEGER), 0) + 1")
        if close_session:
            sets.append("session_closed_at = coalesce(session_closed_at, ?)")
            params.append(now_text())
        if new.is_terminal:
            sets += ["outcome = ?", "exit_code = coalesce(?, exit_code)", "completed_at = ?"]
            params += [outcome.value if outcome else None, exit_code,
                       to_text(ended_at) if ended_at else now_text()]
            sets.append("error_message = ?")
            params.append(error_message if new != ProjectStatus.COMPLETED else None)
        elif new == ProjectStatus.QUEUED:
            sets.append("not_before = ?")
            params.append(to_text(not_before) if not_before else None)
            if error_message is not None:
                sets.append("error_message = ?")
                params.append(error_message)
        placeholders = ", ".join("?" for _ in allowed) or "NULL"
        with self._write() as conn:
            cur = conn.execute(
                f"UPDATE project_queue SET {', '.join(sets)} "
                f"WHERE id = ? AND status IN ({placeholders})",
                (*params, project_id, *(s.value for s in allowed)),
            )
            if cur.rowcount == 0:
                row = conn.execute(
                    "SELECT status FROM project_queue WHERE id = ?", (project_id,)
                ).fetchone()
                if row is None:
                    raise ProjectNotFound(project_id)
                raise InvalidTransition(project_id, row["status"], new.value)
        return self.get(project_id)

    def close_session(self, project_id: int, session_name: str | None = None) -> bool:
        """Record that the project's session (``session_name``, if given) is gone, with its
        processes: the slot is free. True for the one caller that closed it."""
        sql = (
            "UPDATE project_queue SET session_closed_at = ? "
            "WHERE id = ? AND session_name IS NOT NULL AND session_closed_at IS NULL"
        )
        params: tuple[Any, ...] = (now_text(), project_id)
        if session_name is not None:
            sql += " AND session_name = ?"
            params += (session_name,)
        with self._write() as conn:
            return conn.execute(sql, params).rowcount == 1

    # -- clean-up claims -----------------------------------------------------------------------
    def claim_cleanup(
        self, claims: list[Claim], *, owner: str, ttl: float, owner_gone: Callable[[str], bool],
    ) -> dict[str, str]:
        """Claim the clean-up of sessions; returns ``{key: stage}`` of the claims now held.

        A claim held by someone else is taken over only when its deadline has passed or its owner
        is known to be dead (``owner_gone``); its stage (``claimed``, ``saved``, ``signalled``)
        carries over, so a backup is never made twice. A project's current session is claimed
        only while its row still has it open.
        """
        now = datetime.now(UTC)
        deadline = to_text(now + timedelta(seconds=ttl))
        held: dict[str, str] = {}
        with self._write() as conn:
            for claim in claims:
                if claim.current and claim.project_id is not None:
                    # the attempt names the row's session (its name may have been edited by hand)
                    open_row = conn.execute(
                        "SELECT 1 FROM project_queue WHERE id = ? AND attempt = ? "
                        "AND session_closed_at IS NULL", (claim.project_id, claim.attempt),
                    ).fetchone()
                    if open_row is None:
                        continue
                row = conn.execute(
                    "SELECT owner, deadline, stage FROM cleanup_claims WHERE session_key = ?",
                    (claim.key,),
                ).fetchone()
                if row is None:
                    conn.execute(
                        "INSERT INTO cleanup_claims (session_key, project_id, attempt, session_name, "
                        "owner, deadline) VALUES (?, ?, ?, ?, ?, ?)",
                        (claim.key, claim.project_id, claim.attempt, claim.session_name, owner, deadline),
                    )
                    held[claim.key] = "claimed"
                    continue
                expired = (parse_time_or_none(row["deadline"]) or now) <= now
                if row["owner"] != owner and not expired and not owner_gone(row["owner"]):
                    continue
                conn.execute(
                    "UPDATE cleanup_claims SET owner = ?, deadline = ? WHERE session_key = ?",
                    (owner, deadline, claim.key),
                )
                held[claim.key] = row["stage"]
        return held

    def advance_claim(
        self, key: str, *, owner: str, stage: str, event: EventRow | None,
        source: str,
    ) -> bool:
        """Move a held claim to ``stage`` and write ``event`` ``(kind, project, session, message)``
        in the same transaction; False (nothing written) if the claim is no longer ours."""
        with self._write() as conn:
            changed = conn.execute(
                "UPDATE cleanup_claims SET stage = ? WHERE session_key = ? AND owner = ?",
                (stage, key, owner),
            ).rowcount
            if changed and event is not None:
                self._insert_events(conn, [event], source)
        return bool(changed)

    def release_claim(self, key: str, *, owner: str) -> None:
        """Give a claim back unfinished (its session could not be confirmed gone): anyone may
        take it again at once."""
        with self._write() as conn:
            conn.execute("UPDATE cleanup_claims SET deadline = ? WHERE session_key = ? AND owner = ?",
                         (now_text(), key, owner))

    def finish_cleanup(
        self, key: str, *, close: tuple[int, int] | None,
        events: list[EventRow], source: str,
    ) -> None:
        """The session is confirmed gone: drop its claim, close the row's session (``close`` is
        ``(project id, attempt)``) and write ``events``, all in one transaction."""
        with self._write() as conn:
            conn.execute("DELETE FROM cleanup_claims WHERE session_key = ?", (key,))
            if close is not None:
                conn.execute(
                    "UPDATE project_queue SET session_closed_at = ? WHERE id = ? AND attempt = ? "
                    "AND session_closed_at IS NULL", (now_text(), *close),
                )
            self._insert_events(conn, events, source)

    def claims(self) -> list[dict[str, Any]]:
        """Every clean-up claim (for reconcile and diagnostics)."""
        return [dict(r) for r in self._read("SELECT * FROM cleanup_claims")]

    def drop_claims(self, keys: list[str]) -> None:
        """Forget claims whose session is gone and whose owner died."""
        with self._write() as conn:
            conn.executemany("DELETE FROM cleanup_claims WHERE session_key = ?", [(k,) for k in keys])

    # -- hosts ---------------------------------------------------------------------------------
    def register_host(self, host: Host, *, holder_gone: Callable[[Host], bool]) -> Host | None:
        """Take ``host.name``'s lease (see :meth:`Store.register_host`)."""
        with self._write() as conn:
            row = conn.execute("SELECT * FROM hosts WHERE name = ?", (host.name,)).fetchone()
            if row is not None:
                current = _row_to_host(row, datetime.now(UTC))
                if (current.owner != host.owner and current.stopped_at is None
                        and current.expired_at is None and not holder_gone(current)):
                    return current
            now = now_text()
            conn.execute(
                "INSERT INTO hosts (name, runner, home, pid, owner, labels, concurrency, started_at, "
                "heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                "runner = excluded.runner, home = excluded.home, pid = excluded.pid, owner = excluded.owner, "
                "labels = excluded.labels, started_at = excluded.started_at, "
                "heartbeat_at = excluded.heartbeat_at, stopped_at = NULL, expired_at = NULL",
                (host.name, host.runner, host.home, host.pid, host.owner, json.dumps(sorted(host.labels)),
                 host.concurrency, now, now),
            )
        return None

    def heartbeat(self, name: str, owner: str) -> bool:
        """Renew the lease; False when it is no longer ``owner``'s."""
        with self._write() as conn:
            return conn.execute(
                "UPDATE hosts SET heartbeat_at = ? WHERE name = ? AND owner = ? AND stopped_at IS NULL "
                "AND expired_at IS NULL", (now_text(), name, owner),
            ).rowcount == 1

    def unregister_host(self, name: str, owner: str) -> None:
        """Give the lease up (a daemon that stops)."""
        with self._write() as conn:
            conn.execute("UPDATE hosts SET stopped_at = ? WHERE name = ? AND owner = ?",
                         (now_text(), name, owner))

    def hosts(self) -> list[Host]:
        """Every host, with ``silent_for`` by the database's clock."""
        now = datetime.now(UTC)
        return [_row_to_host(r, now) for r in self._read("SELECT * FROM hosts ORDER BY name")]

    def set_host(self, name: str, *, concurrency: int | None = None, paused: bool | None = None) -> None:
        """Change a host's concurrency or pause."""
        with self._write() as conn:
            if concurrency is not None:
                conn.execute("UPDATE hosts SET concurrency = ? WHERE name = ?", (concurrency, name))
            if paused is not None:
                conn.execute("UPDATE hosts SET paused = ? WHERE name = ?", (int(paused), name))

    def expire_hosts(self, ttl: float, *, source: str) -> list[Project]:
        """Mark hosts silent for over ``ttl`` seconds expired and fail their running projects lost."""
        limit = to_text(datetime.now(UTC) - timedelta(seconds=ttl))
        failed: list[int] = []
        with self._write() as conn:
            dead = [r[0] for r in conn.execute(
                "SELECT name FROM hosts WHERE heartbeat_at < ? AND stopped_at IS NULL AND expired_at IS NULL",
                (limit,),
            )]
            now = now_text()
            for name in dead:
                conn.execute("UPDATE hosts SET expired_at = ? WHERE name = ?", (now, name))
                ids = [r[0] for r in conn.execute(
                    "SELECT id FROM project_queue WHERE status = 'processing' AND host = ?", (name,))]
                for project_id in ids:
                    conn.execute(
                        "UPDATE project_queue SET status = 'failed', changed_by = ?, outcome = 'lost', "
                        "error_message = ?, completed_at = ?, "
                        "session_closed_at = coalesce(session_closed_at, ?) "
                        "WHERE id = ? AND status = 'processing'",
                        (source, f"lost: host {name} stopped renewing its lease", now, now, project_id),
                    )
                # Sessions of ended rows the dead host had not closed yet: its daemon closes what is
                # left on its server when it comes back, before it claims anything (fencing).
                conn.execute("UPDATE project_queue SET session_closed_at = ? WHERE host = ? "
                             "AND session_name IS NOT NULL AND session_closed_at IS NULL", (now, name))
                failed += ids
        return [self.get(i) for i in failed]

    def set_exit_code(self, project_id: int, exit_code: int) -> None:
        """Record a late exit code without touching the status or outcome."""
        with self._write() as conn:
            conn.execute(
                "UPDATE project_queue SET exit_code = ? WHERE id = ? AND exit_code IS NULL",
                (exit_code, project_id),
            )

    def open_sessions(self) -> list[Project]:
        """Projects whose session has not been closed (running, or ended and awaiting clean-up)."""
        rows = self._read(
            f"SELECT {_PROJECT_COLUMNS} FROM project_queue "
            "WHERE session_name IS NOT NULL AND session_closed_at IS NULL"
        )
        return [row_to_project(r) for r in rows]

    def count_unclosed_ended(self) -> int:
        """Rows that left ``processing`` while their session was still open (cheap, indexed)."""
        return int(self._read(
            "SELECT count(*) FROM project_queue WHERE session_name IS NOT NULL "
            "AND session_closed_at IS NULL AND status != 'processing'"
        )[0][0])

    def find_by_session(self, session_names: list[str]) -> dict[str, Project]:
        """Projects whose current session has one of ``session_names``."""
        out: dict[str, Project] = {}
        for start in range(0, len(session_names), 500):
            chunk = session_names[start : start + 500]
            rows = self._read(
                f"SELECT {_PROJECT_COLUMNS} FROM project_queue "
                f"WHERE session_name IN ({', '.join('?' for _ in chunk)})",
                tuple(chunk),
            )
            out.update({r["session_name"]: row_to_project(r) for r in rows})
        return out

    def remove(self, project_id: int, *, source: str) -> Project:
        """Delete a project that is not running and whose session is closed (its events stay)."""
        project = self.get(project_id)
        with self._write() as conn:
            conn.execute("UPDATE project_queue SET changed_by = ? WHERE id = ?", (source, project_id))
            cur = conn.execute(
                "DELETE FROM project_queue WHERE id = ? AND status != 'processing' "
                "AND (session_name IS NULL OR session_closed_at IS NOT NULL)", (project_id,)
            )
            if cur.rowcount == 0:
                row = conn.execute("SELECT status FROM project_queue WHERE id = ?", (project_id,)).fetchone()
                if row is None:
                    raise ProjectNotFound(project_id)
                if row["status"] == "processing":
                    raise InvalidTransition(project_id, "processing", "removed (cancel it first)")
                raise InvalidTransition(project_id, f"{row['status']} and its session is still being stopped",
                                        "removed yet (try again once it is closed)")
        return project

    # -- events ------------------------------------------------------------------------------
    def append_event(
        self,
        kind: str,
        *,
        source: str,
        project: Project | None = None,
        message: str | None = None,
        session_name: str | None = None,
    ) -> None:
        """Write a non-status event."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO events (kind, project_id, project_name, new_status, outcome, exit_code, "
                "source, session_name, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    kind,
                    project.id if project else None,
                    project.name if project else None,
                    project.status.value if project else None,
                    project.outcome.value if project and project.outcome else None,
                    project.exit_code if project else None,
                    source,
                    session_name or (project.session_name if project else None),
                    message,
                ),
            )

    def append_events(
        self, events: list[EventRow], *, source: str
    ) -> None:
        """Write many non-status events ``(kind, project, session_name, message)`` at once."""
        if not events:
            return
        with self._write() as conn:
            self._insert_events(conn, events, source)

    @staticmethod
    def _insert_events(
        conn: sqlite3.Connection, events: Sequence[tuple[str, Project | None, str | None, str | None]],
        source: str,
    ) -> None:
        conn.executemany(
            "INSERT INTO events (kind, project_id, project_name, new_status, outcome, exit_code, source, "
            "session_name, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (kind, p.id if p else None, p.name if p else None, p.status.value if p else None,
                 p.outcome.value if p and p.outcome else None, p.exit_code if p else None, source,
                 session, message)
                for kind, p, session, message in events
            ],
        )

    def events_after(
        self,
        after_id: int = 0,
        *,
        limit: int = 1000,
        project_id: int | None = None,
        kinds: list[str] | None = None,
    ) -> list[Event]:
        """Events with an id above ``after_id``, oldest first."""
        sql = "SELECT * FROM events WHERE id > ?"
        params: list[Any] = [after_id]
        if project_id is not None:
            sql += " AND project_id = ?"
            params.append(project_id)
        if kinds:
            sql += f" AND kind IN ({', '.join('?' for _ in kinds)})"
            params.extend(kinds)
        sql += " ORDER BY id LIMIT ?"
        params.append(limit)
        return [row_to_event(r) for r in self._read(sql, tuple(params))]

    def last_event_id(self) -> int:
        """The highest event id, 0 when there is none."""
        return int(self._read("SELECT coalesce(max(id), 0) FROM events")[0][0])

    # -- settings and change detection -------------------------------------------------------
    def get_setting(self, key: str, default: str | None = None) -> str | None:
        """A value from the settings table."""
        rows = self._read("SELECT value FROM settings WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else default

    def concurrency(self) -> int:
        """The stored concurrency (``tmo daemon start --concurrency``); 1 when unset, or when a hand
        edit left something that is not a positive whole number."""
        text = (self.get_setting("concurrency", "1") or "1").strip()
        return int(text) if text.isdigit() and 0 < int(text) < 2**31 else 1

    def set_setting(self, key: str, value: str) -> None:
        """Store a value in the settings table."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def add_message(self, project_id: int, attempt: int, kind: MessageKind, body: str, *,
                    when_waiting: bool = False, checkin_id: int | None = None) -> Message:
        """Queue a message for attempt ``attempt`` of a project (held until its agent waits with
        ``when_waiting``; sent for check-in ``checkin_id``)."""
        with self._write() as conn:
            row = conn.execute(
                f"INSERT INTO messages (project_id, attempt, kind, body, when_waiting, checkin_id) "
                f"VALUES (?, ?, ?, ?, ?, ?) RETURNING {MESSAGE_COLUMNS}",
                (project_id, attempt, kind.value, body, when_waiting, checkin_id)).fetchone()
        return row_to_message(row)

    def get_message(self, message_id: int) -> Message | None:
        """The message ``message_id``, None when there is none."""
        rows = self._read(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,))
        return row_to_message(rows[0]) if rows else None

    def messages(self, status: MessageStatus, project_ids: list[int]) -> list[Message]:
        """Messages with ``status`` to the projects ``project_ids``, oldest first."""
        if not project_ids:
            return []
        marks = ", ".join("?" * len(project_ids))
        rows = self._read(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE status = ? AND project_id "
                          f"IN ({marks}) ORDER BY id", (status.value, *project_ids))
        return [row_to_message(r) for r in rows]

    def stale_messages(self, limit: int = 100) -> list[Message]:
        """Queued messages whose attempt is no longer running, oldest first."""
        rows = self._read(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE status = 'queued' AND NOT EXISTS ("
            "SELECT 1 FROM project_queue p WHERE p.id = messages.project_id "
            "AND p.status = 'processing' AND p.attempt = messages.attempt) ORDER BY id LIMIT ?", (limit,))
        return [row_to_message(r) for r in rows]

    def update_message(self, message_id: int, *, expected: MessageStatus, status: MessageStatus,
                       reason: str | None = None, tries: int | None = None) -> bool:
        """Move a message from ``expected`` to ``status`` (``delivered`` stamps ``delivered_at``);
        False, and nothing changed, when it was not in ``expected``."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE messages SET status = ?, reason = coalesce(?, reason), "
                "tries = coalesce(?, tries), delivered_at = CASE WHEN ? = 'delivered' "
                f"THEN {NOW} ELSE delivered_at END WHERE id = ? AND status = ?",
                (status.value, reason, tries, status.value, message_id, expected.value))
            return cursor.rowcount == 1

    def add_checkin(self, project_id: int, attempt: int, every: float, body: str) -> Checkin:
        """Schedule ``body`` every ``every`` seconds for attempt ``attempt`` of a project."""
        with self._write() as conn:
            checkin_id = conn.execute(
                "INSERT INTO checkins (project_id, attempt, every, body) VALUES (?, ?, ?, ?) "
                "RETURNING id", (project_id, attempt, every, body)).fetchone()[0]
        return self._checkins("WHERE c.id = ?", (checkin_id,))[0]

    def checkins(self, project_ids: list[int] | None = None) -> list[Checkin]:
        """The check-ins of the projects ``project_ids`` (all with None), oldest first."""
        if project_ids is None:
            return self._checkins("", ())
        if not project_ids:
            return []
        marks = ", ".join("?" * len(project_ids))
        return self._checkins(f"WHERE c.project_id IN ({marks})", tuple(project_ids))

    def remove_checkin(self, checkin_id: int) -> Checkin | None:
        """Delete check-in ``checkin_id``; returns it, None when there was none."""
        found = self._checkins("WHERE c.id = ?", (checkin_id,))
        if not found:
            return None
        with self._write() as conn:
            conn.execute("DELETE FROM checkins WHERE id = ?", (checkin_id,))
        return found[0]

    def _checkins(self, where: str, params: tuple[Any, ...]) -> list[Checkin]:
        return [row_to_checkin(r) for r in self._read(f"{CHECKIN_SELECT} {where} ORDER BY c.id", params)]

    def is_shared(self) -> bool:
        """False: a SQLite file is one host's (a network file system is not supported)."""
        return False

    def change_fd(self) -> int | None:
        """None: SQLite has no change notification; :meth:`changes_token` is polled."""
        return None

    def changes_token(self) -> int:
        """``PRAGMA data_version``: changes only when another connection commits (3.6 us)."""
        with self._lock:
            try:
                return int(self._conn.execute("PRAGMA data_version").fetchone()[0])
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    def counts(self) -> dict[str, int]:
        """Number of projects per status (every status present, zeros included)."""
        out = {s.value: 0 for s in ProjectStatus}
        for row in self._read("SELECT status, count(*) FROM project_queue GROUP BY status"):
            out[row[0]] = row[1]
        return out


_INSERT = (
    "INSERT INTO project_queue (name, priority, command, env, project_path, spec_path, max_retries, "
    "retry_delay, timeout, idle_timeout, pinned_host, required_labels, enqueued_at, changed_by) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _insert_values(new: NewProject, now: str, source: str) -> tuple[Any, ...]:
    return (new.name, new.priority, json.dumps(new.command), json.dumps(new.env), new.project_path,
            new.spec_path, new.max_retries, new.retry_delay, new.timeout, new.idle_timeout,
            new.pinned_host, json.dumps(sorted(set(new.required_labels))), now, source)


def _row_to_host(row: sqlite3.Row, now: datetime) -> Host:
    beat = parse_time_or_none(row["heartbeat_at"])
    return row_to_host(row, (now - beat).total_seconds() if beat else None)


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies (BEGIN ... END;) whole."""
    statements: list[str] = []
    current: list[str] = []
    for line in script.splitlines():
        current.append(line)
        text = "\n".join(current).strip()
        if text and sqlite3.complete_statement(text):
            statements.append(text)
            current = []
    rest = "\n".join(current).strip()
    if rest:
        statements.append(rest)
    return statements

"""PostgreSQL store: several hosts on one queue (DESIGN.md 8).

Every method keeps the semantics of :class:`~tmux_orchestrator.store.sqlite.SqliteStore` (the
:class:`~tmux_orchestrator.store.base.Store` contract; ``tests/contract`` runs the same tests on both).
What PostgreSQL does its own way:

- **Connections**: a small pool shared by the daemon's threads, short explicit transactions (autocommit
  off), hot statements prepared (``postgres_connection.py``).
- **Claims**: ``FOR UPDATE SKIP LOCKED``, so hosts claiming at once take different rows; the count of
  a host's slots and its claim are serialized by a transaction advisory lock per host, and with a
  ``concurrency.global`` limit by one over all hosts, so no limit is passed by two claims at once.
- **Time**: every stored time (heartbeats and claim deadlines above all) is the database's clock, so
  hosts whose clocks differ still agree on who is late.
- **Events**: ids visible in commit order, and ``NOTIFY tmo`` on changes (``schema_pg.py``).

All SQL of this dialect lives here, in ``schema_pg.py`` (the schema) and in ``postgres_connection.py``
(transactions, the schema's version and upgrade).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row

from tmux_orchestrator.agent_state import AgentState, StateSource
from tmux_orchestrator.agent_state import change as agent_state_change
from tmux_orchestrator.agent_state import describe as describe_state_change
from tmux_orchestrator.checkin import CHECKIN_SELECT, Checkin
from tmux_orchestrator.errors import InvalidTransition, ProjectNotFound
from tmux_orchestrator.message import MESSAGE_COLUMNS, Message, MessageKind, MessageStatus
from tmux_orchestrator.project import Outcome, Project, ProjectStatus, predecessors
from tmux_orchestrator.store.base import Claim, Event, EventRow, Host, NewProject
from tmux_orchestrator.store.postgres_connection import Conn, PgConnection
from tmux_orchestrator.store.rows import (
    PROJECT_COLUMNS,
    row_to_checkin,
    row_to_event,
    row_to_host,
    row_to_message,
    row_to_project,
    to_text,
)
from tmux_orchestrator.store.schema_pg import (
    GLOBAL_CLAIM_LOCK,
    HOST_CLAIM_LOCK_CLASS,
    HOST_LEASE_LOCK_CLASS,
    LOCK_CLASS,
    VERSION_TABLE,
)

__all__ = ["PostgresStore"]

#: Queue order as one query per group of statuses, as in SQLite (each walks ``project_queue_claim``).
_QUEUE_GROUPS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("processing",), "ORDER BY priority DESC, enqueued_at, id"),
    (("queued",), "ORDER BY priority DESC, enqueued_at, id"),
    (("completed", "failed", "cancelled"), "ORDER BY id DESC"),
)
#: What :meth:`PostgresStore.list_columns` may select: the table's columns and two computed ones.
_LISTABLE = {
    **{name: name for name in PROJECT_COLUMNS.split(", ")},
    "age_s": "extract(epoch FROM now() - enqueued_at)::float8",
    "runtime_s": "CASE WHEN started_at IS NOT NULL THEN greatest(0.0, extract(epoch FROM "
                 "coalesce(completed_at, now()) - started_at)::float8) END",
}
#: A slot is taken by a running project and by a session not confirmed gone (see claim_next).
_BUSY = "(status = 'processing' OR (session_name IS NOT NULL AND session_closed_at IS NULL))"
_EVENT_COLUMNS = ("id, at, kind, project_id, project_name, old_status, new_status, outcome, exit_code, "
                  "source, session_name, message")
_INSERT_EVENT = ("INSERT INTO events (kind, project_id, project_name, new_status, outcome, exit_code, "
                 "source, session_name, message) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)")
_INSERT_PROJECT = (
    "INSERT INTO project_queue (id, name, priority, command, env, project_path, spec_path, max_retries, "
    "retry_delay, timeout, idle_timeout, pinned_host, required_labels, enqueued_at) "
    "VALUES (%s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, now())"
)
_NEXT_PROJECT_IDS = ("SELECT nextval(pg_get_serial_sequence('project_queue', 'id')) "
                     "FROM generate_series(1, %s)")
_CLAIMABLE = (
    "SELECT id, name, attempt FROM project_queue "
    "WHERE status = 'queued' AND (not_before IS NULL OR not_before <= clock_timestamp()) "
    "AND (session_name IS NULL OR session_closed_at IS NOT NULL) "
    "AND NOT (id = ANY(%(skip)s::bigint[])) "
    "AND (pinned_host IS NULL OR pinned_host = %(host)s) "
    # Labels a project requires must all be among the host's. A value that is no list of labels (a
    # hand edit) is claimed, and then failed with a message saying what is wrong, as SQLite claims
    # text that is no JSON.
    "AND (required_labels <@ %(labels)s::jsonb OR jsonb_typeof(required_labels) <> 'array' "
    "     OR jsonb_path_exists(required_labels, 'strict $[*] ? (@.type() != \"string\")')) "
    "ORDER BY priority DESC, enqueued_at, id LIMIT 1 FOR UPDATE SKIP LOCKED"
)
_CLAIM = (
    "UPDATE project_queue SET status = 'processing', changed_by = 'daemon', session_name = %s, "
    "session_id = NULL, window_id = NULL, pane_pid = NULL, server_instance = NULL, "
    "session_closed_at = NULL, started_at = clock_timestamp(), attempt = %s, host = %s, runner = %s, "
    f"not_before = NULL WHERE id = %s AND status = 'queued' RETURNING {PROJECT_COLUMNS}"
)
_HOST_COLUMNS = ("name, runner, home, pid, owner, labels, concurrency, paused, started_at, heartbeat_at, "
                 "stopped_at, expired_at, extract(epoch FROM clock_timestamp() - heartbeat_at)::float8 "
                 "AS silent_for")


class PostgresStore:
    """The store of a queue shared by several hosts. See :class:`tmux_orchestrator.store.base.Store`.

    ``url`` is a libpq URL (``postgresql://user@host/db``); its password, if it has one, is never
    shown (better: keep it in ``~/.pgpass``, see ``docs/postgres.md``). Without ``create`` a database
    without the schema raises :class:`~tmux_orchestrator.errors.NoDatabase` and nothing is written.
    """

    def __init__(self, url: str, *, create: bool = True) -> None:
        self._db = PgConnection(url)
        #: The database as it may be shown (no password).
        self.name = self._db.name
        self._db.open_schema(create=create)
        self._db.open_pool()

    # -- the connection ----------------------------------------------------------------------
    def close(self) -> None:
        """Close the pool and the LISTEN connection."""
        self._db.close()

    def schema_version(self) -> int:
        """The schema version of the open database."""
        return int(self._value(f"SELECT max(version) FROM {VERSION_TABLE}") or 0)

    def changes_token(self) -> int:
        """How many ``NOTIFY tmo`` arrived so far (taken without waiting); moves on every commit of
        a change a daemon cares about, by any connection (ours included)."""
        return self._db.changes_token()

    def is_shared(self) -> bool:
        """True: several hosts may use one PostgreSQL database (a host that loses it for long
        fences itself)."""
        return True

    def change_fd(self) -> int | None:
        """The LISTEN connection's socket: readable when a notification waits (then call
        :meth:`changes_token`, which takes it). After a lost connection it is another socket."""
        return self._db.change_fd()

    def _rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = (), *, prepare: bool | None = None,
              ) -> list[tuple[Any, ...]]:
        return self._db.read(lambda conn: conn.execute(sql, params, prepare=prepare).fetchall())

    def _dicts(self, sql: str, params: Sequence[Any] | dict[str, Any] = (), *, prepare: bool | None = None,
               ) -> list[dict[str, Any]]:
        return self._db.read(
            lambda conn: conn.cursor(row_factory=dict_row).execute(sql, params, prepare=prepare).fetchall())

    def _value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self._rows(sql, params)
        return rows[0][0] if rows else None

    # -- projects ----------------------------------------------------------------------------
    def enqueue(self, new: NewProject, *, source: str) -> Project:
        """Insert a queued project and return it."""
        return self.enqueue_many([new], source=source)[0]

    def enqueue_many(self, news: list[NewProject], *, source: str) -> list[Project]:
        """Insert many queued projects in one transaction (all or none); return them in order.

        The ids are taken first, so a project without a name is named ``project-<id>`` in the same
        write (its ``queued`` event carries that name).
        """
        if not news:
            return []

        def insert(conn: Conn) -> list[Project]:
            ids = [int(r[0]) for r in conn.execute(_NEXT_PROJECT_IDS, (len(news),), prepare=True)]
            ids.sort()
            with conn.cursor() as cur:
                cur.executemany(_INSERT_PROJECT, [
                    (pid, new.name or f"project-{pid}", new.priority, json.dumps(new.command),
                     json.dumps(new.env), new.project_path, new.spec_path, new.max_retries, new.retry_delay,
                     new.timeout, new.idle_timeout, new.pinned_host,
                     json.dumps(sorted(set(new.required_labels))))
                    for pid, new in zip(ids, news, strict=True)
                ])
            rows = conn.execute(f"SELECT {PROJECT_COLUMNS} FROM project_queue WHERE id = ANY(%s)", (ids,))
            by_id = {r[0]: row_to_project(r) for r in rows}
            return [by_id[i] for i in ids]

        return self._db.write(insert, source=source)

    def get(self, project_id: int) -> Project:
        """The project with ``project_id``; raises ``ProjectNotFound``."""
        if not 0 < project_id < 2**63:
            raise ProjectNotFound(project_id)
        rows = self._rows(f"SELECT {PROJECT_COLUMNS} FROM project_queue WHERE id = %s", (project_id,),
                          prepare=True)
        if not rows:
            raise ProjectNotFound(project_id)
        return row_to_project(rows[0])

    def list_projects(
        self, statuses: list[ProjectStatus] | None = None, limit: int | None = None
    ) -> list[Project]:
        """Projects in queue order: running, then queued by priority and age, then newest ended."""
        return [row_to_project(r) for r in self._select_in_order(PROJECT_COLUMNS, statuses, limit)]

    def list_columns(
        self, columns: list[str], statuses: list[ProjectStatus] | None = None, limit: int | None = None
    ) -> list[tuple[Any, ...]]:
        """Some columns of the projects, in queue order, as plain tuples (``tmo list``); besides the
        table's columns ``age_s`` and ``runtime_s`` (seconds, by the database's clock). Times are
        datetimes, JSON columns their text."""
        unknown = [c for c in columns if c not in _LISTABLE]
        if unknown:
            raise ValueError(f"not a listable column: {', '.join(unknown)}")
        return self._select_in_order(", ".join(_LISTABLE[c] for c in columns), statuses, limit)

    def _select_in_order(
        self, columns: str, statuses: list[ProjectStatus] | None, limit: int | None
    ) -> list[tuple[Any, ...]]:
        wanted = {s.value for s in statuses} if statuses else None

        def select(conn: Conn) -> list[tuple[Any, ...]]:
            out: list[tuple[Any, ...]] = []
            for group, order in _QUEUE_GROUPS:
                chosen = [s for s in group if wanted is None or s in wanted]
                left = None if not limit else limit - len(out)
                if not chosen or (left is not None and left <= 0):
                    continue
                out += conn.execute(
                    f"SELECT {columns} FROM project_queue WHERE status = ANY(%s) {order} LIMIT %s",
                    (chosen, left), prepare=True,
                ).fetchall()
            left = None if not limit else limit - len(out)
            if wanted is None and (left is None or left > 0):
                # Statuses slipped past the CHECK (dropped by hand): listed last, never hidden.
                known = [s.value for s in ProjectStatus]
                out += conn.execute(
                    f"SELECT {columns} FROM project_queue WHERE NOT (status = ANY(%s)) ORDER BY id DESC "
                    "LIMIT %s", (known, left)).fetchall()
            return out

        # One snapshot for the groups: a project claimed between two of the queries is neither
        # listed twice nor missed.
        return self._db.read(select, snapshot=True)

    def claim_next(self, *, host: str, max_processing: int, runner: str | None = None,
                   skip: frozenset[int] = frozenset(),
                   labels: frozenset[str] = frozenset()) -> Project | None:
        """Move the next queued project this host may run to ``processing``.

        The filters and limits are SQLite's (see :meth:`Store.claim_next`). Hosts claim at once:
        ``FOR UPDATE SKIP LOCKED`` gives each another row. The count of this host's slots and its
        claim hold this host's advisory lock, and with a ``concurrency.global`` limit the count of
        all slots and the claim hold one lock over all hosts: two claims can never both see the last
        free slot. (Each lock is taken in a statement of its own: a statement after it sees every
        claim committed before it was granted.)
        """
        from tmux_orchestrator.naming import session_name_for

        def claim(conn: Conn) -> Project | None:
            # No sort: the claim walks project_queue_claim in claim order and stops at the first row
            # it may take, whatever the planner's statistics say. Right after 10,000 projects were
            # queued they still say "a few rows" until autovacuum comes by, and a sort of every
            # queued row made a claim take 12 ms instead of 1 ms.
            conn.execute("SELECT set_config('enable_sort', 'off', true), "
                         "pg_advisory_xact_lock(%s, hashtext(%s))", (HOST_CLAIM_LOCK_CLASS, host),
                         prepare=True)
            busy, limit = conn.execute(
                f"SELECT (SELECT count(*) FROM project_queue WHERE {_BUSY} "
                "AND coalesce(host, %(host)s) = %(host)s), "
                "(SELECT value FROM settings WHERE key = 'concurrency.global')", {"host": host},
                prepare=True,
            ).fetchone() or (0, None)
            if busy >= max_processing:
                return None
            limit = str(limit).strip() if limit is not None else ""
            if limit.isdigit():
                conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, GLOBAL_CLAIM_LOCK),
                             prepare=True)
                total = conn.execute(f"SELECT count(*) FROM project_queue WHERE {_BUSY}",
                                     prepare=True).fetchone()
                if total is not None and total[0] >= int(limit):
                    return None
            row = conn.execute(_CLAIMABLE, {"host": host, "labels": json.dumps(sorted(labels)),
                                            "skip": sorted(skip)}, prepare=True).fetchone()
            if row is None:
                return None
            project_id, name, attempt = row[0], row[1] if isinstance(row[1], str) else "", row[2] + 1
            claimed = conn.execute(
                _CLAIM, (session_name_for(project_id, name, attempt), attempt, host, runner, project_id),
                prepare=True,
            ).fetchone()
            return row_to_project(claimed) if claimed else None

        return self._db.write(claim)

    def attempts(self, project_ids: list[int]) -> dict[int, tuple[str, int]]:
        """``{id: (status, attempt)}`` of the given projects (those that still exist)."""
        rows = self._rows("SELECT id, status, attempt FROM project_queue WHERE id = ANY(%s::bigint[])",
                          (project_ids,), prepare=True)
        return {int(r[0]): (str(r[1]), int(r[2])) for r in rows}

    def next_due(self) -> float | None:
        """Seconds until the earliest delayed queued project becomes due (None if none waits)."""
        value = self._value(
            "SELECT extract(epoch FROM min(not_before) - clock_timestamp())::float8 FROM project_queue "
            "WHERE status = 'queued' AND not_before IS NOT NULL")
        return None if value is None else float(value)

    def record_session(
        self, project_id: int, *, session_id: str, window_id: str, pane_pid: int,
        instance: str | None = None, attempt: int | None = None,
    ) -> bool:
        """Store the tmux ids of a started session; False if the project's attempt is no longer
        running (ended or requeued while its session was being created: the caller kills it)."""
        sql = ("UPDATE project_queue SET session_id = %s, window_id = %s, pane_pid = %s, "
               "server_instance = coalesce(%s, server_instance) WHERE id = %s")
        params: tuple[Any, ...] = (session_id, window_id, pane_pid, instance, project_id)
        if attempt is not None:
            sql += " AND attempt = %s AND status = 'processing'"
            params += (attempt,)
        return self._db.write(lambda conn: conn.execute(sql, params, prepare=True).rowcount == 1)

    def set_agent_state(self, project_id: int, state: AgentState, *, attempt: int,
                        decided_by: StateSource, source: str) -> bool:
        """Record the agent state of ``attempt``; True when the state changed (one ``state_changed``
        event, in the same transaction). Nothing is written for an attempt no longer running, for
        activity once the agent has reported, or for a repeat."""
        def write(conn: Conn) -> bool:
            row = conn.execute(
                "SELECT name, session_name, agent_state, agent_state_source FROM project_queue "
                "WHERE id = %s AND attempt = %s AND status = 'processing' FOR UPDATE",
                (project_id, attempt), prepare=True).fetchone()
            if row is None:
                return False
            name, session_name, old, old_source = row
            write, changed = agent_state_change(old, old_source, state, decided_by)
            if not write:
                return False
            conn.execute(
                "UPDATE project_queue SET agent_state = %s, agent_state_source = %s, agent_state_since = "
                "CASE WHEN agent_state IS NOT DISTINCT FROM %s THEN agent_state_since "
                "ELSE clock_timestamp() END WHERE id = %s",
                (state.value, decided_by.value, state.value, project_id), prepare=True)
            if changed:
                conn.execute(
                    "INSERT INTO events (kind, project_id, project_name, new_status, source, session_name, "
                    "message) VALUES ('state_changed', %s, %s, 'processing', %s, %s, %s)",
                    (project_id, name, source, session_name, describe_state_change(old, state, decided_by)),
                    prepare=True)
            return changed

        return self._db.write(write)

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
        """Apply one allowed status change (``UPDATE ... WHERE status = ANY(allowed)``); see
        :meth:`SqliteStore.transition <tmux_orchestrator.store.sqlite.SqliteStore.transition>`."""
        allowed = {expected} if expected else set(predecessors(new))
        allowed &= set(predecessors(new))
        sets = ["status = %s", "changed_by = %s"]
        params: list[Any] = [new.value, source]
        if count_retry:
            sets.append("retry_count = retry_count + 1")
        if close_session:
            sets.append("session_closed_at = coalesce(session_closed_at, clock_timestamp())")
        if new.is_terminal:
            sets += ["outcome = %s", "exit_code = coalesce(%s, exit_code)",
                     "completed_at = coalesce(%s::timestamptz, clock_timestamp())", "error_message = %s"]
            params += [outcome.value if outcome else None, exit_code, ended_at,
                       error_message if new != ProjectStatus.COMPLETED else None]
        elif new == ProjectStatus.QUEUED:
            sets.append("not_before = %s::timestamptz")
            params.append(not_before)
            if error_message is not None:
                sets.append("error_message = %s")
                params.append(error_message)

        def change(conn: Conn) -> Project:
            row = conn.execute(
                f"UPDATE project_queue SET {', '.join(sets)} WHERE id = %s AND status = ANY(%s) "
                f"RETURNING {PROJECT_COLUMNS}",
                (*params, project_id, sorted(s.value for s in allowed)), prepare=True,
            ).fetchone()
            if row is not None:
                return row_to_project(row)
            found = conn.execute("SELECT status FROM project_queue WHERE id = %s", (project_id,)).fetchone()
            if found is None:
                raise ProjectNotFound(project_id)
            raise InvalidTransition(project_id, found[0], new.value)

        if not 0 < project_id < 2**63:
            raise ProjectNotFound(project_id)
        return self._db.write(change)

    def set_exit_code(self, project_id: int, exit_code: int) -> None:
        """Record a late exit code without touching the status or outcome."""
        self._db.write(lambda conn: conn.execute(
            "UPDATE project_queue SET exit_code = %s WHERE id = %s AND exit_code IS NULL",
            (exit_code, project_id)))

    def remove(self, project_id: int, *, source: str) -> Project:
        """Delete a project that is not running and whose session is closed (its events stay)."""
        project = self.get(project_id)

        def delete(conn: Conn) -> None:
            deleted = conn.execute(
                "DELETE FROM project_queue WHERE id = %s AND status != 'processing' "
                "AND (session_name IS NULL OR session_closed_at IS NOT NULL)", (project_id,)).rowcount
            if deleted:
                return
            row = conn.execute("SELECT status FROM project_queue WHERE id = %s", (project_id,)).fetchone()
            if row is None:
                raise ProjectNotFound(project_id)
            if row[0] == "processing":
                raise InvalidTransition(project_id, "processing", "removed (cancel it first)")
            raise InvalidTransition(project_id, f"{row[0]} and its session is still being stopped",
                                    "removed yet (try again once it is closed)")

        self._db.write(delete, source=source)
        return project

    def find_by_session(self, session_names: list[str]) -> dict[str, Project]:
        """Projects whose current session has one of ``session_names``."""
        rows = self._rows(f"SELECT {PROJECT_COLUMNS} FROM project_queue WHERE session_name = ANY(%s)",
                          (session_names,), prepare=True)
        projects = [row_to_project(r) for r in rows]
        return {p.session_name: p for p in projects if p.session_name is not None}

    def counts(self) -> dict[str, int]:
        """Number of projects per status (every status present, zeros included)."""
        out = {s.value: 0 for s in ProjectStatus}
        for status, count in self._rows("SELECT status, count(*) FROM project_queue GROUP BY status"):
            out[status] = int(count)
        return out

    # -- sessions and their clean-up ---------------------------------------------------------
    def close_session(self, project_id: int, session_name: str | None = None) -> bool:
        """Record that the project's session (``session_name``, if given) is gone, with its
        processes: the slot is free. True for the one caller that closed it."""
        sql = ("UPDATE project_queue SET session_closed_at = clock_timestamp() "
               "WHERE id = %s AND session_name IS NOT NULL AND session_closed_at IS NULL")
        params: tuple[Any, ...] = (project_id,)
        if session_name is not None:
            sql += " AND session_name = %s"
            params += (session_name,)
        return self._db.write(lambda conn: conn.execute(sql, params, prepare=True).rowcount == 1)

    def open_sessions(self) -> list[Project]:
        """Projects whose session has not been closed (running, or ended and awaiting clean-up)."""
        return [row_to_project(r) for r in self._rows(
            f"SELECT {PROJECT_COLUMNS} FROM project_queue "
            "WHERE session_name IS NOT NULL AND session_closed_at IS NULL", prepare=True)]

    def count_unclosed_ended(self) -> int:
        """Rows that left ``processing`` while their session was still open (cheap, indexed)."""
        return int(self._value(
            "SELECT count(*) FROM project_queue WHERE session_name IS NOT NULL "
            "AND session_closed_at IS NULL AND status != 'processing'") or 0)

    def claim_cleanup(
        self, claims: list[Claim], *, owner: str, ttl: float, owner_gone: Callable[[str], bool],
    ) -> dict[str, str]:
        """Claim the clean-up of sessions; returns ``{key: stage}`` of the claims now held.

        As in SQLite: a claim held by someone else is taken over only once its deadline (the
        database's clock) has passed or its owner is known dead (``owner_gone``), keeping its stage;
        a project's current session is claimed only while its row still has it open. Rows are locked
        project row first, then claim, in key order (``finish_cleanup`` too): no deadlock.
        """
        def take(conn: Conn) -> dict[str, str]:
            held: dict[str, str] = {}
            select = ("SELECT owner, stage, deadline <= clock_timestamp() FROM cleanup_claims "
                      "WHERE session_key = %s FOR UPDATE")
            for claim in sorted(claims, key=lambda c: c.key):
                if claim.current and claim.project_id is not None:
                    # FOR SHARE: a clean-up finishing at this moment closes the row first; we then
                    # see it closed instead of claiming a session that is already gone.
                    if conn.execute("SELECT 1 FROM project_queue WHERE id = %s AND attempt = %s "
                                    "AND session_closed_at IS NULL FOR SHARE",
                                    (claim.project_id, claim.attempt)).fetchone() is None:
                        continue
                row = conn.execute(select, (claim.key,), prepare=True).fetchone()
                if row is None:
                    inserted = conn.execute(
                        "INSERT INTO cleanup_claims (session_key, project_id, attempt, session_name, owner, "
                        "deadline) VALUES (%s, %s, %s, %s, %s, clock_timestamp() + %s * interval '1 second') "
                        "ON CONFLICT (session_key) DO NOTHING",
                        (claim.key, claim.project_id, claim.attempt, claim.session_name, owner, ttl),
                    ).rowcount
                    if inserted:
                        held[claim.key] = "claimed"
                        continue
                    # another cleaner claimed it a moment ago: judge its claim like any other
                    row = conn.execute(select, (claim.key,)).fetchone()
                    if row is None:
                        continue
                holder, stage, expired = row
                if holder != owner and not expired and not owner_gone(holder):
                    continue
                conn.execute("UPDATE cleanup_claims SET owner = %s, "
                             "deadline = clock_timestamp() + %s * interval '1 second' WHERE session_key = %s",
                             (owner, ttl, claim.key))
                held[claim.key] = stage
            return held

        return self._db.write(take)

    def advance_claim(self, key: str, *, owner: str, stage: str, event: EventRow | None,
                      source: str) -> bool:
        """Move a held claim to ``stage`` and write ``event`` in the same transaction; False
        (nothing written) if the claim is no longer ours."""
        def advance(conn: Conn) -> bool:
            changed = conn.execute(
                "UPDATE cleanup_claims SET stage = %s WHERE session_key = %s AND owner = %s",
                (stage, key, owner)).rowcount
            if changed and event is not None:
                _insert_events(conn, [event], source)
            return bool(changed)

        return self._db.write(advance)

    def release_claim(self, key: str, *, owner: str) -> None:
        """Give a claim back unfinished: anyone may take it again at once."""
        self._db.write(lambda conn: conn.execute(
            "UPDATE cleanup_claims SET deadline = clock_timestamp() WHERE session_key = %s AND owner = %s",
            (key, owner)))

    def finish_cleanup(self, key: str, *, close: tuple[int, int] | None, events: list[EventRow],
                       source: str) -> None:
        """The session is confirmed gone: close the row's session (``close`` is ``(project id,
        attempt)``), drop its claim and write ``events``, all in one transaction."""
        def finish(conn: Conn) -> None:
            if close is not None:  # the row before the claim: the lock order of claim_cleanup
                conn.execute("UPDATE project_queue SET session_closed_at = clock_timestamp() WHERE id = %s "
                             "AND attempt = %s AND session_closed_at IS NULL", close)
            conn.execute("DELETE FROM cleanup_claims WHERE session_key = %s", (key,))
            _insert_events(conn, events, source)

        self._db.write(finish)

    def claims(self) -> list[dict[str, Any]]:
        """Every clean-up claim; times as SQLite's text, so both backends give the same values."""
        return [{k: to_text(v) if isinstance(v, datetime) else v for k, v in row.items()}
                for row in self._dicts("SELECT * FROM cleanup_claims ORDER BY session_key")]

    def drop_claims(self, keys: list[str]) -> None:
        """Forget claims whose session is gone and whose owner died."""
        self._db.write(lambda conn: conn.execute(
            "DELETE FROM cleanup_claims WHERE session_key = ANY(%s)", (keys,)))

    # -- hosts ---------------------------------------------------------------------------------
    def register_host(self, host: Host, *, holder_gone: Callable[[Host], bool]) -> Host | None:
        """Take ``host.name``'s lease (see :meth:`Store.register_host`); heartbeat by the database's
        clock. Two daemons registering one name at once are serialized by an advisory lock."""
        def register(conn: Conn) -> Host | None:
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (HOST_LEASE_LOCK_CLASS, host.name))
            row = conn.cursor(row_factory=dict_row).execute(
                f"SELECT {_HOST_COLUMNS} FROM hosts WHERE name = %s FOR UPDATE", (host.name,)).fetchone()
            if row is not None:
                current = row_to_host(row, row["silent_for"])
                if (current.owner != host.owner and current.stopped_at is None
                        and current.expired_at is None and not holder_gone(current)):
                    return current
            conn.execute(
                "INSERT INTO hosts (name, runner, home, pid, owner, labels, concurrency, started_at, "
                "heartbeat_at) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, clock_timestamp(), "
                "clock_timestamp()) "
                "ON CONFLICT (name) DO UPDATE SET runner = excluded.runner, home = excluded.home, "
                "pid = excluded.pid, owner = excluded.owner, labels = excluded.labels, "
                "started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, "
                "stopped_at = NULL, expired_at = NULL",
                (host.name, host.runner, host.home, host.pid, host.owner, json.dumps(sorted(host.labels)),
                 host.concurrency),
            )
            return None

        return self._db.write(register)

    def heartbeat(self, name: str, owner: str) -> bool:
        """Renew the lease; False when it is no longer ``owner``'s."""
        return self._db.write(lambda conn: conn.execute(
            "UPDATE hosts SET heartbeat_at = clock_timestamp() WHERE name = %s AND owner = %s "
            "AND stopped_at IS NULL AND expired_at IS NULL", (name, owner), prepare=True).rowcount == 1)

    def unregister_host(self, name: str, owner: str) -> None:
        """Give the lease up (a daemon that stops)."""
        self._db.write(lambda conn: conn.execute(
            "UPDATE hosts SET stopped_at = clock_timestamp() WHERE name = %s AND owner = %s", (name, owner)))

    def hosts(self) -> list[Host]:
        """Every host, with ``silent_for`` by the database's clock."""
        return [row_to_host(r, r["silent_for"])
                for r in self._dicts(f"SELECT {_HOST_COLUMNS} FROM hosts ORDER BY name")]

    def set_host(self, name: str, *, concurrency: int | None = None, paused: bool | None = None) -> None:
        """Change a host's concurrency or pause."""
        def change(conn: Conn) -> None:
            if concurrency is not None:
                conn.execute("UPDATE hosts SET concurrency = %s WHERE name = %s", (concurrency, name))
            if paused is not None:
                conn.execute("UPDATE hosts SET paused = %s WHERE name = %s", (int(paused), name))

        self._db.write(change)

    def expire_hosts(self, ttl: float, *, source: str) -> list[Project]:
        """Mark hosts silent for over ``ttl`` seconds (the database's clock) expired and fail their
        running projects lost, in one transaction. Hosts expiring the same dead host at once: the
        second waits for the first's row lock, then finds it expired and does nothing."""
        def expire(conn: Conn) -> list[Project]:
            dead = [r[0] for r in conn.execute(
                "SELECT name FROM hosts WHERE heartbeat_at < clock_timestamp() - %s * interval '1 second' "
                "AND stopped_at IS NULL AND expired_at IS NULL ORDER BY name FOR UPDATE", (ttl,))]
            failed: list[Project] = []
            for name in dead:
                conn.execute("UPDATE hosts SET expired_at = clock_timestamp() WHERE name = %s", (name,))
                rows = conn.execute(
                    "UPDATE project_queue SET status = 'failed', changed_by = %s, outcome = 'lost', "
                    "error_message = %s, completed_at = clock_timestamp(), "
                    "session_closed_at = coalesce(session_closed_at, clock_timestamp()) "
                    f"WHERE status = 'processing' AND host = %s RETURNING {PROJECT_COLUMNS}",
                    (source, f"lost: host {name} stopped renewing its lease", name)).fetchall()
                # Sessions of ended rows the dead host had not closed yet: its daemon closes what is
                # left on its server when it comes back, before it claims anything (fencing).
                conn.execute("UPDATE project_queue SET session_closed_at = clock_timestamp() WHERE host = %s "
                             "AND session_name IS NOT NULL AND session_closed_at IS NULL", (name,))
                failed += sorted((row_to_project(r) for r in rows), key=lambda p: p.id)
            return failed

        return self._db.write(expire)

    # -- events and settings -------------------------------------------------------------------
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
        self.append_events([(kind, project, session_name or (project.session_name if project else None),
                             message)], source=source)

    def append_events(self, events: list[EventRow], *, source: str) -> None:
        """Write many non-status events ``(kind, project, session_name, message)`` at once."""
        if events:
            self._db.write(lambda conn: _insert_events(conn, events, source))

    def events_after(
        self,
        after_id: int = 0,
        *,
        limit: int = 1000,
        project_id: int | None = None,
        kinds: list[str] | None = None,
    ) -> list[Event]:
        """Events with an id above ``after_id``, oldest first (ids become visible in commit order,
        so nothing below the last one seen can still appear)."""
        sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE id > %s"
        params: list[Any] = [after_id]
        if project_id is not None:
            sql += " AND project_id = %s"
            params.append(project_id)
        if kinds:
            sql += " AND kind = ANY(%s)"
            params.append(kinds)
        sql += " ORDER BY id LIMIT %s"
        params.append(limit)
        return [row_to_event(r) for r in self._dicts(sql, params, prepare=True)]

    def last_event_id(self) -> int:
        """The highest event id, 0 when there is none."""
        return int(self._value("SELECT coalesce(max(id), 0) FROM events") or 0)

    def get_setting(self, key: str, default: str | None = None) -> str | None:
        """A value from the settings table."""
        rows = self._rows("SELECT value FROM settings WHERE key = %s", (key,), prepare=True)
        return str(rows[0][0]) if rows else default

    def set_setting(self, key: str, value: str) -> None:
        """Store a value in the settings table."""
        self._db.write(lambda conn: conn.execute(
            "INSERT INTO settings (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value), prepare=True))

    def add_message(self, project_id: int, attempt: int, kind: MessageKind, body: str, *,
                    when_waiting: bool = False, checkin_id: int | None = None) -> Message:
        """Queue a message for attempt ``attempt`` of a project (held until its agent waits with
        ``when_waiting``; sent for check-in ``checkin_id``)."""
        row = self._db.write(lambda conn: conn.execute(
            "INSERT INTO messages (project_id, attempt, kind, body, when_waiting, checkin_id) "
            f"VALUES (%s, %s, %s, %s, %s, %s) RETURNING {MESSAGE_COLUMNS}",
            (project_id, attempt, kind.value, body, when_waiting, checkin_id)).fetchone())
        return row_to_message(row)

    def get_message(self, message_id: int) -> Message | None:
        """The message ``message_id``, None when there is none."""
        rows = self._rows(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = %s", (message_id,))
        return row_to_message(rows[0]) if rows else None

    def messages(self, status: MessageStatus, project_ids: list[int]) -> list[Message]:
        """Messages with ``status`` to the projects ``project_ids``, oldest first."""
        if not project_ids:
            return []
        rows = self._rows(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE status = %s AND project_id "
                          "= ANY(%s) ORDER BY id", (status.value, project_ids))
        return [row_to_message(r) for r in rows]

    def stale_messages(self, limit: int = 100) -> list[Message]:
        """Queued messages whose attempt is no longer running, oldest first."""
        rows = self._rows(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE status = 'queued' AND NOT EXISTS ("
            "SELECT 1 FROM project_queue p WHERE p.id = messages.project_id "
            "AND p.status = 'processing' AND p.attempt = messages.attempt) ORDER BY id LIMIT %s", (limit,))
        return [row_to_message(r) for r in rows]

    def update_message(self, message_id: int, *, expected: MessageStatus, status: MessageStatus,
                       reason: str | None = None, tries: int | None = None) -> bool:
        """Move a message from ``expected`` to ``status`` (``delivered`` stamps ``delivered_at``);
        False, and nothing changed, when it was not in ``expected``."""
        count = self._db.write(lambda conn: conn.execute(
            "UPDATE messages SET status = %s, reason = coalesce(%s, reason), "
            "tries = coalesce(%s, tries), delivered_at = CASE WHEN %s = 'delivered' "
            "THEN clock_timestamp() ELSE delivered_at END WHERE id = %s AND status = %s",
            (status.value, reason, tries, status.value, message_id, expected.value)).rowcount)
        return count == 1

    def add_checkin(self, project_id: int, attempt: int, every: float, body: str) -> Checkin:
        """Schedule ``body`` every ``every`` seconds for attempt ``attempt`` of a project."""
        row = self._db.write(lambda conn: conn.execute(
            "INSERT INTO checkins (project_id, attempt, every, body) VALUES (%s, %s, %s, %s) "
            "RETURNING id", (project_id, attempt, every, body)).fetchone())
        assert row is not None  # RETURNING always gives the row
        return self._checkins("WHERE c.id = %s", (row[0],))[0]

    def checkins(self, project_ids: list[int] | None = None) -> list[Checkin]:
        """The check-ins of the projects ``project_ids`` (all with None), oldest first."""
        if project_ids is None:
            return self._checkins("", ())
        return self._checkins("WHERE c.project_id = ANY(%s)", (project_ids,)) if project_ids else []

    def remove_checkin(self, checkin_id: int) -> Checkin | None:
        """Delete check-in ``checkin_id``; returns it, None when there was none."""
        found = self._checkins("WHERE c.id = %s", (checkin_id,))
        if not found:
            return None
        self._db.write(lambda conn: conn.execute("DELETE FROM checkins WHERE id = %s", (checkin_id,)))
        return found[0]

    def _checkins(self, where: str, params: tuple[Any, ...]) -> list[Checkin]:
        return [row_to_checkin(r) for r in self._rows(f"{CHECKIN_SELECT} {where} ORDER BY c.id", params)]

    def concurrency(self) -> int:
        """The stored concurrency; 1 when unset, or when a hand edit left something that is not a
        positive whole number."""
        text = (self.get_setting("concurrency", "1") or "1").strip()
        return int(text) if text.isdigit() and 0 < int(text) < 2**31 else 1


def _insert_events(conn: Conn, events: Sequence[EventRow], source: str) -> None:
    with conn.cursor() as cur:
        cur.executemany(_INSERT_EVENT, [
            (kind, p.id if p else None, p.name if p else None, p.status.value if p else None,
             p.outcome.value if p and p.outcome else None, p.exit_code if p else None, source,
             session, message)
            for kind, p, session, message in events
        ])

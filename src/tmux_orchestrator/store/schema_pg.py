"""The PostgreSQL schema and its migrations: the SQLite schema's tables, columns, checks and triggers.

Version N of this schema has the tables and columns of version N of the SQLite schema
(``schema.py``), so a database reads the same whatever the backend. Timestamps are ``timestamptz``;
``command``, ``env``, ``required_labels`` and ``labels`` are ``jsonb`` (hand-written
``UPDATE project_queue SET command = '["true"]'`` works; text that is not JSON is refused).

The triggers are PL/pgSQL built from the same expressions as SQLite's (``statemachine_sql``): the
status guard, one event per status change, insert and delete events, the delete guard. Three more
are PostgreSQL's own:

- **Event ids in commit order.** A sequence hands out ids in the order transactions *ask*, not in
  the order they commit, so a reader that remembers the last id it saw could skip an event committed
  late with a smaller id. An event row is therefore inserted with a temporary, negative id, and a
  deferred constraint trigger gives it its real id at ``COMMIT``, under a transaction advisory lock
  (:data:`EVENT_ID_LOCK`). The lock is released only after the commit is visible, so the next
  transaction's ids are taken after this one's are visible: ids become visible strictly in order.
  The lock is held only while a transaction commits, never while a long hand-written ``psql``
  transaction is open. Readers never see a negative id (a row has it only inside its own
  uncommitted transaction).
- **Wake-ups.** Changes of ``project_queue``, ``events``, ``hosts`` (not the heartbeats) and
  ``settings`` (not the dispatcher's cursors and statistics) ``NOTIFY tmo``: the daemon sleeps on
  its LISTEN socket instead of polling (``docs/postgres.md``).
- **The writer's name.** ``changed_by`` works as in SQLite; a store also names itself for a whole
  transaction with ``set_config('tmo.source', ...)`` (inserts and deletes: no second write of the
  row to clear ``changed_by``).
"""

from __future__ import annotations

from tmux_orchestrator.store.statemachine_sql import (
    AGENT_STATES,
    DELETE_REFUSED,
    EVENT_KIND,
    EVENT_MESSAGE,
    GUARD_MESSAGE,
    STATE_SOURCES,
    STATUSES,
    allowed_condition,
    end_fields,
)

#: First key of every advisory lock tmo takes (``'tmo'``); the second says what it guards.
LOCK_CLASS = 0x746D6F
#: Handing out event ids at commit (held from a transaction's first event id to its commit).
EVENT_ID_LOCK = 1
#: Creating or upgrading the schema (several processes may open a new database at once).
MIGRATION_LOCK = 2
#: Counting the slots of all hosts and claiming (the ``concurrency.global`` limit).
GLOBAL_CLAIM_LOCK = 3
#: First key of a host's claim lock (the second is ``hashtext(host)``): its ``max_processing``.
HOST_CLAIM_LOCK_CLASS = LOCK_CLASS + 1
#: First key of a host's registration lock (the second is ``hashtext(name)``).
HOST_LEASE_LOCK_CLASS = LOCK_CLASS + 2

#: The one-row table holding the schema version (SQLite keeps it in ``PRAGMA user_version``).
VERSION_TABLE = "tmo_schema_version"

#: Who made a change: the row's ``changed_by``, else the store's transaction setting, else SQL.
_SOURCE = "coalesce({row}.changed_by, nullif(current_setting('tmo.source', true), ''), 'sql')"

#: Settings whose changes wake nobody: written all the time by the dispatcher, read by no loop.
_QUIET_SETTINGS = "'cursor.%', 'stats.%'"


def _function(name: str, body: str) -> str:
    # `SET search_path FROM CURRENT`: the trigger finds its tables also when a hand-written statement
    # runs with another search_path (`UPDATE tmo.project_queue ...` from a session set elsewhere).
    return f"""
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
{body.strip()}
END
$$;
"""


def transition_guard_sql() -> str:
    """A trigger that refuses any status change :data:`ALLOWED` does not list, whoever makes it."""
    return _function("tmo_status_guard", f"""
    IF NOT ({allowed_condition()}) THEN
        RAISE EXCEPTION 'tmo: {GUARD_MESSAGE}' USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
""") + """
CREATE TRIGGER project_queue_status_guard
BEFORE UPDATE OF status ON project_queue
FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status)
EXECUTE FUNCTION tmo_status_guard();
"""


def status_event_sql() -> str:
    """Triggers that write exactly one event per status change, insert and delete.

    The status event is written *before* the row (a ``BEFORE`` trigger may still change ``NEW``): the
    end fields are stamped and ``changed_by`` cleared in the same write, where SQLite updates the row
    a second time. Should the guard (which runs after it: triggers fire in name order) refuse the
    change, the statement fails and its event with it.
    """
    stamps = "\n".join(f"    NEW.{column} := {expression};" for column, expression in end_fields(
        "clock_timestamp()"))
    status_event = _function("tmo_status_event", f"""
{stamps}
    INSERT INTO events (kind, project_id, project_name, old_status, new_status, outcome,
                        exit_code, source, session_name, message)
    VALUES (
        {EVENT_KIND},
        NEW.id, NEW.name, OLD.status, NEW.status, NEW.outcome, NEW.exit_code,
        {_SOURCE.format(row="NEW")}, NEW.session_name,
        {EVENT_MESSAGE.format(row="NEW")});
    NEW.changed_by := NULL;
    RETURN NEW;
""")
    insert_event = _function("tmo_insert_event", f"""
    INSERT INTO events (kind, project_id, project_name, new_status, source)
    VALUES ('queued', NEW.id, NEW.name, NEW.status, {_SOURCE.format(row="NEW")});
    -- An id given by hand moves the sequence past it, as SQLite's AUTOINCREMENT does: a later
    -- `tmo add` must not collide with it.
    IF NEW.id > (SELECT last_value FROM project_queue_id_seq) THEN
        PERFORM setval('project_queue_id_seq', NEW.id);
    END IF;
    IF NEW.changed_by IS NOT NULL THEN
        UPDATE project_queue SET changed_by = NULL WHERE id = NEW.id;
    END IF;
    RETURN NULL;
""")
    delete_event = _function("tmo_delete_event", f"""
    INSERT INTO events (kind, project_id, project_name, old_status, source, session_name)
    VALUES ('removed', OLD.id, OLD.name, OLD.status, {_SOURCE.format(row="OLD")}, OLD.session_name);
    RETURN NULL;
""")
    return status_event + insert_event + delete_event + """
CREATE TRIGGER project_queue_status_event
BEFORE UPDATE OF status ON project_queue
FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status)
EXECUTE FUNCTION tmo_status_event();

CREATE TRIGGER project_queue_insert_event
AFTER INSERT ON project_queue
FOR EACH ROW EXECUTE FUNCTION tmo_insert_event();

CREATE TRIGGER project_queue_delete_event
AFTER DELETE ON project_queue
FOR EACH ROW EXECUTE FUNCTION tmo_delete_event();
"""


def event_order_sql() -> str:
    """Event ids in commit order: a temporary negative id, the real one at ``COMMIT`` (see above)."""
    return _function("tmo_event_commit_id", f"""
    PERFORM pg_advisory_xact_lock({LOCK_CLASS}, {EVENT_ID_LOCK});
    IF NEW.id < 0 THEN
        UPDATE events SET id = nextval('events_id_seq') WHERE id = NEW.id;
    ELSIF NEW.id > (SELECT last_value FROM events_id_seq) THEN
        -- an id given by hand is kept, and the sequence moved past it (as AUTOINCREMENT does)
        PERFORM setval('events_id_seq', NEW.id);
    END IF;
    RETURN NULL;
""") + """
CREATE CONSTRAINT TRIGGER events_commit_order
AFTER INSERT ON events
DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION tmo_event_commit_id();
"""


def notify_sql() -> str:
    """``NOTIFY tmo`` (payload: the table) on the changes a daemon wakes up for.

    Statement triggers for the busy tables: PostgreSQL folds equal notifications of one transaction
    into one, so a batch of 10,000 rows sends one.
    """
    return _function("tmo_notify", """
    PERFORM pg_notify('tmo', TG_TABLE_NAME);
    RETURN NULL;
""") + f"""
CREATE TRIGGER project_queue_notify
AFTER INSERT OR UPDATE OR DELETE ON project_queue
FOR EACH STATEMENT EXECUTE FUNCTION tmo_notify();

CREATE TRIGGER events_notify
AFTER INSERT ON events
FOR EACH STATEMENT EXECUTE FUNCTION tmo_notify();

CREATE TRIGGER settings_notify
AFTER INSERT OR UPDATE ON settings
FOR EACH ROW WHEN (NOT NEW.key LIKE ANY (ARRAY[{_QUIET_SETTINGS}]))
EXECUTE FUNCTION tmo_notify();

CREATE TRIGGER settings_delete_notify
AFTER DELETE ON settings
FOR EACH ROW WHEN (NOT OLD.key LIKE ANY (ARRAY[{_QUIET_SETTINGS}]))
EXECUTE FUNCTION tmo_notify();
"""


#: Migration N (1-based) brings the schema from version N-1 to N, as ``schema.MIGRATIONS`` does.
MIGRATIONS: list[str] = [
    f"""
CREATE TABLE project_queue (
    id                bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name              text NOT NULL,
    status            text NOT NULL DEFAULT 'queued' CHECK (status IN ({STATUSES})),
    priority          integer NOT NULL DEFAULT 0,
    command           jsonb NOT NULL,                  -- the argv
    env               jsonb NOT NULL DEFAULT '{{}}',
    project_path      text,
    spec_path         text,
    session_name      text,
    session_id        text,                            -- tmux $id of the current attempt
    window_id         text,                            -- tmux @id
    pane_pid          integer,                         -- leader of the project's process group
    outcome           text,
    exit_code         integer,
    error_message     text,
    enqueued_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at        timestamptz,
    completed_at      timestamptz,
    session_closed_at timestamptz,                     -- set once, by whoever cleans the session up
    attempt           integer NOT NULL DEFAULT 0,
    retry_count       integer NOT NULL DEFAULT 0,
    max_retries       bigint NOT NULL DEFAULT 0,
    retry_delay       double precision NOT NULL DEFAULT 0,
    not_before        timestamptz,
    timeout           double precision,
    idle_timeout      double precision,
    host              text,
    changed_by        text                             -- writer of the current change; cleared by trigger
);
CREATE INDEX project_queue_claim ON project_queue (status, priority DESC, enqueued_at, id);
CREATE INDEX project_queue_open_sessions ON project_queue (session_closed_at)
    WHERE session_name IS NOT NULL AND session_closed_at IS NULL;

CREATE SEQUENCE events_pending_id;                     -- temporary ids, negated, until COMMIT
CREATE TABLE events (
    id            bigint PRIMARY KEY DEFAULT -nextval('events_pending_id'),
    at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind          text NOT NULL,
    project_id    bigint,
    project_name  text,
    old_status    text,
    new_status    text,
    outcome       text,
    exit_code     integer,
    source        text NOT NULL,
    session_name  text,
    message       text
);
ALTER SEQUENCE events_pending_id OWNED BY events.id;
CREATE SEQUENCE events_id_seq OWNED BY events.id;     -- the real ids, taken at COMMIT in order
CREATE INDEX events_project ON events (project_id, id);

CREATE TABLE settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);
"""
    + transition_guard_sql()
    + status_event_sql()
    + event_order_sql()
    + notify_sql(),
    # 2: as SQLite's migration 2 (sessions by instance, clean-up claims, host leases, pinned hosts and
    # required labels).
    f"""
ALTER TABLE project_queue ADD COLUMN server_instance text;  -- tmux server of the session: "pid.start"
ALTER TABLE project_queue ADD COLUMN runner text;           -- "host:home key" of the daemon running it
ALTER TABLE project_queue ADD COLUMN pinned_host text;      -- only this host may claim it (--host)
ALTER TABLE project_queue ADD COLUMN required_labels jsonb NOT NULL DEFAULT '[]';  -- (--requires)

CREATE TABLE cleanup_claims (
    session_key   text PRIMARY KEY,                     -- server instance / $id / name
    project_id    bigint,
    attempt       integer,
    session_name  text NOT NULL,
    owner         text NOT NULL,                        -- "host:pid:process start" of the cleaner
    deadline      timestamptz NOT NULL,                 -- taken over only after this
    stage         text NOT NULL DEFAULT 'claimed' CHECK (stage IN ('claimed', 'saved', 'signalled')),
    claimed_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- A row whose session is still open holds a slot: deleting it would free the slot while the old
-- attempt's processes still run. Cancel it first; delete it once its session is closed.
{_function("tmo_delete_guard", f'''
    RAISE EXCEPTION 'tmo: {DELETE_REFUSED}' USING ERRCODE = 'integrity_constraint_violation';
''')}
CREATE TRIGGER project_queue_delete_guard
BEFORE DELETE ON project_queue
FOR EACH ROW WHEN (OLD.session_name IS NOT NULL AND OLD.session_closed_at IS NULL)
EXECUTE FUNCTION tmo_delete_guard();

CREATE TABLE hosts (
    name          text PRIMARY KEY,                     -- TMO_HOST, default the hostname
    runner        text NOT NULL,                        -- "host:home key" of its daemon
    home          text NOT NULL,
    pid           integer NOT NULL,
    owner         text NOT NULL,                        -- "machine:pid:process start" of the daemon
    labels        jsonb NOT NULL DEFAULT '[]',          -- TMO_HOST_LABELS
    concurrency   integer NOT NULL DEFAULT 1,
    paused        integer NOT NULL DEFAULT 0,           -- 0 or 1, as in SQLite
    started_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at  timestamptz NOT NULL DEFAULT clock_timestamp(),  -- the database's clock
    stopped_at    timestamptz,                          -- its daemon stopped and gave the lease up
    expired_at    timestamptz                           -- its lease ran out: its projects were lost
);
CREATE TRIGGER hosts_notify
AFTER INSERT OR DELETE ON hosts
FOR EACH ROW EXECUTE FUNCTION tmo_notify();
-- Heartbeats wake nobody; a new holder, a pause, a concurrency, a stop or an expiry does.
CREATE TRIGGER hosts_change_notify
AFTER UPDATE ON hosts
FOR EACH ROW WHEN ((OLD.owner, OLD.labels, OLD.concurrency, OLD.paused, OLD.stopped_at, OLD.expired_at)
                   IS DISTINCT FROM
                   (NEW.owner, NEW.labels, NEW.concurrency, NEW.paused, NEW.stopped_at, NEW.expired_at))
EXECUTE FUNCTION tmo_notify();
""",
    # 3: messages sent to a running project's pane (`tmo send`), delivered once by its daemon.
    """
CREATE TABLE messages (
    id            bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    project_id    bigint NOT NULL,
    attempt       integer NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('text', 'keys')),
    body          text NOT NULL,
    status        text NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'delivering', 'delivered', 'failed')),
    reason        text,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    delivered_at  timestamptz,
    tries         integer NOT NULL DEFAULT 0
);
CREATE INDEX messages_pending ON messages (status, project_id, id);
CREATE TRIGGER messages_notify
AFTER INSERT ON messages
FOR EACH STATEMENT EXECUTE FUNCTION tmo_notify();
""",
    # 4: as SQLite's migration 4 (the agent state of a running project, reset by a status change).
    f"""
ALTER TABLE project_queue ADD COLUMN agent_state text CHECK (agent_state IN ({AGENT_STATES}));
ALTER TABLE project_queue ADD COLUMN agent_state_since timestamptz;
ALTER TABLE project_queue ADD COLUMN agent_state_source text
    CHECK (agent_state_source IN ({STATE_SOURCES}));
UPDATE project_queue SET agent_state = 'unknown', agent_state_since = clock_timestamp()
    WHERE status = 'processing';
{_function("tmo_agent_state_reset", '''
    IF NEW.status = 'processing' THEN
        NEW.agent_state := 'unknown';
        NEW.agent_state_since := clock_timestamp();
    ELSE
        NEW.agent_state := NULL;
        NEW.agent_state_since := NULL;
    END IF;
    NEW.agent_state_source := NULL;
    RETURN NEW;
''')}
CREATE TRIGGER project_queue_agent_state_reset
BEFORE UPDATE OF status ON project_queue
FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status)
EXECUTE FUNCTION tmo_agent_state_reset();
""",
    # 5: as SQLite's migration 5 (conditional messages, check-ins removed when their project stops).
    f"""
ALTER TABLE messages ADD COLUMN when_waiting boolean NOT NULL DEFAULT false;
ALTER TABLE messages ADD COLUMN checkin_id bigint;
CREATE INDEX messages_checkin ON messages (checkin_id) WHERE checkin_id IS NOT NULL;
CREATE TABLE checkins (
    id            bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    project_id    bigint NOT NULL,
    attempt       integer NOT NULL,
    every         double precision NOT NULL CHECK (every > 0),
    body          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
{_function("tmo_checkins_end", '''
    DELETE FROM checkins WHERE project_id = OLD.id;
    RETURN NULL;
''')}
CREATE TRIGGER project_queue_checkins_end
AFTER UPDATE OF status ON project_queue
FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status AND OLD.status = 'processing')
EXECUTE FUNCTION tmo_checkins_end();
CREATE TRIGGER project_queue_checkins_removed
AFTER DELETE ON project_queue
FOR EACH ROW EXECUTE FUNCTION tmo_checkins_end();
CREATE TRIGGER checkins_notify
AFTER INSERT OR DELETE ON checkins
FOR EACH STATEMENT EXECUTE FUNCTION tmo_notify();
""",
]

SCHEMA_VERSION = len(MIGRATIONS)

"""The SQLite schema and its migrations.

Migrations are append-only: each entry upgrades the schema by one version, and a database written by
any earlier release opens by applying the missing ones. The status-change guard and the event triggers
are generated from :data:`tmux_orchestrator.project.ALLOWED` (through ``statemachine_sql``, which the
PostgreSQL schema shares), so the state machine lives in one place
and hand-written SQL obeys it too.
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

#: SQLite expression for "now" in the format every timestamp column uses (UTC, milliseconds).
NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"


def transition_guard_sql() -> str:
    """A trigger that aborts any status change :data:`ALLOWED` does not list, whoever makes it."""
    return f"""
CREATE TRIGGER project_queue_status_guard
BEFORE UPDATE OF status ON project_queue
WHEN NEW.status IS NOT OLD.status AND NOT ({allowed_condition()})
BEGIN
    SELECT RAISE(ABORT, 'tmo: {GUARD_MESSAGE}');
END;
"""


def status_event_sql() -> str:
    """Triggers that write exactly one event row per status change, insert and delete.

    ``changed_by`` names the writer (``daemon``, ``cli``, ``api``); a write that does not set it is a
    hand-written change and is recorded with source ``sql``. The trigger clears ``changed_by`` again so
    a later hand-written change does not inherit it.
    """
    stamps = ",\n        ".join(f"{column} = {expression}" for column, expression in end_fields(NOW))
    return f"""
CREATE TRIGGER project_queue_status_event
AFTER UPDATE OF status ON project_queue
WHEN NEW.status IS NOT OLD.status
BEGIN
    UPDATE project_queue SET
        {stamps},
        changed_by = NULL
    WHERE id = NEW.id;
    INSERT INTO events (kind, project_id, project_name, old_status, new_status, outcome,
                        exit_code, source, session_name, message)
    SELECT
        {EVENT_KIND},
        p.id, p.name, OLD.status, NEW.status, p.outcome, p.exit_code,
        coalesce(NEW.changed_by, 'sql'), p.session_name,
        {EVENT_MESSAGE.format(row="p")}
    FROM project_queue AS p WHERE p.id = NEW.id;
END;

CREATE TRIGGER project_queue_insert_event
AFTER INSERT ON project_queue
BEGIN
    INSERT INTO events (kind, project_id, project_name, new_status, source)
    VALUES ('queued', NEW.id, NEW.name, NEW.status, coalesce(NEW.changed_by, 'sql'));
    UPDATE project_queue SET changed_by = NULL WHERE id = NEW.id AND NEW.changed_by IS NOT NULL;
END;

CREATE TRIGGER project_queue_delete_event
AFTER DELETE ON project_queue
BEGIN
    INSERT INTO events (kind, project_id, project_name, old_status, source, session_name)
    VALUES ('removed', OLD.id, OLD.name, OLD.status, coalesce(OLD.changed_by, 'sql'),
            OLD.session_name);
END;
"""


_DELETE_REFUSED = f"tmo: {DELETE_REFUSED}"

#: Migration N (1-based) brings the schema from version N-1 to N.
MIGRATIONS: list[str] = [
    f"""
CREATE TABLE project_queue (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    name              TEXT NOT NULL,
    status            TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ({STATUSES})),
    priority          INTEGER NOT NULL DEFAULT 0,
    command           TEXT NOT NULL,              -- JSON array: the argv
    env               TEXT NOT NULL DEFAULT '{{}}', -- JSON object
    project_path      TEXT,
    spec_path         TEXT,
    session_name      TEXT,
    session_id        TEXT,                       -- tmux $id of the current attempt
    window_id         TEXT,                       -- tmux @id
    pane_pid          INTEGER,                    -- leader of the project's process group
    outcome           TEXT,
    exit_code         INTEGER,
    error_message     TEXT,
    enqueued_at       TEXT NOT NULL DEFAULT ({NOW}),
    started_at        TEXT,
    completed_at      TEXT,
    session_closed_at TEXT,                       -- set once, by whoever cleans the session up
    attempt           INTEGER NOT NULL DEFAULT 0,
    retry_count       INTEGER NOT NULL DEFAULT 0,
    max_retries       INTEGER NOT NULL DEFAULT 0,
    retry_delay       REAL NOT NULL DEFAULT 0,
    not_before        TEXT,
    timeout           REAL,
    idle_timeout      REAL,
    host              TEXT,
    changed_by        TEXT                        -- writer of the current change; cleared by trigger
);
CREATE INDEX project_queue_claim ON project_queue (status, priority DESC, enqueued_at, id);
CREATE INDEX project_queue_open_sessions ON project_queue (session_closed_at)
    WHERE session_name IS NOT NULL AND session_closed_at IS NULL;

CREATE TABLE events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            TEXT NOT NULL DEFAULT ({NOW}),
    kind          TEXT NOT NULL,
    project_id    INTEGER,
    project_name  TEXT,
    old_status    TEXT,
    new_status    TEXT,
    outcome       TEXT,
    exit_code     INTEGER,
    source        TEXT NOT NULL,
    session_name  TEXT,
    message       TEXT
);
CREATE INDEX events_project ON events (project_id, id);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
    + transition_guard_sql()
    + status_event_sql(),
    # 2: sessions are identified by server instance + $id + name; whoever cleans a session up holds
    # a claim with an owner and a deadline; each host's daemon holds a lease in `hosts` (DESIGN.md
    # 7 and 8); a project may be pinned to a host or require host labels.
    f"""
ALTER TABLE project_queue ADD COLUMN server_instance TEXT; -- tmux server of the session: "pid.start"
ALTER TABLE project_queue ADD COLUMN runner TEXT;          -- "host:home key" of the daemon running it
ALTER TABLE project_queue ADD COLUMN pinned_host TEXT;     -- only this host may claim it (--host)
ALTER TABLE project_queue ADD COLUMN required_labels TEXT NOT NULL DEFAULT '[]'; -- JSON list (--requires)

CREATE TABLE cleanup_claims (
    session_key   TEXT PRIMARY KEY,                       -- server instance / $id / name
    project_id    INTEGER,
    attempt       INTEGER,
    session_name  TEXT NOT NULL,
    owner         TEXT NOT NULL,                          -- "host:pid:process start" of the cleaner
    deadline      TEXT NOT NULL,                          -- taken over only after this
    stage         TEXT NOT NULL DEFAULT 'claimed' CHECK (stage IN ('claimed', 'saved', 'signalled')),
    claimed_at    TEXT NOT NULL DEFAULT ({NOW})
);

-- A row whose session is still open holds a slot: deleting it would free the slot while the old
-- attempt's processes still run. Cancel it first; delete it once its session is closed.
CREATE TRIGGER project_queue_delete_guard
BEFORE DELETE ON project_queue
WHEN OLD.session_name IS NOT NULL AND OLD.session_closed_at IS NULL
BEGIN
    SELECT RAISE(ABORT, '{_DELETE_REFUSED}');
END;

CREATE TABLE hosts (
    name          TEXT PRIMARY KEY,                       -- TMO_HOST, default the hostname
    runner        TEXT NOT NULL,                          -- "host:home key" of its daemon
    home          TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    owner         TEXT NOT NULL,                          -- "machine:pid:process start" of the daemon
    labels        TEXT NOT NULL DEFAULT '[]',             -- JSON list (TMO_HOST_LABELS)
    concurrency   INTEGER NOT NULL DEFAULT 1,
    paused        INTEGER NOT NULL DEFAULT 0,
    started_at    TEXT NOT NULL DEFAULT ({NOW}),
    heartbeat_at  TEXT NOT NULL DEFAULT ({NOW}),          -- the database's clock
    stopped_at    TEXT,                                   -- its daemon stopped and gave the lease up
    expired_at    TEXT                                    -- its lease ran out: its projects were lost
);
""",
    # 3: messages sent to a running project's pane (`tmo send`), delivered once by its daemon.
    f"""
CREATE TABLE messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id    INTEGER NOT NULL,
    attempt       INTEGER NOT NULL,                       -- the attempt it was sent to
    kind          TEXT NOT NULL CHECK (kind IN ('text', 'keys')),
    body          TEXT NOT NULL,                          -- the text, or a JSON list of key names
    status        TEXT NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'delivering', 'delivered', 'failed')),
    reason        TEXT,                                   -- why it failed
    created_at    TEXT NOT NULL DEFAULT ({NOW}),
    delivered_at  TEXT,
    tries         INTEGER NOT NULL DEFAULT 0              -- Enter presses (text) or sends (keys)
);
CREATE INDEX messages_pending ON messages (status, project_id, id);
""",
    # 4: the agent state of a running project (agent_state.py): what it does, since when, and which
    # source decided. A status change resets it (unknown on start, none once ended or requeued),
    # whoever makes the change.
    f"""
ALTER TABLE project_queue ADD COLUMN agent_state TEXT CHECK (agent_state IN ({AGENT_STATES}));
ALTER TABLE project_queue ADD COLUMN agent_state_since TEXT;
ALTER TABLE project_queue ADD COLUMN agent_state_source TEXT
    CHECK (agent_state_source IN ({STATE_SOURCES}));
UPDATE project_queue SET agent_state = 'unknown', agent_state_since = {NOW} WHERE status = 'processing';

CREATE TRIGGER project_queue_agent_state_reset
AFTER UPDATE OF status ON project_queue
WHEN NEW.status IS NOT OLD.status
BEGIN
    UPDATE project_queue SET
        agent_state = CASE WHEN NEW.status = 'processing' THEN 'unknown' END,
        agent_state_since = CASE WHEN NEW.status = 'processing' THEN {NOW} END,
        agent_state_source = NULL
    WHERE id = NEW.id;
END;
""",
    # 5: conditional messages and check-ins (checkin.py): a message may wait for the agent to wait
    # (`tmo send --when-waiting`, and every check-in's message); a check-in is a schedule of one
    # project attempt, removed when that attempt stops running, whoever stops it.
    f"""
ALTER TABLE messages ADD COLUMN when_waiting INTEGER NOT NULL DEFAULT 0 CHECK (when_waiting IN (0, 1));
ALTER TABLE messages ADD COLUMN checkin_id INTEGER;       -- the check-in it was sent for
CREATE INDEX messages_checkin ON messages (checkin_id) WHERE checkin_id IS NOT NULL;
CREATE TABLE checkins (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id    INTEGER NOT NULL,
    attempt       INTEGER NOT NULL,
    every         REAL NOT NULL CHECK (typeof(every) IN ('real', 'integer') AND every > 0),  -- seconds
    body          TEXT NOT NULL,
    created_at    TEXT NOT NULL DEFAULT ({NOW})
);
CREATE TRIGGER project_queue_checkins_end
AFTER UPDATE OF status ON project_queue
WHEN NEW.status IS NOT OLD.status AND OLD.status = 'processing'
BEGIN
    DELETE FROM checkins WHERE project_id = NEW.id;
END;
CREATE TRIGGER project_queue_checkins_removed
AFTER DELETE ON project_queue
BEGIN
    DELETE FROM checkins WHERE project_id = OLD.id;
END;
""",
]

SCHEMA_VERSION = len(MIGRATIONS)

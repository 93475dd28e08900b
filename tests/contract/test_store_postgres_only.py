"""What only PostgreSQL has: its error messages (never a password), the commit-order lock held only at
COMMIT, which changes wake a daemon, time zones, a missing database, a server that does not answer."""

from __future__ import annotations

import re
import select
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from contract_support import PostgresBackend, add, claim, events

from tmux_orchestrator.config import load_settings
from tmux_orchestrator.errors import NoDatabase, StoreError
from tmux_orchestrator.redact import display_url, redact
from tmux_orchestrator.store import open_store
from tmux_orchestrator.store.base import Host
from tmux_orchestrator.store.postgres import PostgresStore
from tmux_orchestrator.testing import fresh_postgres_database, retry_until


@pytest.fixture
def pg() -> Iterator[PostgresBackend]:
    with fresh_postgres_database() as url:
        backend = PostgresBackend(url)
        try:
            yield backend
        finally:
            backend.close_all()


def _with_password(url: str, password: str) -> str:
    return re.sub(r"^(postgres(?:ql)?://)([^@/]*@)?", lambda m: f"{m.group(1)}postgres:{password}@", url)


def test_open_store_picks_postgres_for_both_url_schemes(pg: PostgresBackend, tmp_path: object) -> None:
    for url in (pg.url, pg.url.replace("postgresql://", "postgres://", 1)):
        store = open_store(load_settings(str(tmp_path), database_url=url))
        try:
            assert isinstance(store, PostgresStore)
            assert store.schema_version() >= 1
        finally:
            store.close()


@pytest.mark.parametrize("form", ["userinfo", "query"])
def test_errors_name_the_database_never_its_password(form: str) -> None:
    secret = "s3cr3t-Pa55"
    url = (f"postgresql://tmo:{secret}@127.0.0.1:1/queue" if form == "userinfo"
           else f"postgresql://tmo@127.0.0.1:1/queue?password={secret}&connect_timeout=5")
    with pytest.raises(StoreError) as info:
        PostgresStore(url)
    message = str(info.value)
    assert secret not in message
    assert "127.0.0.1:1/queue" in message and "\n" not in message
    assert display_url(url).startswith("postgresql://tmo@127.0.0.1:1/queue")
    # and once seen, the password is hidden from every log line of this process
    assert secret not in redact(f"connecting with {secret}")


def test_a_password_in_the_url_works_and_stays_out_of_messages(pg: PostgresBackend) -> None:
    # trust authentication ignores the password: what is checked is where it shows up
    store = PostgresStore(_with_password(pg.url, "hunter22"))
    try:
        assert "hunter22" not in store.name and store.name.startswith("postgresql://postgres@")
        with pytest.raises(StoreError) as info:
            store._db.write(lambda conn: conn.execute("SELECT * FROM no_such_table"))
        assert str(info.value).startswith(f"database {store.name}: ")
        assert "no_such_table" in str(info.value) and "hunter22" not in str(info.value)
    finally:
        store.close()


def test_a_trigger_refusal_keeps_its_own_text(pg: PostgresBackend) -> None:
    store = pg.open()
    assert isinstance(store, PostgresStore)
    pid = add(store)
    claim(store)
    with pytest.raises(StoreError) as info:
        store._db.write(lambda conn: conn.execute(f"DELETE FROM project_queue WHERE id = {pid}"))
    assert str(info.value).startswith("a project whose session is still open cannot be deleted")
    queued = add(store)
    with pytest.raises(StoreError, match=r"^status change not allowed \(allowed: queued -> "):
        store._db.write(lambda conn: conn.execute(
            f"UPDATE project_queue SET status = 'completed' WHERE id = {queued}"))


def test_a_missing_database(pg: PostgresBackend) -> None:
    missing = pg.url.rsplit("/", 1)[0] + "/tmo_no_such_database"
    with pytest.raises(NoDatabase, match=r"no database at .*tmo_no_such_database"):
        PostgresStore(missing, create=False)
    with pytest.raises(StoreError, match="create the database first"):
        PostgresStore(missing)


def test_another_programs_tables_are_refused(pg: PostgresBackend) -> None:
    pg.sql("CREATE TABLE events (id integer)")
    with pytest.raises(StoreError, match="another program"):
        pg.open()
    assert pg.query("SELECT count(*) FROM information_schema.tables WHERE table_name = 'project_queue'") == [
        (0,)]


def test_an_open_transaction_by_hand_blocks_no_one_and_commits_after_later_ids(pg: PostgresBackend) -> None:
    """The commit-order lock is taken at COMMIT: a psql session that keeps a transaction open blocks
    no other writer, and its event gets its id when it commits, after theirs."""
    store = pg.open()
    pid = add(store)
    conn = pg.connect()
    try:
        conn.execute("BEGIN")
        conn.execute(f"UPDATE project_queue SET status = 'cancelled' WHERE id = {pid}")
        [(pending,)] = conn.execute(f"SELECT id FROM events WHERE project_id = {pid} AND kind = 'cancelled'"
                                    ).fetchall()
        assert pending < 0  # its temporary id, seen by no one else
        store.append_event("daemon_started", source="daemon")  # does not wait for the open transaction
        other = store.last_event_id()
        assert [e.kind for e in store.events_after(0)] == ["queued", "daemon_started"]
        conn.execute("COMMIT")
    finally:
        conn.close()
    [cancelled] = events(store, pid, "cancelled")
    assert cancelled.id > other > 0


def test_only_changes_a_daemon_reads_wake_it(pg: PostgresBackend) -> None:
    """Heartbeats and the dispatcher's cursors and statistics notify no one; pause, concurrency,
    hosts, events and projects do."""
    pg.open().register_host(Host(name="h", runner="h:k", home="/h", pid=1, owner="o"),
                            holder_gone=lambda _: False)
    listener = psycopg.connect(pg.url, autocommit=True)
    listener.execute("LISTEN tmo")

    def notified_by(change: str) -> list[str]:
        pg.sql(change)
        pg.sql("SELECT pg_notify('tmo', 'fence')")  # committed after the change: delivered after it
        payloads: list[str] = []
        for note in listener.notifies(timeout=30):
            if note.payload == "fence":
                return payloads
            payloads.append(note.payload)
        raise AssertionError("the fence notification never came")

    try:
        assert notified_by("UPDATE hosts SET heartbeat_at = clock_timestamp()") == []
        assert notified_by("INSERT INTO settings (key, value) VALUES ('cursor.hook.x', '12')") == []
        assert notified_by("INSERT INTO settings (key, value) VALUES ('stats.end_detection', '[]')") == []
        assert notified_by("DELETE FROM settings WHERE key = 'cursor.hook.x'") == []
        assert notified_by("INSERT INTO settings (key, value) VALUES ('paused', '1')") == ["settings"]
        assert notified_by("DELETE FROM settings WHERE key = 'paused'") == ["settings"]
        assert notified_by("UPDATE hosts SET paused = 1") == ["hosts"]
        assert notified_by("UPDATE hosts SET concurrency = 4") == ["hosts"]
        assert notified_by("INSERT INTO events (kind, source) VALUES ('probe', 'sql')") == ["events"]
        # one per table and transaction, however many rows
        assert notified_by("INSERT INTO project_queue (name, command) SELECT 'x' || n, '[\"true\"]' "
                           "FROM generate_series(1, 50) AS n") == ["events", "project_queue"]
    finally:
        listener.close()


def test_times_are_utc_whatever_the_sessions_time_zone(pg: PostgresBackend,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGTZ", "America/New_York")
    store = pg.open()
    pid = add(store)
    project = store.get(pid)
    assert project.enqueued_at is not None and project.enqueued_at.tzinfo == UTC
    assert abs(project.enqueued_at - datetime.now(UTC)) < timedelta(minutes=5)
    assert events(store, pid)[0].at.tzinfo == UTC
    [(_, _, enqueued)] = store.list_columns(["id", "name", "enqueued_at"])
    assert enqueued == project.enqueued_at


def test_an_unreachable_test_server_fails_the_test_never_skips() -> None:
    with pytest.raises(pytest.fail.Exception, match="PostgreSQL does not answer at postgresql://"), \
            fresh_postgres_database("postgresql://postgres:pw@127.0.0.1:1/postgres?connect_timeout=5"):
        pass


def test_the_store_is_shared_by_threads(pg: PostgresBackend) -> None:
    store = pg.open()
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                pid = add(store, f"t{n}-{i}")
                store.get(pid)
                store.events_after(0, limit=5)
                store.changes_token()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert store.counts()["queued"] == 160


def test_connections_the_server_dropped_are_replaced(pg: PostgresBackend) -> None:
    """After a restart or a fail-over every pooled connection is dead: the next reads and writes run
    on new ones (a dead connection fails at BEGIN, before anything ran), and the LISTEN connection
    is opened again, which counts as a change."""
    store = pg.open()
    pid = add(store)
    token = store.changes_token()

    def drop_every_connection() -> None:
        pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
               "WHERE datname = current_database() AND pid <> pg_backend_pid()")

    drop_every_connection()
    assert store.get(pid).id == pid
    drop_every_connection()
    store.set_setting("after", "drop")
    assert store.get_setting("after") == "drop"
    retry_until(lambda: store.changes_token() > token, message="the LISTEN connection to be opened again")
    fd = store.change_fd()
    token = store.changes_token()
    pg.sql("INSERT INTO settings (key, value) VALUES ('paused', '1')")
    assert fd is not None and select.select([fd], [], [], 30)[0] == [fd]
    retry_until(lambda: store.changes_token() > token, message="a notification on the new connection")


def test_a_closed_store_says_so(pg: PostgresBackend) -> None:
    store = PostgresStore(pg.url)
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get(1)
    with pytest.raises(StoreError, match="closed"):
        store.changes_token()

"""Many writers at once on every backend: events seen exactly once in id order, claims never twice and
never past a limit, processes opening a new database together. No test here measures time: the
checks are on what was written and seen."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from contract_support import Backend, S, add, events

from tmux_orchestrator.project import Outcome
from tmux_orchestrator.store.base import Store

#: Writers by hand, transactions each, and writers through the API: the size of the exactly-once test.
RAW_WRITERS, RAW_TRANSACTIONS, API_WRITERS, API_ROUNDS = 4, 60, 2, 60


def _busy(backend: Backend) -> list[tuple[Any, ...]]:
    return backend.query(
        "SELECT host, count(*) FROM project_queue WHERE status = 'processing' "
        "OR (session_name IS NOT NULL AND session_closed_at IS NULL) GROUP BY host")


def test_events_are_seen_exactly_once_in_id_order_while_writers_commit_out_of_order(
    store: Store, backend: Backend,
) -> None:
    """Transactions by hand take event ids, sleep at random, then commit or roll back, while API
    writers add events and status changes and one reader follows with ``events_after(last id)``: the
    reader sees every committed event once, in id order, and nothing rolled back."""
    projects = [add(store, f"w{i}") for i in range(RAW_WRITERS + API_WRITERS)]
    first = store.last_event_id()
    done = threading.Event()
    committed: list[str] = []
    rolled_back: list[str] = []
    status_changes = Counter[int]()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def raw_writer(number: int) -> None:
        rng = random.Random(number)
        conn = backend.connect()
        status = "queued"
        try:
            for t in range(RAW_TRANSACTIONS):
                conn.execute(backend.begin)
                status_before = status
                mine: list[str] = []
                changes = 0
                for k in range(rng.randint(1, 3)):
                    if rng.random() < 0.3:
                        status = "cancelled" if status == "queued" else "queued"
                        conn.execute(f"UPDATE project_queue SET status = '{status}' "
                                     f"WHERE id = {projects[number]}")
                        changes += 1
                    else:
                        mine.append(f"raw-{number}-{t}-{k}")
                        conn.execute(f"INSERT INTO events (kind, source, message) "
                                     f"VALUES ('probe', 'sql', '{mine[-1]}')")
                    threading.Event().wait(rng.random() * 0.003)
                if rng.random() < 0.1:
                    conn.execute("ROLLBACK")
                    status = status_before
                    with lock:
                        rolled_back.extend(mine)
                    continue
                conn.execute("COMMIT")
                with lock:
                    committed.extend(mine)
                    status_changes[projects[number]] += changes
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            conn.close()

    def api_writer(number: int) -> None:
        own = backend.open()
        project_id = projects[RAW_WRITERS + number]
        try:
            for r in range(API_ROUNDS):
                message = f"api-{number}-{r}"
                own.append_event("probe", source="api", project=own.get(project_id), message=message)
                with lock:
                    committed.append(message)
                target = S.CANCELLED if r % 2 == 0 else S.QUEUED
                own.transition(project_id, target, source="api", outcome=Outcome.CANCELLED)
                with lock:
                    status_changes[project_id] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    seen: list[tuple[int, str | None]] = []

    def reader() -> None:
        own = backend.open()
        cursor = first
        try:
            while True:
                finished = done.is_set()  # read before the batch: a last batch after it drains all
                batch = own.events_after(cursor, limit=50)
                seen.extend((e.id, e.message) for e in batch)
                if batch:
                    cursor = batch[-1].id
                elif finished:
                    return
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    follower = threading.Thread(target=reader)
    follower.start()
    writers = [threading.Thread(target=raw_writer, args=(n,)) for n in range(RAW_WRITERS)]
    writers += [threading.Thread(target=api_writer, args=(n,)) for n in range(API_WRITERS)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
    done.set()
    follower.join(120)
    assert not errors, errors

    ids = [i for i, _ in seen]
    assert ids == sorted(set(ids)), "an event was seen twice or out of order"
    everything = store.events_after(first, limit=1_000_000)
    assert [e.id for e in everything] == ids, "the reader skipped events"
    assert all(i > 0 for i in ids)
    probes = Counter(m for _, m in seen if m and m.startswith(("raw-", "api-")))
    assert probes == Counter(committed)
    assert not set(rolled_back) & set(probes)
    changes = Counter(e.project_id for e in everything if e.new_status and e.old_status)
    assert changes == +status_changes
    print(f"exactly-once: {len(ids)} events seen by the follower, {len(committed)} probes, "
          f"{sum(status_changes.values())} status changes, {len(rolled_back)} probes rolled back")


def test_concurrent_claims_never_claim_twice(store: Store, backend: Backend) -> None:
    ids = [add(store, f"p{i}") for i in range(40)]
    stores = [backend.open() for _ in range(4)]
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(s: Store, host: str) -> None:
        while (project := s.claim_next(host=host, max_processing=1000)) is not None:
            with lock:
                claimed.append(project.id)

    threads = [threading.Thread(target=worker, args=(s, f"h{n % 2}")) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(claimed) == ids
    assert len(events(store, kind="started")) == 40


@pytest.mark.parametrize("global_limit", [None, 5])
def test_racing_claims_never_pass_a_limit(store: Store, backend: Backend, global_limit: int | None) -> None:
    """Three threads per host claim at once until nothing is left; a limit passed by two claims that
    both saw the last free slot would stay visible in the end state, so each round checks it."""
    hosts, per_host, limit = ["a", "b", "c", "d"], 3, 2
    ids = [add(store, f"p{i}") for i in range(40)]
    if global_limit is not None:
        store.set_setting("concurrency.global", str(global_limit))
    stores = {(h, n): backend.open() for h in hosts for n in range(per_host)}
    for _ in range(3):
        barrier = threading.Barrier(len(stores))
        claimed: list[tuple[str, int]] = []
        lock = threading.Lock()

        def worker(s: Store, host: str, barrier: threading.Barrier = barrier,
                   claimed: list[tuple[str, int]] = claimed, lock: threading.Lock = lock) -> None:
            barrier.wait()
            while (project := s.claim_next(host=host, max_processing=limit)) is not None:
                with lock:
                    claimed.append((host, project.id))

        threads = [threading.Thread(target=worker, args=(s, h)) for (h, _), s in stores.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        per = Counter(h for h, _ in claimed)
        assert len({i for _, i in claimed}) == len(claimed)
        assert all(n <= limit for n in per.values()), per
        busy = dict(_busy(backend))
        assert all(n <= limit for n in busy.values()), busy
        expected = len(hosts) * limit if global_limit is None else global_limit
        assert sum(per.values()) == sum(busy.values()) == expected
        for _, project_id in claimed:  # free every slot for the next round
            store.transition(project_id, S.COMPLETED, source="daemon", outcome=Outcome.EXITED, exit_code=0)
            store.close_session(project_id)
    started = Counter(e.project_id for e in events(store, kind="started"))
    assert set(started) <= set(ids) and set(started.values()) == {1}


def test_claims_with_churn_keep_every_limit(store: Store, backend: Backend) -> None:
    """Hosts claim, end and close projects at once while a monitor counts the slots in use over and
    over: no count ever passes a host's limit or the global one, and each project runs once."""
    hosts, limit, global_limit = ["a", "b", "c"], 2, 4
    ids = [add(store, f"p{i}") for i in range(60)]
    store.set_setting("concurrency.global", str(global_limit))
    done = threading.Event()
    worst: dict[str, int] = {}
    worst_total = 0
    errors: list[BaseException] = []

    def monitor() -> None:
        nonlocal worst_total
        while not done.is_set():
            busy = dict(_busy(backend))
            for host, n in busy.items():
                worst[host] = max(worst.get(host, 0), n)
            worst_total = max(worst_total, sum(busy.values()))

    def worker(host: str, seed: int) -> None:
        own = backend.open()
        rng = random.Random(seed)
        try:
            while True:
                project = own.claim_next(host=host, max_processing=limit)
                if project is None:
                    if own.counts()["queued"] == 0:
                        return
                    threading.Event().wait(0.001)
                    continue
                threading.Event().wait(rng.random() * 0.005)
                own.transition(project.id, S.COMPLETED, source="daemon", outcome=Outcome.EXITED, exit_code=0)
                own.close_session(project.id)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    watcher = threading.Thread(target=monitor)
    watcher.start()
    threads = [threading.Thread(target=worker, args=(h, n)) for n, h in enumerate(hosts * 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    done.set()
    watcher.join(30)
    assert not errors, errors
    assert all(n <= limit for n in worst.values()), worst
    assert worst_total <= global_limit
    started = Counter(e.project_id or 0 for e in events(store, kind="started"))
    assert sorted(started) == ids and set(started.values()) == {1}


_PROCESS = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tmux_orchestrator.store.base import NewProject
    from tmux_orchestrator.store.postgres import PostgresStore
    from tmux_orchestrator.store.sqlite import SqliteStore

    url, go, worker, count = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    deadline = time.monotonic() + 30
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.001)
    # Every process opens the database (not yet created) at the same moment.
    store = SqliteStore(url[len("sqlite:///"):]) if url.startswith("sqlite:") else PostgresStore(url)
    for i in range(count):
        store.enqueue(NewProject(command=["true"], name=f"w{worker}-{i}"), source=f"w{worker}")
    while (project := store.claim_next(host=f"h{worker}", max_processing=1000)) is not None:
        print(project.id, flush=True)
    store.close()
    """
)


def test_processes_opening_a_new_database_at_once_lose_nothing(backend: Backend, tmp_path: Path) -> None:
    """Processes create the schema together (SQLite's write lock, PostgreSQL's advisory lock), each
    queues 50 projects, then all claim: every project queued once and claimed by exactly one."""
    workers, count = 4, 50
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", _PROCESS, backend.url, str(go), str(w), str(count)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for w in range(workers)
    ]
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "locked" not in err
    store = backend.open()
    projects = store.list_projects()
    assert len(projects) == workers * count
    assert {p.name for p in projects} == {f"w{w}-{i}" for w in range(workers) for i in range(count)}
    queued = events(store, kind="queued")
    assert len(queued) == workers * count
    assert {e.source for e in queued} == {f"w{w}" for w in range(workers)}
    claimed = [int(line) for out, _ in outputs for line in out.split()]
    assert sorted(claimed) == sorted(p.id for p in projects)
    assert {p.status for p in projects} == {S.PROCESSING}

"""Host leases on every backend: register, heartbeat, give up, take over, expire (DESIGN.md 8)."""

from __future__ import annotations

import threading

from contract_support import Backend, S, add, claim, events

from tmux_orchestrator.project import Outcome
from tmux_orchestrator.store.base import Host, Store


def _host(name: str = "h1", owner: str = "m1:100:1", **kw: object) -> Host:
    return Host(name=name, runner=f"{name}:key", home=f"/home/{name}", pid=100, owner=owner, **kw)  # type: ignore[arg-type]


def _never_gone(_: Host) -> bool:
    return False


def _gone(_: Host) -> bool:
    return True


def test_register_heartbeat_and_list(store: Store) -> None:
    assert store.register_host(_host(labels=["gpu", "big"], concurrency=3), holder_gone=_never_gone) is None
    [host] = store.hosts()
    assert (host.name, host.runner, host.home, host.pid, host.owner) == ("h1", "h1:key", "/home/h1", 100,
                                                                         "m1:100:1")
    assert (host.labels, host.concurrency, host.paused) == (["big", "gpu"], 3, False)
    assert host.started_at is not None and host.heartbeat_at is not None
    assert host.stopped_at is None and host.expired_at is None
    assert host.silent_for is not None and 0 <= host.silent_for < 60
    assert store.heartbeat("h1", "m1:100:1") is True
    assert store.heartbeat("h1", "someone else") is False
    assert store.heartbeat("nobody", "m1:100:1") is False
    assert host.to_dict()["started_at"].endswith("+00:00")


def test_a_live_holder_keeps_its_lease_a_dead_one_loses_it(store: Store) -> None:
    store.register_host(_host(), holder_gone=_never_gone)
    holder = store.register_host(_host(owner="m2:200:2"), holder_gone=_never_gone)
    assert holder is not None and holder.owner == "m1:100:1"
    seen: list[Host] = []

    def gone(current: Host) -> bool:
        seen.append(current)
        return True

    assert store.register_host(_host(owner="m2:200:2"), holder_gone=gone) is None
    assert [h.owner for h in seen] == ["m1:100:1"]
    assert store.heartbeat("h1", "m1:100:1") is False  # the old daemon must fence itself
    assert store.heartbeat("h1", "m2:200:2") is True
    assert [h.owner for h in store.hosts()] == ["m2:200:2"]


def test_unregister_gives_the_lease_up_and_keeps_the_row(store: Store) -> None:
    store.register_host(_host(), holder_gone=_never_gone)
    store.unregister_host("h1", "another owner")
    assert store.hosts()[0].stopped_at is None
    store.unregister_host("h1", "m1:100:1")
    [host] = store.hosts()
    assert host.stopped_at is not None
    assert store.heartbeat("h1", "m1:100:1") is False
    # a stopped lease is free: anyone takes it without asking whether its holder lives
    assert store.register_host(_host(owner="m3:300:3"), holder_gone=_never_gone) is None
    [host] = store.hosts()
    assert host.owner == "m3:300:3" and host.stopped_at is None


def test_concurrency_and_pause_are_kept_across_registrations(store: Store) -> None:
    store.register_host(_host(concurrency=2), holder_gone=_never_gone)
    store.set_host("h1", concurrency=5)
    store.set_host("h1", paused=True)
    store.register_host(_host(owner="m9:1:1", concurrency=1, labels=["new"]), holder_gone=_gone)
    [host] = store.hosts()
    assert (host.concurrency, host.paused, host.labels, host.owner) == (5, True, ["new"], "m9:1:1")
    store.set_host("h1", paused=False)
    assert store.hosts()[0].paused is False


def test_expire_hosts_fails_a_silent_hosts_projects_lost(store: Store, backend: Backend) -> None:
    store.register_host(_host("dead"), holder_gone=_never_gone)
    store.register_host(_host("alive", owner="m2:1:1"), holder_gone=_never_gone)
    running = add(store, "running")
    ended = add(store, "ended")
    elsewhere = add(store, "elsewhere")
    waiting = add(store, "waiting")
    claim(store, host="dead")
    claim(store, host="dead")
    claim(store, host="alive")
    store.transition(ended, S.COMPLETED, source="daemon", outcome=Outcome.EXITED, exit_code=0)
    assert store.expire_hosts(30, source="daemon") == []  # everyone heartbeats
    backend.sql("UPDATE hosts SET heartbeat_at = '2000-01-01 00:00:00.000' WHERE name = 'dead'")
    [silent] = [h for h in store.hosts() if h.name == "dead"]
    assert silent.silent_for is not None and silent.silent_for > 86400
    failed = store.expire_hosts(30, source="daemon")
    assert [p.id for p in failed] == [running]
    [lost] = failed
    assert (lost.status, lost.outcome, lost.error_message) == (
        S.FAILED, Outcome.LOST, "lost: host dead stopped renewing its lease")
    assert lost.session_closed_at is not None and lost.completed_at is not None
    # the ended row's session is closed too: the dead host cleans up what is left when it returns
    assert store.get(ended).session_closed_at is not None
    assert store.get(elsewhere).status == S.PROCESSING and store.get(elsewhere).session_closed_at is None
    assert store.get(waiting).status == S.QUEUED
    [dead] = [h for h in store.hosts() if h.name == "dead"]
    assert dead.expired_at is not None
    assert store.heartbeat("dead", "m1:100:1") is False
    last = events(store, running)[-1]
    assert (last.kind, last.source, last.outcome) == ("failed", "daemon", "lost")
    assert store.expire_hosts(30, source="daemon") == []  # once only
    # the dead host's daemon comes back: it takes its lease again (an expired lease is free)
    assert store.register_host(_host("dead", owner="m1:101:5"), holder_gone=_never_gone) is None
    assert [h.expired_at for h in store.hosts() if h.name == "dead"] == [None]


def test_stopped_hosts_do_not_expire(store: Store, backend: Backend) -> None:
    store.register_host(_host(), holder_gone=_never_gone)
    add(store)
    claim(store, host="h1")
    store.unregister_host("h1", "m1:100:1")
    backend.sql("UPDATE hosts SET heartbeat_at = '2000-01-01 00:00:00.000'")
    assert store.expire_hosts(30, source="daemon") == []
    assert store.hosts()[0].expired_at is None


def test_daemons_registering_one_host_at_once_get_one_lease(store: Store, backend: Backend) -> None:
    stores = [backend.open() for _ in range(6)]
    barrier = threading.Barrier(len(stores))
    results: dict[str, Host | None] = {}

    def register(s: Store, owner: str) -> None:
        barrier.wait()
        results[owner] = s.register_host(_host(owner=owner), holder_gone=_never_gone)

    threads = [threading.Thread(target=register, args=(s, f"m{n}:1:1")) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [owner for owner, holder in results.items() if holder is None]
    assert len(winners) == 1
    assert {holder.owner for holder in results.values() if holder is not None} == set(winners)
    assert [h.owner for h in store.hosts()] == winners


def test_hosts_expiring_one_dead_host_at_once_fail_its_projects_once(store: Store, backend: Backend) -> None:
    store.register_host(_host("dead"), holder_gone=_never_gone)
    ids = [add(store) for _ in range(3)]
    for _ in ids:
        claim(store, host="dead")
    backend.sql("UPDATE hosts SET heartbeat_at = '2000-01-01 00:00:00.000'")
    stores = [backend.open() for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    failed: list[int] = []

    def expire(s: Store) -> None:
        barrier.wait()
        failed.extend(p.id for p in s.expire_hosts(30, source="daemon"))

    threads = [threading.Thread(target=expire, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(failed) == ids
    assert len(events(store, kind="failed")) == 3

"""Clean-up claims on every backend: owners, deadlines, stages kept on takeover, finishing in one go."""

from __future__ import annotations

from contract_support import S, add, claim, events

from tmux_orchestrator.project import Outcome
from tmux_orchestrator.store.base import Claim, Store, session_key


def _alive(_: str) -> bool:
    return False


def _dead(_: str) -> bool:
    return True


def _claim(store: Store, project_id: int | None = None, *, current: bool = False, name: str = "s-1") -> Claim:
    attempt = store.get(project_id).attempt if project_id else None
    return Claim(key=session_key("1.2", "$1", name), session_name=name, project_id=project_id,
                 attempt=attempt, current=current)


def test_claim_is_held_by_one_owner_until_its_deadline(store: Store) -> None:
    c = _claim(store)
    assert store.claim_cleanup([c], owner="A", ttl=60, owner_gone=_alive) == {c.key: "claimed"}
    assert store.claim_cleanup([c], owner="B", ttl=60, owner_gone=_alive) == {}
    assert store.claim_cleanup([c], owner="A", ttl=60, owner_gone=_alive) == {c.key: "claimed"}  # renewed
    [row] = store.claims()
    assert (row["session_key"], row["owner"], row["stage"], row["session_name"]) == (c.key, "A", "claimed",
                                                                                        "s-1")
    assert isinstance(row["deadline"], str) and isinstance(row["claimed_at"], str)


def test_takeover_keeps_the_stage(store: Store) -> None:
    c = _claim(store)
    store.claim_cleanup([c], owner="A", ttl=60, owner_gone=_alive)
    assert store.advance_claim(c.key, owner="A", stage="saved", event=None, source="daemon") is True
    # the owner is known dead: taken over at once, the backup is not made twice
    asked: list[str] = []

    def gone(owner: str) -> bool:
        asked.append(owner)
        return True

    assert store.claim_cleanup([c], owner="B", ttl=60, owner_gone=gone) == {c.key: "saved"}
    assert asked == ["A"]
    assert store.advance_claim(c.key, owner="A", stage="signalled", event=None, source="daemon") is False
    assert store.claims()[0]["owner"] == "B"


def test_an_expired_deadline_lets_anyone_take_over(store: Store) -> None:
    c = _claim(store)
    store.claim_cleanup([c], owner="A", ttl=0, owner_gone=_alive)
    store.advance_claim(c.key, owner="A", stage="signalled", event=None, source="daemon")
    assert store.claim_cleanup([c], owner="B", ttl=60, owner_gone=_alive) == {c.key: "signalled"}


def test_release_gives_the_claim_back_at_once(store: Store) -> None:
    c = _claim(store)
    store.claim_cleanup([c], owner="A", ttl=600, owner_gone=_alive)
    store.release_claim(c.key, owner="B")  # not B's: nothing happens
    assert store.claim_cleanup([c], owner="B", ttl=60, owner_gone=_alive) == {}
    store.release_claim(c.key, owner="A")
    assert store.claim_cleanup([c], owner="B", ttl=60, owner_gone=_alive) == {c.key: "claimed"}


def test_advance_writes_its_event_only_for_the_owner(store: Store) -> None:
    pid = add(store)
    claim(store)
    project = store.get(pid)
    c = _claim(store, pid, current=True, name=project.session_name or "")
    store.claim_cleanup([c], owner="A", ttl=60, owner_gone=_alive)
    before = store.last_event_id()
    event = ("output_saved", project, project.session_name, "saved 10 bytes")
    assert store.advance_claim(c.key, owner="B", stage="saved", event=event, source="daemon") is False
    assert store.last_event_id() == before
    assert store.advance_claim(c.key, owner="A", stage="saved", event=event, source="daemon") is True
    [saved] = store.events_after(before)
    assert (saved.kind, saved.project_id, saved.message, saved.source) == (
        "output_saved", pid, "saved 10 bytes", "daemon")
    assert store.claims()[0]["stage"] == "saved"


def test_a_current_session_is_claimed_only_while_its_row_has_it_open(store: Store) -> None:
    pid = add(store)
    claim(store)
    project = store.get(pid)
    c = _claim(store, pid, current=True, name=project.session_name or "")
    stale = Claim(key=c.key, session_name=c.session_name, project_id=pid, attempt=99, current=True)
    assert store.claim_cleanup([stale], owner="A", ttl=60, owner_gone=_alive) == {}
    store.close_session(pid)
    assert store.claim_cleanup([c], owner="A", ttl=60, owner_gone=_alive) == {}
    assert store.claims() == []


def test_finish_closes_the_session_drops_the_claim_and_writes_events(store: Store) -> None:
    pid = add(store)
    claim(store)
    store.transition(pid, S.CANCELLED, source="api", outcome=Outcome.CANCELLED)
    project = store.get(pid)
    c = _claim(store, pid, current=True, name=project.session_name or "")
    other = _claim(store, name="orphan")
    assert store.claim_cleanup([c, other], owner="A", ttl=60, owner_gone=_alive) == {
        c.key: "claimed", other.key: "claimed"}
    before = store.last_event_id()
    store.finish_cleanup(c.key, close=(pid, project.attempt), source="daemon",
                         events=[("session_killed", project, project.session_name, "ended after SIGTERM")])
    assert store.get(pid).session_closed_at is not None
    assert [row["session_key"] for row in store.claims()] == [other.key]
    written = [(e.kind, e.message) for e in store.events_after(before)]
    assert written == [("session_killed", "ended after SIGTERM")]
    # a late finish of an older attempt closes nothing of the current one
    store.finish_cleanup(other.key, close=(pid, project.attempt + 5), events=[], source="daemon")
    assert store.claims() == []
    assert events(store, pid, "session_killed")[0].session_name == project.session_name


def test_drop_claims_forgets_the_given_keys(store: Store) -> None:
    keys = [_claim(store, name=f"s{i}") for i in range(3)]
    store.claim_cleanup(keys, owner="A", ttl=60, owner_gone=_dead)
    store.drop_claims([keys[0].key, keys[2].key, "no/such/key"])
    assert [row["session_key"] for row in store.claims()] == [keys[1].key]
    store.drop_claims([])
    assert len(store.claims()) == 1

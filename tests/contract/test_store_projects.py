"""The Store contract on every backend: queue order, claiming, transitions, sessions, events, settings."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from contract_support import Backend, S, add, claim, events, kinds

from tmux_orchestrator.errors import InvalidTransition, ProjectNotFound
from tmux_orchestrator.project import Outcome
from tmux_orchestrator.store.base import NewProject, Store
from tmux_orchestrator.store.rows import iso_time

# -- enqueue, get, list ------------------------------------------------------------------------


def test_enqueue_and_get_round_trip(store: Store) -> None:
    new = NewProject(
        command=["claude", "-p", "spec with spaces.md", "$HOME"], name="my project", priority=5,
        project_path="/tmp/x", spec_path="/tmp/x/spec.md", env={"A": "1", "B": "two words"},
        max_retries=2, retry_delay=1.5, timeout=60.0, idle_timeout=30.0, pinned_host="h2",
        required_labels=["gpu", "big", "gpu"],
    )
    created = store.enqueue(new, source="cli")
    got = store.get(created.id)
    assert got == created
    assert got.status == S.QUEUED
    assert got.command == ["claude", "-p", "spec with spaces.md", "$HOME"]
    assert got.name == "my project"
    assert got.env == {"A": "1", "B": "two words"}
    assert (got.priority, got.max_retries, got.retry_delay) == (5, 2, 1.5)
    assert (got.timeout, got.idle_timeout) == (60.0, 30.0)
    assert (got.pinned_host, got.required_labels) == ("h2", ["big", "gpu"])
    assert got.enqueued_at is not None and abs(datetime.now(UTC) - got.enqueued_at) < timedelta(seconds=30)
    assert got.enqueued_at.tzinfo == UTC
    assert got.attempt == 0 and got.session_name is None and got.outcome is None
    assert got.raw == {}


def test_enqueue_without_name_names_it_after_its_id(store: Store) -> None:
    project = store.enqueue(NewProject(command=["true"]), source="api")
    assert project.name == f"project-{project.id}"
    assert store.get(project.id).name == f"project-{project.id}"


def test_enqueue_many_returns_in_order_with_one_event_each(store: Store) -> None:
    news = [NewProject(command=["true"], name=f"n{i}" if i % 2 else "") for i in range(50)]
    projects = store.enqueue_many(news, source="cli")
    assert [p.id for p in projects] == sorted(p.id for p in projects)
    assert [p.name for p in projects] == [f"n{i}" if i % 2 else f"project-{p.id}"
                                          for i, p in enumerate(projects)]
    queued = [(e.project_id, e.source) for e in events(store, kind="queued")]
    assert queued == [(p.id, "cli") for p in projects]
    assert store.enqueue_many([], source="cli") == []


def test_get_unknown_raises_project_not_found(store: Store) -> None:
    for project_id in (999, 0, -1, 2**63):
        with pytest.raises(ProjectNotFound) as info:
            store.get(project_id)
        assert info.value.project_id == project_id


def test_list_order_processing_first_then_priority_then_age(store: Store) -> None:
    a = add(store, "a", 0)
    b = add(store, "b", 5)
    c = add(store, "c", 5)
    d = add(store, "d", -1)
    e = add(store, "e", 0)
    assert claim(store) == b  # highest priority, oldest
    assert claim(store) == c
    store.transition(c, S.COMPLETED, source="api")
    f = add(store, "f", 100)
    store.transition(f, S.CANCELLED, source="api")
    order = [p.id for p in store.list_projects()]
    # processing, then queued by priority desc and age, then ended newest first
    assert order == [b, a, e, d, f, c]
    assert [r[0] for r in store.list_columns(["id"])] == order


def test_list_filters_by_status_and_limits(store: Store) -> None:
    ids = [add(store, str(i)) for i in range(5)]
    claim(store)
    assert [p.id for p in store.list_projects([S.QUEUED])] == ids[1:]
    assert [p.id for p in store.list_projects([S.PROCESSING])] == ids[:1]
    assert len(store.list_projects(limit=2)) == 2
    assert [r[0] for r in store.list_columns(["id"], [S.QUEUED], limit=2)] == ids[1:3]
    assert store.counts() == {"queued": 4, "processing": 1, "completed": 0, "failed": 0, "cancelled": 0}


def test_list_columns_gives_the_cli_what_it_needs(store: Store) -> None:
    queued = add(store, "q")
    ran = add(store, "r", 5)
    claim(store)
    store.transition(ran, S.COMPLETED, source="api", outcome=Outcome.EXITED, exit_code=0)
    rows = {r[0]: r for r in store.list_columns(["id", "age_s", "runtime_s", "enqueued_at", "command"])}
    for pid in (queued, ran):
        _, age, _, enqueued, command = rows[pid]
        assert isinstance(age, float) and 0 <= age < 60
        text = iso_time(enqueued)
        assert text is not None and text.endswith("+00:00")
        assert abs(datetime.fromisoformat(text) - store.get(pid).enqueued_at) < timedelta(milliseconds=1)  # type: ignore[operator]
        assert json.loads(command) == ["true"]
    assert rows[queued][2] is None
    assert isinstance(rows[ran][2], float) and rows[ran][2] >= 0
    with pytest.raises(ValueError, match="not a listable column"):
        store.list_columns(["id", "password"])


# -- claim_next --------------------------------------------------------------------------------


def test_claim_next_sets_processing_fields(store: Store) -> None:
    pid = add(store, "Build #1: it's big")
    project = store.claim_next(host="host-a", max_processing=1, runner="host-a:abc")
    assert project is not None and project.id == pid
    assert project.status == S.PROCESSING
    assert project.attempt == 1
    assert (project.host, project.runner) == ("host-a", "host-a:abc")
    assert project.session_name == f"Build-1-it-s-big-{pid}"
    assert project.started_at is not None
    assert kinds(store, pid) == ["queued", "started"]
    assert events(store, pid)[-1].source == "daemon"


def test_claim_next_respects_max_processing(store: Store) -> None:
    add(store, "a")
    second = add(store, "b")
    claim(store, max_processing=1)
    assert store.claim_next(host="h", max_processing=1) is None
    assert store.get(second).status == S.QUEUED
    assert store.claim_next(host="h", max_processing=2) is not None


def test_claim_next_picks_highest_priority_then_oldest(store: Store) -> None:
    low = add(store, "low", 0)
    high1 = add(store, "high1", 10)
    mid = add(store, "mid", 5)
    high2 = add(store, "high2", 10)
    neg = add(store, "neg", -5)
    assert [claim(store) for _ in range(5)] == [high1, high2, mid, low, neg]
    assert store.claim_next(host="h", max_processing=100) is None


def test_claim_next_on_empty_queue_is_none(store: Store) -> None:
    assert store.claim_next(host="h", max_processing=1) is None


def test_claim_next_skips_projects_not_yet_due(store: Store, backend: Backend) -> None:
    later = add(store, "later", 10)
    claim(store)
    store.transition(later, S.FAILED, source="daemon", outcome=Outcome.EXITED, exit_code=1)
    store.close_session(later)
    store.transition(later, S.QUEUED, source="daemon", not_before=datetime.now(UTC) + timedelta(seconds=60))
    now = add(store, "now", 0)
    assert claim(store) == now  # the higher-priority one waits for its time
    assert store.claim_next(host="h", max_processing=100) is None
    due = store.next_due()
    assert due is not None and 50 < due <= 60
    # once due it is claimed, as attempt 2
    backend.sql(f"UPDATE project_queue SET not_before = '2000-01-01 00:00:00.000' WHERE id = {later}")
    project = store.claim_next(host="h", max_processing=100)
    assert project is not None and project.id == later and project.attempt == 2
    assert project.session_name == f"later-{later}-r2"
    assert store.next_due() is None


def test_claim_next_waits_for_previous_session_to_be_closed(store: Store) -> None:
    pid = add(store)
    claim(store)
    store.transition(pid, S.QUEUED, source="api")  # requeued while its session is still open
    assert store.claim_next(host="h", max_processing=10) is None
    assert store.close_session(pid)
    assert claim(store) == pid


def test_claim_next_passes_over_skipped_ids(store: Store) -> None:
    first = add(store, "first", 9)
    second = add(store, "second")
    project = store.claim_next(host="h", max_processing=9, skip=frozenset({first}))
    assert project is not None and project.id == second
    assert store.get(first).status == S.QUEUED


def test_claim_next_honours_pinned_host_and_required_labels(store: Store) -> None:
    pinned = add(store, "pinned", 9, pinned_host="other")
    gpu = add(store, "gpu", 8, required_labels=["gpu"])
    both = add(store, "both", 7, required_labels=["gpu", "big"])
    plain = add(store, "plain", 0)
    assert claim(store, host="h") == plain  # no label, not the pinned host
    assert store.claim_next(host="h", max_processing=9) is None
    project = store.claim_next(host="h", max_processing=9, labels=frozenset({"gpu"}))
    assert project is not None and project.id == gpu
    project = store.claim_next(host="h", max_processing=9, labels=frozenset({"gpu", "big", "x"}))
    assert project is not None and project.id == both
    project = store.claim_next(host="other", max_processing=9)
    assert project is not None and project.id == pinned and project.host == "other"


def test_per_host_limit_counts_open_sessions_and_rows_without_host(store: Store, backend: Backend) -> None:
    ids = [add(store, str(i)) for i in range(5)]
    claim(store, host="a")
    claim(store, host="b")
    # an ended project whose session is not confirmed gone still holds its slot
    store.transition(ids[0], S.COMPLETED, source="daemon", outcome=Outcome.EXITED, exit_code=0)
    assert store.claim_next(host="a", max_processing=1) is None
    store.close_session(ids[0])
    assert store.claim_next(host="a", max_processing=1) is not None
    # a running row of an older release has no host: it counts as every host's
    backend.sql(f"UPDATE project_queue SET host = NULL WHERE id = {ids[1]}")
    assert store.claim_next(host="c", max_processing=1) is None
    assert store.claim_next(host="c", max_processing=2) is not None


def test_global_limit_counts_every_host(store: Store) -> None:
    for i in range(6):
        add(store, str(i))
    store.set_setting("concurrency.global", "3")
    assert store.claim_next(host="a", max_processing=5) is not None
    assert store.claim_next(host="b", max_processing=5) is not None
    assert store.claim_next(host="c", max_processing=5) is not None
    assert store.claim_next(host="d", max_processing=5) is None
    store.set_setting("concurrency.global", " 4 ")
    assert store.claim_next(host="d", max_processing=5) is not None
    store.set_setting("concurrency.global", "no limit")  # not a number: no global limit
    assert store.claim_next(host="d", max_processing=5) is not None


# -- transitions -------------------------------------------------------------------------------


def test_transition_not_allowed_raises_and_changes_nothing(store: Store) -> None:
    pid = add(store)
    before = store.last_event_id()
    with pytest.raises(InvalidTransition) as info:
        store.transition(pid, S.COMPLETED, source="api")
    assert (info.value.old, info.value.new) == ("queued", "completed")
    assert store.get(pid).status == S.QUEUED
    assert store.last_event_id() == before


def test_transition_expected_mismatch_raises(store: Store) -> None:
    pid = add(store)
    claim(store)
    store.transition(pid, S.FAILED, source="daemon", outcome=Outcome.EXITED, exit_code=1)
    with pytest.raises(InvalidTransition):
        store.transition(pid, S.QUEUED, source="api", expected=S.CANCELLED)
    assert store.get(pid).status == S.FAILED


def test_transition_unknown_project_raises_not_found(store: Store) -> None:
    with pytest.raises(ProjectNotFound):
        store.transition(12345, S.CANCELLED, source="api")
    assert store.last_event_id() == 0


def test_transition_to_terminal_records_outcome_and_times(store: Store) -> None:
    pid = add(store)
    claim(store)
    failed = store.transition(pid, S.FAILED, source="daemon", outcome=Outcome.EXITED, exit_code=3,
                              error_message="exited with code 3")
    assert (failed.outcome, failed.exit_code) == (Outcome.EXITED, 3)
    assert failed.error_message == "exited with code 3"
    assert failed.completed_at is not None
    requeued = store.transition(pid, S.QUEUED, source="api")
    assert requeued.outcome is None and requeued.exit_code is None and requeued.completed_at is None
    assert requeued.started_at is None


def test_transition_options_count_retry_close_session_ended_at(store: Store) -> None:
    pid = add(store)
    claim(store)
    ended = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    project = store.transition(pid, S.FAILED, source="daemon", outcome=Outcome.SIGNAL, exit_code=137,
                               close_session=True, ended_at=ended)
    assert project.completed_at == ended and project.session_closed_at is not None
    later = datetime.now(UTC) + timedelta(minutes=5)
    project = store.transition(pid, S.QUEUED, source="daemon", count_retry=True, not_before=later,
                               error_message="retry 1")
    assert project.retry_count == 1 and project.error_message == "retry 1"
    assert project.not_before is not None and abs(project.not_before - later) < timedelta(milliseconds=1)


def test_every_api_status_change_writes_exactly_one_event(store: Store) -> None:
    pid = add(store, "ev")
    claim(store)
    store.transition(pid, S.FAILED, source="daemon", outcome=Outcome.EXITED, exit_code=2,
                     error_message="boom")
    store.close_session(pid)
    store.transition(pid, S.QUEUED, source="cli")
    claim(store)
    store.transition(pid, S.QUEUED, source="api")
    store.close_session(pid)
    claim(store)
    store.transition(pid, S.COMPLETED, source="daemon", outcome=Outcome.EXITED, exit_code=0)
    got = events(store, pid)
    assert [(e.kind, e.old_status, e.new_status, e.source) for e in got] == [
        ("queued", None, "queued", "api"),
        ("started", "queued", "processing", "daemon"),
        ("failed", "processing", "failed", "daemon"),
        ("retried", "failed", "queued", "cli"),
        ("started", "queued", "processing", "daemon"),
        ("requeued", "processing", "queued", "api"),
        ("started", "queued", "processing", "daemon"),
        ("completed", "processing", "completed", "daemon"),
    ]
    assert got[2].outcome == "exited" and got[2].exit_code == 2 and got[2].message == "boom"
    assert got[-1].outcome == "exited" and got[-1].exit_code == 0
    assert [e.id for e in got] == sorted(e.id for e in got)


def test_non_status_writes_write_no_status_events(store: Store) -> None:
    pid = add(store)
    claim(store)
    before = store.last_event_id()
    assert store.record_session(pid, session_id="$9", window_id="@9", pane_pid=99999, instance="1.2")
    store.set_setting("concurrency", "3")
    store.close_session(pid)
    assert store.last_event_id() == before
    project = store.get(pid)
    assert (project.session_id, project.window_id, project.pane_pid) == ("$9", "@9", 99999)
    assert project.server_instance == "1.2"


def test_record_session_of_an_attempt_that_no_longer_runs_is_refused(store: Store) -> None:
    pid = add(store)
    claim(store)
    store.transition(pid, S.CANCELLED, source="api", outcome=Outcome.CANCELLED)
    assert not store.record_session(pid, session_id="$1", window_id="@1", pane_pid=1, attempt=1)
    assert store.get(pid).session_id is None
    assert store.attempts([pid, 424242]) == {pid: ("cancelled", 1)}


# -- sessions, removal, settings ---------------------------------------------------------------


def test_close_session_returns_true_exactly_once(store: Store) -> None:
    pid = add(store)
    claim(store)
    assert store.close_session(pid) is True
    assert store.close_session(pid) is False
    assert store.get(pid).session_closed_at is not None


def test_close_session_true_for_exactly_one_of_many_racing_connections(
    store: Store, backend: Backend,
) -> None:
    pid = add(store)
    claim(store)
    stores = [backend.open() for _ in range(8)]
    results: list[bool] = []
    barrier = threading.Barrier(len(stores))

    def race(s: Store) -> None:
        barrier.wait()
        results.append(s.close_session(pid))

    threads = [threading.Thread(target=race, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [False] * 7 + [True]


def test_close_session_needs_a_session_and_matching_name(store: Store) -> None:
    pid = add(store)
    assert store.close_session(pid) is False  # never had a session
    claim(store)
    assert store.close_session(pid, "some-other-name") is False
    assert store.close_session(pid, store.get(pid).session_name) is True


def test_open_sessions_lists_unclosed_only(store: Store) -> None:
    a = add(store)
    b = add(store)
    add(store)
    claim(store)
    claim(store)
    store.close_session(a)
    assert [p.id for p in store.open_sessions()] == [b]
    assert store.count_unclosed_ended() == 0
    store.transition(b, S.CANCELLED, source="api", outcome=Outcome.CANCELLED)
    assert store.count_unclosed_ended() == 1
    assert set(store.find_by_session([store.get(b).session_name or "", "nothing"])) == {
        store.get(b).session_name}


def test_set_exit_code_only_fills_a_missing_code(store: Store) -> None:
    pid = add(store)
    claim(store)
    store.transition(pid, S.CANCELLED, source="api", outcome=Outcome.CANCELLED)
    store.set_exit_code(pid, 143)
    store.set_exit_code(pid, 0)
    project = store.get(pid)
    assert project.exit_code == 143 and project.status == S.CANCELLED


def test_remove_writes_removed_event(store: Store) -> None:
    pid = add(store, "gone")
    removed = store.remove(pid, source="cli")
    assert removed.id == pid
    with pytest.raises(ProjectNotFound):
        store.get(pid)
    last = events(store, pid)[-1]
    assert (last.kind, last.source, last.old_status) == ("removed", "cli", "queued")
    assert last.project_name == "gone"
    assert len(events(store, pid, "removed")) == 1
    with pytest.raises(ProjectNotFound):
        store.remove(pid, source="cli")


def test_remove_of_processing_project_is_refused(store: Store) -> None:
    pid = add(store)
    claim(store)
    before = store.last_event_id()
    with pytest.raises(InvalidTransition):
        store.remove(pid, source="cli")
    assert store.get(pid).status == S.PROCESSING
    store.transition(pid, S.CANCELLED, source="api", outcome=Outcome.CANCELLED)
    with pytest.raises(InvalidTransition, match="still being stopped"):
        store.remove(pid, source="cli")  # its session is not closed yet
    assert store.last_event_id() == before + 1


def test_append_event_and_filters(store: Store) -> None:
    a = add(store)
    b = add(store)
    store.append_event("session_killed", source="daemon", project=store.get(a), message="m")
    store.append_event("daemon_started", source="daemon")
    assert [e.kind for e in store.events_after(0, project_id=a)] == ["queued", "session_killed"]
    assert [e.project_id for e in store.events_after(0, kinds=["queued"])] == [a, b]
    assert [e.kind for e in store.events_after(0)][-1] == "daemon_started"
    assert len(store.events_after(0, limit=2)) == 2
    assert store.events_after(store.last_event_id()) == []
    store.append_events([("output_saved", store.get(b), "s-b", "saved"), ("orphan_found", None, "x", None)],
                        source="daemon")
    saved, orphan = store.events_after(0)[-2:]
    assert (saved.kind, saved.project_id, saved.session_name, saved.message, saved.new_status) == (
        "output_saved", b, "s-b", "saved", "queued")
    assert (orphan.kind, orphan.project_id, orphan.session_name) == ("orphan_found", None, "x")
    assert saved.at.tzinfo == UTC and saved.to_dict()["at"].endswith("+00:00")


def test_settings_round_trip(store: Store) -> None:
    assert store.get_setting("concurrency") is None
    assert store.get_setting("concurrency", "1") == "1"
    assert store.concurrency() == 1
    store.set_setting("concurrency", "2")
    store.set_setting("concurrency", "4")
    assert store.get_setting("concurrency") == "4"
    assert store.concurrency() == 4
    store.set_setting("concurrency", "-3")
    assert store.concurrency() == 1


def test_bad_hand_written_values_are_kept_raw_never_raised(store: Store, backend: Backend) -> None:
    pid = add(store)
    # valid JSON of the wrong shape: the one kind of bad value both backends can hold
    backend.sql(f"UPDATE project_queue SET command = '{{\"a\": 1}}', env = '[1]', "
                f"required_labels = '\"gpu\"' WHERE id = {pid}")
    project = store.get(pid)
    assert project.command == [] and project.env == {} and project.required_labels == []
    assert set(project.raw) == {"command", "env", "required_labels"}
    assert len(project.runnable_problems) == 3
    assert [p.id for p in store.list_projects()] == [pid]


def test_listed_rows_read_as_the_projects_json(store: Store, backend: Backend) -> None:
    # `tmo list --json` reads rows with project_dicts: exactly what Project.to_dict() gives
    from tmux_orchestrator.store.rows import PROJECT_COLUMNS, project_dicts

    add(store, "plain")
    add(store, "rich", 5, env={"K": "v \u00e9"}, timeout=7200.0, idle_timeout=1.5, retry_delay=30.0,
        max_retries=2, pinned_host="h", required_labels=["gpu"], project_path="/tmp/\u00fc", spec_path="/s")
    add(store, "runs")
    ran = claim(store, host="h")  # "rich" waits for a host labelled gpu
    store.transition(ran, S.FAILED, source="api", outcome=Outcome.EXITED, exit_code=3, error_message="boom")
    claim(store, host="h")
    bad = add(store, "bad")
    backend.sql(f"UPDATE project_queue SET command = '{{\"a\": 1}}', env = '[1]', "
                f"required_labels = '\"gpu\"' WHERE id = {bad}")
    rows = store.list_columns(PROJECT_COLUMNS.split(", "))
    expected = [p.to_dict() for p in store.list_projects()]
    assert project_dicts(rows) == expected
    assert [d["problems"] != [] for d in expected].count(True) == 1

"""Pure delivery rules: routes, loop safety, the circuit breaker, templates, signatures, hand-offs."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tmux_orchestrator.hooks import Breaker, HookSpec, Route, hook_environment, render, summarize
from tmux_orchestrator.stats import handoff_latencies, percentile
from tmux_orchestrator.store.base import Event
from tmux_orchestrator.webhooks import WebhookSpec, request_for, sign

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ev(event_id: int, kind: str, project_id: int | None = 1, *, ms: int = 0, source: str = "daemon",
       name: str = "build-api", old: str | None = None, **fields: Any) -> Event:
    return Event(id=event_id, at=T0 + timedelta(milliseconds=ms), kind=kind, source=source,
                 project_id=project_id, project_name=name if project_id else None, old_status=old,
                 **fields)


def hook(**route: Any) -> HookSpec:
    return HookSpec(name="h", route=Route(**route), argv=("true",))


def test_a_route_matches_kinds_or_star() -> None:
    assert Route(frozenset({"failed"})).matches(ev(1, "failed"))
    assert not Route(frozenset({"failed"})).matches(ev(1, "completed"))
    assert Route(frozenset({"*"})).matches(ev(1, "orphan_found", None))


def test_a_route_with_projects_matches_ids_or_name_globs_and_never_projectless_events() -> None:
    route = Route(frozenset({"*"}), frozenset({7}), ("build-*",))
    assert route.matches(ev(1, "failed", 7, name="other"))
    assert route.matches(ev(1, "failed", 8, name="build-web"))
    assert not route.matches(ev(1, "failed", 9, name="deploy"))
    assert not route.matches(ev(1, "daemon_started", None))


def test_hooks_never_run_for_changes_made_by_hooks_nor_for_delivery_events() -> None:
    spec = hook(kinds=frozenset({"*"}))
    assert spec.wants(ev(1, "completed"))
    assert not spec.wants(ev(1, "retried", source="hook"))
    for kind in ("hook_failed", "hook_suppressed", "webhook_failed", "email_failed", "hook_whatever"):
        assert not spec.wants(ev(1, kind))
    assert not hook(kinds=frozenset({"hook_failed"})).wants(ev(1, "hook_failed"))


def test_the_breaker_allows_limit_runs_per_window_and_reports_the_first_skip_once() -> None:
    breaker = Breaker(limit=3, window=60.0)
    assert [breaker.allow(1, now=t) for t in (0, 1, 2)] == [(True, False)] * 3
    assert breaker.allow(1, now=3) == (False, True)
    assert breaker.allow(1, now=4) == (False, False)
    assert breaker.allow(2, now=4) == (True, False), "another project has its own budget"
    assert breaker.allow(1, now=60.5) == (True, False), "the window slid past the first run"
    assert breaker.allow(1, now=61) == (True, False)
    assert breaker.allow(1, now=61.5) == (False, True), "a new streak is reported again"


def test_hook_environment_carries_the_event_home_and_the_hook_flag(tmp_path: Path) -> None:
    spec = HookSpec(name="n", route=Route(frozenset({"*"})), argv=("true",), env={"EXTRA": "1"})
    event = ev(5, "failed", 3, old="processing", new_status="failed", outcome="exited", exit_code=2,
               session_name="build-api-3", message="exited with code 2")
    env = hook_environment(spec, event, home=tmp_path, database_url="sqlite:///x.db")
    assert env["TMO_EVENT_ID"] == "5"
    assert env["TMO_EVENT_KIND"] == "failed"
    assert env["TMO_EVENT_PROJECT_ID"] == "3"
    assert env["TMO_EVENT_PROJECT_NAME"] == "build-api"
    assert (env["TMO_EVENT_OLD_STATUS"], env["TMO_EVENT_NEW_STATUS"]) == ("processing", "failed")
    assert (env["TMO_EVENT_OUTCOME"], env["TMO_EVENT_EXIT_CODE"]) == ("exited", "2")
    assert env["TMO_EVENT_SOURCE"] == "daemon"
    assert env["TMO_EVENT_SESSION_NAME"] == "build-api-3"
    assert env["TMO_EVENT_MESSAGE"] == "exited with code 2"
    assert (env["TMO_HOME"], env["TMO_HOOK"], env["TMO_HOOK_NAME"]) == (str(tmp_path), "1", "n")
    assert env["TMO_DATABASE_URL"] == "sqlite:///x.db"
    assert env["EXTRA"] == "1"
    assert "TMO_PROJECT_ID" not in env


def test_templates_fill_event_fields_and_escape_them_inside_json() -> None:
    event = ev(9, "failed", 4, name='say "hi"', outcome="timeout", message="timed out after 5s")
    assert render("${kind} of ${project_name} #${id}", event) == 'failed of say "hi" #9'
    body = json.loads(render('{"text": "${summary}"}', event, json_escape=True))
    assert body == {"text": summarize(event)}
    assert summarize(event) == 'project 4 (say "hi") failed: timeout - timed out after 5s'


def test_a_webhook_request_carries_the_event_json_and_its_hmac_signature() -> None:
    spec = WebhookSpec(url="http://127.0.0.1:1/x", route=Route(frozenset({"*"})), secret="k")
    request = request_for(spec, ev(3, "completed"))
    body = request.data
    assert isinstance(body, bytes)
    assert json.loads(body)["id"] == 3
    expected = "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert request.get_header("X-tmo-signature") == expected == sign("k", body)
    assert request.get_header("X-tmo-event-id") == "3"


def test_handoff_counts_only_starts_of_projects_that_waited_for_a_slot() -> None:
    events = [
        ev(1, "daemon_started", None, ms=0),
        ev(2, "queued", 1, ms=10),
        ev(3, "started", 1, ms=12),           # queued after the slot opened: not a hand-off
        ev(4, "queued", 2, ms=20),            # waits behind project 1
        ev(5, "completed", 1, ms=100, old="processing"),
        ev(6, "started", 2, ms=103),          # hand-off: 3 ms
        ev(7, "failed", 2, ms=200, old="processing"),
        ev(8, "retried", 2, ms=201),          # queued again after the slot opened: a retry delay
        ev(9, "started", 2, ms=5000),
    ]
    assert handoff_latencies(events) == [0.003]


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([], 0.5) is None


def test_an_unnamed_webhook_is_named_in_logs_without_its_secret_path() -> None:
    url = "https://hooks.slack.com/services/T000/B000/SECRET"
    spec = WebhookSpec(url=url, route=Route(frozenset({"*"})))
    assert spec.label == "https://hooks.slack.com/..."
    assert spec.cursor_key == f"cursor.webhook.{url}"
    assert WebhookSpec(url=url, route=Route(frozenset({"*"})), name="ops").label == "ops"

"""The recipes of docs/notifications.md and docs/events.md: valid config, and they work as written."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import threading
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tmux_orchestrator.dispatch import DeliveryConfig, load_delivery
from tmux_orchestrator.hooks import HookSpec, hook_environment, run_hook
from tmux_orchestrator.store.base import Event
from tmux_orchestrator.webhooks import post

DOCS = Path(__file__).resolve().parents[2] / "docs"
EVENT = Event(id=41, at=datetime(2026, 5, 1, 12, 0, tzinfo=UTC), kind="failed", source="daemon",
              project_id=7, project_name="nightly-build", old_status="processing", new_status="failed",
              outcome="exited", exit_code=2, session_name="nightly-build-7", message="exited with code 2")


def toml_blocks(name: str) -> list[str]:
    return re.findall(r"```toml\n(.*?)```", (DOCS / name).read_text(), flags=re.S)


def recipes(monkeypatch: pytest.MonkeyPatch) -> DeliveryConfig:
    """Every recipe of notifications.md read together, as one config.toml would."""
    monkeypatch.setenv("TMO_SMTP_PASSWORD", "pw")
    merged: dict[str, Any] = {}
    for block in toml_blocks("notifications.md"):
        for key, value in tomllib.loads(block).items():
            merged[key] = merged.get(key, []) + value if isinstance(value, list) else value
    return load_delivery(merged)


class Recorder:
    """A local HTTP server recording (method, path, headers, body) of every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def handle_any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                recorder.requests.append((self.command, self.path, dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_POST = do_PUT = handle_any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.server.shutdown()
    server.server.server_close()


def hook_named(config: DeliveryConfig, name: str) -> HookSpec:
    return next(h for h in config.hooks if h.name == name)


def test_every_toml_block_of_the_docs_is_a_valid_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMO_SMTP_PASSWORD", "pw")
    blocks = toml_blocks("notifications.md") + toml_blocks("events.md")
    assert len(blocks) >= 8
    for block in blocks:
        load_delivery(tomllib.loads(block))
    config = recipes(monkeypatch)
    assert {h.name for h in config.hooks} == {"desktop", "macos", "matrix", "archive"}
    assert {w.identity for w in config.webhooks} == {"slack", "discord"}
    assert {e.label for e in config.emails} == {"failures", "nightly-done"}


def test_the_desktop_recipe_does_nothing_and_succeeds_where_notify_send_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    spec = hook_named(recipes(monkeypatch), "desktop")
    env = hook_environment(spec, EVENT, home=tmp_path, database_url="sqlite:///x")
    env["PATH"] = str(tmp_path)  # nothing there: notify-send is absent
    result = run_hook(spec, EVENT, env, cwd=tmp_path)
    assert (result.ok, result.output) == (True, "")


def test_the_chat_templates_post_the_json_each_service_expects(
    monkeypatch: pytest.MonkeyPatch, recorder: Recorder,
) -> None:
    config = recipes(monkeypatch)
    for webhook in config.webhooks:
        assert post(dataclasses.replace(webhook, url=f"{recorder.base}/{webhook.label}"), EVENT).ok
    bodies = {path: json.loads(body) for _, path, _, body in recorder.requests}
    summary = "project 7 (nightly-build) failed: exited (2) - exited with code 2"
    assert bodies["/slack"]["text"].endswith(f": {summary}")
    assert bodies["/discord"] == {"content": f"tmo: {summary}"}


def test_the_matrix_recipe_puts_one_message_per_event_id(
    monkeypatch: pytest.MonkeyPatch, recorder: Recorder, tmp_path: Path,
) -> None:
    if shutil.which("curl") is None:
        pytest.skip("the Matrix recipe needs curl, which this machine lacks")
    spec = hook_named(recipes(monkeypatch), "matrix")
    spec = dataclasses.replace(spec, env={**spec.env, "MATRIX_HOMESERVER": recorder.base})
    env = hook_environment(spec, EVENT, home=tmp_path, database_url="sqlite:///x")
    env["MATRIX_TOKEN"] = "tok"
    result = run_hook(spec, EVENT, env, cwd=tmp_path)
    assert result.ok, result.output
    [(method, path, headers, body)] = recorder.requests
    assert method == "PUT"
    assert path == "/_matrix/client/v3/rooms/!abc:example.org/send/m.room.message/tmo-41"
    assert headers["Authorization"] == "Bearer tok"
    assert json.loads(body) == {"msgtype": "m.text", "body": "tmo: nightly-build failed (exited)"}


def test_the_archive_recipe_appends_the_event_as_one_json_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    spec = hook_named(recipes(monkeypatch), "archive")
    env = hook_environment(spec, EVENT, home=tmp_path, database_url="sqlite:///x")
    for _ in range(2):
        assert run_hook(spec, EVENT, env, cwd=tmp_path).ok
    lines = (tmp_path / "events-archive.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [EVENT.to_dict()] * 2

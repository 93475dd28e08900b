"""Webhooks POSTed by a real daemon to real local HTTP servers on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tmux_orchestrator.config import Settings, load_settings
from tmux_orchestrator.orchestrator import Orchestrator
from tmux_orchestrator.store.base import Event
from tmux_orchestrator.testing import DaemonThread, retry_until


class Receiver:
    """A local HTTP server that records every POST and answers with the given statuses, then 200."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.requests: list[tuple[float, dict[str, str], bytes]] = []
        self.statuses = list(statuses or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append((time.monotonic(), dict(self.headers.items()), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, _, body in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    """Start local HTTP receivers; all are shut down at the end of the test."""
    started: list[Receiver] = []

    def start(statuses: list[int] | None = None) -> Receiver:
        started.append(Receiver(statuses))
        return started[-1]

    yield start
    for server in started:
        server.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections but never answers (a hung endpoint)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield int(sock.getsockname()[1])
    sock.close()


def configure(settings: Settings, text: str) -> None:
    settings.config_path.write_text(text)
    settings.extra = load_settings(settings.home).extra


def events_of(orch: Orchestrator, kind: str) -> list[Event]:
    return orch.store.events_after(0, kinds=[kind], limit=100000)


def test_a_webhook_posts_the_event_json_signed_with_hmac_sha256(
    tmo_settings: Settings, orchestrator: Orchestrator, daemon_factory: Callable[..., DaemonThread],
    receiver: Callable[..., Receiver], tmp_path: Path,
) -> None:
    server = receiver()
    configure(tmo_settings, f"""
[[webhooks]]
name = "ops"
url = "{server.url}"
on = ["completed"]
secret = "s3cret"
""")
    daemon_factory()
    orchestrator.enqueue(["true"], name="signed", project_path=tmp_path)
    retry_until(lambda: server.requests, message="the POST")
    [completed] = events_of(orchestrator, "completed")
    [(_, headers, body)] = server.requests
    assert json.loads(body) == completed.to_dict()
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Tmo-Event"] == "completed"
    assert headers["X-Tmo-Event-Id"] == str(completed.id)
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Tmo-Signature"], expected)


def test_credentials_in_the_url_become_basic_authorization(
    tmo_settings: Settings, orchestrator: Orchestrator, daemon_factory: Callable[..., DaemonThread],
    receiver: Callable[..., Receiver], tmp_path: Path,
) -> None:
    # Found by an adversarial test: urllib took `user:pw@` for part of the host name.
    server = receiver()
    url = server.url.replace("http://", "http://ops:s%40cret@")
    configure(tmo_settings, f"""
[[webhooks]]
name = "authed"
url = "{url}"
on = ["completed"]
""")
    daemon_factory()
    orchestrator.enqueue(["true"], name="authed", project_path=tmp_path)
    retry_until(lambda: server.requests, message="the POST")
    [(_, headers, _)] = server.requests
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"ops:s@cret").decode()
    assert events_of(orchestrator, "webhook_failed") == []


def test_a_failing_endpoint_is_retried_with_exponential_backoff_until_it_answers(
    tmo_settings: Settings, orchestrator: Orchestrator, daemon_factory: Callable[..., DaemonThread],
    receiver: Callable[..., Receiver], tmp_path: Path,
) -> None:
    server = receiver([500, 503])
    configure(tmo_settings, f"""
[[webhooks]]
url = "{server.url}"
on = ["queued"]
max_attempts = 4
backoff = "0.3s"
""")
    orchestrator.pause()
    daemon_factory()
    orchestrator.enqueue(["true"], project_path=tmp_path)
    retry_until(lambda: len(server.requests) == 3, message="three attempts")
    times = [t for t, _, _ in server.requests]
    assert len({b["id"] for b in server.bodies()}) == 1, "the same event each time"
    first_gap, second_gap = times[1] - times[0], times[2] - times[1]
    assert first_gap >= 0.3
    assert second_gap >= 0.6
    [queued] = events_of(orchestrator, "queued")
    retry_until(lambda: orchestrator.store.get_setting(f"cursor.webhook.{server.url}") == str(queued.id),
                message="the cursor to pass the delivered event")
    assert events_of(orchestrator, "webhook_failed") == []


def test_a_client_error_answer_is_final_at_once_and_recorded(
    tmo_settings: Settings, orchestrator: Orchestrator, daemon_factory: Callable[..., DaemonThread],
    receiver: Callable[..., Receiver], tmp_path: Path,
) -> None:
    server = receiver([404])
    configure(tmo_settings, f"""
[[webhooks]]
name = "gone"
url = "{server.url}"
on = ["queued"]
max_attempts = 5
backoff = "0.1s"
""")
    orchestrator.pause()
    daemon_factory()
    project = orchestrator.enqueue(["true"], project_path=tmp_path)
    [failed] = retry_until(lambda: events_of(orchestrator, "webhook_failed"), message="webhook_failed")
    assert len(server.requests) == 1
    assert failed.project_id == project.id
    assert failed.message is not None and "HTTP 404" in failed.message and "after 1 attempt" in failed.message


def test_a_dead_endpoint_delays_neither_the_queue_nor_other_webhooks(
    tmo_settings: Settings, orchestrator: Orchestrator, daemon_factory: Callable[..., DaemonThread],
    receiver: Callable[..., Receiver], silent_port: int, tmp_path: Path,
) -> None:
    live = receiver()
    configure(tmo_settings, f"""
[[webhooks]]
name = "dead"
url = "http://127.0.0.1:{silent_port}/hook"
on = ["completed"]
timeout = "3s"
max_attempts = 2
backoff = "0.2s"
[[webhooks]]
name = "live"
url = "{live.url}"
on = ["completed"]
""")
    daemon_factory()
    ids = [orchestrator.enqueue(["true"], project_path=tmp_path).id for _ in range(3)]
    retry_until(lambda: len(live.requests) == 3, message="the live webhook to get every end")
    assert sorted(b["project_id"] for b in live.bodies()) == ids
    assert all(orchestrator.get(i).status.value == "completed" for i in ids)
    assert events_of(orchestrator, "webhook_failed") == [], "the dead one is still on its first event"
    failed = retry_until(lambda: events_of(orchestrator, "webhook_failed"), timeout=20,
                         message="the dead webhook to give up on its first event")
    assert failed[0].message is not None and "webhook dead failed" in failed[0].message
    assert "after 2 attempt(s)" in failed[0].message


def test_a_webhook_cursor_is_kept_across_a_restart_so_nothing_is_posted_twice(
    tmo_settings: Settings, orchestrator: Orchestrator, daemon_factory: Callable[..., DaemonThread],
    receiver: Callable[..., Receiver], tmp_path: Path,
) -> None:
    server = receiver()
    configure(tmo_settings, f"""
[[webhooks]]
name = "once"
url = "{server.url}"
on = ["queued"]
""")
    orchestrator.pause()
    first = daemon_factory()
    orchestrator.enqueue(["true"], project_path=tmp_path)
    retry_until(lambda: len(server.requests) == 1, message="the first POST")
    first.stop()
    orchestrator.enqueue(["true"], project_path=tmp_path)
    daemon_factory()
    retry_until(lambda: len(server.requests) == 2, message="the POST after the restart")
    assert [b["id"] for b in server.bodies()] == [e.id for e in events_of(orchestrator, "queued")]


def test_a_template_turns_the_event_into_a_chat_message(
    tmo_settings: Settings, orchestrator: Orchestrator, daemon_factory: Callable[..., DaemonThread],
    receiver: Callable[..., Receiver], tmp_path: Path,
) -> None:
    server = receiver()
    configure(tmo_settings, f"""
[[webhooks]]
name = "chat"
url = "{server.url}"
on = ["failed"]
template = '{{"text": "tmo on ${{host}}: ${{summary}}"}}'
""")
    daemon_factory()
    project = orchestrator.enqueue(["sh", "-c", "exit 4"], name='say "hi"', project_path=tmp_path)
    retry_until(lambda: server.requests, message="the chat POST")
    [body] = server.bodies()
    assert set(body) == {"text"}
    assert body["text"].startswith("tmo on ")
    assert body["text"].endswith(
        f'project {project.id} (say "hi") failed: exited (4) - exited with code 4')

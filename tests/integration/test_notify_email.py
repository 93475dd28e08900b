"""E-mail notifications sent by a real daemon to a small SMTP server on 127.0.0.1 written here."""

from __future__ import annotations

import email
import json
import socketserver
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path

import pytest

from tmux_orchestrator.config import Settings, load_settings
from tmux_orchestrator.orchestrator import Orchestrator
from tmux_orchestrator.store.base import Event
from tmux_orchestrator.testing import DaemonThread, retry_until


@dataclass
class Mailbox:
    """What the SMTP server received; ``refuse`` makes it reject every recipient."""

    refuse: bool = False
    envelopes: list[tuple[str, list[str], Message]] = field(default_factory=list)
    recipients_refused: int = 0


class SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP (RFC 5321) for smtplib: EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT."""

    mailbox: Mailbox

    def reply(self, text: str) -> None:
        self.wfile.write(text.encode() + b"\r\n")

    def handle(self) -> None:
        self.reply("220 localhost test SMTP")
        sender, recipients = "", list[str]()
        while line := self.rfile.readline():
            command = line.decode(errors="replace").strip()
            verb = command.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250-localhost\r\n250 8BITMIME" if verb == "EHLO" else "250 localhost")
            elif verb == "MAIL":
                sender, recipients = command.split(":", 1)[1].strip(" <>"), []
                self.reply("250 OK")
            elif verb == "RCPT":
                if self.mailbox.refuse:
                    self.mailbox.recipients_refused += 1
                    self.reply("550 no such user")
                else:
                    recipients.append(command.split(":", 1)[1].strip(" <>"))
                    self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 end with <CRLF>.<CRLF>")
                self.mailbox.envelopes.append((sender, recipients, self.read_data()))
                self.reply("250 OK queued")
            elif verb in ("RSET", "NOOP"):
                self.reply("250 OK")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("502 not implemented")

    def read_data(self) -> Message:
        lines: list[bytes] = []
        while (line := self.rfile.readline()) not in (b".\r\n", b""):
            lines.append(line[1:] if line.startswith(b"..") else line)  # undo dot-stuffing
        return email.message_from_bytes(b"".join(lines))


@pytest.fixture
def smtp_server() -> Iterator[tuple[int, Mailbox]]:
    """A threaded SMTP server on 127.0.0.1 (a free port); yields (port, mailbox)."""
    mailbox = Mailbox()
    handler = type("Handler", (SmtpHandler,), {"mailbox": mailbox})
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1]), mailbox
    finally:
        server.shutdown()
        server.server_close()


def configure(settings: Settings, port: int, *, attempts: int = 3) -> None:
    settings.config_path.write_text(f"""
[smtp]
host = "127.0.0.1"
port = {port}
from = "tmo@example.com"
timeout = "5s"

[[emails]]
name = "failures"
on = ["failed"]
to = ["ops@example.com", "me@example.com"]
subject = "[tmo] ${{project_name}} ${{kind}} (${{outcome}})"
max_attempts = {attempts}
backoff = "0.1s"
""")
    settings.extra = load_settings(settings.home).extra


def events_of(orch: Orchestrator, kind: str) -> list[Event]:
    return orch.store.events_after(0, kinds=[kind], limit=100000)


def test_a_failed_project_is_mailed_to_every_recipient_with_the_subject_template(
    tmo_settings: Settings, orchestrator: Orchestrator, daemon_factory: Callable[..., DaemonThread],
    smtp_server: tuple[int, Mailbox], tmp_path: Path,
) -> None:
    port, mailbox = smtp_server
    configure(tmo_settings, port)
    daemon_factory()
    orchestrator.enqueue(["true"], name="fine", project_path=tmp_path)
    project = orchestrator.enqueue(["sh", "-c", "exit 5"], name="nightly", project_path=tmp_path)
    retry_until(lambda: mailbox.envelopes, message="a mail")
    [failed] = events_of(orchestrator, "failed")
    [(sender, recipients, message)] = mailbox.envelopes
    assert sender == "tmo@example.com"
    assert recipients == ["ops@example.com", "me@example.com"]
    assert message["Subject"] == "[tmo] nightly failed (exited)"
    assert message["To"] == "ops@example.com, me@example.com"
    assert message["X-Tmo-Event-Id"] == str(failed.id)
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    text = body.decode()
    assert f"project {project.id} (nightly) failed: exited (5)" in text
    assert json.loads(text[text.index("{"):]) == failed.to_dict()


def test_an_smtp_server_that_refuses_the_mail_ends_in_one_email_failed_event(
    tmo_settings: Settings, orchestrator: Orchestrator, daemon_factory: Callable[..., DaemonThread],
    smtp_server: tuple[int, Mailbox], tmp_path: Path,
) -> None:
    port, mailbox = smtp_server
    mailbox.refuse = True
    configure(tmo_settings, port, attempts=2)
    daemon_factory()
    project = orchestrator.enqueue(["false"], name="doomed", project_path=tmp_path)
    [failed] = retry_until(lambda: events_of(orchestrator, "email_failed"), message="email_failed")
    assert failed.project_id == project.id
    assert failed.message is not None and "email failures failed on event" in failed.message
    assert "after 2 attempt(s)" in failed.message
    assert mailbox.recipients_refused == 2 * 2, "two attempts, two recipients each"
    assert mailbox.envelopes == []

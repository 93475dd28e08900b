"""E-mail notifications: ``[smtp]`` settings and ``[[emails]]`` tables, sent with :mod:`smtplib`.

::

    [smtp]
    host = "smtp.example.com"
    port = 587
    from = "tmo@example.com"
    username = "tmo"
    password_env = "TMO_SMTP_PASSWORD"    # or password = "..."
    starttls = true                       # or ssl = true for port 465
    timeout = "30s"

    [[emails]]
    name = "failures"                     # optional; names its cursor (else the recipients do)
    on = ["failed", "hook_failed"]
    to = ["me@example.com"]
    subject = "tmo: ${summary}"           # ${field} of the event, ${summary}, ${host}
    max_attempts = 3

Mails are sent by the daemon's dispatcher (:mod:`tmux_orchestrator.dispatch`), one thread per
``[[emails]]`` table, with the same at-least-once cursor as hooks and webhooks. Desktop
notifications and chat messages need no code: see ``docs/notifications.md``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from tmux_orchestrator.environment import is_env_name
from tmux_orchestrator.errors import ConfigError
from tmux_orchestrator.hooks import ROUTE_KEYS, Route, TableReader, event_payload, render, summarize
from tmux_orchestrator.store.base import Event

if TYPE_CHECKING:
    from email.message import EmailMessage

# smtplib, ssl and email are imported where mails are built and sent: every `tmo` command reads
# the [smtp] table to check it, only the daemon sends.

DEFAULT_SUBJECT = "tmo: ${summary}"


@dataclass(frozen=True)
class SmtpSettings:
    """The ``[smtp]`` table: how to reach the mail server."""

    host: str = "localhost"
    port: int = 25
    sender: str = ""
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    ssl: bool = False
    timeout: float = 30.0
    #: The variable ``password`` comes from; resolved by the daemon only (:meth:`with_password`).
    password_env: str | None = None

    KEYS = {"host", "port", "from", "username", "password", "password_env", "starttls", "ssl", "timeout"}

    @classmethod
    def read(cls, raw: object) -> SmtpSettings:
        """Parse the ``[smtp]`` table; raises ConfigError."""
        table = TableReader(raw, "[smtp]", cls.KEYS)
        password = table.text("password")
        password_env = table.text("password_env")
        if password_env and not is_env_name(password_env):
            raise table.error("password_env", "the name of an environment variable")
        use_ssl = table.flag("ssl")
        starttls = table.flag("starttls")
        if use_ssl and starttls:
            raise ConfigError("[smtp] takes ssl = true or starttls = true, not both")
        host = table.text("host", "localhost") or "localhost"
        return cls(
            host=host,
            port=table.number("port", 465 if use_ssl else 25, minimum=1),
            sender=table.text("from") or f"tmux-orchestrator@{os.uname().nodename}",
            username=table.text("username"),
            password=password,
            starttls=starttls,
            ssl=use_ssl,
            timeout=table.duration("timeout", 30.0),
            password_env=password_env,
        )

    def with_password(self, environ: Mapping[str, str]) -> SmtpSettings:
        """These settings with ``password_env`` read from ``environ`` (the daemon's environment);
        raises :class:`ConfigError` when it is not set."""
        if not self.password_env:
            return self
        password = environ.get(self.password_env)
        if password is None:
            raise ConfigError(f"[smtp] password_env names {self.password_env}, which is not set in "
                              "the daemon's environment")
        return replace(self, password=password)


@dataclass(frozen=True)
class EmailSpec:
    """One ``[[emails]]`` table."""

    to: tuple[str, ...]
    route: Route
    name: str | None = None
    subject: str = DEFAULT_SUBJECT
    max_attempts: int = 3
    backoff: float = 5.0

    KEYS = ROUTE_KEYS | {"name", "to", "subject", "max_attempts", "backoff"}

    @property
    def label(self) -> str:
        """How logs and events name this e-mail: its name, else its recipients."""
        return self.name or ",".join(self.to)

    @property
    def cursor_key(self) -> str:
        """Settings key of this e-mail's delivery cursor."""
        return f"cursor.email.{self.label}"

    @classmethod
    def read(cls, raw: object, index: int) -> EmailSpec:
        """Parse ``[[emails]]`` entry number ``index`` (0-based); raises ConfigError."""
        table = TableReader(raw, f"[[emails]] #{index + 1}", cls.KEYS)
        to = table.strings("to", required=True)
        for address in to:
            if "@" not in address:
                raise table.error("to", "a list of e-mail addresses")
        return cls(
            to=tuple(to),
            route=Route.read(table),
            name=table.text("name"),
            subject=table.text("subject", DEFAULT_SUBJECT) or DEFAULT_SUBJECT,
            max_attempts=table.number("max_attempts", 3, minimum=1),
            backoff=table.duration("backoff", 5.0),
        )


def build_message(spec: EmailSpec, smtp: SmtpSettings, event: Event) -> EmailMessage:
    """The mail for ``event``: subject from the template, a short text and the event JSON."""
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    message = EmailMessage()
    message["From"] = smtp.sender
    message["To"] = ", ".join(spec.to)
    message["Subject"] = " ".join(render(spec.subject, event).split())[:250]
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=smtp.sender.rpartition("@")[2] or None)
    message["X-Tmo-Event-Id"] = str(event.id)
    message["X-Tmo-Event"] = event.kind
    lines = [summarize(event), ""]
    lines += [f"{key}: {value}" for key, value in event_payload(event).items() if value is not None]
    lines += ["", json.dumps(event_payload(event), indent=2)]
    message.set_content("\n".join(lines) + "\n")
    return message


def send_email(spec: EmailSpec, smtp: SmtpSettings, event: Event) -> None:
    """Send one mail for ``event``; raises ``smtplib.SMTPException`` or ``OSError`` on failure."""
    import smtplib
    import ssl

    message = build_message(spec, smtp, event)
    client: smtplib.SMTP
    if smtp.ssl:
        client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout,
                                  context=ssl.create_default_context())
    else:
        client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
    with client:
        if smtp.starttls:
            client.starttls(context=ssl.create_default_context())
        if smtp.username:
            client.login(smtp.username, smtp.password or "")
        client.send_message(message, from_addr=smtp.sender, to_addrs=list(spec.to))


def email_delay(spec: EmailSpec, attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): doubling, at most 5 min."""
    return float(min(300.0, spec.backoff * 2 ** (attempt - 1)))


__all__ = ["EmailSpec", "SmtpSettings", "build_message", "email_delay", "send_email"]

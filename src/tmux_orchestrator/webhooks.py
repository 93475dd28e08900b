"""Webhooks: POST each chosen event as JSON to a URL, signed, retried with exponential backoff.

A webhook is a ``[[webhooks]]`` table of ``$TMO_HOME/config.toml``::

    [[webhooks]]
    name = "ops"                          # optional; names its cursor (else the URL does)
    url = "https://example.com/tmo"
    on = ["*"]                            # event kinds, or ["*"]
    secret = "s3cret"                     # optional: X-Tmo-Signature: sha256=<HMAC-SHA256 of the body>
    # secret_env = "TMO_WEBHOOK_SECRET"   # or read it from this variable of the daemon's environment
    timeout = "10s"                       # per attempt
    max_attempts = 5                      # then a webhook_failed event, and on to the next event
    backoff = "1s"                        # delay before the 2nd attempt, doubled each time (max 5m)
    headers = { Authorization = "Bearer x" }
    template = '{"text": "${summary}"}'   # optional body instead of the event JSON (chat services)

Each webhook runs on its own thread (see :mod:`tmux_orchestrator.dispatch`), so a dead endpoint
delays neither the queue nor any other webhook. Only the standard library is used (urllib).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from tmux_orchestrator import __version__
from tmux_orchestrator.environment import is_env_name
from tmux_orchestrator.errors import ConfigError
from tmux_orchestrator.hooks import ROUTE_KEYS, Route, TableReader, event_payload, render
from tmux_orchestrator.store.base import Event

if TYPE_CHECKING:
    import urllib.request

#: Longest delay between two attempts, whatever ``backoff`` and the attempt number say.
MAX_BACKOFF = 300.0
#: Headers whose values are credentials (kept out of logs and events).
_CREDENTIAL_HEADER = re.compile(r"auth|token|key|secret|pass|cookie|signature", re.IGNORECASE)


@dataclass(frozen=True)
class WebhookSpec:
    """One ``[[webhooks]]`` table."""

    url: str
    route: Route
    name: str | None = None
    secret: str | None = None
    timeout: float = 10.0
    max_attempts: int = 5
    backoff: float = 1.0
    headers: Mapping[str, str] = field(default_factory=dict)
    template: str | None = None
    #: The variable ``secret`` comes from; resolved by the daemon only (:meth:`with_secret`), so
    #: other commands work in a shell without it and it never reaches a pane.
    secret_env: str | None = None

    KEYS = ROUTE_KEYS | {
        "name", "url", "secret", "secret_env", "timeout", "max_attempts", "backoff", "headers",
        "template",
    }

    @property
    def identity(self) -> str:
        """What tells this webhook from the others: its name, else its URL."""
        return self.name or self.url

    @property
    def label(self) -> str:
        """How logs and events name it: its name, else its URL without the path (chat services
        put their secret token in the path)."""
        if self.name:
            return self.name
        parts = urllib.parse.urlsplit(self.url)
        host = parts.netloc.rpartition("@")[2]  # never the user:password of the URL
        return f"{parts.scheme}://{host}/..."

    @property
    def cursor_key(self) -> str:
        """Settings key of this webhook's delivery cursor."""
        return f"cursor.webhook.{self.identity}"

    @classmethod
    def read(cls, raw: object, index: int) -> WebhookSpec:
        """Parse ``[[webhooks]]`` entry number ``index`` (0-based); raises ConfigError."""
        table = TableReader(raw, f"[[webhooks]] #{index + 1}", cls.KEYS)
        url = table.text("url", required=True)
        assert url is not None
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise table.error("url", "an http:// or https:// URL")
        secret = table.text("secret")
        secret_env = table.text("secret_env")
        if secret_env and not is_env_name(secret_env):
            raise table.error("secret_env", "the name of an environment variable")
        return cls(
            url=url,
            secret_env=secret_env,
            route=Route.read(table),
            name=table.text("name"),
            secret=secret,
            timeout=table.duration("timeout", 10.0),
            max_attempts=table.number("max_attempts", 5, minimum=1),
            backoff=table.duration("backoff", 1.0),
            headers=table.mapping("headers"),
            template=table.text("template"),
        )

    def with_secret(self, environ: Mapping[str, str]) -> WebhookSpec:
        """This webhook with its ``secret_env`` read from ``environ`` (the daemon's environment);
        raises :class:`ConfigError` when it is not set."""
        if not self.secret_env:
            return self
        secret = environ.get(self.secret_env)
        if not secret:
            raise ConfigError(f"webhook {self.label}: secret_env names {self.secret_env}, which is not "
                              "set in the daemon's environment")
        return replace(self, secret=secret)

    def secrets(self) -> list[str]:
        """Values that must never appear in a log line or an event: the secret, credential headers."""
        parts = urllib.parse.urlsplit(self.url)
        found = [self.secret or "", parts.username or "", parts.password or ""]  # errors may quote them
        found += [v for k, v in self.headers.items() if _CREDENTIAL_HEADER.search(k)]
        return [v for v in found if v]

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(MAX_BACKOFF, self.backoff * 2 ** (attempt - 1)))


def sign(secret: str, body: bytes) -> str:
    """The ``X-Tmo-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def request_for(spec: WebhookSpec, event: Event) -> urllib.request.Request:
    """The POST request that delivers ``event`` to ``spec``'s URL."""
    import urllib.request  # here: every `tmo` command reads [[webhooks]], only the daemon posts

    if spec.template is not None:
        body = render(spec.template, event, json_escape=True).encode()
    else:
        body = json.dumps(event_payload(event)).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"tmux-orchestrator/{__version__}",
        "X-Tmo-Event": event.kind,
        "X-Tmo-Event-Id": str(event.id),
        **spec.headers,
    }
    if spec.secret:
        headers["X-Tmo-Signature"] = sign(spec.secret, body)
    # Credentials in the URL (https://user:password@host/...) become a Basic authorization header:
    # urllib would take them for part of the host name.
    parts = urllib.parse.urlsplit(spec.url)
    url = spec.url
    if parts.username is not None:
        netloc = parts.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"  # an IPv6 address
        if parts.port is not None:
            netloc += f":{parts.port}"
        url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
        credentials = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers.setdefault("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
    return urllib.request.Request(url, data=body, headers=headers, method="POST")


@dataclass(frozen=True)
class Attempt:
    """How one POST went."""

    ok: bool
    #: True when trying again may help (network error, timeout, 5xx, 408, 429).
    retry: bool
    #: ``HTTP 503``, ``timed out``, ``connection refused``; empty when ok.
    error: str


def post(spec: WebhookSpec, event: Event) -> Attempt:
    """POST ``event`` once; only a 2xx answer from the URL itself is success.

    Redirects are not followed: urllib would repeat a redirected POST as a GET without its body
    and report the answer to that as success. A redirect is a failure naming where it points.
    """
    import http.client
    import urllib.error
    import urllib.request

    request = request_for(spec, event)
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.HTTPHandler(),
                    urllib.request.HTTPSHandler(), urllib.request.HTTPErrorProcessor(),
                    urllib.request.HTTPDefaultErrorHandler()):
        opener.add_handler(handler)
    try:
        with opener.open(request, timeout=spec.timeout) as response:
            response.read(65536)
            return Attempt(True, False, "")
    except urllib.error.HTTPError as exc:
        exc.close()
        if 300 <= exc.code < 400:
            where = exc.headers.get("Location", "?") if exc.headers else "?"
            return Attempt(False, False, f"HTTP {exc.code} redirect to {where}: not followed; "
                                         "set the webhook url to where it points")
        retry = exc.code >= 500 or exc.code in (408, 429)
        return Attempt(False, retry, f"HTTP {exc.code} {exc.reason}")
    except urllib.error.URLError as exc:
        return Attempt(False, True, str(exc.reason))
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        return Attempt(False, True, str(exc) or type(exc).__name__)

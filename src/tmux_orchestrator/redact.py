"""Keeping credentials out of logs and events: passwords in URLs, and known secret values.

Every line the daemon logs and every delivery event the dispatcher records goes through
:func:`redact`: the ``user:password@`` of any URL becomes ``***@``, and the secrets the daemon resolved
(webhook secrets and credential headers, the SMTP password) become ``***``.
"""

from __future__ import annotations

import re

#: ``scheme://userinfo@``: the userinfo runs up to the last ``@`` before the path.
_URL_CREDENTIALS = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^/\s?#'\"<>]+@")
#: ``scheme://user:password@``, the user kept.
_URL_PASSWORD = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)([^/\s?#'\"<>:@]*):[^/\s?#'\"<>]*@")

#: Secret values to hide, longest first (a tuple, replaced whole: read by threads without a lock).
_secrets: tuple[str, ...] = ()

#: Shorter values are not hidden: replacing "on" or "1" everywhere would garble every line.
MIN_SECRET = 4


def add_secret(value: str | None) -> None:
    """Hide ``value`` from now on in everything :func:`redact` sees."""
    global _secrets
    if value and len(value) >= MIN_SECRET and value not in _secrets:
        _secrets = tuple(sorted((*_secrets, value), key=len, reverse=True))


def redact_url(url: str) -> str:
    """``url`` without its credentials: ``postgresql://u:pw@host/db`` -> ``postgresql://***@host/db``."""
    return _URL_CREDENTIALS.sub(r"\1***@", url)


def without_password(url: str) -> str:
    """``url`` still usable, without its password: ``postgresql://u:pw@host/db`` ->
    ``postgresql://u@host/db`` (a PostgreSQL client then reads the password from ``~/.pgpass``)."""
    return _URL_PASSWORD.sub(r"\1\2@", url)


def display_url(url: str) -> str:
    """``url`` as it may be shown: no password, neither ``user:pw@`` nor ``?password=``."""
    shown = without_password(url)
    return re.sub(r"([?&])password=[^&]*&?", r"\1", shown).rstrip("?&")


def redact(text: str) -> str:
    """``text`` with the credentials of every URL and every known secret value replaced by ``***``."""
    if "://" in text:
        text = _URL_CREDENTIALS.sub(r"\1***@", text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text

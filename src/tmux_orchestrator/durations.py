"""Parsing of human durations such as ``90``, ``30s``, ``5m``, ``2h``, ``1d`` or ``1h30m``."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> float:
    """Seconds in ``text``; a bare number means seconds. Raises ``ValueError`` with a hint."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        pos = 0
        seconds = 0.0
        for match in _PART.finditer(value):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(value) or not value:
            raise ValueError(
                f"invalid duration {text!r}: use a number of seconds or e.g. 30s, 5m, 2h, 1d, 1h30m"
            ) from None
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {text!r}: must be a finite number of seconds")
    if seconds < 0:
        raise ValueError(f"invalid duration {text!r}: must not be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """A short human form of ``seconds``, rounded (ages, run times): ``850ms``, ``42s``, ``5m3s``,
    ``2h0m``. For a duration given by the user, :func:`format_duration_exact`."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h"


def format_duration_exact(seconds: float) -> str:
    """``seconds`` as the user would write it, which :func:`parse_duration` reads back (to the
    microsecond): ``4h``, ``30s``, ``1m30s``, ``1d2h``, ``2.5s``, ``0s``."""
    micros = round(seconds * 1_000_000)
    whole, fraction = divmod(micros, 1_000_000)
    days, whole = divmod(whole, 86400)
    hours, whole = divmod(whole, 3600)
    minutes, secs = divmod(whole, 60)
    text = "".join(f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n)
    if secs or fraction or not text:
        text += f"{secs}.{fraction:06d}".rstrip("0").rstrip(".") + "s"
    return text

"""Fixtures of the fault-injection tests: the installed ``tmo`` and daemon as real processes."""

from __future__ import annotations

from acceptance.support import daemon, tmo

__all__ = ["daemon", "tmo"]

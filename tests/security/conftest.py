"""Fixtures of the security tests (defined in :mod:`security.users` and :mod:`acceptance.support`).

* ``attacker`` and ``victim``: throwaway local accounts (removed at the end of the test, after every
  process started as them has been ended by pid). Tests that need them are skipped, with the reason
  shown, only where no account can be made (not root, no ``useradd``).
* ``shared``: a directory like /tmp (mode 1777) where every user may create things.
* ``tmo`` and ``daemon``: the installed ``tmo`` for a test home, as in the acceptance tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from acceptance.support import daemon, tmo
from security.users import User, shared_tmp, throwaway_user

__all__ = ["attacker", "daemon", "shared", "tmo", "victim"]


@pytest.fixture
def attacker() -> Iterator[User]:
    """Another local user who plants files and servers before tmo runs."""
    with throwaway_user() as user:
        yield user


@pytest.fixture
def victim() -> Iterator[User]:
    """A non-root user who runs tmo (the attacker is someone else)."""
    with throwaway_user() as user:
        yield user


@pytest.fixture
def shared() -> Iterator[Path]:
    """A world-writable, sticky directory like /tmp."""
    with shared_tmp() as path:
        yield path

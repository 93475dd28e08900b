"""Fixtures of the fault-injection tests: the installed ``tmo`` and daemon as real processes, and
small file systems to fill."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from acceptance.support import daemon, tmo

__all__ = ["daemon", "small_disk", "small_home", "tmo"]


@contextlib.contextmanager
def small_tmpfs(size: str, prefix: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (as root: skips without), unmounted afterwards."""
    mount = Path(tempfile.mkdtemp(prefix=prefix))
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        with contextlib.suppress(OSError):
            mount.rmdir()


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 3 MB tmpfs (as root), unmounted afterwards."""
    with small_tmpfs("3m", "tmo-disk-") as mount:
        yield mount


@pytest.fixture
def small_home() -> Iterator[Path]:
    """A 1 MB tmpfs to hold a home (as root), unmounted afterwards."""
    with small_tmpfs("1m", "tmo-full-") as mount:
        yield mount

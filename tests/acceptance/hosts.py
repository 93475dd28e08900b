"""Several "hosts" on one machine, sharing one queue: each a home with its own tmux server, its own
daemon and its own ``TMO_HOST``, all pointed at one database.

The database is a SQLite file in a directory of the test, or, with ``backend="postgres"``, a fresh
PostgreSQL database (see :func:`tmux_orchestrator.testing.postgres_url`). Everything each host does
goes through the installed ``tmo`` and its daemon, as on separate machines.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from acceptance.support import DaemonControl, Tmo


class Host:
    """One host: a home, its ``tmo`` runner and its daemon control."""

    def __init__(self, name: str, database_url: str, *, labels: str = "", lease: str = "5s") -> None:
        self.name = name
        self.home = Path(tempfile.mkdtemp(prefix=f"tmo-{name}-"))
        self.tmo = Tmo(self.home)
        self.tmo.env.update(TMO_HOST=name, TMO_DATABASE_URL=database_url, TMO_HOST_LEASE=lease)
        if labels:
            self.tmo.env["TMO_HOST_LABELS"] = labels
        self.daemon = DaemonControl(self.tmo)

    def close(self) -> None:
        """End its daemon and tmux server (by pid) and remove its home."""
        with contextlib.suppress(Exception):
            self.daemon.stop_all()
        with contextlib.suppress(Exception):
            self.tmo.end_popens()
        with contextlib.suppress(Exception):
            self.tmo.end_server()
        shutil.rmtree(self.home, ignore_errors=True)


class Cluster:
    """The hosts of one test, on one database."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.hosts: list[Host] = []

    def host(self, name: str, **options: str) -> Host:
        """A new host on the shared database."""
        host = Host(name, self.database_url, **options)
        self.hosts.append(host)
        return host

    def close(self) -> None:
        """End every host."""
        for host in self.hosts:
            host.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Hosts sharing one SQLite database in the test's own directory."""
    directory = tmp_path / "db"
    directory.mkdir(mode=0o700)
    tmp_path.chmod(0o700)
    group = Cluster(f"sqlite:///{directory / 'queue.db'}")
    try:
        yield group
    finally:
        group.close()

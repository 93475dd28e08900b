"""Several "hosts" on one machine, sharing one queue: each a home with its own tmux server, its own
daemon and its own ``TMO_HOST``, all pointed at one database.

The database is a SQLite file in a directory of the test, or, with ``backend="postgres"``, a fresh
PostgreSQL database (see :func:`tmux_orchestrator.testing.postgres_url`). Everything each host does
goes through the installed ``tmo`` and its daemon, as on separate machines.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from acceptance.support import DaemonControl, Tmo
from tmux_orchestrator.testing import fresh_postgres_database


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

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgres``."""
        return "sqlite" if self.database_url.startswith("sqlite") else "postgres"

    def host(self, name: str, *, database_url: str | None = None, **options: str) -> Host:
        """A new host on the shared database (reached through ``database_url`` if given: a proxy)."""
        host = Host(name, database_url or self.database_url, **options)
        self.hosts.append(host)
        return host

    def sql(self, statement: str) -> None:
        """Hand-written SQL on the shared database, with the database's own command-line client."""
        if self.backend == "sqlite":
            argv = ["sqlite3", "-cmd", ".timeout 30000", self.database_url[len("sqlite:///"):], statement]
        else:
            argv = ["psql", self.database_url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", statement]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, f"{argv[0]} failed: {result.stderr}"

    def close(self) -> None:
        """End every host."""
        for host in self.hosts:
            host.close()


@pytest.fixture(params=["sqlite", "postgres"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """Hosts sharing one database: a SQLite file in the test's own directory (several hosts on one
    machine), or a fresh PostgreSQL database (what several machines share)."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            directory = tmp_path / "db"
            directory.mkdir(mode=0o700)
            tmp_path.chmod(0o700)
            url = f"sqlite:///{directory / 'queue.db'}"
        else:
            url = stack.enter_context(fresh_postgres_database())
        group = Cluster(url)
        try:
            yield group
        finally:
            group.close()


@pytest.fixture
def postgres_cluster() -> Iterator[Cluster]:
    """Hosts sharing one fresh PostgreSQL database (for what only a networked database has)."""
    with fresh_postgres_database() as url:
        group = Cluster(url)
        try:
            yield group
        finally:
            group.close()

"""Persistent state: the :class:`Store` contract and its backends."""

from __future__ import annotations

from tmux_orchestrator.config import Settings
from tmux_orchestrator.errors import ConfigError
from tmux_orchestrator.store.base import Event, NewProject, Store

__all__ = ["Event", "NewProject", "Store", "open_store"]


#: URL schemes of the PostgreSQL backend (libpq takes both).
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(settings: Settings, *, create: bool = True) -> Store:
    """Open the store named by ``settings.database_url``: ``sqlite:///PATH`` or ``postgresql://...``
    (``postgres://...``). Without ``create`` a missing database (or one without the schema) is an
    error (``no database at ...``) and nothing is created (read and diagnostic commands)."""
    url = settings.database_url
    if url.startswith(POSTGRES_SCHEMES):
        from tmux_orchestrator.store.postgres import PostgresStore

        return PostgresStore(url, create=create)
    path = settings.database_path
    if path is None:
        scheme = url.split(":", 1)[0]
        raise ConfigError(
            f"database URL scheme {scheme!r} is not supported; use sqlite:///PATH or postgresql://..."
        )
    from tmux_orchestrator.store.sqlite import SqliteStore  # the backend is chosen here, and only here

    return SqliteStore(path, synchronous=settings.sqlite_synchronous, create=create)

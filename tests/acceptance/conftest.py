"""Fixtures of the acceptance tests (defined in :mod:`acceptance.support`).

* ``tmo``: runs the installed ``tmo`` with ``TMO_HOME`` set to the test's own home and returns a
  ``subprocess.CompletedProcess`` with text; background ``tmo`` processes it started are ended by pid.
* ``daemon``: starts the home's daemon the ways a user does; whatever daemon of that home still runs
  at the end is stopped by pid (read from ``tmo daemon status --json`` / ``daemon.lock``), SIGTERM
  first, then SIGKILL.
"""

from __future__ import annotations

from acceptance.hosts import cluster, postgres_cluster
from acceptance.support import daemon, tmo

__all__ = ["cluster", "daemon", "postgres_cluster", "tmo"]

"""Several hosts, one queue: hand-off and claim throughput at 1, 2 and 4 hosts on PostgreSQL beside
one host on SQLite, and the cross-host SQL-to-kill latency.

Each "host" is a :class:`BenchHome` with its own ``TMO_HOST``, tmux server and ``tmo daemon start``,
all on one fresh PostgreSQL database (``TMO_BENCH_POSTGRES``, default
``postgresql://postgres@127.0.0.1:5432/postgres``, must be allowed to create databases). Every
setting is the product default (the lease is 30 s, nothing here waits for it).

Every host's daemon is started (and idle) before the projects are queued in one batch, so that all
hosts compete for the same queue from its first project on.

* **hand-off** (concurrency 1 per host): ``hosts * (handoffs + 1)`` projects that each write
  ``$EPOCHREALTIME`` first and last (as :mod:`bench.handoff`) around ``sleep`` of ``work``
  seconds; a hand-off is the end of one project to the first command of the next project *on the
  same host*. The sleep keeps every host busy, so each host claims its share.
* **throughput** (``concurrency`` per host): ``projects`` projects of ``work`` seconds queued at
  once; projects per second from the first start to the last end, over all hosts, beside the ideal
  ``hosts * concurrency / work``.
* **cross-host SQL-to-kill**: two hosts; a project pinned to ``beta`` runs ``sleep 600``; from a
  client that is neither host (the bench's own autocommit connection, as ``psql`` would be) it runs
  ``UPDATE project_queue SET status='completed' WHERE id=N``; the figure is the commit to the first
  failing ``has-session`` on beta's server. Some trials wait 1.5-3 s first (an idle daemon).

The machine is shared by every host (2 CPUs here): four daemons, four tmux servers and PostgreSQL
compete for them, so more hosts on one machine measure contention as much as the design.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import secrets
import subprocess
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.harness import BenchError, BenchHome, project_argv, stamp, wait_until
from bench.stats import summarize
from tmux_orchestrator.project import Project, ProjectStatus

NAME = "hosts"
ADMIN_URL = os.environ.get("TMO_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
HOST_NAMES = ("alpha", "beta", "gamma", "delta")


@contextlib.contextmanager
def _database(backend: str, keep: bool) -> Iterator[str | None]:
    """A fresh PostgreSQL database (dropped after), or None: each host's own SQLite file."""
    if backend == "sqlite":
        yield None
        return
    import psycopg

    name = f"tmo_bench_{secrets.token_hex(5)}"
    try:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=10) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise BenchError(f"PostgreSQL at {ADMIN_URL} cannot create a database: {exc}") from exc
    try:
        yield urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{name}"))
    finally:
        if not keep:
            with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=10) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def _cluster(backend: str, hosts: int, keep: bool) -> Iterator[list[BenchHome]]:
    with _database(backend, keep) as url, contextlib.ExitStack() as stack:
        yield [stack.enter_context(BenchHome(f"{NAME}-{name}", keep=keep, database_url=url,
                                             host=name if url else None))
               for name in HOST_NAMES[:hosts]]


def _marks(homes: list[BenchHome], project: Project) -> tuple[float | None, float | None]:
    """The start and end stamps ``project`` wrote in the home of the host that ran it."""
    for home in homes:
        start = home.mark(project.id, "start")
        if start is not None:
            return start, home.mark(project.id, "end")
    return None, None


def _drain(homes: list[BenchHome], argv: list[str], total: int, concurrency: int,
           work: float) -> tuple[list[Project], float]:
    """Start every host's daemon, then queue ``total`` projects in one batch and wait until the
    queue is empty; the projects and the wall time from the batch."""
    api = homes[0].orch
    for home in homes:
        home.start_daemon(concurrency=concurrency)
    started = time.monotonic()
    api.enqueue_many([{"command": argv, "name": "bench", "project_path": str(homes[0].home)}] * total)
    active = [ProjectStatus.QUEUED, ProjectStatus.PROCESSING]
    wait_until(lambda: not api.list_projects(active), timeout=60 + (1.0 + work) * total, interval=0.1,
               what=f"{total} projects to finish")
    wall = time.monotonic() - started
    return api.list_projects(), wall


def _handoff(backend: str, hosts: int, handoffs: int, work: float, keep: bool) -> dict[str, Any]:
    argv = project_argv(stamp("start"), f"sleep {work}", stamp("end"), "exit 0")
    with _cluster(backend, hosts, keep) as homes:
        total = hosts * (handoffs + 1)
        projects, wall = _drain(homes, argv, total, 1, work)
        marks = {p.id: _marks(homes, p) for p in projects}
        cpu = {h.env.get("TMO_HOST", "local"): h.cpu_used() for h in homes}
    bad = [p.id for p in projects if p.status is not ProjectStatus.COMPLETED]
    if bad:
        raise BenchError(f"{backend}/{hosts}: projects {bad[:10]} did not complete")
    values: list[float] = []
    per_host: dict[str, int] = {}
    for host, group in itertools.groupby(sorted(projects, key=lambda p: p.host or ""), lambda p: p.host):
        ran = sorted(group, key=lambda p: marks[p.id][0] or 0.0)
        per_host[host or "local"] = len(ran)
        for prev, nxt in itertools.pairwise(ran):
            end, start = marks[prev.id][1], marks[nxt.id][0]
            if end is None or start is None:
                raise BenchError(f"missing stamps for hand-off {prev.id} -> {nxt.id}")
            values.append((start - end) * 1000)
    starts = [m[0] for m in marks.values() if m[0] is not None]
    ends = [m[1] for m in marks.values() if m[1] is not None]
    span = max(ends) - min(starts)
    return {"handoff_ms": summarize(values), "samples_ms": [round(v, 3) for v in values],
            "projects_per_host": per_host, "wall_seconds": round(wall, 2),
            "projects_per_second": round(total / span, 1), "cpu_seconds": cpu}


def _throughput(backend: str, hosts: int, projects: int, concurrency: int, work: float,
                keep: bool) -> dict[str, Any]:
    argv = project_argv(stamp("start"), f"sleep {work}", stamp("end"), "exit 0")
    with _cluster(backend, hosts, keep) as homes:
        ended, wall = _drain(homes, argv, projects, concurrency, work)
        marks = {p.id: _marks(homes, p) for p in ended}
    bad = [p.id for p in ended if p.status is not ProjectStatus.COMPLETED]
    if bad:
        raise BenchError(f"{backend}/{hosts}: projects {bad[:10]} did not complete")
    starts = [m[0] for m in marks.values() if m[0] is not None]
    ends = [m[1] for m in marks.values() if m[1] is not None]
    span = max(ends) - min(starts)
    per_host: dict[str, int] = {}
    for project in ended:
        per_host[project.host or "local"] = per_host.get(project.host or "local", 0) + 1
    return {"projects_per_second": round(projects / span, 1),
            "ideal_projects_per_second": round(hosts * concurrency / work, 1),
            "first_start_to_last_end_s": round(span, 2), "wall_seconds": round(wall, 2),
            "projects_per_host": per_host}


def _has_session(home: BenchHome, session_id: str) -> bool:
    argv = ["tmux", "-S", str(home.socket), "-f", "/dev/null", "has-session", "-t", session_id]
    return subprocess.call(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=home.env) == 0


def _sql_kill(trials: int, idle: int, rng: random.Random, keep: bool) -> dict[str, Any]:
    import psycopg

    argv = project_argv(stamp("start"), "exec sleep 600")
    busy: list[float] = []
    quiet: list[float] = []
    with _cluster("postgres", 2, keep) as homes:
        alpha, beta = homes
        for home in homes:
            home.start_daemon(concurrency=1)
        url = alpha.settings.database_url
        schedule = [False] * trials + [True] * idle
        rng.shuffle(schedule)
        with psycopg.connect(url, autocommit=True) as client:
            for wait_idle in schedule:
                project = alpha.orch.enqueue(argv, name="sqlkill", project_path=alpha.home, host="beta")

                def running(pid: int = project.id) -> Project | None:
                    row = alpha.orch.get(pid)
                    return row if row.session_id and beta.mark(pid, "start") is not None else None

                row = wait_until(running, timeout=20, what=f"project {project.id} to run on beta")
                session_id = row.session_id or ""
                time.sleep(rng.uniform(1.5, 3.0) if wait_idle else rng.uniform(0.02, 0.12))
                client.execute("UPDATE project_queue SET status='completed' WHERE id=%s", (project.id,))
                commit = time.perf_counter()
                deadline = time.monotonic() + 30
                while _has_session(beta, session_id):
                    if time.monotonic() > deadline:
                        raise BenchError(f"session {session_id} still alive 30 s after the UPDATE")
                (quiet if wait_idle else busy).append((time.perf_counter() - commit) * 1000)
                def closed(pid: int = project.id) -> bool:
                    return alpha.orch.get(pid).session_closed_at is not None

                wait_until(closed, timeout=30, what=f"project {project.id}'s clean-up to be recorded")
    return {"commit_to_gone_ms": summarize(busy), "commit_to_gone_idle_ms": summarize(quiet),
            "samples_ms": [round(v, 3) for v in busy], "samples_idle_ms": [round(v, 3) for v in quiet]}


def run(config: dict[str, Any], *, keep: bool = False, seed: int = 1) -> dict[str, Any]:
    """Hand-off and throughput per (backend, hosts), then the cross-host SQL-to-kill trials."""
    rng = random.Random(seed)
    setups = [("sqlite", 1)] + [("postgres", n) for n in config["host_counts"]]
    handoff: dict[str, Any] = {}
    throughput: dict[str, Any] = {}
    for backend, hosts in setups:
        key = f"{backend}-{hosts}"
        handoff[key] = _handoff(backend, hosts, config["handoffs_per_host"], config["work"], keep)
        throughput[key] = _throughput(backend, hosts, config["projects"], config["concurrency"],
                                      config["work"], keep)
    kill = _sql_kill(config["sql_kill"], config["sql_kill_idle"], rng, keep)
    summary = {f"handoff_{key}_ms": value["handoff_ms"] for key, value in handoff.items()}
    summary["cross_host_sql_kill_ms"] = kill["commit_to_gone_ms"]
    summary["cross_host_sql_kill_idle_ms"] = kill["commit_to_gone_idle_ms"]
    return {
        "description": "hand-off, throughput and SQL-to-kill with several hosts on one PostgreSQL queue",
        "config": {**config, "setups": [f"{b}-{n}" for b, n in setups], "seed": seed},
        "summary": summary,
        "handoff": handoff,
        "throughput": throughput,
        "sql_kill": kill,
        "notes": ["all hosts share one machine: more hosts add contention for its CPUs"],
    }

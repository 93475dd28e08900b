"""Queue statistics computed from the database alone: what ``tmo stats`` prints.

The same definitions feed the daemon's Prometheus metrics (:mod:`tmux_orchestrator.metrics`), so a
scrape and ``tmo stats`` tell the same story:

* **hand-off latency**: from the moment a slot opened (a running project ended or was requeued, the
  queue was resumed, the daemon started) to the ``started`` event of a project that was already
  waiting at that moment. Starts that waited for a project to be queued are not hand-offs.
* **end-detection latency**: from a project's end (its wrapper's exit line reaching the daemon, its
  marker file being written, another writer's change being committed) to the daemon having
  recorded or acted on it. The daemon measures it and keeps the
  latest samples in the ``settings`` table (key :data:`END_DETECTION_KEY`).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tmux_orchestrator.store.base import Event, Store
from tmux_orchestrator.timestamps import format_time

#: Settings key holding recent end-detection samples: JSON ``[[via, seconds, unix time], ...]``.
END_DETECTION_KEY = "stats.end_detection"
#: How many end-detection samples are kept.
MAX_SAMPLES = 1000

#: Status changes that take a project out of ``processing`` (a slot opens) when they come from it.
_SLOT_ENDS = frozenset({"completed", "failed", "cancelled", "requeued"})
#: Events after which claiming (re)starts although no project ended.
_SLOT_OPENS = frozenset({"daemon_started", "queue_resumed"})
#: Status changes that put a project in the queue.
_QUEUES = frozenset({"queued", "retried", "requeued"})
#: Project end kinds counted by outcome.
END_KINDS = ("completed", "failed", "cancelled")


class HandoffTracker:
    """Reads events in id order and yields hand-off latencies (see the module docstring)."""

    def __init__(self) -> None:
        self._opened: Event | None = None
        self._waiting: dict[int, int] = {}

    def feed(self, event: Event) -> float | None:
        """Take the next event; returns a hand-off latency in seconds when ``event`` ends one."""
        kind, project_id = event.kind, event.project_id
        if kind in _SLOT_OPENS or (kind in _SLOT_ENDS and event.old_status == "processing"):
            self._opened = event
        if project_id is None:
            return None
        if kind in _QUEUES:
            self._waiting[project_id] = event.id
        elif kind == "removed":
            self._waiting.pop(project_id, None)
        elif kind == "started":
            queued_at = self._waiting.pop(project_id, None)
            opened = self._opened
            if opened is not None and queued_at is not None and queued_at < opened.id:
                return max(0.0, (event.at - opened.at).total_seconds())
        return None


def handoff_latencies(events: Iterable[Event]) -> list[float]:
    """Every hand-off latency in ``events`` (oldest first)."""
    tracker = HandoffTracker()
    return [v for v in (tracker.feed(e) for e in events) if v is not None]


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile (``fraction`` 0.5 = median, 0.99 = p99); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Latency:
    """Median and p99 of some latency samples, in seconds."""

    samples: int
    median: float | None
    p99: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Latency:
        """Summarize ``values``."""
        return cls(len(values), percentile(values, 0.5), percentile(values, 0.99))


def read_end_detection(store: Store) -> list[tuple[str, float, float]]:
    """The kept end-detection samples ``(via, seconds, unix time)``, oldest first."""
    try:
        raw = json.loads(store.get_setting(END_DETECTION_KEY, "[]") or "[]")
        return [(str(v), float(s), float(t)) for v, s, t in raw]
    except (ValueError, TypeError):
        return []


def write_end_detection(store: Store, samples: Sequence[tuple[str, float, float]]) -> None:
    """Add ``samples`` to the kept ones (the newest :data:`MAX_SAMPLES` stay)."""
    kept = (read_end_detection(store) + list(samples))[-MAX_SAMPLES:]
    store.set_setting(END_DETECTION_KEY, json.dumps([[v, round(s, 6), round(t, 3)] for v, s, t in kept]))


@dataclass
class Stats:
    """What ``tmo stats`` prints."""

    #: Projects per status now.
    projects: dict[str, int]
    #: Events the window covers, and the time of the first one.
    events: int
    since: str | None
    starts: int
    #: ``{"completed/exited": 3, "failed/timeout": 1, ...}``.
    ends: dict[str, int]
    lingering_cleaned: int
    delivery_failures: dict[str, int]
    handoff: Latency
    end_detection: Latency
    end_detection_by_via: dict[str, Latency] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (latencies in seconds)."""
        return {
            "projects": self.projects,
            "events": self.events,
            "since": self.since,
            "starts": self.starts,
            "ends": self.ends,
            "lingering_cleaned": self.lingering_cleaned,
            "delivery_failures": self.delivery_failures,
            "handoff_seconds": self.handoff.__dict__,
            "end_detection_seconds": self.end_detection.__dict__,
            "end_detection_by_via": {k: v.__dict__ for k, v in self.end_detection_by_via.items()},
        }


def summarize_events(events: Sequence[Event]) -> tuple[int, dict[str, int], Counter[str]]:
    """(starts, ends by ``status/outcome``, count per kind) of ``events``."""
    kinds: Counter[str] = Counter(e.kind for e in events)
    ends: Counter[str] = Counter(
        f"{e.kind}/{e.outcome or 'unknown'}" for e in events if e.kind in END_KINDS
    )
    return kinds["started"], dict(sorted(ends.items())), kinds


def compute_stats(store: Store, *, last_events: int = 10000) -> Stats:
    """The summary over the newest ``last_events`` events (and the kept end-detection samples)."""
    newest = store.last_event_id()
    events = store.events_after(max(0, newest - last_events), limit=last_events)
    starts, ends, kinds = summarize_events(events)
    samples = read_end_detection(store)
    if events:
        first = events[0].at.timestamp()
        samples = [s for s in samples if s[2] >= first - 1]
    by_via: dict[str, list[float]] = {}
    for via, seconds, _ in samples:
        by_via.setdefault(via, []).append(seconds)
    return Stats(
        projects=store.counts(),
        events=len(events),
        since=format_time(events[0].at) if events else None,
        starts=starts,
        ends=ends,
        lingering_cleaned=kinds["lingering_cleaned"],
        delivery_failures={k: kinds[k] for k in
                           ("hook_failed", "hook_suppressed", "webhook_failed", "email_failed")},
        handoff=Latency.of(handoff_latencies(events)),
        end_detection=Latency.of([s for _, s, _ in samples]),
        end_detection_by_via={via: Latency.of(v) for via, v in sorted(by_via.items())},
    )

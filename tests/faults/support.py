"""Helpers of the fault-injection tests."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

from acceptance.support import Tmo

LEDGER_SCRIPT = str(Path(__file__).with_name("ledger.py"))


class Ledger:
    """The ledger directory projects write (see ``ledger.py``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)

    def command(self, mode: str, limit: int = 0) -> list[str]:
        """argv of a ledger project."""
        return [sys.executable, LEDGER_SCRIPT, str(self.path), mode, *([str(limit)] if limit else [])]

    def violations(self) -> list[str]:
        """``overlap``/``over`` lines the projects wrote."""
        try:
            return (self.path / "violations").read_text().splitlines()
        except FileNotFoundError:
            return []

    def starts(self) -> list[tuple[int, int, int, float]]:
        """(project, attempt, pid, time) of every start."""
        try:
            lines = (self.path / "starts").read_text().splitlines()
        except FileNotFoundError:
            return []
        return [(int(p), int(a), int(pid), float(t)) for p, a, pid, t in (line.split() for line in lines)]


def session_events(tmo: Tmo, project_id: int) -> Counter[tuple[str, str]]:
    """How many events of each (kind, session name) the project has."""
    return Counter((e["kind"], e["session_name"] or "") for e in tmo.events()
                   if e["project_id"] == project_id)


def cleanup_counts(tmo: Tmo, project_id: int) -> dict[str, Counter[str]]:
    """Per session name: how many backups and kills were recorded."""
    out: dict[str, Counter[str]] = {}
    kills = {"session_killed", "lingering_cleaned"}
    for event in tmo.events():
        if event["project_id"] != project_id or not event["session_name"]:
            continue
        kind = event["kind"]
        if kind in ("output_saved", "backup_failed") or kind in kills:
            key = "kill" if kind in kills else "backup"
            out.setdefault(event["session_name"], Counter())[key] += 1
    return out


def show(tmo: Tmo, project_id: int) -> dict[str, Any]:
    """``tmo show --json``."""
    return tmo.project(project_id)

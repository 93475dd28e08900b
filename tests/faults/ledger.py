"""A project that keeps a ledger of its own life, for "never two at once" checks.

Run as a project's command: ``python ledger.py LEDGER_DIR MODE [LIMIT]``. At start it looks at every
process recorded in ``LEDGER_DIR/pids`` and writes ``overlap`` lines for each one still alive (a
zombie counts as dead) that is another attempt of the same project, and an ``over`` line when
``LIMIT`` or more recorded processes are alive (the concurrency the queue promised), then records
itself. The assertions are made by the projects, from what really runs, not from the database.

MODE: ``stubborn`` ignores SIGTERM and runs until killed; ``sleep:N[:CODE]`` exits CODE (0) after
N seconds; ``gate:PATH`` exits 0 once PATH exists. A SIGTERM or SIGHUP that ends it is written to
``signals`` (``project attempt pid SIGNAME``), so a kill event can be checked against a real signal.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import time
from pathlib import Path


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat.rsplit(b")", 1)[1].split()[0] != b"Z"


def _record_signal(signum: int, frame: object) -> None:
    ledger = Path(sys.argv[1])
    me = f"{os.environ.get('TMO_PROJECT_ID', '?')} {os.environ.get('TMO_ATTEMPT', '?')} {os.getpid()}"
    with open(ledger / "signals", "a") as fh:
        fh.write(f"{me} {signal.Signals(signum).name}\n")
    os._exit(128 + signum)


def main() -> None:
    ledger = Path(sys.argv[1])
    mode = sys.argv[2]
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _record_signal)
    me = (os.environ.get("TMO_PROJECT_ID", "?"), os.environ.get("TMO_ATTEMPT", "?"), os.getpid())
    with open(ledger / "lock", "a") as lock:
        # One starter at a time, so two projects starting together both see each other.
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = []
        try:
            records = [line.split() for line in (ledger / "pids").read_text().splitlines()]
        except FileNotFoundError:
            pass
        notes = []
        running = [r for r in records if len(r) == 3 and alive(int(r[2]))]
        for project, attempt, pid in running:
            if project == me[0]:
                notes.append(f"overlap {me[0]} {me[1]} {me[2]} with attempt {attempt} pid {pid}\n")
        if limit and len(running) >= limit:
            notes.append(f"over {me[0]} {me[1]} {me[2]}: {len(running)} running: {running}\n")
        with open(ledger / "pids", "a") as fh:
            fh.write(f"{me[0]} {me[1]} {me[2]}\n")
        if notes:
            with open(ledger / "violations", "a") as fh:
                fh.writelines(notes)
        with open(ledger / "starts", "a") as fh:
            fh.write(f"{me[0]} {me[1]} {me[2]} {time.time():.3f}\n")
    if mode == "stubborn":
        while True:
            time.sleep(0.1)
    elif mode.startswith("sleep:"):
        _, seconds, *code = mode.split(":")
        time.sleep(float(seconds))
        sys.exit(int(code[0]) if code else 0)
    elif mode.startswith("gate:"):
        while not Path(mode.split(":", 1)[1]).exists():
            time.sleep(0.05)


if __name__ == "__main__":
    main()

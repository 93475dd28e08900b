"""Messages to agents (``tmo send``): delivery latency and exactly-once delivery over many messages.

One home, one daemon (``--concurrency`` = ``agents``), ``agents`` projects each running the tests'
fake agent (``tests/acceptance/fake_agent.py``, run by path: raw mode, reads bracketed pastes,
appends every submission to its own file as a JSON line). The bench starts it through a small
wrapper that adds the wall clock of the submission (``"at"``) to each line; the fake agent itself
is unchanged.

``messages`` messages go out in rounds: one message to each agent at once, then wait until every
message of the round is final (``delivered`` or ``failed``) before the next round. Each body is
unique (its sequence number) and carries the characters that break naive delivery: ``; # $() ' "
\\ /``, ``@``, backticks, non-ASCII, newlines and a trailing ``;``. Most are sent with the API
(``Orchestrator.send``, as a program would); every ``messages / cli_sends``-th with the CLI
(``tmo send ID TEXT --json``, one process each).

Figures: **send -> submitted**, from just before the ``send`` call (or the ``tmo send`` fork) to
the agent's record of the Enter that submitted it; the gap between consecutive submissions within a
round (what one delivery costs the daemon); the first submission of each round, from the round's
first send (a message that waited for no other). At the end every body is looked up in its agent's file:
delivered once (exactly one identical copy), lost (no copy), doubled (more than one), corrupted (a
received text with its sequence number that is not the body byte for byte), misrouted (at another
agent), and the final status of every message row.

What bounds the latency: the daemon delivers one message at a time (one sender thread), and each
costs ``send_settle_delay`` (0.3 s) between paste and Enter plus another settle delay to see that
the Enter was taken; so the k-th message of a round waits for the k-1 before it.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC
from pathlib import Path
from typing import Any

from bench.harness import BenchError, BenchHome, tmo_argv, wait_until
from bench.stats import summarize
from tmux_orchestrator.message import FINAL, Message

NAME = "messages"
AGENT = Path(__file__).resolve().parent.parent / "tests" / "acceptance" / "fake_agent.py"
#: Runs the fake agent with the submission time added to each JSON line (``record`` wrapped).
WRAPPER = (
    "import sys, time\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "import fake_agent\n"
    "plain = fake_agent.record\n"
    "fake_agent.record = lambda entry, path: plain({**entry, 'at': time.time()}, path)\n"
    "fake_agent.main(sys.argv[2], sys.argv[3])\n"
)
TRICKY = ("run `ls`; # $(whoami) 'single' \"double\" back\\slash /path @file -x ünïcødé ✓ 日本語\n"
          "second line; echo $HOME\n  indented \\n not a newline;")
SEQ = re.compile(r"^\[msg (\d+)\]")


def body(seq: int) -> str:
    """The unique text of message ``seq``."""
    return f"[msg {seq:05d}] {TRICKY} end {seq};"


def _start_agents(bench: BenchHome, agents: int) -> list[tuple[int, Path]]:
    """Queue ``agents`` fake agents, wait until each reads its input; (project id, out file) each."""
    started = []
    for n in range(agents):
        work = bench.home / f"agent{n}"
        work.mkdir()
        argv = [sys.executable, "-c", WRAPPER, str(AGENT.parent), str(work / "out.jsonl"),
                str(work / "ready")]
        project = bench.orch.enqueue(argv, name=f"agent{n}", project_path=work)
        started.append((project.id, work))
    for _, work in started:
        ready = work / "ready"
        wait_until(ready.exists, timeout=60, interval=0.02, what=f"the fake agent in {work} to be ready")
    return [(pid, work / "out.jsonl") for pid, work in started]


def _send_cli(bench: BenchHome, project_id: int, text: str) -> int:
    """``tmo send ID TEXT --json``; returns the message id."""
    proc = subprocess.run([*tmo_argv(), "send", str(project_id), text, "--json"], capture_output=True,
                          text=True, env=bench.env, timeout=60, check=False)
    if proc.returncode != 0:
        raise BenchError(f"tmo send {project_id} exited {proc.returncode}: {proc.stderr.strip()}")
    return int(json.loads(proc.stdout)["id"])


def _all_final(bench: BenchHome, ids: list[int]) -> bool:
    return all(bench.orch.message(i).status in FINAL for i in ids)


def _received(out: Path) -> list[dict[str, Any]]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line]


def _epoch(message: Message, field: str) -> float | None:
    value = getattr(message, field)
    if value is None:
        return None
    return float((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp())


def run(config: dict[str, Any], *, keep: bool = False, seed: int = 1) -> dict[str, Any]:
    """Send ``messages`` messages to ``agents`` fake agents in rounds; latency and exactly-once."""
    agents = int(config["agents"])
    total = int(config["messages"])
    cli_every = max(1, total // max(1, int(config["cli_sends"])))
    round_timeout = float(config.get("round_timeout_s", 120))
    bench = BenchHome(NAME, keep=keep)
    with bench:
        bench.start_daemon(concurrency=agents)
        targets = _start_agents(bench, agents)
        sent: dict[int, dict[str, Any]] = {}  # seq -> what was sent, how and when
        t_start = time.monotonic()
        for first in range(0, total, agents):
            ids = []
            for seq in range(first, min(first + agents, total)):
                project_id, _ = targets[seq % agents]
                text = body(seq)
                via = "cli" if seq % cli_every == 0 else "api"
                t0 = time.time()
                if via == "cli":
                    message_id = _send_cli(bench, project_id, text)
                else:
                    message_id = bench.orch.send(project_id, text).id
                sent[seq] = {"agent": seq % agents, "via": via, "at": t0, "id": message_id,
                             "round": first // agents}
                ids.append(message_id)
            wait_until(functools.partial(_all_final, bench, ids), timeout=round_timeout, interval=0.01,
                       what=f"the messages of round {first // agents} to be delivered or failed")
        wall = time.monotonic() - t_start
        rows = {seq: bench.orch.message(s["id"]) for seq, s in sent.items()}
        received = [_received(out) for _, out in targets]
        cpu = bench.cpu_used()
    return _judge(config, sent, rows, received, wall, cpu, cli_every, bench.teardown_notes)


def _judge(config: dict[str, Any], sent: dict[int, dict[str, Any]], rows: dict[int, Message],
           received: list[list[dict[str, Any]]], wall: float, cpu: dict[str, float | None],
           cli_every: int, notes: list[str]) -> dict[str, Any]:
    """Match every sent body against what each agent recorded; the figures and counts."""
    copies: dict[int, list[float]] = {seq: [] for seq in sent}  # exact copies at the right agent
    corrupted: set[int] = set()
    misrouted: set[int] = set()
    stray = 0  # received texts that carry no sequence number at all
    for agent, entries in enumerate(received):
        for entry in entries:
            text = entry.get("text")
            match = SEQ.match(text) if isinstance(text, str) else None
            if match is None or int(match.group(1)) not in sent:
                stray += 1
                continue
            seq = int(match.group(1))
            if sent[seq]["agent"] != agent:
                misrouted.add(seq)
            elif text != body(seq):
                corrupted.add(seq)
            else:
                copies[seq].append(float(entry["at"]))
    once = [seq for seq, times in copies.items() if len(times) == 1 and seq not in corrupted]
    lost = [seq for seq, times in copies.items() if not times and seq not in corrupted | misrouted]
    doubled = [seq for seq, times in copies.items() if len(times) > 1]
    latency: dict[str, list[float]] = {"all": [], "api": [], "cli": []}
    for seq in once:
        ms = (copies[seq][0] - sent[seq]["at"]) * 1000
        latency["all"].append(ms)
        latency[sent[seq]["via"]].append(ms)
    gaps: list[float] = []
    by_round: dict[int, list[float]] = {}
    for seq in once:
        by_round.setdefault(sent[seq]["round"], []).append(copies[seq][0])
    first_sent = {r: min(s["at"] for s in sent.values() if s["round"] == r) for r in by_round}
    unqueued: list[float] = []  # the first submission of each round waited for no other message
    for r, times in by_round.items():
        times.sort()
        gaps += [(b - a) * 1000 for a, b in itertools.pairwise(times)]
        unqueued.append((times[0] - first_sent[r]) * 1000)
    row_latency = [(d - c) * 1000 for m in rows.values()
                   if (c := _epoch(m, "created_at")) is not None and (d := _epoch(m, "delivered_at"))]
    total = len(sent)
    return {
        "description": f"{total} messages to {config['agents']} fake agents (one daemon, concurrency "
                       f"{config['agents']}), in rounds of one message per agent; send -> the agent's "
                       "record of the Enter that submitted it",
        "config": {**config, "cli_every": cli_every,
                   "sent_via": dict(Counter(s["via"] for s in sent.values()))},
        "summary": {
            "send_to_submitted_ms": summarize(latency["all"]),
            "send_to_submitted_api_ms": summarize(latency["api"]),
            "send_to_submitted_cli_ms": summarize(latency["cli"]),
            "first_of_a_round_ms": summarize(unqueued),
            "between_submissions_in_a_round_ms": summarize(gaps),
            "row_created_to_delivered_ms": summarize(row_latency),
        },
        "delivery": {
            "sent": total, "delivered_once": len(once), "lost": len(lost), "doubled": len(doubled),
            "corrupted": len(corrupted), "misrouted": len(misrouted), "stray": stray,
            "delivered_once_percent": round(100.0 * len(once) / total, 3) if total else None,
            "row_status": dict(Counter(m.status.value for m in rows.values())),
            "row_tries": {str(k): v for k, v in sorted(Counter(m.tries for m in rows.values()).items())},
            "failed_reasons": dict(Counter(m.reason for m in rows.values() if m.reason)),
            "lost_seqs": lost[:20], "doubled_seqs": doubled[:20], "corrupted_seqs": sorted(corrupted)[:20],
        },
        "wall_s": round(wall, 1),
        "messages_per_s": round(total / wall, 2) if wall else None,
        "cpu_seconds": cpu,
        "notes": notes,
    }

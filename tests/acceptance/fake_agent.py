"""A stand-in for an interactive coding agent, run as a project's command by the tests.

It puts its terminal in raw mode, asks for bracketed paste (``ESC[?2004h``), draws a prompt with
what is typed so far, and on Enter (outside a paste) writes the submitted text to OUT_FILE as one
JSON line: so a test checks it byte for byte, and counts it. Inside a paste a CR is a newline (a
terminal pastes LF as CR), as real agents read it. Control keys outside a paste are written as
``{"key": "C-x"}``. It creates READY_FILE once it reads input. With DROP_ENTERS it ignores that
many first Enters, as an agent busy settling a paste does (the sender must press Enter again).

Usage: fake_agent.py OUT_FILE READY_FILE [DROP_ENTERS]
"""

from __future__ import annotations

import json
import os
import sys
import termios
import tty

PASTE_START = b"\x1b[200~"
PASTE_END = b"\x1b[201~"


def main(out_path: str, ready_path: str, drop_enters: int = 0) -> None:
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    out = sys.stdout.buffer
    out.write(b"\x1b[?2004hfake agent ready\r\n> ")
    out.flush()
    with open(ready_path, "w"):
        pass
    line = bytearray()
    pending = b""
    pasting = False
    try:
        while True:
            data = os.read(fd, 4096)
            if not data:
                return
            pending += data
            while pending:
                if pending.startswith(PASTE_START):
                    pasting, pending = True, pending[len(PASTE_START):]
                    continue
                if pending.startswith(PASTE_END):
                    pasting, pending = False, pending[len(PASTE_END):]
                    continue
                if pending[:1] == b"\x1b" and len(pending) < len(PASTE_START) and (
                        PASTE_START.startswith(pending) or PASTE_END.startswith(pending)):
                    break  # the rest of a marker is still to come
                byte, pending = pending[:1], pending[1:]
                if pasting:
                    line += b"\n" if byte == b"\r" else byte
                elif byte in (b"\r", b"\n") and drop_enters > 0:
                    drop_enters -= 1
                elif byte in (b"\r", b"\n"):
                    record({"text": line.decode("utf-8", "surrogateescape")}, out_path)
                    out.write(b"\r\nsubmitted\r\n> ")
                    line.clear()
                elif byte[0] < 32 and byte != b"\x1b":
                    record({"key": "C-" + chr(byte[0] + 96)}, out_path)
                else:
                    line += byte
                shown = bytes(line).replace(b"\n", "⏎".encode())
                out.write(b"\r\x1b[K> " + shown)
            out.flush()
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def record(entry: dict[str, str], out_path: str) -> None:
    """Append one submission to the output file, durably before anything else happens."""
    with open(out_path, "a", encoding="utf-8", errors="surrogateescape") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0)

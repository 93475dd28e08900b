"""A project's output as ``tmo logs`` prints it: its last lines, and its terminal escapes removed.

A project's log holds the raw bytes its program wrote to its terminal: colours, titles, cursor moves,
progress bars redrawn with ``\\r``. :class:`PlainText` turns them into lines a person (or ``grep``)
can read, as a stream: it holds only the line being drawn, so it works on a log being followed.

It is no terminal emulator: it keeps one line and a cursor column. Carriage returns, backspaces,
cursor moves along the line and line erases are applied to that line, as the terminal would show
it; a cursor move to another line ends the line; every other escape sequence and control
character is dropped. A full-screen program (an editor, a TUI agent redrawing its frame) therefore
shows each drawn line once per frame, in the order drawn.
"""

from __future__ import annotations

import codecs
import io
import os
import re
from typing import BinaryIO

#: One token of terminal output: a run of text, an escape sequence, or a control character.
_TOKEN = re.compile(
    r"(?P<text>[^\x00-\x08\x0a-\x1f\x7f-\x9f]+)"  # printable text (tabs included)
    r"|\x1b\[(?P<params>[0-?]*)[ -/]*(?P<csi>[@-~])"  # CSI: colours, cursor moves, erases, modes
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC: window title, hyperlink; ended by BEL or ST
    r"|\x1b[PX^_][^\x1b]*\x1b\\"  # DCS, SOS, PM, APC strings, ended by ST
    r"|\x1b[ -/]*(?P<esc>[0-OQ-WYZ\\`a-~])"  # the rest: charset selects (ESC ( B), ESC 7, ESC M ...
    r"|(?P<control>[\x00-\x1f\x7f-\x9f])"  # a control character, or an ESC starting nothing known
)
#: An escape sequence cut off by the end of what was read so far: held until the rest arrives.
_PARTIAL = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*\x1b?|[PX^_][^\x1b]*\x1b?|[ -/]*)")
#: An unfinished sequence longer than this is no sequence: its ESC is dropped, the rest printed.
_MAX_HELD = 1 << 16
#: A line longer than this (a program that never writes a newline) is printed in pieces this long,
#: as a terminal this wide would wrap it; a cursor move stops at its last column, as at the right
#: margin. So what is printed is bounded by what was read, whatever number a sequence carries.
_MAX_LINE = 1 << 16
#: CSI finals that move the cursor to another line (up, down, next, previous, position, row) or
#: clear the screen: the line drawn so far is finished.
_LINE_ENDING_CSI = frozenset("ABEFHfdJ")
#: Escapes that move to another line (index, next line, reverse index) or reset the terminal.
_LINE_ENDING_ESC = frozenset("DEMc")


class PlainText:
    """Terminal output in, plain text lines out (UTF-8), fed in chunks of any size."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""
        self._line = ""
        self._col = 0
        self._out: list[str] = []

    def feed(self, data: bytes) -> bytes:
        """The plain text of the lines ``data`` completes (the line being drawn is kept)."""
        self._parse(self._held + self._decoder.decode(data), final=False)
        return self._take()

    def flush(self) -> bytes:
        """The rest, at the end of the output: the last line even without its newline."""
        self._parse(self._held + self._decoder.decode(b"", final=True), final=True)
        self._end_line(always=False)
        return self._take()

    def _take(self) -> bytes:
        out, self._out = self._out, []
        return "".join(out).encode()

    def _parse(self, text: str, *, final: bool) -> None:
        self._held = ""
        for match in _TOKEN.finditer(text):
            kind = match.lastgroup
            if kind == "text":
                self._write(match.group())
            elif kind == "csi":
                code = match.group("csi")
                if code != "m":  # colours and styles, most sequences by far: nothing to apply
                    self._csi(match.group("params"), code)
            elif kind == "esc":
                if match.group("esc") in _LINE_ENDING_ESC:
                    self._end_line(always=False)
            elif kind == "control":
                char = match.group()
                start = match.start()
                if (char == "\x1b" and not final and len(text) - start <= _MAX_HELD
                        and _PARTIAL.fullmatch(text, start)):
                    self._held = text[start:]  # the rest of this sequence is still to come
                    return
                self._control(char)
            # kind None: a complete OSC, DCS ... string, dropped

    def _write(self, text: str) -> None:
        while text:
            if self._col >= _MAX_LINE:  # the line is full: what follows starts the next piece
                self._end_line(always=True)
            line, col = self._line, self._col
            piece, text = text[: _MAX_LINE - col], text[_MAX_LINE - col:]
            if col >= len(line):
                line = line + " " * (col - len(line)) + piece
            else:  # drawn over what is there (after \r, a backspace or a cursor move)
                line = line[:col] + piece + line[col + len(piece):]
            self._line, self._col = line, col + len(piece)

    def _control(self, char: str) -> None:
        if char in "\n\v\f":
            self._end_line(always=True)
        elif char == "\r":
            self._col = 0
        elif char == "\b":
            self._col = max(0, self._col - 1)
        # any other control character (BEL, SI/SO, a stray ESC, ...) shows nothing

    def _csi(self, params: str, final: str) -> None:
        if params[:1] in ("<", "=", ">", "?"):
            return  # private modes (cursor shown, alternate screen, ...): nothing on the line
        # Only the first parameter is used; a number past the line is as good as the line's end
        # (and converting thousands of digits would raise).
        first = params.split(";", 1)[0].lstrip("0")
        n = (int(first) if len(first) <= 6 else _MAX_LINE) if first.isdigit() else 0
        if final in _LINE_ENDING_CSI:
            self._end_line(always=False)
        elif final == "K":  # erase in line: to its end, from its start, or all of it
            if n == 0:
                self._line = self._line[: self._col]
            elif n == 1:
                self._line = " " * min(self._col + 1, len(self._line)) + self._line[self._col + 1:]
            else:
                self._line = ""
        elif final == "C":
            self._col = min(self._col + max(n, 1), _MAX_LINE - 1)
        elif final == "D":
            self._col = max(0, self._col - max(n, 1))
        elif final in "G`":
            self._col = min(max(n, 1), _MAX_LINE) - 1

    def _end_line(self, *, always: bool) -> None:
        """Print the line drawn so far (trailing blanks are invisible on a terminal: dropped).
        A line left by a cursor move is printed only when something is on it."""
        line = self._line.rstrip(" ")
        if always or line:
            self._out.append(line + "\n")
        self._line, self._col = "", 0


def last_lines_start(fh: BinaryIO, count: int, *, block: int = 1 << 16) -> int:
    """The offset in ``fh`` where its last ``count`` lines start (what ``tail -n count`` prints),
    found by reading blocks back from the end: a big log is not read whole."""
    end = fh.seek(0, os.SEEK_END)
    if count <= 0:
        return end
    found = 0
    position = end
    while position > 0:
        size = min(block, position)
        position -= size
        fh.seek(position)
        data = fh.read(size)
        stop = len(data)
        if position + stop == end and data.endswith(b"\n"):
            stop -= 1  # the newline ending the file ends the last line; it starts none
        while (newline := data.rfind(b"\n", 0, stop)) >= 0:
            found += 1
            if found == count:
                return position + newline + 1
            stop = newline
    return 0


def last_lines(data: bytes, count: int) -> bytes:
    """The last ``count`` lines of ``data`` (:func:`last_lines_start` on bytes in memory)."""
    return data[last_lines_start(io.BytesIO(data), count):]

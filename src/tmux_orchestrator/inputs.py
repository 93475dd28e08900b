"""Hostile text is refused at the door, and stored text is printed safely.

What a project is given (name, command, environment, directory, spec file) ends up in tmux commands,
a sh script, SQLite, hook variables, and tables printed to a terminal. So :func:`check_project`
refuses, with one line naming the field:

* NUL anywhere: it cannot pass through argv or the environment (``sh -c 'a<NUL>b'`` ran both halves,
  a NUL in a name stopped hook delivery for good);
* text that is not valid UTF-8 (Python holds undecodable argv bytes as lone surrogates, ``\\udcff``,
  which crashed the daemon when stored);
* control characters (C0, DEL, C1) in names and paths, which are printed in tables and events, and in
  commands except tab and newline (a ``sh -c`` script is legitimately several lines).

Environment values may hold any character but NUL (a PEM key has newlines). Whatever got stored
before, :func:`safe_text` makes it safe to print: control characters become visible escapes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from functools import cache

from tmux_orchestrator.errors import UsageError

#: C0 controls, DEL, C1 controls, lone surrogates (undecodable bytes), and the bidirectional
#: controls that reorder what a terminal shows (``\u202e`` makes ``evil.txt`` read ``txt.live``):
#: never printed raw.
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_UNPRINTABLE = f"[\x00-\x1f\x7f-\x9f\ud800-\udfff{_BIDI}]"
#: What a command argument may not hold: the same, except tab and newline.
_COMMAND_BAD = "[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]"
_SURROGATE = "[\ud800-\udfff]"


@cache
def _pattern(text: str) -> re.Pattern[str]:
    # Compiled on first use: `tmo list` imports this module and seldom needs any of them.
    return re.compile(text)


def _problem(text: str, bad: str) -> str | None:
    """What is wrong with ``text`` under the pattern ``bad``, or None."""
    if text.isprintable():  # no control character, no surrogate: the common case, in C
        return None
    if "\x00" in text:
        return "contains a NUL byte"
    if _pattern(_SURROGATE).search(text):
        return "is not valid UTF-8"
    match = _pattern(bad).search(text)
    if match:
        return f"contains a control character ({safe_text(match.group())})"
    return None


def check_text(value: str, field: str) -> None:
    """Refuse NUL, invalid UTF-8, control characters and invisible formatting characters (zero-width,
    bidirectional, line separators) in ``value`` (a name, a path): what is shown must be what is
    there."""
    problem = _problem(value, _UNPRINTABLE)
    if problem is None and not value.isprintable():
        hidden = next((c for c in value if unicodedata.category(c) in _INVISIBLE), None)
        if hidden is not None:
            problem = f"contains an invisible formatting character (\\u{ord(hidden):04x})"
    if problem:
        raise UsageError(f"{field} {problem}")


#: Unicode categories of characters a name or path may not hold: format (zero-width, bidirectional),
#: line and paragraph separators, private use, unassigned.
_INVISIBLE = frozenset({"Cf", "Zl", "Zp", "Co", "Cn"})


def check_command(argv: Sequence[str]) -> None:
    """Refuse NUL and invalid UTF-8 in any argument, control characters in the program, and control
    characters other than tab and newline in the other arguments."""
    for number, word in enumerate(argv, start=1):
        problem = _problem(word, _UNPRINTABLE if number == 1 else _COMMAND_BAD)
        if problem:
            allowed = "" if number == 1 or "NUL" in problem or "UTF-8" in problem else (
                "; only tab and newline are allowed in a command")
            raise UsageError(f"argument {number} of the command {problem}{allowed}")


def check_env(env: Mapping[str, str]) -> None:
    """Refuse NUL and invalid UTF-8 in environment values (names are checked by the caller)."""
    for key, value in env.items():
        if "\x00" in value:
            raise UsageError(f"environment variable {safe_text(key)}: the value contains a NUL byte")
        if _pattern(_SURROGATE).search(value):
            raise UsageError(f"environment variable {safe_text(key)}: the value is not valid UTF-8")


def check_project(
    argv: Sequence[str], *, name: str, env: Mapping[str, str], project_path: str | None,
    spec_path: str | None,
) -> None:
    """Everything :class:`~tmux_orchestrator.Orchestrator` stores for a new project; raises
    :class:`UsageError` naming the first bad field."""
    check_command(argv)
    check_text(name, "the name")
    check_env(env)
    if project_path is not None:
        check_text(project_path, "the directory")
    if spec_path is not None:
        check_text(spec_path, "the spec file")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char in "\n\t\r":
        return {"\n": "\\n", "\t": "\\t", "\r": "\\r"}[char]
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, as surrogateescape holds it
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(text: str) -> str:
    """``text`` fit for a terminal: control characters and undecodable bytes become visible escapes
    (``\\x1b``, ``\\n``, ``\\xff``), so stored text can neither inject escape sequences nor break a
    line-per-row table."""
    if text.isprintable():  # the common case, without a regular expression
        return text
    pattern = _pattern(_UNPRINTABLE)
    return text if pattern.search(text) is None else pattern.sub(_escape, text)

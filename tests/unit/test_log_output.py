"""What `tmo logs --plain` and `--lines N` make of a project's log (output.py)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tmux_orchestrator.output import _MAX_LINE, PlainText, last_lines, last_lines_start


def plain(data: bytes) -> bytes:
    """The whole of ``data`` through one filter."""
    text = PlainText()
    return text.feed(data) + text.flush()


def plain_bytewise(data: bytes) -> bytes:
    """``data`` fed one byte at a time: every escape and character is cut somewhere."""
    text = PlainText()
    return b"".join(text.feed(data[i : i + 1]) for i in range(len(data))) + text.flush()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # colours and other SGR, with and without parameters
        (b"\x1b[1;31mred\x1b[0m plain\x1b[m\r\n", b"red plain\n"),
        # a window title (OSC ended by BEL, then by ST) and a hyperlink
        (b"\x1b]0;my title\x07text\x1b]2;t\x1b\\\n", b"text\n"),
        (b"\x1b]8;;http://x.example\x1b\\link\x1b]8;;\x1b\\\n", b"link\n"),
        # charset selects, keypad modes, cursor save/restore, a DCS string
        (b"\x1b(B\x1b)0\x1b=\x1b>\x1b7a\x1b8\x1bP1$r0m\x1b\\b\n", b"ab\n"),
        # private modes (hide the cursor, the alternate screen) and SI/SO, BEL
        (b"\x1b[?25l\x1b[?1049hx\x0e\x0fy\x07\x1b[?25h\n", b"xy\n"),
        # a progress bar redrawn with carriage returns: the last state is what the terminal shows
        (b"  0%\r 50%\r100%\r\n", b"100%\n"),
        # a shorter redraw erasing the rest of the line
        (b"downloading file\r\x1b[Kdone\n", b"done\n"),
        # a shorter redraw without erasing: the old tail stays, as on the terminal
        (b"abcdef\rXY\n", b"XYcdef\n"),
        # backspaces move back, the next character overwrites; a rubbed-out character is gone
        (b"helo\b\blo\n", b"helo\n"),
        (b"abc\b \b\n", b"ab\n"),
        # cursor right (CUF) and to a column (CHA) leave blanks
        (b"a\x1b[3Cb\x1b[1Gc\n", b"c   b\n"),
        # a cursor move to another line ends the line
        (b"first\x1b[2;1Hsecond\n", b"first\nsecond\n"),
        # a TUI erasing its last frame (erase line, cursor up) and drawing the next: both frames
        (b"frame 1 a\nframe 1 b\n\x1b[2K\x1b[1A\x1b[2K\x1b[1A\x1b[2K\x1b[Gframe 2 a\nframe 2 b\n",
         b"frame 1 a\nframe 1 b\nframe 2 a\nframe 2 b\n"),
        # empty lines stay, tabs stay, a last line without a newline is printed
        (b"a\n\n\tb\nlast", b"a\n\n\tb\nlast\n"),
        # a stray ESC (followed by no escape) is dropped alone, as are other control characters
        (b"x\x1b\x01y\x7f\n", b"xy\n"),
        # UTF-8 overwritten by character, not by byte
        ("héllo\rj\n".encode(), "jéllo\n".encode()),
    ],
)
def test_plain_text(raw: bytes, expected: bytes) -> None:
    assert plain(raw) == expected
    assert plain_bytewise(raw) == expected


def test_plain_text_streams_complete_lines_and_holds_the_one_being_drawn() -> None:
    text = PlainText()
    assert text.feed(b"line one\r\nprogress 1") == b"line one\n"
    assert text.feed(b"0%\r\x1b[Kprogress 2") == b""
    assert text.feed(b"0%\r\n\x1b[3") == b"progress 20%\n"
    assert text.feed(b"2mgreen\x1b[0m\n") == b"green\n"
    # a sequence cut off after others in the same chunk is held too
    assert text.feed(b"\x1b[1mbold\x1b[0m \x1b[K\x1b]0;ti") == b""
    assert text.feed(b"tle\x07end\n") == b"bold end\n"
    assert text.flush() == b""


def test_plain_text_of_an_unterminated_title_does_not_swallow_the_log() -> None:
    """An OSC never ended is given up after a bound: what follows is printed, not held forever."""
    text = PlainText()
    out = text.feed(b"\x1b]0;no end" + b"x" * 100_000) + text.feed(b"\nvisible\n") + text.flush()
    assert out.endswith(b"visible\n")


def test_plain_text_of_an_endless_line_is_printed_in_bounded_pieces() -> None:
    text = PlainText()
    out = text.feed(b"y" * 300_000)
    assert out, "a line with no end was held whole"
    assert set((out + text.flush()).replace(b"\n", b"")) == {ord("y")}


def _lines_file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "1.log"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "count", "expected"),
    [
        (b"a\nb\nc\n", 2, b"b\nc\n"),
        (b"a\nb\nc", 2, b"b\nc"),
        (b"a\nb\nc\n", 3, b"a\nb\nc\n"),
        (b"a\nb\nc\n", 10, b"a\nb\nc\n"),
        (b"a\nb\nc\n", 0, b""),
        (b"a\n\n\n", 2, b"\n\n"),
        (b"", 5, b""),
        (b"no newline at all", 1, b"no newline at all"),
    ],
)
def test_last_lines_like_tail(tmp_path: Path, data: bytes, count: int, expected: bytes) -> None:
    with _lines_file(tmp_path, data).open("rb") as fh:
        fh.seek(last_lines_start(fh, count, block=2))  # tiny blocks: lines cut across blocks
        assert fh.read() == expected
    assert last_lines(data, count) == expected


class CountingFile(io.FileIO):
    """A real file that counts the bytes read from it."""

    read_bytes = 0

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        self.read_bytes += len(data)
        return data


def test_last_lines_of_a_big_log_read_only_its_end(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    with path.open("wb") as fh:
        line = b"x" * 99 + b"\n"
        for _ in range(200):
            fh.write(line * 1000)  # 20 MB
        fh.write(b"second to last\nlast\n")
    with CountingFile(path, "rb") as fh:
        start = last_lines_start(fh, 2)
        assert fh.read_bytes <= 1 << 16
    assert start == path.stat().st_size - len(b"second to last\nlast\n")


def plain_in_chunks(data: bytes, size: int) -> bytes:
    """``data`` fed in chunks of ``size`` bytes (what ``tmo logs`` reads at a time)."""
    text = PlainText()
    return b"".join(text.feed(data[i : i + size]) for i in range(0, len(data), size)) + text.flush()


@pytest.mark.parametrize("size", [1 << 10, _MAX_LINE - 1, _MAX_LINE, 1 << 17, 1 << 20, 1 << 30])
def test_plain_text_cuts_an_over_long_line_into_pieces_of_the_line_limit(size: int) -> None:
    """Whatever is read at a time, a line longer than the limit is split at the limit, and its end
    (a newline right after a piece) makes no empty line."""
    long, exact = 3 * _MAX_LINE + 100, 2 * _MAX_LINE
    data = b"x" * long + b"\n" + b"y" * exact + b"\nlast\n"
    expected = [b"x" * _MAX_LINE] * 3 + [b"x" * 100] + [b"y" * _MAX_LINE] * 2 + [b"last"]
    assert plain_in_chunks(data, size).split(b"\n")[:-1] == expected
    assert last_lines(plain_in_chunks(data, size), 2) == b"y" * _MAX_LINE + b"\nlast\n"


def test_plain_text_of_a_line_exactly_the_limit_long_is_one_line() -> None:
    assert plain(b"z" * _MAX_LINE + b"\nnext\n") == b"z" * _MAX_LINE + b"\nnext\n"
    # drawn over at its end (a progress bar at the limit): still one line
    assert plain(b"z" * _MAX_LINE + b"\rA\n") == b"A" + b"z" * (_MAX_LINE - 1) + b"\n"


@pytest.mark.parametrize(
    "move",
    [b"\x1b[50000000C", b"\x1b[9999999999999C", b"\x1b[" + b"9" * 5000 + b"C",
     b"\x1b[50000000G", b"\x1b[9999999999999`", b"\x1b[" + b"0" * 5000 + b"70000G"],
)
def test_plain_text_cursor_moves_stop_at_the_line_limit(move: bytes) -> None:
    """A cursor move past the limit stops in its last column, as a terminal's cursor stops at the
    right margin: the output stays bounded by the input plus one line, whatever the number."""
    data = b"before\n" + move + b"x\nafter\n"
    expected = b"before\n" + b" " * (_MAX_LINE - 1) + b"x\nafter\n"
    assert plain(data) == expected
    assert plain_in_chunks(data, 7) == expected

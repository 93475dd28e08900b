"""Human durations (durations.py)."""

from __future__ import annotations

import pytest

from tmux_orchestrator.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1w", 604800.0),
        ("500ms", 0.5),
        ("1h30m", 5400.0),
        ("1d2h3m4s", 86400 + 7200 + 180 + 4),
        ("1.5h", 5400.0),
        ("1m500ms", 60.5),
        ("  5M ", 300.0),
        ("2H", 7200.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["", "   ", "abc", "5x", "m5", "5m-3s", "1h 30m", "h", "5 m", "-5", "-5s", "1..5s", "5mm", "s"],
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_parse_duration_error_gives_a_hint() -> None:
    with pytest.raises(ValueError, match=r"30s, 5m"):
        parse_duration("soon")


def test_parse_duration_negative_number_says_so() -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_duration("-1")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0ms"),
        (0.85, "850ms"),
        (1.0, "1.0s"),
        (5.5, "5.5s"),
        (42.0, "42s"),
        (60.0, "1m0s"),
        (303.0, "5m3s"),
        (3599.0, "59m59s"),
        (3600.0, "1h0m"),
        (7200.0, "2h0m"),
        (47 * 3600.0, "47h0m"),
        (48 * 3600.0, "2d0h"),
        (3 * 86400 + 5 * 3600.0, "3d5h"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [1.0, 42.0, 303.0, 7200.0, 3 * 86400.0])
def test_format_then_parse_round_trips_whole_units(seconds: float) -> None:
    # format_duration's output for whole-unit values parses back to the same seconds
    assert parse_duration(format_duration(seconds).replace(".0s", "s")) == pytest.approx(seconds)

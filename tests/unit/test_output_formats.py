"""The one time format, exact durations and the log formatters (issue 13, defect 6)."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tmux_orchestrator.durations import format_duration_exact, parse_duration
from tmux_orchestrator.logs import JsonFormatter, TextFormatter
from tmux_orchestrator.timestamps import format_epoch, format_time

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime(2026, 12, 1, 17, 10, 47, 123456, tzinfo=UTC), "2026-12-01T17:10:47.123456+00:00"),
        # whole seconds keep their six digits (isoformat() alone drops them)
        (datetime(2026, 12, 1, 17, 10, 47, tzinfo=UTC), "2026-12-01T17:10:47.000000+00:00"),
        # another offset is converted to UTC; a naive time is UTC (as stored)
        (datetime(2026, 12, 1, 19, 10, 47, tzinfo=timezone(timedelta(hours=2))),
         "2026-12-01T17:10:47.000000+00:00"),
        (datetime(2026, 12, 1, 17, 10, 47, 500000), "2026-12-01T17:10:47.500000+00:00"),
    ],
)
def test_format_time(value: datetime, text: str) -> None:
    assert format_time(value) == text
    assert datetime.fromisoformat(text) == value.replace(tzinfo=value.tzinfo or UTC)


def test_format_epoch_is_the_same_format() -> None:
    assert format_epoch(0) == "1970-01-01T00:00:00.000000+00:00"
    assert format_epoch(1764609047.25) == "2025-12-01T17:10:47.250000+00:00"


def test_log_lines_carry_the_one_time_format() -> None:
    record = logging.LogRecord("tmux_orchestrator", logging.INFO, __file__, 1, "hello %s", ("x",), None)
    record.created = 1764609047.25
    text = TextFormatter("%(asctime)s %(levelname)s %(message)s").format(record)
    assert text == "2025-12-01T17:10:47.250000+00:00 INFO hello x"
    data = json.loads(JsonFormatter().format(record))
    assert data["time"] == "2025-12-01T17:10:47.250000+00:00" and data["message"] == "hello x"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"), (0.25, "0.25s"), (30.0, "30s"), (90.0, "1m30s"), (90.5, "1m30.5s"),
        (3600.0, "1h"), (4 * 3600.0, "4h"), (3600.0 + 30, "1h30s"), (86400.0, "1d"),
        (86400.0 + 3600 + 60 + 1, "1d1h1m1s"), (3650 * 86400.0, "3650d"),
    ],
)
def test_format_duration_exact(seconds: float, text: str) -> None:
    assert format_duration_exact(seconds) == text


@pytest.mark.parametrize(
    "seconds", [0.0, 0.001, 0.5, 1.0, 29.999, 30.0, 59.0, 60.0, 61.5, 3599.0, 3600.1, 14400.0,
                86399.999999, 90061.0, 123456.789, 3650 * 86400.0],
)
def test_format_duration_exact_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration_exact(seconds)) == pytest.approx(seconds, abs=1e-6)
    text = format_duration_exact(seconds)
    assert format_duration_exact(parse_duration(text)) == text

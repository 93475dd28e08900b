"""The one time format and the log formatters (issue 13, defect 6)."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

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

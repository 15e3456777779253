"""Promised time limits are in working days (工作日), counted in China Standard Time.

Weekends are skipped; the statutory holiday calendar changes every year by State
Council notice and is not modelled, so a deadline may fall a few days early around
holidays, which errs on the side of flagging, not hiding, a late application.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

CST = timezone(timedelta(hours=8), "CST")


def add_working_days(start_ms: int, days: int) -> int:
    """The end of the ``days``-th working day after the start (local midnight after it)."""
    day = datetime.fromtimestamp(start_ms / 1000, tz=CST).date()
    remaining = days
    while remaining > 0:
        day += timedelta(days=1)
        if day.weekday() < 5:
            remaining -= 1
    end = datetime(day.year, day.month, day.day, tzinfo=CST) + timedelta(days=1)
    return int(end.astimezone(UTC).timestamp() * 1000)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")

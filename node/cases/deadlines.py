"""Promised time limits are in working days (工作日), counted in China Standard Time.

Working days follow the State Council's statutory holiday calendar, including the weekend
days that are worked in exchange (调休), through the maintained ``chinesecalendar`` package:
it is updated every year when the notice appears. For a year the package does not know yet
(the notice comes out in November or December), weekdays are counted instead, which can put a
deadline a few days early around a holiday: that errs on the side of flagging, not hiding, a
late application, and a package upgrade corrects it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from functools import lru_cache

import chinese_calendar

CST = timezone(timedelta(hours=8), "CST")


@lru_cache(maxsize=4096)
def is_working_day(day: date) -> bool:
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:  # a year the calendar has no notice for yet
        return day.weekday() < 5


def add_working_days(start_ms: int, days: int) -> int:
    """The end of the ``days``-th working day after the start (local midnight after it)."""
    return _end_of_working_days(datetime.fromtimestamp(start_ms / 1000, tz=CST).date(), days)


@lru_cache(maxsize=1024)
def _end_of_working_days(day: date, days: int) -> int:
    """Cached by start day: every application of a day asks the same few limits, and the walk
    over up to 60 days cost 6-85 µs, twice per application (origin and owner)."""
    remaining = days
    while remaining > 0:
        day += timedelta(days=1)
        if is_working_day(day):
            remaining -= 1
    end = datetime(day.year, day.month, day.day, tzinfo=CST) + timedelta(days=1)
    return int(end.astimezone(UTC).timestamp() * 1000)


def bundle_due_ms(start_ms: int, days: int | dict[str, int]) -> int:
    """A bundle's promise: ``days`` working days from the start, or, given each part's
    working days along the dependency graph (registry.bundles.longest_path_days), the
    longest of them: parts that do not wait for each other run side by side."""
    return add_working_days(start_ms, days if isinstance(days, int) else max(days.values(), default=0))


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")

"""Working days follow the statutory holiday calendar, make-up working weekends included."""

from __future__ import annotations

from datetime import date, datetime

from node.cases.deadlines import CST, add_working_days, is_working_day


def _ms(y: int, m: int, d: int, h: int = 10) -> int:
    return int(datetime(y, m, d, h, tzinfo=CST).timestamp() * 1000)


def _day_of(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, tz=CST).date()


def test_national_day_week_is_not_worked() -> None:
    assert not is_working_day(date(2026, 10, 1))
    assert not is_working_day(date(2026, 10, 7))


def test_a_make_up_saturday_is_worked() -> None:
    # 2026-02-14 is a Saturday worked in exchange for the Spring Festival holiday.
    assert date(2026, 2, 14).weekday() == 5
    assert is_working_day(date(2026, 2, 14))


def test_a_deadline_skips_the_holiday_week() -> None:
    # Submitted Wednesday 30 September 2026: 1-7 October are holidays, so one working day
    # later is Thursday 8 October, and three later is Saturday 10 October, a make-up day.
    assert _day_of(add_working_days(_ms(2026, 9, 30), 1) - 1) == date(2026, 10, 8)
    assert _day_of(add_working_days(_ms(2026, 9, 30), 3) - 1) == date(2026, 10, 10)


def test_a_year_without_a_notice_counts_weekdays() -> None:
    # No calendar is published for 2031 yet: Friday 3 January + 1 working day = Monday 6 January.
    due = add_working_days(_ms(2031, 1, 3), 1)
    assert _day_of(due - 1) == date(2031, 1, 6)

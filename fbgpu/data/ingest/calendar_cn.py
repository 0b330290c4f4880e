"""The SSE/SZSE trading calendar: which dates an ingest accepts (issue 13).

A date is an exchange trading day when it is a weekday (Monday-Friday) and not a Chinese public
holiday. The holiday table is the ``chinese_calendar`` package (PyPI ``chinese-calendar``,
pinned in pyproject.toml; its data is transcribed from the State Council's annual holiday notices,
http://www.gov.cn/zhengce/). The SSE and SZSE close on exactly those weekday holidays; the
weekend days the State Council declares working days ("调休") are still closed for trading,
which the weekday rule covers.

Why a package rather than a committed table: the State Council publishes each year's holidays in
November/December, and a maintained package gets the new year with a version bump; a copied table
would silently go stale. ``exchange_calendars`` (XSHG) was the alternative; it pulls in a larger
dependency tree for the same source, so the smaller package won.

Years the package has no data for (before 2004, or after its last published year; 2099) are not
guessed: such a date is rejected with a message saying so. ``calendar = "weekdays"`` in the
ingest mapping accepts any weekday (synthetic markets, which model no holidays);
``calendar = "none"`` disables the check.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import chinese_calendar

CalendarRule = Literal["exchange", "weekdays", "none"]

#: Weekday closures of the exchanges that are not public holidays in the State Council's notice.
#: Source: SSE/SZSE "关于2024年部分节假日休市安排的通知" (closed Fri 2024-02-09, Spring Festival
#: eve, which the State Council only "encouraged" as a day off).
EXTRA_CLOSURES: dict[dt.date, str] = {
    dt.date(2024, 2, 9): "Spring Festival eve (exchange closure notice for 2024)",
}


def calendar_years() -> tuple[int, int]:
    """First and last year covered by the holiday table."""
    years = [d.year for d in chinese_calendar.holidays]
    return min(years), max(years)


def not_a_trading_day(date: dt.date, rule: CalendarRule = "exchange") -> str | None:
    """Why ``date`` is not an SSE/SZSE trading day under ``rule``, or None when it is one.

    ``exchange``: weekday and not a public holiday (within the years of the table; outside them
    the date is refused). ``weekdays``: any weekday. ``none``: every date.
    """
    if rule == "none":
        return None
    if date.weekday() >= 5:
        return f"{date} is a {date.strftime('%A')}: the exchanges do not trade at weekends"
    if rule == "weekdays":
        return None
    first, last = calendar_years()
    if not first <= date.year <= last:
        return (f"{date} is outside the exchange calendar's years {first}-{last} (no holiday "
                "data; upgrade chinese-calendar, or set calendar = 'weekdays' in the mapping)")
    if date in EXTRA_CLOSURES:
        return f"{date} is an exchange holiday ({EXTRA_CLOSURES[date]})"
    if chinese_calendar.is_holiday(date):
        name = chinese_calendar.get_holiday_detail(date)[1]
        return f"{date} is an exchange holiday ({name or 'public holiday'})"
    return None


def is_trading_day(date: dt.date, rule: CalendarRule = "exchange") -> bool:
    """Whether ``date`` is an SSE/SZSE trading day (see :func:`not_a_trading_day`)."""
    return not_a_trading_day(date, rule) is None


def trading_days_between(a: dt.date, b: dt.date, rule: CalendarRule = "exchange") -> int:
    """Number of trading days strictly between ``a`` and ``b`` (``a < b``).

    Under ``none`` the weekday rule is used; a year outside the table counts its weekdays.
    """
    eff: CalendarRule = "weekdays" if rule == "none" else rule
    first, last = calendar_years()
    n = 0
    d = a + dt.timedelta(days=1)
    while d < b:
        r = eff if first <= d.year <= last else "weekdays"
        n += is_trading_day(d, r)
        d += dt.timedelta(days=1)
    return n

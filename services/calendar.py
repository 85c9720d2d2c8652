"""The hall calendar: working days, public holidays, China's swapped working days (调休), hours.

Three sources, in order: the county's calendar (desired state ``calendar``, which can supply a
year before any library knows it), the ``chinesecalendar`` library (2004–2026 in 1.11), and,
for a year nobody supplied, the plain weekday rule — with an alarm, never a crash, because a
wrong deadline is better than a hall whose buttons stop working on 1 January.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Callable

log = logging.getLogger(__name__)

try:  # the maintained source of State Council holiday notices
    import chinese_calendar as _library
except ImportError:  # pragma: no cover - a broken install still runs on the weekday rule
    _library = None


class CalendarInvalid(ValueError):
    """The county's calendar command is malformed; ``field`` names where."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


@dataclass(frozen=True)
class YearDays:
    """One year's exceptions to the weekday rule, as the State Council's notice lists them."""

    holidays: frozenset[date]  # days off (including weekdays given up for a holiday)
    workdays: frozenset[date]  # weekend days worked instead (调休)


# ASCII digits only: str.isdigit() would take full-width ２０２７, fromisoformat week dates.
YEAR = re.compile(r"[0-9]{4}")
DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
HOURS = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-3]):([0-5][0-9])")


def parse_hours(spans: list[str]) -> tuple[tuple[time, time], ...]:
    """'08:30-12:00' strings into (start, end) pairs; raises ValueError naming the bad one."""
    out = []
    for i, span in enumerate(spans):
        m = HOURS.fullmatch(span) if isinstance(span, str) else None
        if not m:
            raise ValueError(f"[{i}] = {span!r} is not HH:MM-HH:MM")
        start, end = time(int(m[1]), int(m[2])), time(int(m[3]), int(m[4]))
        if end <= start:
            raise ValueError(f"[{i}] = {span!r} ends before it starts")
        out.append((start, end))
    out.sort()
    for (s1, e1), (s2, e2) in zip(out, out[1:]):
        if s2 < e1:
            raise ValueError(f"{s1:%H:%M}-{e1:%H:%M} and {s2:%H:%M}-{e2:%H:%M} overlap")
    return tuple(out)


def validate_calendar(data: Any) -> dict[int, YearDays]:
    """Check the county's ``calendar`` desired state: {"years": {"2027": {"holidays": [...], "workdays": [...]}}}."""
    if not isinstance(data, dict) or not isinstance(data.get("years"), dict):
        raise CalendarInvalid("data.years", 'must be an object of year → {"holidays": [...], "workdays": [...]}')
    extra = sorted(set(data) - {"years"})
    if extra:
        raise CalendarInvalid(f"data.{extra[0]}", 'is not part of a calendar; send only "years"')
    years: dict[int, YearDays] = {}
    for key, spec in data["years"].items():
        path = f"data.years.{key}"
        if not (isinstance(key, str) and YEAR.fullmatch(key) and 2000 <= int(key) <= 2100):
            raise CalendarInvalid(path, "the year must be written as four digits, e.g. \"2027\"")
        year = int(key)
        if not isinstance(spec, dict) or set(spec) - {"holidays", "workdays"}:
            raise CalendarInvalid(path, 'must have only "holidays" and "workdays" lists')
        parsed: dict[str, set[date]] = {}
        for kind in ("holidays", "workdays"):
            days = spec.get(kind, [])
            if not isinstance(days, list):
                raise CalendarInvalid(f"{path}.{kind}", "must be a list of YYYY-MM-DD dates")
            parsed[kind] = set()
            for i, text in enumerate(days):
                try:
                    day = date.fromisoformat(text) if isinstance(text, str) and DAY.fullmatch(text) else None
                except ValueError:
                    day = None
                if day is None:
                    raise CalendarInvalid(f"{path}.{kind}[{i}]", f"{text!r} is not a date written YYYY-MM-DD")
                if day.year != year:
                    raise CalendarInvalid(f"{path}.{kind}[{i}]", f"{text} is not in {year}")
                parsed[kind].add(day)
        both = parsed["holidays"] & parsed["workdays"]
        if both:
            raise CalendarInvalid(f"{path}", f"{min(both)} is listed both as a holiday and as a working day")
        years[year] = YearDays(frozenset(parsed["holidays"]), frozenset(parsed["workdays"]))
    return years


class HallCalendar:
    """Which days the hall works, and its opening hours on them."""

    def __init__(
        self,
        opening_hours: tuple[tuple[time, time], ...] = ((time(8, 30), time(12, 0)), (time(14, 30), time(17, 30))),
        *,
        on_unknown_year: Callable[[int], None] | None = None,
        use_library: bool = True,
    ) -> None:
        self.opening_hours = opening_hours
        self.on_unknown_year = on_unknown_year
        self.use_library = use_library and _library is not None
        self.county: dict[int, YearDays] = {}
        self._warned: set[int] = set()
        # Counts the county calendars taken: what was counted on an older one may be off.
        self.generation = 0

    def set_county_years(self, years: dict[int, YearDays]) -> None:
        """Take the county's calendar (it wins over the library for the years it names).

        A year still unknown is logged (and ``on_unknown_year`` called) again when next used.
        """
        self.county = dict(years)
        self._warned = set()
        self.generation += 1

    def source(self, year: int) -> str:
        """Where ``year``'s days come from: 'county', 'library' or 'weekday_rule'."""
        if year in self.county:
            return "county"
        if self.use_library:
            try:
                _library.is_workday(date(year, 6, 1))
                return "library"
            except NotImplementedError:
                pass
        return "weekday_rule"

    def is_working_day(self, day: date) -> bool:
        """True on a day the hall works (weekdays, and 调休 weekends), False on days off."""
        county = self.county.get(day.year)
        if county is not None:
            if day in county.holidays:
                return False
            if day in county.workdays:
                return True
            return day.weekday() < 5
        if self.use_library:
            try:
                return bool(_library.is_workday(day))
            except NotImplementedError:
                pass
        if day.year not in self._warned:
            self._warned.add(day.year)
            log.warning("no holiday calendar for %d: using the weekday rule until the county sends one", day.year)
            if self.on_unknown_year:
                self.on_unknown_year(day.year)
        return day.weekday() < 5

    def is_public_holiday(self, day: date) -> bool:
        """True on a day off for a public holiday (春节, 国庆 …), weekends inside one included.

        An ordinary weekend is not a holiday: a hall open on weekends (周末不打烊) keeps its
        weekend shifts then, and not on a National Day Saturday. A year nobody supplied falls
        back to the weekday rule, which knows no holidays.
        """
        if self.is_working_day(day):
            return False
        if day.weekday() < 5:
            return True  # a weekday off is always a holiday
        county = self.county.get(day.year)
        if county is not None:
            return day in county.holidays
        if self.use_library:
            try:
                return _library.get_holiday_detail(day)[1] is not None
            except NotImplementedError:
                pass
        return False

    def add_working_days(self, start: datetime, days: int) -> datetime:
        """The same time of day, ``days`` working days after ``start`` (weekends, holidays skipped).

        ``days`` 0 is the same working day, by closing time (the end of the last opening span);
        from after closing or a day off, by the end of the next working day.
        """
        if days == 0:
            closing = max((end for _start, end in self.opening_hours), default=time(23, 59, 59))
            day = start
            while True:
                if self.is_working_day(day.date()):
                    due = day.replace(hour=closing.hour, minute=closing.minute, second=closing.second, microsecond=0)
                    if due > start:
                        return due
                day += timedelta(days=1)
        current = start
        counted = 0
        while counted < days:
            current += timedelta(days=1)
            if self.is_working_day(current.date()):
                counted += 1
        return current

    def is_open(self, at: datetime) -> bool:
        """True during opening hours on a working day."""
        if not self.is_working_day(at.date()):
            return False
        t = at.timetz().replace(tzinfo=None)
        return any(start <= t < end for start, end in self.opening_hours)

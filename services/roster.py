"""The duty roster and badge check-in: staff, shifts, holiday duty, the leader on duty, leave.

The county sends three documents as versioned desired state — ``staff`` (the registry: who,
their cards, the windows they serve, leader and active flags), ``shifts`` (the weekly shifts
per window, the leader per weekday, the attendance rules) and ``duty`` (per date: holiday duty
rosters, the leader on duty, which weekday a 调休 working weekend follows). Each is validated
whole; a bad one is rejected naming the exact field and the roster in force stays.

Which shifts apply on a day is decided on the hall calendar (``services.calendar``):

- a date the ``duty`` document gives shifts for has exactly those (holiday duty, special days);
- otherwise a public holiday has none;
- a 调休 working weekend works the weekly shifts of the weekday ``duty`` names for it
  (``as_weekday``), Monday's when it names none;
- any other day has the weekly shifts of its own weekday (a hall open at weekends, 周末不打烊,
  lists ``sat``/``sun`` shifts; they do not apply on a public holiday).

A swipe is a check-in when the person is not checked in and a check-out when they are
(first in, next out). The same card again within ``duplicate_interval_s`` is ignored and
counted. Unknown and inactive cards are reported. Verdicts follow grace periods (Frappe HR's
shift types are the model): late after ``late_grace_min``, absent at ``absent_after_min``
past the start with nobody checked in — an event at that moment, from ``tick()`` — early leave
before the end minus ``early_leave_grace_min``, a window unstaffed while its shift runs.

What people did (check-ins, check-outs, unknown cards, leave recorded by the director) goes in
the ``person`` stream. Verdicts are the device's judgement of those facts — recomputable from
them and the roster — and go in ``telemetry``, never dropped. While the clock is not
synchronised (a Pi without an RTC after a power cut) swipes are recorded at once, but every
verdict is held; ``settle()`` corrects this boot's swipe times from the time anchor and judges
them, and a shift whose start fell while the device was off or its clock unknown is never
called absent or late: no false absence reaches the county. See docs/roster.md.
"""

from __future__ import annotations

import logging
import math
import re
import sqlite3
import threading
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Callable, Container

from .calendar import HallCalendar, parse_hours
from .sink import PERSON, TELEMETRY, Clock, EventSink, EventSpec, Rows, new_event_id

log = logging.getLogger(__name__)

# -- names ----------------------------------------------------------------------------------

STATE_NAMES = ("staff", "shifts", "duty")
SCOPE_ORDER = ("county", "township", "device")  # widest first, as the command router merges
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# Events. What people did (person stream):
CHECKED_IN = "attendance.checked_in"
CHECKED_OUT = "attendance.checked_out"
UNKNOWN_CARD = "attendance.unknown_card"
LEAVE = "attendance.leave"
LEAVE_ENDED = "attendance.leave_ended"
CARD_REGISTERED = "attendance.card_registered"
# The device's verdicts and reports (telemetry stream, never dropped):
LATE = "attendance.late"
EARLY_LEAVE = "attendance.early_leave"
ABSENT = "attendance.absent"
MISSED_CHECKOUT = "attendance.missed_checkout"
WINDOW_UNSTAFFED = "attendance.window_unstaffed"
WINDOW_UNSTAFFED_ENDED = "attendance.window_unstaffed_ended"
BAD_READ = "attendance.bad_read"
SUMMARY = "attendance.summary"

# Alarms.
ALARM_REFERENCES = "roster_references"
ALARM_INVALID = "roster_invalid"

LEAVE_KINDS = {
    "personal": "事假",
    "sick": "病假",
    "annual": "年休假",
    "business": "公出",
    "compensatory": "调休假",
    "other": "其他",
}

# What the board shows after a swipe: short, so it fits a 16-pixel board's scroll.
NOTICE_TEXT = {
    "checked_in": "{name} 签到成功",
    "checked_out": "{name} 签退成功",
    "duplicate": "{name} 已刷卡",
    "unknown_card": "此卡未登记",
    "inactive_card": "此卡已停用",
    "bad_read": "读卡失败 请重新刷卡",
}

STAFF_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
CARD = re.compile(r"^[0-9A-Fa-f]{4,64}\Z")
# ASCII digits only: \d would take full-width ０８:３０ and int() would quietly read it.
CLOCK_TIME = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])\Z")
DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")

MAX_STAFF = 500
MAX_SHIFTS = 2000
MAX_DUTY_DAYS = 800
MAX_NAME = 50
# An unscheduled check-in (no shift matched) is taken to last a working day before it is
# closed as a missed check-out.
UNSCHEDULED_HOURS = 8
# A bad read of the same kind is published at most this often; the rest are counted.
BAD_READ_EVERY_S = 60
# How many days back a missing daily summary is still published (a device off for a week).
SUMMARY_CATCH_UP_DAYS = 7

STAFF_KEYS = ("id", "name", "cards", "windows", "leader", "active")
SHIFT_KEYS = ("staff", "window", "start", "end", "overnight")
DUTY_KEYS = ("leader", "shifts", "as_weekday")


class RosterRejected(ValueError):
    """A roster document or a director's entry cannot be taken; ``field`` names where, ``reason`` why.

    ``problems`` lists every (field, reason) found; ``field`` and ``reason`` are the first,
    and the reason counts and names the rest so one rejection event carries them all.
    """

    def __init__(self, field: str, reason: str, problems: list[tuple[str, str]] | None = None, *, code: str | None = None, params: dict[str, str] | None = None) -> None:
        self.problems = problems or [(field, reason)]
        self.field = field
        # For a refusal the director can meet on the page: a stable code and its values, so
        # the page can say it in the reader's language (appliance/web/labels.py ROSTER_REFUSALS).
        self.code = code
        self.params = params or {}
        rest = self.problems[1:]
        if rest:
            reason = f"{reason} (and {len(rest)} more: " + "; ".join(f"{f}: {r}" for f, r in rest) + ")"
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class _Problems:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, field: str, reason: str) -> None:
        self.items.append((field, reason))

    def raise_any(self) -> None:
        if self.items:
            f, r = self.items[0]
            raise RosterRejected(f, r, self.items)


# -- the documents, parsed ----------------------------------------------------------------


@dataclass(frozen=True)
class StaffMember:
    """One person in the registry."""

    id: str
    name: str
    cards: tuple[str, ...] = ()
    windows: tuple[str, ...] = ()
    leader: bool = False
    active: bool = True


@dataclass(frozen=True)
class ShiftTimes:
    """A shift as the county writes it: who, at which window, from and to (maybe past midnight)."""

    staff_id: str
    window: str
    start: time
    end: time
    overnight: bool = False


@dataclass(frozen=True)
class DutyDay:
    """The county's word for one date: its shifts (if given, the whole roster), leader, weekday followed."""

    leader: str | None = None
    shifts: tuple[ShiftTimes, ...] | None = None
    as_weekday: int | None = None


@dataclass(frozen=True)
class AttendanceRules:
    """Grace periods and intervals; the county may set them in ``shifts.rules``."""

    late_grace_min: int = 5
    absent_after_min: int = 30
    early_leave_grace_min: int = 5
    check_in_open_min: int = 120
    missed_checkout_after_min: int = 240
    duplicate_interval_s: int = 60
    summary_delay_min: int = 30


# (default from AttendanceRules, lowest, highest, unit)
RULE_LIMITS: dict[str, tuple[int, int, str]] = {
    "late_grace_min": (0, 240, "minutes"),
    "absent_after_min": (1, 720, "minutes"),
    "early_leave_grace_min": (0, 240, "minutes"),
    "check_in_open_min": (0, 720, "minutes"),
    "missed_checkout_after_min": (0, 1440, "minutes"),
    "duplicate_interval_s": (0, 3600, "seconds"),
    "summary_delay_min": (0, 720, "minutes"),
}


@dataclass(frozen=True)
class Shift:
    """One shift on one day: a person at a window from ``start`` to ``end`` (aware datetimes)."""

    staff_id: str
    window: str
    day: date
    start: datetime
    end: datetime
    source: str  # 'weekly' or 'duty'

    @property
    def key(self) -> str:
        """Stable identity of this shift, used by verdicts."""
        return f"{self.staff_id}|{self.window}|{self.start.isoformat(timespec='minutes')}"

    def as_dict(self) -> dict:
        return {"day": self.day.isoformat(), "window": self.window, "start": _iso(self.start), "end": _iso(self.end), "source": self.source}


@dataclass
class Session:
    """A check-in not yet ended (kept in memory for ``staff_at``; the store has the row)."""

    id: str
    staff_id: str
    card: str
    window: str | None
    shift_key: str | None
    shift_day: str | None
    in_at: datetime
    in_boot: str
    in_mono: int
    in_verdict: str
    duplicates: int = 0


@dataclass(frozen=True)
class Notice:
    """What the board should flash after a swipe or a bad read."""

    kind: str
    text: str
    staff_id: str | None = None
    window: str | None = None


@dataclass(frozen=True)
class SwipeResult:
    """What one swipe did; ``outcome`` is checked_in, checked_out, duplicate, unknown_card or inactive_card."""

    outcome: str
    card: str
    staff_id: str | None = None
    name: str | None = None
    window: str | None = None
    verdict: str | None = None  # on_time, late, returned, early_leave, unscheduled, pending (clock not synced)
    minutes: int | None = None
    event_id: str | None = None
    duplicates: int = 0
    session_id: str | None = None  # the check-in that opened the session this swipe belongs to
    notice: Notice | None = field(default=None, compare=False)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("notice")
        return d


# -- small helpers --------------------------------------------------------------------------


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="seconds")


def _hhmm(t: time) -> str:
    return f"{t:%H:%M}"


def _minutes_of(t: time) -> int:
    return t.hour * 60 + t.minute


def _ceil_minutes(delta: timedelta) -> int:
    return max(0, math.ceil(delta.total_seconds() / 60))


def _show(value: Any) -> str:
    import json

    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _unknown_keys(raw: dict, path: str, known: tuple[str, ...], p: _Problems) -> None:
    for key in raw:
        if key not in known:
            p.add(f"{path}.{key}", f"is not a known field; known: {', '.join(known)}")


def _staff_ref(value: Any, path: str, p: _Problems) -> str | None:
    if not isinstance(value, str) or not STAFF_ID.match(value):
        p.add(path, f"{_show(value)} is not a staff id: use 1 to 64 letters, digits, '-', '_' or '.'")
        return None
    return value


def _clock_time(value: Any, path: str, p: _Problems) -> time | None:
    m = CLOCK_TIME.match(value) if isinstance(value, str) else None
    if not m:
        p.add(path, f"{_show(value)} is not a time written HH:MM (00:00 to 23:59)")
        return None
    return time(int(m[1]), int(m[2]))


def _window_ref(value: Any, path: str, windows: dict[str, str], p: _Problems) -> str | None:
    if not isinstance(value, str) or value not in windows:
        p.add(path, f"{_show(value)} is not a window of this hall; windows: {', '.join(windows) or 'none'}")
        return None
    return value


def _shift_entry(raw: Any, path: str, windows: dict[str, str], p: _Problems, extra: tuple[str, ...] = ()) -> dict | None:
    """One shift's staff, window, start, end, overnight; None if anything is wrong."""
    if not isinstance(raw, dict):
        p.add(path, 'must be an object: {"staff": …, "window": …, "start": "HH:MM", "end": "HH:MM"}')
        return None
    before = len(p.items)
    _unknown_keys(raw, path, SHIFT_KEYS + extra, p)
    staff = _staff_ref(raw.get("staff"), f"{path}.staff", p)
    window = _window_ref(raw.get("window"), f"{path}.window", windows, p)
    start = _clock_time(raw.get("start"), f"{path}.start", p)
    end = _clock_time(raw.get("end"), f"{path}.end", p)
    overnight = raw.get("overnight", False)
    if not isinstance(overnight, bool):
        p.add(f"{path}.overnight", f"{_show(overnight)} must be true or false")
        overnight = False
    if start is not None and end is not None:
        if not overnight and end <= start:
            p.add(f"{path}.end", f"{_hhmm(end)} is not after the start {_hhmm(start)}; a shift that runs past midnight needs \"overnight\": true")
        elif overnight and end >= start:
            p.add(f"{path}.end", f"{_hhmm(end)} is not before the start {_hhmm(start)}, so the shift does not run past midnight; remove \"overnight\"")
    if len(p.items) > before:
        return None
    return {"staff": staff, "window": window, "start": _hhmm(start), "end": _hhmm(end), "overnight": overnight}


def _times(entry: dict) -> ShiftTimes:
    h1, m1 = map(int, entry["start"].split(":"))
    h2, m2 = map(int, entry["end"].split(":"))
    return ShiftTimes(entry["staff"], entry["window"], time(h1, m1), time(h2, m2), bool(entry.get("overnight", False)))


def _span(entry: dict) -> str:
    return f"{entry['start']}-{entry['end']}" + (" overnight" if entry.get("overnight") else "")


def _check_overlaps(intervals: list[tuple[str, int, int, int, str, str]], p: _Problems) -> None:
    """``intervals``: (staff, order, start_min, end_min, path, description); report each overlapping pair once."""
    by_staff: dict[str, list] = {}
    for item in intervals:
        by_staff.setdefault(item[0], []).append(item)
    reported: set[tuple[str, str]] = set()
    for staff, items in by_staff.items():
        items.sort(key=lambda x: (x[2], x[1]))
        for i, a in enumerate(items):
            for b in items[i + 1:]:
                if b[2] >= a[3]:
                    break
                if a[4] == b[4]:
                    continue
                first, second = sorted((a, b), key=lambda x: x[1])
                pair = (first[4], second[4])
                if pair in reported:
                    continue
                reported.add(pair)
                p.add(second[4], f"overlaps {first[4]} for {staff} ({first[5]} and {second[5]}); one person cannot work two shifts at once")


# -- validation of the county's documents ---------------------------------------------------


def validate_staff(data: Any, windows: dict[str, str]) -> dict:
    """Check the county's ``staff`` document; returns it normalised (cards upper-case, defaults filled)."""
    if not isinstance(data, dict) or not isinstance(data.get("staff"), list):
        raise RosterRejected("data.staff", 'must be a list of staff members, e.g. {"staff": [{"id": "s-001", "name": "乌日娜", "cards": ["0012345678"], "windows": ["w1"]}]}')
    p = _Problems()
    _unknown_keys(data, "data", ("staff",), p)
    if len(data["staff"]) > MAX_STAFF:
        raise RosterRejected("data.staff", f"lists {len(data['staff'])} people; a hall's registry holds at most {MAX_STAFF}")
    out = []
    ids: dict[str, str] = {}
    cards: dict[str, tuple[str, str]] = {}  # card → (path, who)
    for i, raw in enumerate(data["staff"]):
        path = f"data.staff[{i}]"
        if not isinstance(raw, dict):
            p.add(path, f"must be an object with {', '.join(STAFF_KEYS)}")
            continue
        _unknown_keys(raw, path, STAFF_KEYS, p)
        sid = None
        if "id" not in raw:
            p.add(f"{path}.id", 'is required: the person\'s staff id, e.g. "s-001"')
        else:
            sid = _staff_ref(raw["id"], f"{path}.id", p)
        if sid is not None:
            if sid in ids:
                p.add(f"{path}.id", f"{sid!r} repeats {ids[sid]}.id; give every person their own id")
            else:
                ids[sid] = path
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
            p.add(f"{path}.name", f"{_show(name)} must be the person's name, 1 to {MAX_NAME} characters")
            name = None
        card_list = raw.get("cards", [])
        norm_cards: list[str] = []
        if not isinstance(card_list, list):
            p.add(f"{path}.cards", f"{_show(card_list)} must be a list of card numbers, e.g. [\"0012345678\"]")
            card_list = []
        for j, card in enumerate(card_list):
            cpath = f"{path}.cards[{j}]"
            if not isinstance(card, str) or not CARD.match(card):
                p.add(cpath, f"{_show(card)} is not a card number: 4 to 64 digits as the reader types them (0-9, or A-F for a hex reader), leading zeros kept")
                continue
            card = card.upper()
            if card in cards:
                other_path, other = cards[card]
                if other_path == path:
                    p.add(cpath, f"card {card} is listed twice for the same person")
                else:
                    p.add(cpath, f"card {card} is already {other_path}'s ({other}); a card belongs to one person")
                continue
            cards[card] = (path, name or sid or "?")
            norm_cards.append(card)
        window_list = raw.get("windows", [])
        norm_windows: list[str] = []
        if not isinstance(window_list, list):
            p.add(f"{path}.windows", f"{_show(window_list)} must be a list of window ids, e.g. [\"w1\"]")
            window_list = []
        for j, w in enumerate(window_list):
            w = _window_ref(w, f"{path}.windows[{j}]", windows, p)
            if w is not None and w not in norm_windows:
                norm_windows.append(w)
        flags = {}
        for flag, default in (("leader", False), ("active", True)):
            value = raw.get(flag, default)
            if not isinstance(value, bool):
                p.add(f"{path}.{flag}", f"{_show(value)} must be true or false")
            flags[flag] = value is True if isinstance(value, bool) else default
        out.append({"id": sid, "name": name.strip() if name else name, "cards": norm_cards, "windows": norm_windows, **flags})
    p.raise_any()
    return {"staff": out}


def validate_rules(raw: Any, path: str = "data.rules") -> tuple[dict, AttendanceRules]:
    """Check ``shifts.rules``; returns the given keys and the rules they make (defaults for the rest)."""
    if not isinstance(raw, dict):
        raise RosterRejected(path, f"must be an object of rule = number, e.g. {{\"late_grace_min\": 5}}; rules: {', '.join(RULE_LIMITS)}")
    p = _Problems()
    given = {}
    for key, value in raw.items():
        if key not in RULE_LIMITS:
            p.add(f"{path}.{key}", f"is not a known rule; rules: {', '.join(RULE_LIMITS)}")
            continue
        lo, hi, unit = RULE_LIMITS[key]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            p.add(f"{path}.{key}", f"{_show(value)} must be a whole number of {unit} from {lo} to {hi}")
            continue
        given[key] = value
    rules = AttendanceRules(**given) if not p.items else AttendanceRules()
    if not p.items and rules.absent_after_min < rules.late_grace_min:
        p.add(f"{path}.absent_after_min", f"{rules.absent_after_min} is less than late_grace_min ({rules.late_grace_min}): a person is late before they are absent")
    p.raise_any()
    return given, rules


def validate_shifts(data: Any, windows: dict[str, str]) -> dict:
    """Check the county's ``shifts`` document: weekly shifts, leaders per weekday, rules, opening hours."""
    if not isinstance(data, dict) or not isinstance(data.get("weekly"), list):
        raise RosterRejected("data.weekly", 'must be a list of shifts, e.g. {"weekly": [{"staff": "s-001", "window": "w1", "days": ["mon", "tue"], "start": "08:30", "end": "17:30"}]}')
    p = _Problems()
    _unknown_keys(data, "data", ("weekly", "leaders", "rules", "opening_hours"), p)
    if len(data["weekly"]) > MAX_SHIFTS:
        raise RosterRejected("data.weekly", f"lists {len(data['weekly'])} shifts; at most {MAX_SHIFTS}")
    weekly = []
    intervals = []
    for i, raw in enumerate(data["weekly"]):
        path = f"data.weekly[{i}]"
        entry = _shift_entry(raw, path, windows, p, extra=("days",))
        days = raw.get("days") if isinstance(raw, dict) else None
        day_idx: list[int] = []
        if isinstance(raw, dict):
            if not isinstance(days, list) or not days:
                p.add(f"{path}.days", f"{_show(days)} must be a list of weekdays: {', '.join(WEEKDAYS)}")
                entry = None
            else:
                for j, d in enumerate(days):
                    if d not in WEEKDAYS:
                        p.add(f"{path}.days[{j}]", f"{_show(d)} is not a weekday; use {', '.join(WEEKDAYS)}")
                        entry = None
                    elif WEEKDAYS.index(d) in day_idx:
                        p.add(f"{path}.days[{j}]", f"{d} is listed twice")
                        entry = None
                    else:
                        day_idx.append(WEEKDAYS.index(d))
        if entry is None:
            continue
        entry["days"] = [WEEKDAYS[d] for d in sorted(day_idx)]
        weekly.append(entry)
        t = _times(entry)
        length = (_minutes_of(t.end) + (1440 if t.overnight else 0)) - _minutes_of(t.start)
        for d in day_idx:
            s = d * 1440 + _minutes_of(t.start)
            desc = f"{WEEKDAYS[d]} {_span(entry)}"
            intervals.append((t.staff_id, i, s, s + length, path, desc))
            if s + length > 7 * 1440:  # Sunday night into Monday morning
                intervals.append((t.staff_id, i, s - 7 * 1440, s + length - 7 * 1440, path, desc))
    _check_overlaps(intervals, p)
    out: dict[str, Any] = {"weekly": weekly}
    leaders = data.get("leaders", {})
    if not isinstance(leaders, dict):
        p.add("data.leaders", f"{_show(leaders)} must be an object of weekday = staff id, e.g. {{\"mon\": \"s-001\"}}")
    else:
        out["leaders"] = {}
        for day, sid in leaders.items():
            if day not in WEEKDAYS:
                p.add(f"data.leaders.{day}", f"is not a weekday; use {', '.join(WEEKDAYS)}")
            elif _staff_ref(sid, f"data.leaders.{day}", p) is not None:
                out["leaders"][day] = sid
    if "rules" in data:
        try:
            out["rules"], _ = validate_rules(data["rules"])
        except RosterRejected as exc:
            p.items.extend(exc.problems)
    if "opening_hours" in data:
        hours = data["opening_hours"]
        if not isinstance(hours, list):
            p.add("data.opening_hours", f"{_show(hours)} must be a list of \"HH:MM-HH:MM\" spans, e.g. [\"08:30-12:00\", \"14:30-17:30\"]")
        else:
            try:
                parse_hours(hours)
                out["opening_hours"] = list(hours)
            except ValueError as exc:
                p.add("data.opening_hours", str(exc))
    p.raise_any()
    return out


def validate_duty(data: Any, windows: dict[str, str]) -> dict:
    """Check the county's ``duty`` document: per date, holiday duty shifts, leader, weekday followed."""
    if not isinstance(data, dict) or not isinstance(data.get("days"), dict):
        raise RosterRejected("data.days", 'must be an object of date → duty, e.g. {"days": {"2026-10-01": {"leader": "s-001", "shifts": [{"staff": "s-003", "window": "w1", "start": "09:00", "end": "12:00"}]}}}')
    p = _Problems()
    _unknown_keys(data, "data", ("days",), p)
    if len(data["days"]) > MAX_DUTY_DAYS:
        raise RosterRejected("data.days", f"lists {len(data['days'])} dates; at most {MAX_DUTY_DAYS}")
    out: dict[str, dict] = {}
    intervals = []
    order = 0
    for key, raw in sorted(data["days"].items()):
        path = f"data.days.{key}"
        try:
            day = date.fromisoformat(key) if DAY.match(key) else None
        except ValueError:
            day = None
        if day is None:
            p.add(path, "is not a date written YYYY-MM-DD")
            continue
        if not isinstance(raw, dict):
            p.add(path, f"must be an object with any of {', '.join(DUTY_KEYS)}")
            continue
        _unknown_keys(raw, path, DUTY_KEYS, p)
        entry: dict[str, Any] = {}
        if "leader" in raw and _staff_ref(raw["leader"], f"{path}.leader", p) is not None:
            entry["leader"] = raw["leader"]
        if "as_weekday" in raw:
            if raw["as_weekday"] not in WEEKDAYS[:5]:
                p.add(f"{path}.as_weekday", f"{_show(raw['as_weekday'])} must be the weekday whose shifts the day works: {', '.join(WEEKDAYS[:5])}")
            else:
                entry["as_weekday"] = raw["as_weekday"]
        if "shifts" in raw:
            shifts = raw["shifts"]
            if not isinstance(shifts, list):
                p.add(f"{path}.shifts", f"{_show(shifts)} must be a list of shifts (an empty list: nobody on duty)")
            else:
                entry["shifts"] = []
                for j, s in enumerate(shifts):
                    spath = f"{path}.shifts[{j}]"
                    e = _shift_entry(s, spath, windows, p)
                    if e is None:
                        continue
                    entry["shifts"].append(e)
                    t = _times(e)
                    start = day.toordinal() * 1440 + _minutes_of(t.start)
                    end = (day.toordinal() + (1 if t.overnight else 0)) * 1440 + _minutes_of(t.end)
                    order += 1
                    intervals.append((t.staff_id, order, start, end, spath, f"{key} {_span(e)}"))
        out[key] = entry
    _check_overlaps(intervals, p)
    p.raise_any()
    return {"days": out}


VALIDATORS: dict[str, Callable[[Any, dict[str, str]], dict]] = {"staff": validate_staff, "shifts": validate_shifts, "duty": validate_duty}


def _narrowest(scopes: dict[str, Any]) -> Any:
    """The document at the narrowest scope that sent one: these are per-hall documents, not merged."""
    present = [s for s in SCOPE_ORDER if s in scopes and scopes[s] is not None]
    return scopes[present[-1]] if present else None


# -- the service ----------------------------------------------------------------------------


class Roster:
    """Staff, shifts and duty; check-in by badge; attendance verdicts; who is at each window."""

    def __init__(
        self,
        sink: EventSink,
        store: Rows,
        clock: Clock,
        calendar: HallCalendar,
        windows: dict[str, str],
        *,
        rules: AttendanceRules = AttendanceRules(),
        on_notice: Callable[[Notice], None] | None = None,
    ) -> None:
        self.sink = sink
        self.store = store
        self.clock = clock
        self.calendar = calendar
        self.windows = dict(windows)  # id → name
        self.on_notice = on_notice
        self.default_rules = rules
        self.rules = rules
        self.tz = clock.now().tzinfo
        self._config_hours = calendar.opening_hours
        self._lock = threading.RLock()
        self.staff: dict[str, StaffMember] = {}
        self._cards: dict[str, str] = {}
        self.weekly: dict[int, tuple[ShiftTimes, ...]] = {}
        self.leaders: dict[int, str] = {}
        self.duty: dict[date, DutyDay] = {}
        self._open: dict[str, Session] = {}
        self._snapshot: tuple[Session, ...] = ()
        self._last_swipe: dict[str, tuple[str, int, str | None]] = {}  # card → (boot, mono, session id)
        self._decided: dict[str, tuple[date, str]] = {}  # shift key → (day, present | leave | absent | unverified | unknown_staff)
        self._gaps: dict[str, tuple[str, datetime]] = {}  # window → (gap id, since)
        self._summarized: set[str] = set()
        self._since: date | None = None
        self._invalid: set[str] = set()
        self._bad_reads: dict[str, tuple[int, int]] = {}  # kind → (mono of last event, suppressed since)
        self.unknown_duplicates = 0
        self._started_mono = clock.monotonic_ns()
        # The device judges only what it saw: a shift start before this moment (device off,
        # clock unknown) is never called absent or late.
        self._watching_since: datetime | None = clock.now() if clock.is_synced() else None
        # Swipes held for a verdict (this boot's, or an earlier boot's) wait for settle().
        self._needs_settle = True
        self._load()

    # -- the county's documents ---------------------------------------------------------

    @property
    def known(self) -> bool:
        """True once a staff registry is in force: before that, no rating is flagged unstaffed."""
        return bool(self.staff)

    def validator(self, name: str) -> Callable[[Any], dict]:
        """The validator for desired state ``name`` ('staff', 'shifts' or 'duty') with this hall's windows."""
        check = VALIDATORS[name]
        return lambda data: check(data, self.windows)

    def validate_staff(self, data: Any) -> dict:
        return validate_staff(data, self.windows)

    def validate_shifts(self, data: Any) -> dict:
        return validate_shifts(data, self.windows)

    def validate_duty(self, data: Any) -> dict:
        return validate_duty(data, self.windows)

    def apply_state(self, name: str, scopes: dict[str, Any]) -> None:
        """Put desired state ``name`` in force: ``scopes`` maps scope → data; the narrowest wins.

        Data stored earlier is validated again (the config's windows may have changed since);
        if it no longer passes, the roster keeps what it had and raises ``roster_invalid``.
        """
        data = _narrowest(scopes)
        try:
            doc = VALIDATORS[name](data, self.windows) if data is not None else None
        except RosterRejected as exc:
            log.error("the stored %s document no longer validates: %s", name, exc)
            self._invalid.add(name)
            self.sink.raise_alarm(ALARM_INVALID, f"the {name} document in force no longer validates ({exc}); the previous roster stays until the county sends a new version")
            return
        with self._lock:
            if name == "staff":
                self._set_staff(doc)
            elif name == "shifts":
                self._set_shifts(doc)
            else:
                self._set_duty(doc)
        self._invalid.discard(name)
        if not self._invalid:
            self.sink.clear_alarm(ALARM_INVALID)
        self._check_references()

    def apply_staff(self, scopes: dict[str, Any]) -> None:
        self.apply_state("staff", scopes)

    def apply_shifts(self, scopes: dict[str, Any]) -> None:
        self.apply_state("shifts", scopes)

    def apply_duty(self, scopes: dict[str, Any]) -> None:
        self.apply_state("duty", scopes)

    def _set_staff(self, doc: dict | None) -> None:
        staff = {}
        cards = {}
        for s in (doc or {}).get("staff", []):
            member = StaffMember(s["id"], s["name"], tuple(s["cards"]), tuple(s["windows"]), s["leader"], s["active"])
            staff[member.id] = member
            for card in member.cards:
                cards[card] = member.id
        self.staff, self._cards = staff, cards

    def _set_shifts(self, doc: dict | None) -> None:
        doc = doc or {}
        weekly: dict[int, list[ShiftTimes]] = {}
        for entry in doc.get("weekly", []):
            for d in entry["days"]:
                weekly.setdefault(WEEKDAYS.index(d), []).append(_times(entry))
        self.weekly = {d: tuple(v) for d, v in weekly.items()}
        self.leaders = {WEEKDAYS.index(d): sid for d, sid in doc.get("leaders", {}).items()}
        self.rules = AttendanceRules(**(asdict(self.default_rules) | doc.get("rules", {})))
        hours = doc.get("opening_hours")
        self.calendar.opening_hours = parse_hours(hours) if hours else self._config_hours

    def _set_duty(self, doc: dict | None) -> None:
        duty = {}
        for key, e in (doc or {}).get("days", {}).items():
            shifts = tuple(_times(s) for s in e["shifts"]) if "shifts" in e else None
            as_weekday = WEEKDAYS.index(e["as_weekday"]) if "as_weekday" in e else None
            duty[date.fromisoformat(key)] = DutyDay(e.get("leader"), shifts, as_weekday)
        self.duty = duty

    def reference_problems(self) -> list[str]:
        """Staff named by shifts, duty or leaders who are not in the registry, inactive, or not leaders.

        Not a reason to reject: the county's documents arrive in any order (retained messages
        on reconnect), so a shift may name someone before the registry that lists them.
        """
        problems = []
        named: dict[str, set[str]] = {}
        for day, patterns in self.weekly.items():
            for st in patterns:
                named.setdefault(st.staff_id, set()).add(f"shifts ({WEEKDAYS[day]})")
        for day, d in self.duty.items():
            for st in d.shifts or ():
                named.setdefault(st.staff_id, set()).add(f"duty {day}")
        leaders = {sid: f"leaders ({WEEKDAYS[d]})" for d, sid in self.leaders.items()}
        leaders |= {d.leader: f"duty {day} leader" for day, d in self.duty.items() if d.leader}
        for sid, where in leaders.items():
            named.setdefault(sid, set()).add(where)
        for sid in sorted(named):
            member = self.staff.get(sid)
            where = ", ".join(sorted(named[sid]))
            if member is None:
                problems.append(f"{sid} ({where}) is not in the staff registry")
            elif not member.active:
                problems.append(f"{sid} ({where}) is inactive")
            elif sid in leaders and not member.leader:
                problems.append(f"{sid} is named leader on duty but is not marked leader")
        return problems

    def _check_references(self) -> None:
        problems = self.reference_problems()
        if problems:
            shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            self.sink.raise_alarm(ALARM_REFERENCES, shown)
        else:
            self.sink.clear_alarm(ALARM_REFERENCES)

    # -- the calendar ---------------------------------------------------------------------

    def day_kind(self, day: date) -> str:
        """'workday', 'tiaoxiu' (a weekend worked), 'weekend' or 'holiday'."""
        if self.calendar.is_working_day(day):
            return "workday" if day.weekday() < 5 else "tiaoxiu"
        return "holiday" if self.calendar.is_public_holiday(day) else "weekend"

    def _plan(self, day: date) -> tuple[tuple[ShiftTimes, ...], str, int | None]:
        """The day's shift patterns, where they come from, and the weekday followed."""
        duty = self.duty.get(day)
        if duty is not None and duty.shifts is not None:
            return duty.shifts, "duty", None
        kind = self.day_kind(day)
        if kind == "holiday":
            return (), "weekly", None
        if kind == "tiaoxiu":
            weekday = duty.as_weekday if duty is not None and duty.as_weekday is not None else 0
        else:
            weekday = day.weekday()
        return self.weekly.get(weekday, ()), "weekly", weekday

    def shifts_on(self, day: date | str) -> list[Shift]:
        """Every shift that starts on ``day``, in start order."""
        day = date.fromisoformat(day) if isinstance(day, str) else day
        patterns, source, _ = self._plan(day)
        out = []
        for st in patterns:
            start = datetime.combine(day, st.start, tzinfo=self.tz)
            end = datetime.combine(day + timedelta(days=1 if st.overnight else 0), st.end, tzinfo=self.tz)
            out.append(Shift(st.staff_id, st.window, day, start, end, source))
        return sorted(out, key=lambda s: (s.start, s.window, s.staff_id))

    def leader_on(self, day: date) -> str | None:
        """The leader on duty (带班领导) that day: the duty roster's, else the weekday's."""
        duty = self.duty.get(day)
        if duty is not None and duty.leader:
            return duty.leader
        _, source, weekday = self._plan(day)
        return self.leaders.get(weekday) if weekday is not None else None

    def _shifts_between(self, first: date, last: date) -> list[Shift]:
        out = []
        day = first
        while day <= last:
            out.extend(self.shifts_on(day))
            day += timedelta(days=1)
        return out

    def _around(self, at: datetime) -> list[Shift]:
        return self._shifts_between(at.date() - timedelta(days=1), at.date() + timedelta(days=1))

    def _match_shift(self, staff_id: str, at: datetime) -> Shift | None:
        """The shift a check-in at ``at`` is for: open from check_in_open_min before its start to its end."""
        early = timedelta(minutes=self.rules.check_in_open_min)
        candidates = [s for s in self._around(at) if s.staff_id == staff_id and s.start - early <= at < s.end]
        return min(candidates, key=lambda s: s.start) if candidates else None

    def _shift_left(self, staff_id: str, in_at: datetime, out_at: datetime) -> Shift | None:
        """The shift a check-out at ``out_at`` leaves: the latest one begun during the session."""
        shifts = self._shifts_between(in_at.date() - timedelta(days=1), out_at.date())
        candidates = [s for s in shifts if s.staff_id == staff_id and s.start < out_at and s.end > in_at]
        return max(candidates, key=lambda s: s.start) if candidates else None

    # -- loading ----------------------------------------------------------------------------

    def _load(self) -> None:
        rows = self.store.rows(
            "SELECT id, staff_id, card, window, shift_key, shift_day, in_at, in_boot, in_mono, in_verdict, duplicates FROM attendance WHERE open = 1"
        )
        for r in rows:
            s = Session(r[0], r[1], r[2], r[3], r[4], r[5], datetime.fromisoformat(r[6]), r[7], r[8], r[9], r[10])
            self._open[s.staff_id] = s
        self._snapshot = tuple(self._open.values())
        # Duplicate suppression survives a restart of the daemon within the same boot.
        boot = self.sink.boot_id
        for card, mono, sid in self.store.rows(
            "SELECT card, MAX(COALESCE(CASE WHEN out_boot = ? THEN out_mono END, CASE WHEN in_boot = ? THEN in_mono END)), id"
            " FROM attendance WHERE in_boot = ? OR out_boot = ? GROUP BY card",
            (boot, boot, boot, boot),
        ):
            if mono is not None:
                self._last_swipe[card] = (boot, mono, sid)
        recent = (self.clock.now().date() - timedelta(days=3)).isoformat()
        for key, day in self.store.rows("SELECT shift_key, shift_day FROM attendance_verdicts WHERE kind = 'absent' AND shift_day >= ?", (recent,)):
            self._decided[key] = (date.fromisoformat(day), "absent")
        for gid, window, since in self.store.rows("SELECT id, window, since FROM window_gaps WHERE until IS NULL"):
            self._gaps[window] = (gid, datetime.fromisoformat(since))
        self._summarized = {d for d, in self.store.rows("SELECT day FROM attendance_days")}
        since = self.store.rows("SELECT value FROM roster_meta WHERE key = 'since'")
        self._since = date.fromisoformat(since[0][0]) if since else None

    def _publish_snapshot(self) -> None:
        self._snapshot = tuple(self._open.values())

    # -- a swipe ----------------------------------------------------------------------------

    def lookup(self, card: str) -> StaffMember | None:
        """Whose card this is: the county's registry, else a card the director registered here."""
        card = card.strip().upper()
        sid = self._cards.get(card)
        if sid is None:
            row = self.store.rows("SELECT staff_id FROM local_cards WHERE card = ?", (card,))
            sid = row[0][0] if row else None
        return self.staff.get(sid) if sid else None

    def swipe(self, card: str) -> SwipeResult:
        """A card read by the badge reader: check in, check out, a duplicate, or an unknown card."""
        card = card.strip().upper()
        with self._lock:
            now, mono, synced = self.clock.now(), self.clock.monotonic_ns(), self.clock.is_synced()
            boot = self.sink.boot_id
            last = self._last_swipe.get(card)
            duplicate = last is not None and last[0] == boot and mono - last[1] < self.rules.duplicate_interval_s * 1_000_000_000
            if duplicate and last[2] is None:
                # The last swipe found nobody; a card registered since — on the config page,
                # which runs in another process with its own Roster — checks in now.
                owner = self.lookup(card)
                duplicate = owner is None or not owner.active
            if duplicate:
                result = self._duplicate(card, last[2])
            else:
                member = self.lookup(card)
                if member is None or not member.active:
                    result = self._unknown(card, member, now, mono, synced)
                    self._needs_settle |= not synced
                else:
                    if synced:
                        self._close_stale(now, only=member.id)
                    if member.id in self._open:
                        result = self._check_out(member, self._open[member.id], card, now, mono, synced)
                    else:
                        result = self._check_in(member, card, now, mono, synced)
                    self._needs_settle |= not synced
                self._last_swipe[card] = (boot, mono, result.session_id)
        self._notify(result.notice)
        return result

    def _duplicate(self, card: str, session_id: str | None) -> SwipeResult:
        member = self.lookup(card)
        if session_id is None:
            self.unknown_duplicates += 1
            kind = "unknown_card" if member is None else "inactive_card"
            return SwipeResult("duplicate", card, notice=Notice(kind, NOTICE_TEXT[kind]))
        self.store.write_many("UPDATE attendance SET duplicates = duplicates + 1 WHERE id = ?", [(session_id,)])
        count = self.store.rows("SELECT duplicates FROM attendance WHERE id = ?", (session_id,))[0][0]
        if member and member.id in self._open and self._open[member.id].id == session_id:
            self._open[member.id].duplicates = count
        name = member.name if member else card
        return SwipeResult("duplicate", card, member.id if member else None, name, duplicates=count, session_id=session_id,
                           notice=Notice("duplicate", NOTICE_TEXT["duplicate"].format(name=name), member.id if member else None))

    def _unknown(self, card: str, member: StaffMember | None, now: datetime, mono: int, synced: bool) -> SwipeResult:
        reason = "unknown" if member is None else "inactive"
        data = {"card": card, "reason": reason, "staff_id": member.id if member else None, "name": member.name if member else None}

        def write(conn: sqlite3.Connection, env: dict) -> None:
            conn.execute(
                "INSERT INTO unknown_swipes (event_id, card, reason, staff_id, at, day, boot_id, mono_ns, clock_synced) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (env["event_id"], card, reason, data["staff_id"], _iso(now), now.date().isoformat(), self.sink.boot_id, mono, int(synced)),
            )

        recorded = self.sink.record_together([EventSpec(UNKNOWN_CARD, data, PERSON, write)])
        kind = f"{reason}_card"
        return SwipeResult(kind, card, data["staff_id"], data["name"], event_id=recorded[0].envelope["event_id"], notice=Notice(kind, NOTICE_TEXT[kind], data["staff_id"]))

    def _check_in(self, member: StaffMember, card: str, now: datetime, mono: int, synced: bool) -> SwipeResult:
        # Without a synchronised clock the match is a best guess (for staff_at only); the
        # verdict waits for settle().
        shift = self._match_shift(member.id, now)
        window = shift.window if shift else (member.windows[0] if member.windows else None)
        session_id = new_event_id()  # the checked_in event's id
        minutes = None
        if not synced:
            verdict = "pending"
        elif shift is None:
            verdict = "unscheduled"
        elif self._shift_begun(member.id, shift, now):
            verdict = "returned"  # back within a shift already begun: its first check-in judged it
        elif now > shift.start + timedelta(minutes=self.rules.late_grace_min):
            verdict = "late"
            minutes = _ceil_minutes(now - shift.start)
        else:
            verdict = "on_time"
        data = {
            "staff_id": member.id,
            "name": member.name,
            "window": window,
            "window_name": self.windows.get(window) if window else None,
            "shift": shift.as_dict() if shift else None,
            "provisional": not synced,
        }
        boot = self.sink.boot_id

        def write(conn: sqlite3.Connection, env: dict) -> None:
            conn.execute(
                "INSERT INTO attendance (id, staff_id, card, window, shift_key, shift_day, in_at, in_boot, in_mono, in_verdict) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (session_id, member.id, card, window, shift.key if shift else None, shift.day.isoformat() if shift else None, _iso(now), boot, mono, verdict),
            )

        events = [EventSpec(CHECKED_IN, data, PERSON, write, event_id=session_id)]
        if verdict == "late":
            events.append(self._late_spec(member, shift, now, session_id, minutes, settled=False))
        self.sink.record_together(events)
        self._open[member.id] = Session(session_id, member.id, card, window, shift.key if shift else None, shift.day.isoformat() if shift else None, now, boot, mono, verdict)
        self._publish_snapshot()
        return SwipeResult("checked_in", card, member.id, member.name, window, verdict, minutes, session_id, session_id=session_id,
                           notice=Notice("checked_in", NOTICE_TEXT["checked_in"].format(name=member.name), member.id, window))

    def _standing_absence(self, shift_key: str) -> str | None:
        """The event id of the attendance.absent that stands for this shift, if one does."""
        row = self.store.rows("SELECT event_id FROM attendance_verdicts WHERE kind = 'absent' AND shift_key = ? AND voided_by IS NULL", (shift_key,))
        return row[0][0] if row else None

    def _shift_begun(self, staff_id: str, shift: Shift, before: datetime, *, besides: Container[tuple[str, str]] = ()) -> bool:
        """Whether ``staff_id`` was already at work in this shift: a check-in before ``before``
        (for this shift, an earlier one, or none: an early arrival) still there at the shift's
        start or later, and no absence standing for it. Someone who came and went before the
        start, or was judged absent, is judged again at this check-in (late, cancelling the
        absence). Unlike ``_present_for``, only timed check-ins count (the one being settled
        must not count itself); a check-out not yet timed counts as still there."""
        if self._standing_absence(shift.key):
            return False
        return (staff_id, shift.key) in besides or bool(self.store.rows(
            "SELECT 1 FROM attendance WHERE staff_id = ? AND in_at < ? AND in_verdict NOT IN ('pending', 'unverified')"
            " AND (open = 1 OR out_verdict = 'pending' OR out_at > ?) LIMIT 1",
            (staff_id, _iso(before), _iso(shift.start)),
        ))

    def _late_spec(self, member: StaffMember, shift: Shift, at: datetime, session_id: str, minutes: int, *, settled: bool, corrected: bool = True) -> EventSpec:
        cancels = self._standing_absence(shift.key)
        event_id = new_event_id()
        data = {
            "staff_id": member.id,
            "name": member.name,
            "window": shift.window,
            "shift": shift.as_dict(),
            "checked_in_at": _iso(at),
            "minutes_late": minutes,
            "late_grace_min": self.rules.late_grace_min,
            "checked_in_event_id": session_id,
            "settled": settled,
            "cancels": cancels,
        }

        def write(conn: sqlite3.Connection, env: dict) -> None:
            conn.execute(
                "INSERT OR IGNORE INTO attendance_verdicts (event_id, kind, staff_id, window, shift_key, shift_day, minutes, decided_at) VALUES (?, 'late', ?, ?, ?, ?, ?, ?)",
                (event_id, member.id, shift.window, shift.key, shift.day.isoformat(), minutes, env["time"]),
            )
            if cancels:
                # Nobody was there at the absence deadline, but they came: late, not absent.
                conn.execute("UPDATE attendance_verdicts SET voided_by = ? WHERE event_id = ?", (event_id, cancels))

        return EventSpec(LATE, data, TELEMETRY, write, event_id=event_id)

    def _check_out(self, member: StaffMember, session: Session, card: str, now: datetime, mono: int, synced: bool) -> SwipeResult:
        shift = self._shift_left(member.id, session.in_at, now) if synced else None
        minutes = None
        if not synced:
            verdict = "pending"
        elif shift is None:
            verdict = "unscheduled"
        elif now < shift.end - timedelta(minutes=self.rules.early_leave_grace_min):
            verdict = "early_leave"
            minutes = _ceil_minutes(shift.end - now)
        else:
            verdict = "on_time"
        event_id = new_event_id()
        data = {
            "staff_id": member.id,
            "name": member.name,
            "window": session.window,
            "window_name": self.windows.get(session.window) if session.window else None,
            "checked_in_event_id": session.id,
            "checked_in_at": _iso(session.in_at),
            "shift": shift.as_dict() if shift else None,
            "duplicates": session.duplicates,
            "provisional": not synced,
        }
        boot = self.sink.boot_id

        def write(conn: sqlite3.Connection, env: dict) -> None:
            conn.execute(
                "UPDATE attendance SET out_event_id = ?, out_at = ?, out_boot = ?, out_mono = ?, out_verdict = ?, open = 0, closed_reason = 'checked_out', closed_at = ? WHERE id = ?",
                (event_id, _iso(now), boot, mono, verdict, _iso(now), session.id),
            )

        events = [EventSpec(CHECKED_OUT, data, PERSON, write, event_id=event_id)]
        if verdict == "early_leave":
            events.append(self._early_spec(member, shift, now, event_id, minutes, settled=False))
        self.sink.record_together(events)
        del self._open[member.id]
        self._publish_snapshot()
        return SwipeResult("checked_out", card, member.id, member.name, session.window, verdict, minutes, event_id, session.duplicates, session.id,
                           notice=Notice("checked_out", NOTICE_TEXT["checked_out"].format(name=member.name), member.id, session.window))

    def _early_spec(self, member: StaffMember, shift: Shift, at: datetime, out_event_id: str, minutes: int, *, settled: bool) -> EventSpec:
        event_id = new_event_id()
        data = {
            "staff_id": member.id,
            "name": member.name,
            "window": shift.window,
            "shift": shift.as_dict(),
            "checked_out_at": _iso(at),
            "minutes_early": minutes,
            "early_leave_grace_min": self.rules.early_leave_grace_min,
            "checked_out_event_id": out_event_id,
            "settled": settled,
        }

        def write(conn: sqlite3.Connection, env: dict) -> None:
            conn.execute(
                "INSERT OR IGNORE INTO attendance_verdicts (event_id, kind, staff_id, window, shift_key, shift_day, minutes, decided_at) VALUES (?, 'early_leave', ?, ?, ?, ?, ?, ?)",
                (event_id, member.id, shift.window, shift.key, shift.day.isoformat(), minutes, env["time"]),
            )

        return EventSpec(EARLY_LEAVE, data, TELEMETRY, write, event_id=event_id)

    def bad_read(self, kind: str, reason: str) -> None:
        """The reader typed something that is not a card: reported (rate-limited) and shown on the board."""
        with self._lock:
            mono = self.clock.monotonic_ns()
            last, suppressed = self._bad_reads.get(kind, (None, 0))
            if last is not None and mono - last < BAD_READ_EVERY_S * 1_000_000_000:
                self._bad_reads[kind] = (last, suppressed + 1)
            else:
                self.sink.record_together([EventSpec(BAD_READ, {"kind": kind, "reason": reason, "suppressed": suppressed}, TELEMETRY)])
                self._bad_reads[kind] = (mono, 0)
        self._notify(Notice("bad_read", NOTICE_TEXT["bad_read"]))

    def _notify(self, notice: Notice | None) -> None:
        if notice is None or self.on_notice is None:
            return
        try:
            self.on_notice(notice)
        except Exception:  # noqa: BLE001 - the board is a courtesy; the swipe is already safe
            log.exception("board notice %r failed", notice)

    # -- who is where -----------------------------------------------------------------------

    def staff_at(self, window_id: str, at: datetime | None = None) -> str | None:
        """The person checked in at ``window_id`` now (the ratings service's ``OnDuty``); lock-free."""
        at_window = [s for s in self._snapshot if s.window == window_id]
        if not at_window:
            return None
        # Someone whose shift is at this window before someone who just helps out there.
        return min(at_window, key=lambda s: (s.shift_key is None, s.in_at)).staff_id

    def present(self) -> list[dict]:
        """Everyone checked in now, for the page."""
        return [
            {"staff_id": s.staff_id, "name": self.staff[s.staff_id].name if s.staff_id in self.staff else s.staff_id, "window": s.window, "checked_in_at": _iso(s.in_at), "verdict": s.in_verdict}
            for s in sorted(self._snapshot, key=lambda s: s.in_at)
        ]

    def on_duty_today(self, now: datetime | None = None) -> dict:
        """What the board shows: the leader on duty and who serves at each window today."""
        now = now or self.clock.now()
        day = now.date()
        shifts = [s for s in self._shifts_between(day - timedelta(days=1), day) if s.day == day or s.end > now]
        present = {s.staff_id: s for s in self._snapshot}

        def person(sid: str) -> dict:
            m = self.staff.get(sid)
            return {"staff_id": sid, "name": m.name if m else sid, "present": sid in present}

        leader_id = self.leader_on(day)
        windows = []
        for wid, wname in self.windows.items():
            scheduled = []
            for s in shifts:
                if s.window == wid:
                    scheduled.append(person(s.staff_id) | {"start": _iso(s.start), "end": _iso(s.end)})
            here = [person(s.staff_id) for s in self._snapshot if s.window == wid]
            windows.append({"window": wid, "name": wname, "scheduled": scheduled, "present": here})
        leader = person(leader_id) if leader_id else None
        parts = [f"今日带班领导：{leader['name']}"] if leader else []
        for w in windows:
            if w["present"]:
                parts.append(f"{w['name']}：{'、'.join(p['name'] for p in w['present'])}")
        return {
            "day": day.isoformat(),
            "day_kind": self.day_kind(day),
            "leader": leader,
            "windows": windows,
            "text": "　".join(parts),
            "provisional": not self.clock.is_synced(),
        }

    # -- the clock: tick and settle ---------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> int:
        """Judge what time has decided: absences, windows unstaffed, missed check-outs, daily summaries.

        The daemon calls it every few seconds. While the clock is not synchronised nothing is
        judged (held until ``settle()``). Returns the number of events recorded.
        """
        if not self.clock.is_synced():
            return 0
        n = 0
        if self._needs_settle:
            # Any synchronised moment is a valid anchor: a daemon that starts with a good
            # clock, or a tick that runs before watch_clock() notices the sync, settles here.
            n += self.settle(self.clock.now(), self.clock.monotonic_ns(), self.sink.boot_id)
        now = now or self.clock.now()
        with self._lock:
            if self._watching_since is None:
                self._watching_since = now
            if self._since is None:
                self._since = now.date()
                self.store.write_many("INSERT OR IGNORE INTO roster_meta VALUES ('since', ?)", [(self._since.isoformat(),)])
            n += self._close_stale(now)
            n += self._judge_absences(now)
            n += self._watch_windows(now)
            n += self._publish_summaries(now)
        return n

    def _session_end(self, s: Session, now: datetime) -> datetime:
        """When the session should have ended: its shift day's last shift it ran into, else 8 h on."""
        unscheduled = timedelta(hours=UNSCHEDULED_HOURS)
        if s.in_verdict in ("pending", "unverified"):
            # Timed by a clock that was wrong: its check-in time says nothing. It is measured from
            # the first moment this boot's roster knew the time instead, never ahead of it.
            return (self._watching_since or now) + unscheduled
        # Shifts of the matched shift's day (or, for a check-in that matched none, of the
        # check-in's own day: an early arrival, not tomorrow's shift) that began around it.
        day = s.shift_day or s.in_at.date().isoformat()
        early = timedelta(minutes=self.rules.check_in_open_min)
        shifts = [
            x for x in self._shifts_between(s.in_at.date() - timedelta(days=1), now.date())
            if x.staff_id == s.staff_id and x.day.isoformat() == day and x.end > s.in_at
            and s.in_at - early <= x.start <= s.in_at + timedelta(hours=16)
        ]  # fmt: skip
        if s.shift_key is None:
            # Only a shift it came early for: one that begins while the 8 h still run.
            return max([x.end for x in shifts if x.start <= s.in_at + unscheduled] + [s.in_at + unscheduled])
        return max(x.end for x in shifts) if shifts else s.in_at + unscheduled

    def _close_stale(self, now: datetime, only: str | None = None) -> int:
        """Close check-ins whose shift ended missed_checkout_after_min ago with no check-out."""
        late = timedelta(minutes=self.rules.missed_checkout_after_min)
        n = 0
        for sid, s in list(self._open.items()):
            if only is not None and sid != only:
                continue
            end = self._session_end(s, now)
            if now <= end + late:
                continue
            member = self.staff.get(sid)
            data = {
                "staff_id": sid,
                "name": member.name if member else sid,
                "window": s.window,
                "checked_in_event_id": s.id,
                "checked_in_at": _iso(s.in_at),
                "expected_end": _iso(end),
            }

            def write(conn: sqlite3.Connection, env: dict, s: Session = s) -> None:
                conn.execute("UPDATE attendance SET open = 0, closed_reason = 'missed_checkout', closed_at = ? WHERE id = ?", (_iso(now), s.id))

            self.sink.record_together([EventSpec(MISSED_CHECKOUT, data, TELEMETRY, write)])
            del self._open[sid]
            n += 1
        if n:
            self._publish_snapshot()
        return n

    def _present_for(self, shift: Shift, due: datetime) -> bool:
        """Checked in at the deadline, or came and went after the shift began: not absent."""
        if shift.staff_id in self._open:
            return True
        return bool(self.store.rows(
            "SELECT 1 FROM attendance WHERE staff_id = ? AND in_at < ? AND (open = 1 OR COALESCE(out_at, closed_at) > ?) LIMIT 1",
            (shift.staff_id, _iso(due), _iso(shift.start)),
        ))

    def leave_at(self, staff_id: str, at: datetime) -> str | None:
        """The id of the leave ``staff_id`` is on at ``at`` (销假 taken into account), or None."""
        row = self.store.rows(
            "SELECT id FROM leaves WHERE staff_id = ? AND start_at <= ? AND COALESCE(ended_at, end_at) > ? LIMIT 1",
            (staff_id, _iso(at), _iso(at)),
        )
        return row[0][0] if row else None

    def _judge_absences(self, now: datetime) -> int:
        grace = timedelta(minutes=self.rules.absent_after_min)
        # Only yesterday's and today's shifts are judged: older decisions can be forgotten.
        horizon = now.date() - timedelta(days=2)
        for key in [k for k, (day, _) in self._decided.items() if day < horizon]:
            del self._decided[key]
        decided: dict[str, tuple[date, str]] = {}
        events = []
        for shift in self._shifts_between(now.date() - timedelta(days=1), now.date()):
            key = shift.key
            if key in self._decided:
                continue
            due = shift.start + grace
            if now < due:
                continue
            member = self.staff.get(shift.staff_id)
            if due < self._watching_since:
                outcome = "unverified"  # the device was off or its clock unknown at the time
            elif member is None or not member.active:
                outcome = "unknown_staff"
            elif self._present_for(shift, due):
                outcome = "present"
            elif self.leave_at(shift.staff_id, shift.start):
                outcome = "leave"
            else:
                outcome = "absent"
                events.append(self._absent_spec(member, shift, due))
            decided[key] = (shift.day, outcome)
        if events:
            self.sink.record_together(events)
        self._decided.update(decided)
        return len(events)

    def _absent_spec(self, member: StaffMember, shift: Shift, due: datetime) -> EventSpec:
        event_id = new_event_id()
        data = {
            "staff_id": member.id,
            "name": member.name,
            "window": shift.window,
            "window_name": self.windows.get(shift.window),
            "shift": shift.as_dict(),
            "due": _iso(due),
            "absent_after_min": self.rules.absent_after_min,
        }

        def write(conn: sqlite3.Connection, env: dict) -> None:
            conn.execute(
                "INSERT OR IGNORE INTO attendance_verdicts (event_id, kind, staff_id, window, shift_key, shift_day, decided_at) VALUES (?, 'absent', ?, ?, ?, ?, ?)",
                (event_id, member.id, shift.window, shift.key, shift.day.isoformat(), env["time"]),
            )

        return EventSpec(ABSENT, data, TELEMETRY, write, event_id=event_id)

    def _watch_windows(self, now: datetime) -> int:
        grace = timedelta(minutes=self.rules.late_grace_min)
        running = [s for s in self._around(now) if s.start + grace <= now < s.end]
        n = 0
        for wid, wname in self.windows.items():
            expected = [s for s in running if s.window == wid]
            staffed = next((s for s in self._snapshot if s.window == wid), None)
            gap = self._gaps.get(wid)
            if gap is None and expected and staffed is None:
                gid = new_event_id()  # the window_unstaffed event's id
                data = {
                    "window": wid,
                    "window_name": wname,
                    "since": _iso(now),
                    "expected": [
                        {"staff_id": s.staff_id, "name": self.staff[s.staff_id].name if s.staff_id in self.staff else s.staff_id, "on_leave": self.leave_at(s.staff_id, now) is not None}
                        for s in expected
                    ],
                }

                def open_gap(conn: sqlite3.Connection, env: dict, gid: str = gid, wid: str = wid) -> None:
                    conn.execute("INSERT INTO window_gaps (id, window, since) VALUES (?, ?, ?)", (gid, wid, _iso(now)))

                self.sink.record_together([EventSpec(WINDOW_UNSTAFFED, data, TELEMETRY, open_gap, event_id=gid)])
                self._gaps[wid] = (gid, now)
                n += 1
            elif gap is not None and (staffed is not None or not expected):
                gid, since = gap
                data = {
                    "window": wid,
                    "window_name": wname,
                    "since": _iso(since),
                    "until": _iso(now),
                    "minutes": _ceil_minutes(now - since),
                    "ended_by": "check_in" if staffed is not None else "schedule_end",
                    "staff_id": staffed.staff_id if staffed is not None else None,
                    "unstaffed_event_id": gid,
                }

                def close_gap(conn: sqlite3.Connection, env: dict, gid: str = gid, ended_by: str = data["ended_by"]) -> None:
                    conn.execute("UPDATE window_gaps SET until = ?, ended_by = ? WHERE id = ?", (_iso(now), ended_by, gid))

                self.sink.record_together([EventSpec(WINDOW_UNSTAFFED_ENDED, data, TELEMETRY, close_gap)])
                del self._gaps[wid]
                n += 1
        return n

    def settle(self, anchor_time: datetime, anchor_mono_ns: int, boot_id: str) -> int:
        """The clock is synchronised: correct this boot's swipe times from the anchor and judge them.

        A swipe of this boot gets its true time (anchor time minus the monotonic distance) and
        its verdict (late, early leave) as if judged at the time. A swipe from an earlier boot
        whose clock never synchronised cannot be corrected: it stays as recorded, marked
        ``unverified``, and is never the ground for a verdict. Returns the events recorded.
        """

        def true_time(mono: int) -> datetime:
            return anchor_time - timedelta(seconds=(anchor_mono_ns - mono) / 1e9)

        with self._lock:
            if self._watching_since is None:
                self._watching_since = true_time(self._started_mono)
            rows = self.store.rows(
                "SELECT id, staff_id, in_at, in_boot, in_mono, in_verdict, out_event_id, out_at, out_boot, out_mono, out_verdict"
                " FROM attendance WHERE in_verdict = 'pending' OR out_verdict = 'pending' ORDER BY in_at"
            )
            quiet: list[tuple[str, tuple]] = []
            begun: set[tuple[str, str]] = set()  # (staff, shift) the check-ins settled below were at work in
            n = 0
            for sid, staff_id, in_at, in_boot, in_mono, in_verdict, out_id, out_at, out_boot, out_mono, out_verdict in rows:
                member = self.staff.get(staff_id) or StaffMember(staff_id, staff_id)
                events: list[EventSpec] = []
                t_in = datetime.fromisoformat(in_at)
                corrected = 0
                if in_verdict == "pending" and in_boot == boot_id:
                    t_in = true_time(in_mono)
                    corrected = 1
                shift = None
                rematched = False
                if in_verdict == "pending":
                    if in_boot == boot_id:
                        rematched = True
                        shift = self._match_shift(staff_id, t_in)
                        if shift is None:
                            in_verdict = "unscheduled"
                        elif self._shift_begun(staff_id, shift, t_in, besides=begun):
                            in_verdict = "returned"
                        elif t_in > shift.start + timedelta(minutes=self.rules.late_grace_min):
                            in_verdict = "late"
                            events.append(self._late_spec(member, shift, t_in, sid, _ceil_minutes(t_in - shift.start), settled=True))
                        else:
                            in_verdict = "on_time"
                    else:
                        in_verdict = "unverified"
                if out_verdict == "pending":
                    t_out = datetime.fromisoformat(out_at)
                    if out_boot == boot_id and in_verdict != "unverified":
                        t_out = true_time(out_mono)
                        left = self._shift_left(staff_id, t_in, t_out)
                        if left is None:
                            out_verdict = "unscheduled"
                        elif t_out < left.end - timedelta(minutes=self.rules.early_leave_grace_min):
                            out_verdict = "early_leave"
                            events.append(self._early_spec(member, left, t_out, out_id, _ceil_minutes(left.end - t_out), settled=True))
                        else:
                            out_verdict = "on_time"
                    else:
                        out_verdict = "unverified"
                    out_at = _iso(t_out)
                if rematched and shift is not None and (out_at is None or datetime.fromisoformat(out_at) > shift.start):
                    begun.add((staff_id, shift.key))  # at work at its start or later: a later check-in returns
                # The shift guessed from the wrong clock is replaced by the one the true time matches.
                window = shift.window if shift else (member.windows[0] if member.windows else None)
                update = (
                    "UPDATE attendance SET in_at = ?, in_verdict = ?, out_at = ?, out_verdict = ?, corrected = MAX(corrected, ?),"
                    " window = CASE WHEN ? THEN ? ELSE window END, shift_key = CASE WHEN ? THEN ? ELSE shift_key END,"
                    " shift_day = CASE WHEN ? THEN ? ELSE shift_day END WHERE id = ?",
                    (_iso(t_in), in_verdict, out_at, out_verdict, corrected, rematched, window, rematched, shift.key if shift else None,
                     rematched, shift.day.isoformat() if shift else None, sid),
                )
                if events:

                    def write(conn: sqlite3.Connection, env: dict, update: tuple = update) -> None:
                        conn.execute(*update)

                    events[0] = EventSpec(events[0].type, events[0].data, events[0].stream, _both(events[0].domain, write), events[0].event_id)
                    self.sink.record_together(events)
                    n += len(events)
                else:
                    quiet.append(update)
                if staff_id in self._open and self._open[staff_id].id == sid:
                    s = self._open[staff_id]
                    s.in_at, s.in_verdict = t_in, in_verdict
                    if rematched:
                        s.window, s.shift_key, s.shift_day = window, shift.key if shift else None, shift.day.isoformat() if shift else None
            if quiet:
                self.store.write_many(quiet[0][0], [params for _, params in quiet])
            # Unknown cards swiped before the sync in this boot are filed under their true day.
            moved = [
                (_iso(true_time(mono)), true_time(mono).date().isoformat(), event_id)
                for event_id, mono in self.store.rows("SELECT event_id, mono_ns FROM unknown_swipes WHERE clock_synced = 0 AND boot_id = ?", (boot_id,))
            ]
            if moved:
                self.store.write_many("UPDATE unknown_swipes SET at = ?, day = ?, clock_synced = 1 WHERE event_id = ?", moved)
            self._needs_settle = False
            self._publish_snapshot()
        return n

    # -- leave (请假, 销假) and cards, from the director's page ------------------------------------

    def _when(self, value: Any, field: str, *, end: bool = False) -> datetime:
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=self.tz)
        if isinstance(value, date):
            value = value.isoformat()
        if isinstance(value, str):
            text = value.strip()
            try:
                if DAY.match(text):
                    d = date.fromisoformat(text)
                    # A date alone means the whole day: from its start, or to its end.
                    return datetime.combine(d + timedelta(days=1 if end else 0), time(0), tzinfo=self.tz)
                dt = datetime.fromisoformat(text)
                return (dt if dt.tzinfo else dt.replace(tzinfo=self.tz)).astimezone(self.tz)
            except ValueError:
                pass
        raise RosterRejected(field, f"{_show(value)} is not a date (YYYY-MM-DD) or a date and time (YYYY-MM-DDTHH:MM)")

    def _member(self, staff_id: Any, *, active: bool = True) -> StaffMember:
        member = self.staff.get(staff_id) if isinstance(staff_id, str) else None
        if member is None:
            raise RosterRejected("staff_id", f"{_show(staff_id)} is not in the staff registry", code="not_in_registry", params={"staff_id": _show(staff_id)})
        if active and not member.active:
            raise RosterRejected("staff_id", f"{member.name} ({member.id}) is inactive in the staff registry", code="inactive", params={"name": member.name, "staff_id": member.id})
        return member

    def _who(self, recorded_by: Any) -> str:
        if not isinstance(recorded_by, str) or not recorded_by.strip() or len(recorded_by) > 100:
            raise RosterRejected("recorded_by", "must name who records it (the signed-in account), at most 100 characters")
        return recorded_by.strip()

    def record_leave(self, staff_id: str, start: Any, end: Any, kind: str, recorded_by: str, note: str = "") -> dict:
        """Record leave (请假) the director approved; it cancels absences already published in it.

        ``start``/``end`` are datetimes or ISO text; a date alone means from the start of that
        day / to the end of that day (so "2026-11-26" to "2026-11-27" is two whole days).
        """
        member = self._member(staff_id)
        who = self._who(recorded_by)
        if kind not in LEAVE_KINDS:
            raise RosterRejected("kind", f"{_show(kind)} must be one of {', '.join(f'{k} ({v})' for k, v in LEAVE_KINDS.items())}")
        if not isinstance(note, str) or len(note) > 200:
            raise RosterRejected("note", "must be text of at most 200 characters")
        t0 = self._when(start, "start")
        t1 = self._when(end, "end", end=True)
        if t1 <= t0:
            raise RosterRejected("end", f"{_iso(t1)} is not after the start {_iso(t0)}", code="leave_ends_first", params={"start": _iso(t0), "end": _iso(t1)})
        if t1 - t0 > timedelta(days=366):
            raise RosterRejected("end", "leave of more than a year is recorded in parts", code="leave_too_long")
        clash = self.store.rows(
            "SELECT id, start_at, COALESCE(ended_at, end_at) FROM leaves WHERE staff_id = ? AND start_at < ? AND COALESCE(ended_at, end_at) > ? ORDER BY start_at LIMIT 1",
            (member.id, _iso(t1), _iso(t0)),
        )
        if clash:
            raise RosterRejected(
                "start", f"{member.name} already has leave from {clash[0][1]} to {clash[0][2]} ({clash[0][0]}); end it (销假) or choose other dates",
                code="leave_clash", params={"name": member.name, "start": clash[0][1], "end": clash[0][2], "leave_id": clash[0][0]},
            )
        cancels = [
            r[0] for r in self.store.rows("SELECT event_id, shift_key FROM attendance_verdicts WHERE kind = 'absent' AND staff_id = ? AND voided_by IS NULL", (member.id,))
            if t0 <= datetime.fromisoformat(r[1].split("|")[2]) < t1
        ]
        leave_id = new_event_id()  # the leave event's id
        now = self.clock.now()
        data = {
            "leave_id": leave_id,
            "staff_id": member.id,
            "name": member.name,
            "kind": kind,
            "kind_label": LEAVE_KINDS[kind],
            "start": _iso(t0),
            "end": _iso(t1),
            "note": note,
            "recorded_by": who,
            "cancels": cancels,
        }

        def write(conn: sqlite3.Connection, env: dict) -> None:
            conn.execute(
                "INSERT INTO leaves (id, staff_id, kind, start_at, end_at, note, recorded_by, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (leave_id, member.id, kind, _iso(t0), _iso(t1), note, who, _iso(now)),
            )
            for event_id in cancels:
                conn.execute("UPDATE attendance_verdicts SET voided_by = ? WHERE event_id = ?", (leave_id, event_id))

        with self._lock:
            self.sink.record_together([EventSpec(LEAVE, data, PERSON, write, event_id=leave_id)])
        return data

    def end_leave(self, leave_id: str, recorded_by: str, at: Any = None) -> dict:
        """销假: the person is back; shifts from ``at`` (default now) are judged again."""
        who = self._who(recorded_by)
        row = self.store.rows("SELECT staff_id, start_at, end_at, ended_at FROM leaves WHERE id = ?", (leave_id,)) if isinstance(leave_id, str) else []
        if not row:
            raise RosterRejected("leave_id", f"{_show(leave_id)} is not a leave recorded on this device")
        staff_id, start_at, end_at, ended_at = row[0]
        if ended_at is not None:
            raise RosterRejected("leave_id", f"this leave was already ended (销假) at {ended_at}", code="leave_ended", params={"at": ended_at})
        t = self._when(at, "at") if at is not None else self.clock.now()
        start, end = datetime.fromisoformat(start_at), datetime.fromisoformat(end_at)
        if t >= end:
            raise RosterRejected("at", f"the leave is already over: it ended at {end_at}", code="leave_over", params={"at": end_at})
        ended = max(t, start)
        member = self.staff.get(staff_id)
        data = {
            "leave_id": leave_id,
            "staff_id": staff_id,
            "name": member.name if member else staff_id,
            "ended_at": _iso(ended),
            "planned_end": end_at,
            "withdrawn": ended == start,
            "recorded_by": who,
        }

        def write(conn: sqlite3.Connection, env: dict) -> None:
            conn.execute("UPDATE leaves SET ended_at = ?, ended_by = ? WHERE id = ?", (_iso(ended), who, leave_id))

        with self._lock:
            self.sink.record_together([EventSpec(LEAVE_ENDED, data, PERSON, write)])
        return data

    def leaves(self, staff_id: str | None = None, *, current_only: bool = False) -> list[dict]:
        """Leave recorded here, newest first, for the page."""
        sql = "SELECT id, staff_id, kind, start_at, end_at, ended_at, note, recorded_by, recorded_at, ended_by FROM leaves"
        where, params = [], []
        if staff_id:
            where.append("staff_id = ?")
            params.append(staff_id)
        if current_only:
            where.append("COALESCE(ended_at, end_at) > ?")
            params.append(_iso(self.clock.now()))
        rows = self.store.rows(sql + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY start_at DESC", params)
        keys = ("leave_id", "staff_id", "kind", "start", "end", "ended_at", "note", "recorded_by", "recorded_at", "ended_by")
        return [dict(zip(keys, r)) | {"kind_label": LEAVE_KINDS.get(r[2], r[2])} for r in rows]

    def register_card(self, card: str, staff_id: str, recorded_by: str) -> dict:
        """The director gives an unknown card to a person; it works here at once and the county is told.

        The county's registry wins: a card it gives to someone else is theirs from then on.
        """
        who = self._who(recorded_by)
        if not isinstance(card, str) or not CARD.match(card.strip()):
            raise RosterRejected("card", f"{_show(card)} is not a card number: 4 to 64 digits (0-9, or A-F for a hex reader)")
        card = card.strip().upper()
        member = self._member(staff_id)
        owner = self._cards.get(card)
        if owner is not None:
            name = self.staff[owner].name
            raise RosterRejected("card", f"card {card} already belongs to {name} ({owner}) in the county's staff registry", code="card_in_registry", params={"card": card, "name": name, "staff_id": owner})
        local = self.store.rows("SELECT staff_id FROM local_cards WHERE card = ?", (card,))
        if local:
            raise RosterRejected("card", f"card {card} was already registered on this device to {local[0][0]}", code="card_registered_here", params={"card": card, "staff_id": local[0][0], "name": self.staff[local[0][0]].name if local[0][0] in self.staff else local[0][0]})
        data = {"card": card, "staff_id": member.id, "name": member.name, "recorded_by": who}
        now = self.clock.now()

        def write(conn: sqlite3.Connection, env: dict) -> None:
            conn.execute("INSERT INTO local_cards VALUES (?, ?, ?, ?, ?)", (card, member.id, who, _iso(now), env["event_id"]))

        with self._lock:
            self.sink.record_together([EventSpec(CARD_REGISTERED, data, PERSON, write)])
            # A swipe of it in the last moments was 'unknown': the next one must not be a duplicate of that.
            self._last_swipe.pop(card, None)
        return data

    def unknown_cards(self, limit: int = 20) -> list[dict]:
        """Cards swiped that nobody owns (or whose owner is inactive), latest first, for the page."""
        rows = self.store.rows(
            "SELECT card, reason, staff_id, MAX(at), COUNT(*) FROM unknown_swipes WHERE card NOT IN (SELECT card FROM local_cards)"
            " GROUP BY card ORDER BY MAX(at) DESC LIMIT ?",
            (limit,),
        )
        return [{"card": c, "reason": r, "staff_id": s, "last_seen": at, "swipes": n} for c, r, s, at, n in rows if c not in self._cards or r == "inactive"]

    # -- the daily summary -----------------------------------------------------------------------

    def _summary_due(self, day: date) -> datetime:
        ends = [s.end for s in self.shifts_on(day)]
        if self.calendar.opening_hours:
            ends.append(datetime.combine(day, self.calendar.opening_hours[-1][1], tzinfo=self.tz))
        last = max(ends) if ends else datetime.combine(day + timedelta(days=1), time(0), tzinfo=self.tz)
        return last + timedelta(minutes=self.rules.summary_delay_min)

    def _publish_summaries(self, now: datetime) -> int:
        if not self.known:
            return 0  # a hall with no staff registry has no attendance to summarise
        n = 0
        for back in range(SUMMARY_CATCH_UP_DAYS, -1, -1):
            day = now.date() - timedelta(days=back)
            if self._since is None or day < self._since or day.isoformat() in self._summarized:
                continue
            if now < self._summary_due(day):
                continue
            data = self.summary(day, now)

            def write(conn: sqlite3.Connection, env: dict, day: str = day.isoformat()) -> None:
                conn.execute("INSERT OR IGNORE INTO attendance_days VALUES (?, ?, ?)", (day, env["time"], env["event_id"]))

            self.sink.record_together([EventSpec(SUMMARY, data, TELEMETRY, write)])
            self._summarized.add(day.isoformat())
            n += 1
        return n

    def summary(self, day: date | str, now: datetime | None = None) -> dict:
        """One day's attendance: each shift's outcome, check-ins without a shift, windows unstaffed, counts."""
        day = date.fromisoformat(day) if isinstance(day, str) else day
        now = now or self.clock.now()
        shifts = self.shifts_on(day)
        verdicts = {
            (kind, key): (minutes, event_id)
            for kind, key, minutes, event_id in self.store.rows(
                "SELECT kind, shift_key, minutes, event_id FROM attendance_verdicts WHERE shift_day = ? AND voided_by IS NULL", (day.isoformat(),)
            )
        }
        lo = _iso(datetime.combine(day - timedelta(days=1), time(0), tzinfo=self.tz))
        hi = _iso(datetime.combine(day + timedelta(days=2), time(0), tzinfo=self.tz))
        sessions = self.store.rows(
            "SELECT id, staff_id, in_at, out_at, closed_at, open, in_verdict, closed_reason, duplicates, shift_day FROM attendance WHERE in_at >= ? AND in_at < ? ORDER BY in_at",
            (lo, hi),
        )
        early = timedelta(minutes=self.rules.check_in_open_min)
        counts = dict.fromkeys(("scheduled", "on_time", "late", "absent", "leave", "no_record", "unverified", "early_leave", "missed_checkout", "duplicate_swipes", "unknown_cards"), 0)
        out_shifts = []
        used: set[str] = set()
        for s in shifts:
            member = self.staff.get(s.staff_id)
            mine = []
            for sid, staff_id, in_at, out_at, closed_at, is_open, in_verdict, _, _, _ in sessions:
                if staff_id != s.staff_id:
                    continue
                t_in = datetime.fromisoformat(in_at)
                t_end = now if is_open else datetime.fromisoformat(out_at or closed_at)
                if t_in < s.end and t_end > s.start - early and t_end > t_in - timedelta(seconds=1):
                    mine.append((t_in, out_at, in_verdict, sid))
            entry = {
                "staff_id": s.staff_id,
                "name": member.name if member else s.staff_id,
                "window": s.window,
                "start": _iso(s.start),
                "end": _iso(s.end),
                "checked_in_at": _iso(mine[0][0]) if mine else None,
                "checked_out_at": mine[-1][1] if mine else None,
                "minutes_late": None,
                "minutes_early": None,
                "early_leave": ("early_leave", s.key) in verdicts,
            }
            if entry["early_leave"]:
                entry["minutes_early"] = verdicts[("early_leave", s.key)][0]
            if self.leave_at(s.staff_id, s.start):
                status = "leave"
            elif ("absent", s.key) in verdicts:
                status = "absent"
            elif mine:
                used.update(m[3] for m in mine)
                if ("late", s.key) in verdicts:
                    status = "late"
                    entry["minutes_late"] = verdicts[("late", s.key)][0]
                elif mine[0][2] in ("unverified", "pending"):
                    status = "unverified"
                else:
                    status = "on_time"
            else:
                status = "no_record"
            entry["status"] = status
            counts[status] += 1
            counts["early_leave"] += entry["early_leave"]
            out_shifts.append(entry)
        counts["scheduled"] = len(shifts)
        unscheduled = []
        for sid, staff_id, in_at, out_at, closed_at, is_open, in_verdict, closed_reason, duplicates, _ in sessions:
            if datetime.fromisoformat(in_at).date() != day:
                continue
            counts["duplicate_swipes"] += duplicates
            counts["missed_checkout"] += closed_reason == "missed_checkout"
            if sid not in used and in_verdict == "unscheduled":
                member = self.staff.get(staff_id)
                unscheduled.append({"staff_id": staff_id, "name": member.name if member else staff_id, "checked_in_at": in_at, "checked_out_at": out_at})
        counts["unknown_cards"] = self.store.rows("SELECT COUNT(*) FROM unknown_swipes WHERE day = ?", (day.isoformat(),))[0][0]
        gaps = [
            {"window": w, "since": since, "until": until, "minutes": _ceil_minutes(datetime.fromisoformat(until) - datetime.fromisoformat(since)) if until else None}
            for w, since, until in self.store.rows("SELECT window, since, until FROM window_gaps WHERE since >= ? AND since < ? ORDER BY since", (_iso(datetime.combine(day, time(0), tzinfo=self.tz)), _iso(datetime.combine(day + timedelta(days=1), time(0), tzinfo=self.tz))))
        ]
        leader = self.leader_on(day)
        return {
            "day": day.isoformat(),
            "day_kind": self.day_kind(day),
            "leader": {"staff_id": leader, "name": self.staff[leader].name if leader in self.staff else leader} if leader else None,
            "shifts": out_shifts,
            "unscheduled": unscheduled,
            "windows_unstaffed": gaps,
            "counts": counts,
        }


def _both(first: Callable | None, second: Callable) -> Callable:
    def run(conn: sqlite3.Connection, env: dict) -> None:
        if first is not None:
            first(conn, env)
        second(conn, env)

    return run

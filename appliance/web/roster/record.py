"""The page's own Roster over the store, the sink that records (and audits) what the page does, the attendance record.

The web process builds a Roster for each request from the store — the three documents the
county sent, the calendar it sent, the open check-ins — so it shows what the daemon works
with, running or not. It never calls ``tick()``: verdicts are the daemon's. What the director
does here (leave, 销假, a card registered) is recorded as an event in the outbox with its
domain rows and its audit row, in one transaction; the daemon's uplink sends it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import Any

from services.calendar import CalendarInvalid, HallCalendar, validate_calendar
from services.roster import CARD_REGISTERED, LEAVE, LEAVE_ENDED, STATE_NAMES, Roster
from services.sink import EventSpec

from ...accounts import Accounts
from ...events import SCOPES, Recorder
from ..hall import Hall

AUDIT_ACTIONS = {LEAVE: "roster.leave", LEAVE_ENDED: "roster.leave_ended", CARD_REGISTERED: "roster.card_registered"}


class PageSink:
    """The page's event sink: each event goes through the web process's Recorder with its audit row.

    Alarms are left to the daemon: it validates the same documents and raises them itself, and
    two processes raising and clearing one alarm would race.
    """

    def __init__(self, recorder: Recorder, accounts: Accounts, username: str | None) -> None:
        self.recorder = recorder
        self.accounts = accounts
        self.username = username
        self.boot_id = recorder.boot_id

    def record_together(self, events: list[EventSpec]) -> list[Any]:
        if self.username is None:
            raise RuntimeError("the page records roster events only for a signed-in account")
        first = events[0]
        detail = {k: v for k, v in first.data.items() if k not in ("recorded_by", "kind_label")}

        def domain(conn: sqlite3.Connection, envelope: dict) -> None:
            if first.domain is not None:
                first.domain(conn, envelope)
            self.accounts.audit(self.username, AUDIT_ACTIONS.get(first.type, first.type), detail | {"event_id": envelope["event_id"]}, conn=conn)

        return self.recorder.record_together([replace(first, domain=domain), *events[1:]])

    def raise_alarm(self, code: str, detail: str) -> None:
        pass

    def clear_alarm(self, code: str) -> None:
        pass


def page_roster(h: Hall, username: str | None = None) -> Roster:
    """A Roster with what the store says is in force; events it records are audited as ``username``."""
    calendar = HallCalendar(h.config.hall.opening_hours)
    applied = h.store.applied_state("calendar")
    years: dict = {}
    for scope in SCOPES:  # widest first: a township's year replaces the county's
        if scope in applied:
            try:
                years.update(validate_calendar(applied[scope][1]))
            except CalendarInvalid:
                pass  # the daemon rejected or alarmed on it; the library and weekday rule stand
    calendar.set_county_years(years)
    roster = Roster(PageSink(h.recorder, h.accounts, username), h.store, h.clock, calendar, {w.id: w.name for w in h.config.windows})
    for name in STATE_NAMES:
        roster.apply_state(name, {scope: data for scope, (_version, data) in h.store.applied_state(name).items()})
    return roster


def in_force(h: Hall, name: str) -> tuple[str, int] | None:
    """The scope and version of the county's document ``name`` in force (the narrowest scope wins)."""
    applied = h.store.applied_state(name)
    for scope in reversed(SCOPES):
        if scope in applied:
            return scope, applied[scope][0]
    return None


# -- the attendance record -------------------------------------------------------------------

# What the verdict filter offers; each record says which of these it matches.
VERDICTS = ("on_time", "late", "early_leave", "absent", "missed_checkout", "unscheduled", "unverified")
RECORD_LIMIT = 500


@dataclass
class Entry:
    """One line of the attendance record: a check-in (with its check-out) or an absence."""

    kind: str  # 'session' or 'absence'
    day: str
    at: str  # the check-in, or the shift's start for an absence
    staff_id: str
    name: str
    window: str | None
    window_name: str | None
    in_verdict: str | None = None
    minutes_late: int | None = None
    out_at: str | None = None
    out_verdict: str | None = None
    minutes_early: int | None = None
    open: bool = False
    missed_checkout: bool = False
    duplicates: int = 0
    corrected: bool = False
    cancelled_by: str | None = None  # an absence: 'leave' or 'late'

    def matches(self, verdict: str) -> bool:
        if self.kind == "absence":
            return verdict == "absent"
        if verdict == "on_time":
            return self.in_verdict == "on_time" and self.out_verdict in (None, "on_time") and not self.missed_checkout
        if verdict == "unverified":
            return "unverified" in (self.in_verdict, self.out_verdict) or "pending" in (self.in_verdict, self.out_verdict)
        if verdict == "missed_checkout":
            return self.missed_checkout
        return verdict in (self.in_verdict, self.out_verdict)


def _shift_start(shift_key: str) -> datetime:
    return datetime.fromisoformat(shift_key.split("|")[2])


def attendance_record(h: Hall, roster: Roster, first: date, last: date, staff_id: str = "", verdict: str = "") -> tuple[list[Entry], int]:
    """The check-ins and absences from ``first`` to ``last`` (hall days), newest first; and how many matched."""
    tz = roster.tz
    lo = datetime.combine(first, time(0), tzinfo=tz).isoformat(timespec="seconds")
    hi = datetime.combine(last + timedelta(days=1), time(0), tzinfo=tz).isoformat(timespec="seconds")
    who = " AND staff_id = ?" if staff_id else ""
    extra = (staff_id,) if staff_id else ()
    windows = {w.id: w.name for w in h.config.windows}

    def name(sid: str) -> str:
        member = roster.staff.get(sid)
        return member.name if member else sid

    # Late and early-leave verdicts of the sessions, and the absences, from a day before the
    # range (an overnight shift's check-out) to its end.
    verdicts = h.store.rows(
        "SELECT kind, staff_id, window, shift_key, shift_day, minutes, voided_by FROM attendance_verdicts WHERE shift_day >= ? AND shift_day <= ?" + who,
        ((first - timedelta(days=1)).isoformat(), last.isoformat(), *extra),
    )
    late = {(sid, key): minutes for kind, sid, _w, key, _d, minutes, _v in verdicts if kind == "late"}
    early = [(sid, _shift_start(key), minutes) for kind, sid, _w, key, _d, minutes, _v in verdicts if kind == "early_leave"]
    leave_ids = {r[0] for r in h.store.rows("SELECT id FROM leaves WHERE id IN (SELECT voided_by FROM attendance_verdicts WHERE kind = 'absent' AND voided_by IS NOT NULL)")}

    entries: list[Entry] = []
    for sid, sess_sid, window, shift_key, in_at, in_verdict, out_at, out_verdict, is_open, closed_reason, duplicates, corrected in h.store.rows(
        "SELECT id, staff_id, window, shift_key, in_at, in_verdict, out_at, out_verdict, open, closed_reason, duplicates, corrected"
        " FROM attendance WHERE in_at >= ? AND in_at < ?" + who + " ORDER BY in_at DESC",
        (lo, hi, *extra),
    ):
        t_in = datetime.fromisoformat(in_at)
        minutes_early = None
        if out_verdict == "early_leave" and out_at:
            t_out = datetime.fromisoformat(out_at)
            # Judged against the shift left: the latest one begun before the check-out.
            left = [(start, m) for s, start, m in early if s == sess_sid and t_in - timedelta(days=1) < start < t_out]
            minutes_early = max(left)[1] if left else None
        entries.append(Entry(
            "session", t_in.date().isoformat(), in_at, sess_sid, name(sess_sid), window, windows.get(window) if window else None,
            in_verdict=in_verdict, minutes_late=late.get((sess_sid, shift_key)) if in_verdict == "late" else None,
            out_at=out_at, out_verdict=out_verdict, minutes_early=minutes_early, open=bool(is_open),
            missed_checkout=closed_reason == "missed_checkout", duplicates=duplicates, corrected=bool(corrected),
        ))
    for kind, sid, window, key, day, _minutes, voided_by in verdicts:
        if kind != "absent" or not first.isoformat() <= day <= last.isoformat():
            continue
        cancelled = None if voided_by is None else ("leave" if voided_by in leave_ids else "late")
        entries.append(Entry("absence", day, _shift_start(key).isoformat(timespec="seconds"), sid, name(sid), window, windows.get(window) if window else None, cancelled_by=cancelled))
    if verdict:
        entries = [e for e in entries if e.matches(verdict)]
    entries.sort(key=lambda e: e.at, reverse=True)
    return entries[:RECORD_LIMIT], len(entries)

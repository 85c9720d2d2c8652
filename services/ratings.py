"""Ratings at the service windows (政务服务"好差评"), and the follow-up a poor rating opens.

A press is never silently dropped: a second press too soon at the same window is recorded
with the ``repeat`` flag, a flood with ``burst``, a press with nobody on duty with
``unstaffed``, and the county decides what counts. A rating at one of the two lowest levels
(差评) opens a follow-up in the same transaction: call the citizen back within one working
day, put it right within fifteen (both configurable), counted on the hall calendar. While the
clock is not synchronised those deadlines are provisional; ``settle()`` fixes them from the
time anchor once it is. When the hall calendar changes, ``reschedule()`` counts open
follow-ups' deadlines again.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import uuid
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Protocol

from .calendar import HallCalendar
from .levels import BY_CODE, LEVELS
from .sink import PERSON, TELEMETRY, Clock, EventSink, EventSpec, Rows, new_event_id

log = logging.getLogger(__name__)

REPEAT = "repeat"
BURST = "burst"
UNSTAFFED = "unstaffed"
# Levels counted as satisfied in the satisfaction rate (非常满意, 满意, 基本满意).
SATISFIED_SCORES = (5, 4, 3)


class _Moved(Exception):
    """A follow-up changed between reading it and writing: that transaction rolls back."""


class FollowupRejected(ValueError):
    """A command about a follow-up cannot be applied; ``field`` names why."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


@dataclass(frozen=True)
class RatingPolicy:
    """How presses are flagged and how long a follow-up may take."""

    repeat_interval_s: float = 5.0
    burst_limit: int = 10  # presses at one window within burst_window_s before 'burst'
    burst_window_s: float = 60.0
    callback_working_days: int = 1
    rectify_working_days: int = 15


class OnDuty(Protocol):
    """Who is at a window now; the roster service provides it."""

    def staff_at(self, window_id: str, at: datetime) -> str | None: ...


class NoRoster:
    """Until a roster is configured nobody is known to be on duty, and nothing is flagged for it."""

    def staff_at(self, window_id: str, at: datetime) -> str | None:
        return None

    known = False


class Ratings:
    """Records ratings and runs their follow-ups."""

    def __init__(
        self,
        sink: EventSink,
        store: Rows,
        clock: Clock,
        calendar: HallCalendar,
        windows: dict[str, str],
        policy: RatingPolicy = RatingPolicy(),
        *,
        on_duty: OnDuty | None = None,
        on_feedback: Callable[[str, str], None] | None = None,
    ) -> None:
        self.sink = sink
        self.store = store
        self.clock = clock
        self.calendar = calendar
        self.windows = windows  # id → name
        self.policy = policy
        self.on_duty = on_duty or NoRoster()
        self.on_feedback = on_feedback
        self._recent: dict[str, deque[int]] = {}
        # Presses come from gpiozero's callback thread and from the main loop (a press the
        # debouncer settles at a tick, the control socket): one at a time through _flags.
        self._flags_lock = threading.Lock()
        # Counting deadlines and writing them is one step: reschedule() waits for a press or
        # settle() holding deadlines counted on an older calendar before it reads the rows.
        self._count_lock = threading.Lock()
        self._counted_on: int | None = None  # the calendar generation last rescheduled on
        self._unreadable: set[str] = set()

    # -- a press ----------------------------------------------------------------------

    def press(self, window_id: str, level_code: str):
        """Record one accepted press at ``window_id``; returns the recorded rating event."""
        level = BY_CODE[level_code]
        now_ns = self.clock.monotonic_ns()
        now = self.clock.now()
        flags = self._flags(window_id, now_ns)
        staff = self.on_duty.staff_at(window_id, now)
        if staff is None and getattr(self.on_duty, "known", True):
            flags.append(UNSTAFFED)
        rating_id = new_event_id()
        with self._count_lock if level.is_poor else nullcontext():
            recorded = self._record(window_id, level, staff, flags, rating_id, now, now_ns)
        if self.on_feedback:
            try:
                self.on_feedback(window_id, level_code)
            except Exception:  # noqa: BLE001 - feedback is a courtesy; the rating is already safe
                log.exception("feedback for %s failed", window_id)
        return recorded

    def _record(self, window_id: str, level, staff: str | None, flags: list[str], rating_id: str, now: datetime, now_ns: int):
        """The rating, and the follow-up a 差评 opens, in one transaction."""
        level_code = level.code
        followup = self._new_followup(window_id, level_code, staff, rating_id, now, now_ns) if level.is_poor else None
        data = {
            "window": window_id,
            "window_name": self.windows.get(window_id, window_id),
            "level": level.code,
            "level_label": level.label,
            "score": level.score,
            "staff_id": staff,
            "flags": flags,
            "followup_id": followup["followup_id"] if followup else None,
        }

        def write_rating(conn: sqlite3.Connection, env: dict) -> None:
            conn.execute(
                "INSERT INTO ratings (event_id, seq, window, level, score, staff_id, flags, at, day, clock_synced, boot_id, mono_ns)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (env["event_id"], env["seq"], window_id, level.code, level.score, staff, json.dumps(flags), env["time"], env["time"][:10], int(env["clock_synced"]), env["boot_id"], env["mono_ns"]),
            )

        events = [EventSpec("rating.recorded", data, PERSON, write_rating, event_id=rating_id)]
        if followup:
            events.append(EventSpec("followup.opened", followup, PERSON, self._write_followup(followup, now_ns)))
        return self.sink.record_together(events)[0]

    def _flags(self, window_id: str, now_ns: int) -> list[str]:
        # Only the last burst_limit + 1 presses can matter for either flag.
        with self._flags_lock:
            recent = self._recent.setdefault(window_id, deque(maxlen=self.policy.burst_limit + 1))
            flags = []
            if recent and (now_ns - recent[-1]) / 1e9 < self.policy.repeat_interval_s:
                flags.append(REPEAT)
            recent.append(now_ns)
            horizon = now_ns - int(self.policy.burst_window_s * 1e9)
            while recent and recent[0] < horizon:
                recent.popleft()
            if len(recent) > self.policy.burst_limit:
                flags.append(BURST)
            return flags

    # -- follow-ups ---------------------------------------------------------------------

    def _deadlines(self, opened: datetime) -> tuple[datetime, datetime]:
        p = self.policy
        return (
            self.calendar.add_working_days(opened, p.callback_working_days),
            self.calendar.add_working_days(opened, p.rectify_working_days),
        )

    def _new_followup(self, window_id: str, level: str, staff: str | None, rating_id: str, now: datetime, now_ns: int) -> dict:
        callback_due, rectify_due = self._deadlines(now)
        return {
            "followup_id": str(uuid.uuid4()),
            "rating_event_id": rating_id,
            "window": window_id,
            "level": level,
            "staff_id": staff,
            "opened_at": now.isoformat(timespec="seconds"),
            "callback_due": callback_due.isoformat(timespec="seconds"),
            "rectify_due": rectify_due.isoformat(timespec="seconds"),
            # Computed from a wall clock that may be hours off: settle() fixes them later.
            "provisional": not self.clock.is_synced(),
        }

    def _write_followup(self, f: dict, now_ns: int) -> Callable[[sqlite3.Connection, dict], None]:
        def write(conn: sqlite3.Connection, env: dict) -> None:
            conn.execute(
                "INSERT INTO followups (id, rating_event_id, window, level, staff_id, opened_at, boot_id, mono_ns, callback_due, rectify_due, provisional,"
                " counted_from, callback_days, rectify_days) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    f["followup_id"], f["rating_event_id"], f["window"], f["level"], f["staff_id"], f["opened_at"], self.sink.boot_id, now_ns,
                    f["callback_due"], f["rectify_due"], int(f["provisional"]), f["opened_at"], self.policy.callback_working_days, self.policy.rectify_working_days,
                ),
            )

        return write

    def validate_close(self, args: Any) -> dict:
        """Check the county's ``followup.close`` arguments."""
        if not isinstance(args, dict):
            raise FollowupRejected("args", "must be an object")
        unknown = sorted(set(args) - {"followup_id", "outcome", "note", "closed_by"})
        if unknown:
            raise FollowupRejected(f"args.{unknown[0]}", "is not an argument of followup.close; it takes followup_id, outcome, note, closed_by")
        fid = args.get("followup_id")
        if not isinstance(fid, str) or not fid:
            raise FollowupRejected("args.followup_id", "is required: the followup_id from the followup.opened event")
        outcome = args.get("outcome", "rectified")
        if outcome not in ("called_back", "rectified", "unfounded"):
            raise FollowupRejected("args.outcome", f"{outcome!r} must be one of called_back, rectified, unfounded")
        note = args.get("note", "")
        if not isinstance(note, str) or len(note) > 1000:
            raise FollowupRejected("args.note", "must be text of at most 1000 characters")
        closed_by = args.get("closed_by", "")
        if not isinstance(closed_by, str) or len(closed_by) > 100:
            raise FollowupRejected("args.closed_by", "must be text of at most 100 characters")
        row = self.store.rows("SELECT state FROM followups WHERE id = ?", (fid,))
        if not row:
            raise FollowupRejected("args.followup_id", f"{fid!r} is not a follow-up of this device")
        if row[0][0] == "closed":
            raise FollowupRejected("args.followup_id", f"{fid!r} is already closed")
        return {"followup_id": fid, "outcome": outcome, "note": note, "closed_by": closed_by}

    def apply_close(self, conn: sqlite3.Connection, args: dict) -> dict:
        """Inside the command's transaction: record the call-back or close the follow-up."""
        at = self.clock.now().isoformat(timespec="seconds")
        if args["outcome"] == "called_back":
            conn.execute("UPDATE followups SET called_back_at = ?, note = ? WHERE id = ?", (at, args["note"], args["followup_id"]))
            return {"followup_id": args["followup_id"], "state": "open", "called_back_at": at}
        conn.execute(
            "UPDATE followups SET state = 'closed', closed_at = ?, closed_by = ?, outcome = ?, note = ? WHERE id = ?",
            (at, args["closed_by"], args["outcome"], args["note"], args["followup_id"]),
        )
        return {"followup_id": args["followup_id"], "state": "closed", "outcome": args["outcome"], "closed_at": at}

    def check_overdue(self) -> int:
        """Publish ``followup.overdue`` for each deadline passed, again each day it stays open."""
        if not self.clock.is_synced():
            return 0  # 'overdue' by a wrong clock would be a false accusation
        now = self.clock.now()
        today = now.date().isoformat()
        stamp = now.isoformat(timespec="seconds")
        rows = self.store.rows(
            "SELECT id, window, staff_id, callback_due, rectify_due, called_back_at, overdue_notified FROM followups"
            " WHERE state = 'open' AND provisional = 0 AND (overdue_notified IS NULL OR overdue_notified < ?)"
            " AND ((called_back_at IS NULL AND callback_due <= ?) OR rectify_due <= ?)",
            (today, stamp, stamp),
        )
        events = []
        for fid, window, staff, callback_due, rectify_due, called_back_at, _ in rows:
            missed = []
            if called_back_at is None and callback_due <= stamp:
                missed.append("callback")
            if rectify_due <= stamp:
                missed.append("rectify")

            def mark(conn: sqlite3.Connection, env: dict, fid: str = fid, due: tuple = (callback_due, rectify_due)) -> None:
                # Rescheduled (or closed) since it was read: no notice naming stale deadlines;
                # the next round looks again.
                if not conn.execute(
                    "UPDATE followups SET overdue_notified = ? WHERE id = ? AND state = 'open' AND callback_due = ? AND rectify_due = ?", (today, fid, *due)
                ).rowcount:
                    raise _Moved

            events.append(EventSpec("followup.overdue", {"followup_id": fid, "window": window, "staff_id": staff, "missed": missed, "callback_due": callback_due, "rectify_due": rectify_due}, TELEMETRY, mark))
        if events:
            try:
                self.sink.record_together(events)
            except _Moved:
                return 0
        return len(events)

    def settle(self, anchor_time: datetime, anchor_mono_ns: int, boot_id: str) -> int:
        """The clock is synchronised: fix provisional deadlines from the time anchor.

        A follow-up opened in this boot gets its true opening time (anchor time minus the
        monotonic distance); one from an earlier boot keeps its recorded time, marked as
        not corrected, and its deadlines count from the later of that time and the anchor.
        """
        with self._count_lock:
            return self._settle(anchor_time, anchor_mono_ns, boot_id)

    def _settle(self, anchor_time: datetime, anchor_mono_ns: int, boot_id: str) -> int:
        events = []
        # Ratings taken before the sync in this boot are filed under their true day.
        moved = [
            (event_id, (anchor_time - timedelta(seconds=(anchor_mono_ns - mono_ns) / 1e9)).date().isoformat())
            for event_id, mono_ns in self.store.rows("SELECT event_id, mono_ns FROM ratings WHERE clock_synced = 0 AND boot_id = ?", (boot_id,))
        ]
        rows = self.store.rows("SELECT id, opened_at, boot_id, mono_ns FROM followups WHERE provisional = 1")
        for fid, opened_at, fboot, mono_ns in rows:
            corrected = fboot == boot_id and mono_ns is not None
            opened = anchor_time - timedelta(seconds=(anchor_mono_ns - mono_ns) / 1e9) if corrected else datetime.fromisoformat(opened_at)
            # From an earlier boot the recorded time may be days early; the deadlines then run
            # from the sync, which is never before the true opening: never a false 'overdue'.
            start = (opened if corrected else max(opened, anchor_time)).replace(microsecond=0)  # as stored
            counted_from = start.isoformat(timespec="seconds")
            callback_due, rectify_due = self._deadlines(start)
            data = {
                "followup_id": fid,
                "opened_at": opened.isoformat(timespec="seconds"),
                "callback_due": callback_due.isoformat(timespec="seconds"),
                "rectify_due": rectify_due.isoformat(timespec="seconds"),
                "corrected": corrected,
            }

            def update(conn: sqlite3.Connection, env: dict, d: dict = data, start: str = counted_from) -> None:
                conn.execute(
                    "UPDATE followups SET opened_at = ?, callback_due = ?, rectify_due = ?, provisional = 0, counted_from = ?, callback_days = ?, rectify_days = ?"
                    " WHERE id = ?",
                    (d["opened_at"], d["callback_due"], d["rectify_due"], start, self.policy.callback_working_days, self.policy.rectify_working_days, d["followup_id"]),
                )

            events.append(EventSpec("followup.updated", data, TELEMETRY, update))
        if events:
            first = events[0]

            def update_first(conn: sqlite3.Connection, env: dict, inner=first.domain) -> None:
                inner(conn, env)
                conn.executemany("UPDATE ratings SET day = ? WHERE event_id = ?", [(day, eid) for eid, day in moved])

            events[0] = EventSpec(first.type, first.data, first.stream, update_first)
            self.sink.record_together(events)
        elif moved:
            self.store.write_many("UPDATE ratings SET day = ? WHERE event_id = ?", [(day, eid) for eid, day in moved])
        return len(events)

    def reschedule(self) -> int:
        """Count open follow-ups' deadlines again on the hall calendar as it now stands.

        The county's calendar for a year arrives (or changes, or a release brings a newer
        holiday library) after deadlines running into that year were counted on the weekday
        rule. Each open, settled follow-up with a deadline still ahead is counted again from
        where its deadlines were counted from, with the working days it was given; one whose
        deadlines moved is updated and published as ``followup.rescheduled``, each in its own
        transaction. Returns how many moved. Provisional ones are left to ``settle()``, which
        counts on the calendar of its day.

        What is never done, because a deadline is something people were told:
        - a deadline already passed stands (it may have been reported overdue);
        - a deadline never moves earlier to a moment already passed (a sudden overdue);
        - a count that runs through a year on the weekday rule changes nothing (a year the
          county left out of a later calendar is not knowledge);
        - nothing is counted while the clock is unsynchronised ("passed" by a wrong clock).
        A follow-up opened before its count was kept (schema 8) counts from ``opened_at`` with
        the configured days and only ever moves later: an unsynchronised one may have been
        counted from a later time that is no longer known.
        """
        if not self.clock.is_synced():
            return 0  # the first reschedule_if_stale() after the sync counts
        generation = self.calendar.generation
        # A press or settle() counting on the calendar before this one finishes writing first,
        # so the rows read below hold it. The lock is not kept: a 差评 press must not wait
        # for all the commits below; the compare-and-set in each update covers the rest.
        with self._count_lock:
            pass
        now = self.clock.now()
        moved = 0
        for row in self._settled_ahead(now):
            try:
                spec = self._counted_again(row, now)
            except Exception:  # noqa: BLE001 - one unreadable row must not hold up the others
                if row[0] not in self._unreadable:
                    self._unreadable.add(row[0])
                    log.exception("follow-up %s cannot be counted again; it keeps its deadlines", row[0])
                continue
            if spec is None:
                continue
            try:
                self.sink.record_together([spec])
                moved += 1
            except _Moved:
                pass
        self._counted_on = generation
        if moved:
            log.info("the hall calendar changed: %d open follow-up(s) rescheduled", moved)
        return moved

    def years_in_use(self, now: datetime) -> set[int]:
        """The years the open, settled follow-ups' deadlines still ahead are counted through.

        From where each was counted (``counted_from``) to its later deadline. Provisional ones
        are not in it: their start is a wrong clock's until ``settle()``. Nor is a row from
        before schema 8 whose ``opened_at`` is in a year no calendar knows (a wrong clock's, kept
        from an earlier boot): as in ``reschedule()``, nothing is counted from it.
        """
        years: set[int] = set()
        for _fid, opened_at, callback_due, rectify_due, counted_from, _cb, _rd in self._settled_ahead(now):
            try:
                first = datetime.fromisoformat(counted_from or opened_at).year
                last = max(datetime.fromisoformat(callback_due), datetime.fromisoformat(rectify_due)).year
            except (TypeError, ValueError):
                continue  # an unreadable row: reschedule() reports it
            if counted_from is None and self.calendar.source(first) == "weekday_rule":
                continue
            years.update(range(first, last + 1))
        return years

    def _settled_ahead(self, now: datetime) -> list[tuple]:
        """Open, settled follow-ups with a deadline after ``now``, oldest first: what a recount
        reads (id, opened_at, callback_due, rectify_due, counted_from, callback_days, rectify_days)."""
        stamp = now.isoformat(timespec="seconds")
        return self.store.rows(
            "SELECT id, opened_at, callback_due, rectify_due, counted_from, callback_days, rectify_days FROM followups"
            " WHERE state = 'open' AND provisional = 0 AND (callback_due > ? OR rectify_due > ?) ORDER BY opened_at",
            (stamp, stamp),
        )

    def reschedule_if_stale(self) -> int:
        """``reschedule()`` unless it already ran on this calendar (maintenance calls it)."""
        if self._counted_on == self.calendar.generation:
            return 0
        return self.reschedule()

    def _counted_again(self, row: tuple, now: datetime) -> EventSpec | None:
        fid, opened_at, callback_due, rectify_due, counted_from, callback_days, rectify_days = row
        legacy = counted_from is None or callback_days is None or rectify_days is None
        start = datetime.fromisoformat(opened_at if legacy else counted_from)
        if self.calendar.source(start.year) == "weekday_rule":
            return None  # a year nobody knows, e.g. a wrong clock's: nothing to count on
        days = (self.policy.callback_working_days, self.policy.rectify_working_days) if legacy else (callback_days, rectify_days)
        was = (datetime.fromisoformat(callback_due), datetime.fromisoformat(rectify_due))
        due = [self.calendar.add_working_days(start, n) for n in days]
        for i, old in enumerate(was):
            guessed = any(self.calendar.source(y) == "weekday_rule" for y in range(start.year, max(due[i], old).year + 1))
            if guessed or old <= now or (due[i] < old and (legacy or due[i] <= now)):
                due[i] = old
        if tuple(due) == was:
            return None
        data = {
            "followup_id": fid,
            "callback_due": due[0].isoformat(timespec="seconds"),
            "rectify_due": due[1].isoformat(timespec="seconds"),
            "previous_callback_due": callback_due,
            "previous_rectify_due": rectify_due,
        }

        def update(conn: sqlite3.Connection, env: dict, d: dict = data) -> None:
            # Only if nobody closed it or counted it again since it was read.
            changed = conn.execute(
                "UPDATE followups SET callback_due = ?, rectify_due = ? WHERE id = ? AND state = 'open' AND callback_due = ? AND rectify_due = ?",
                (d["callback_due"], d["rectify_due"], d["followup_id"], d["previous_callback_due"], d["previous_rectify_due"]),
            ).rowcount
            if not changed:
                raise _Moved

        return EventSpec("followup.rescheduled", data, TELEMETRY, update)

    def open_followups(self) -> list[dict]:
        """Open follow-ups, oldest first, for the page."""
        return open_followups(self.store)

    # -- figures ------------------------------------------------------------------------

    def figures(self, day: str | None = None) -> dict:
        """One day's figures (see ``day_figures``); today by the hall clock when not given."""
        return day_figures(self.store, self.windows, day or self.clock.now().date().isoformat())


def open_followups(store: Rows) -> list[dict]:
    """Open follow-ups, oldest first (the page reads them without the service)."""
    rows = store.rows(
        "SELECT id, window, level, staff_id, opened_at, callback_due, rectify_due, provisional, called_back_at FROM followups WHERE state = 'open' ORDER BY opened_at"
    )
    keys = ("followup_id", "window", "level", "staff_id", "opened_at", "callback_due", "rectify_due", "provisional", "called_back_at")
    return [dict(zip(keys, r)) | {"provisional": bool(r[7])} for r in rows]


def flagged_presses(store: Rows, day: str) -> list[dict]:
    """A day's presses flagged repeat, burst or unstaffed, in order."""
    rows = store.rows("SELECT seq, window, level, flags, at, staff_id FROM ratings WHERE day = ? AND flags != '[]' ORDER BY seq", (day,))
    return [{"seq": seq, "window": w, "level": lv, "flags": json.loads(f), "at": at, "staff_id": staff} for seq, w, lv, f, at, staff in rows]


def day_figures(store: Rows, windows: dict[str, str], day: str) -> dict:
    """One day's counts per window and level, flagged presses, and the satisfaction rate.

    The rate is the share of counted ratings at 非常满意, 满意 or 基本满意; presses flagged
    ``repeat`` or ``burst`` are shown but not counted. ``windows`` maps id → name, in the
    order to show; a window no longer configured still appears if it was rated that day.
    """
    rows = store.rows("SELECT window, level, flags FROM ratings WHERE day = ?", (day,))

    def empty(wid: str, name: str) -> dict:
        return {"window": wid, "name": name, "levels": {lv.code: 0 for lv in LEVELS}, "counted": 0, "flagged": 0, "satisfied": 0}

    per_window = {wid: empty(wid, name) for wid, name in windows.items()}
    for window, level, flags in rows:
        w = per_window.setdefault(window, empty(window, window))
        if set(json.loads(flags)) & {REPEAT, BURST}:
            w["flagged"] += 1
            continue
        w["levels"][level] += 1
        w["counted"] += 1
        if BY_CODE[level].score in SATISFIED_SCORES:
            w["satisfied"] += 1
    total = {key: sum(w[key] for w in per_window.values()) for key in ("counted", "satisfied", "flagged")}
    for w in list(per_window.values()) + [total]:
        w["rate"] = round(w["satisfied"] / w["counted"], 4) if w["counted"] else None
    return {"day": day, "windows": list(per_window.values()), "total": total}

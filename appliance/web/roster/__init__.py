"""The duty roster (值班与考勤): today's duty, the week, staff and cards, leave (请假, 销假), the attendance record.

For the hall director and county IT. The registry, the shifts and the duty roster are the
county's (desired state) and shown read-only; what the hall does here — leave, 销假, an
unknown card given to a person — goes through ``services.roster`` (see ``record.py``), each an
event for the county and a row in the audit log, committed together.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_wtf import FlaskForm
from wtforms import SelectField, StringField
from wtforms.validators import InputRequired, Length, ValidationError

from services.roster import ALARM_INVALID, ALARM_REFERENCES, CARD, LEAVE_KINDS, Roster, RosterRejected

from ...accounts import COUNTY_IT, DIRECTOR
from ..error_pages import error_page
from ..guards import roles_required
from ..hall import hall
from ..labels import ATTENDANCE_NAMES, CARD_REASONS, DAY_KINDS, LEAVE_KIND_NAMES, ROSTER_REFUSALS
from .record import RECORD_LIMIT, VERDICTS, attendance_record, in_force, page_roster

bp = Blueprint("roster", __name__, url_prefix="/roster", template_folder="templates")

# The hall director records leave and 销假; county IT may do everything the director can.
ROSTER_ROLES = (DIRECTOR, COUNTY_IT)
NOTE_MAX = 200  # as the roster allows
RANGE_MAX_DAYS = 92
DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
CLOCK_TIME = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])(:[0-5][0-9])?\Z")
LEAVE_ID = re.compile(r"^[0-9a-f-]{36}\Z")


def _strip(value):
    return value.strip() if isinstance(value, str) else value


def _day(raw: str | None) -> date | None:
    """A day typed or linked as YYYY-MM-DD, in the years the roster works with (2000 to 2100)."""
    try:
        day = date.fromisoformat(raw) if raw and DAY.match(raw) else None
    except ValueError:
        return None
    # A mistyped year (9999, 0001) would otherwise overflow the date arithmetic of a week or a leave.
    return day if day is not None and 2000 <= day.year <= 2100 else None


def _people(roster: Roster, *, active_only: bool = True) -> list[tuple[str, str]]:
    members = [m for m in roster.staff.values() if m.active or not active_only]
    return [(m.id, f"{m.name} ({m.id})") for m in members]


class PersonForm(FlaskForm):
    """A form naming someone in the county's staff registry."""

    staff_id = SelectField(_l("Person"), filters=[_strip], validate_choice=False, validators=[InputRequired(_l("Choose a person."))])

    def __init__(self, roster: Roster, **kwargs) -> None:
        super().__init__(**kwargs)
        self.roster = roster
        self.staff_id.choices = [("", _("— choose —"))] + _people(roster)

    def validate_staff_id(self, field) -> None:
        member = self.roster.staff.get(field.data)
        if member is None:
            raise ValidationError(_("%(value)s is not in the staff registry; choose a person from the list.", value=field.data[:64]))
        if not member.active:
            raise ValidationError(_("%(name)s is inactive in the staff registry.", name=member.name))


class LeaveForm(PersonForm):
    """请假: who, what kind, from and to (a day alone means the whole day), a note."""

    kind = SelectField(_l("Kind of leave"), validate_choice=False, validators=[InputRequired(_l("Choose the kind of leave."))])
    start_day = StringField(_l("First day"), filters=[_strip], validators=[InputRequired(_l("Enter the first day of the leave."))])
    start_time = StringField(_l("From (time, optional)"), filters=[_strip])
    end_day = StringField(_l("Last day"), filters=[_strip], validators=[InputRequired(_l("Enter the last day of the leave."))])
    end_time = StringField(_l("Until (time, optional)"), filters=[_strip])
    note = StringField(_l("Note (optional)"), filters=[_strip], validators=[Length(max=NOTE_MAX, message=_l("Use at most %(max)d characters."))])

    def __init__(self, roster: Roster, **kwargs) -> None:
        super().__init__(roster, **kwargs)
        self.kind.choices = [("", _("— choose —"))] + [(k, f"{LEAVE_KIND_NAMES[k]} ({v})") for k, v in LEAVE_KINDS.items()]
        self.start: datetime | None = None
        self.end: datetime | None = None

    def validate_kind(self, field) -> None:
        if field.data not in LEAVE_KINDS:
            raise ValidationError(_("Choose one of the kinds of leave offered."))

    @staticmethod
    def _date(field) -> date:
        parsed = _day(field.data)
        if parsed is None:
            raise ValidationError(_("%(value)s is not a day: write it as YYYY-MM-DD, e.g. %(example)s.", value=field.data[:40], example=hall().clock.now().date().isoformat()))
        return parsed

    @staticmethod
    def _time(field) -> time | None:
        if not field.data:
            return None
        m = CLOCK_TIME.match(field.data)
        if not m:
            raise ValidationError(_("%(value)s is not a time: write it as HH:MM, e.g. 14:30, or leave it empty for the whole day.", value=field.data[:40]))
        return time(int(m[1]), int(m[2]))

    def validate_start_day(self, field) -> None:
        self._date(field)

    def validate_end_day(self, field) -> None:
        self._date(field)

    def validate_start_time(self, field) -> None:
        self._time(field)

    def validate_end_time(self, field) -> None:
        self._time(field)

    def validate(self, extra_validators=None) -> bool:
        if not super().validate(extra_validators):
            return False
        tz = self.roster.tz
        start_t, end_t = self._time(self.start_time), self._time(self.end_time)
        self.start = datetime.combine(self._date(self.start_day), start_t or time(0), tzinfo=tz)
        # A last day without a time is taken whole: the leave ends at midnight after it.
        end_day = self._date(self.end_day)
        self.end = datetime.combine(end_day, end_t, tzinfo=tz) if end_t else datetime.combine(end_day + timedelta(days=1), time(0), tzinfo=tz)
        if self.end <= self.start:
            self.end_day.errors.append(_("The leave must end after it starts (%(start)s).", start=self.start.isoformat(sep=" ", timespec="minutes")[:16]))
            return False
        return True


class CardForm(PersonForm):
    """An unknown card, just swiped, given to a person (on this device until the county's registry has it)."""

    card = StringField(
        _l("Card number"),
        filters=[_strip],
        validators=[InputRequired(_l("Enter the card number, or choose one of the cards just swiped.")), Length(max=64, message=_l("Use at most %(max)d characters."))],
    )

    def validate_card(self, field) -> None:
        if not field.errors and not CARD.match(field.data):
            raise ValidationError(_("%(value)s is not a card number: 4 to 64 digits (0-9, or A-F for a hex reader), as the reader types them.", value=field.data))


class AttendanceFilter(FlaskForm):
    """The attendance record's filters (a GET form: nothing changes, so no CSRF token)."""

    class Meta:
        csrf = False

    first_day = StringField(_l("From"), filters=[_strip])
    last_day = StringField(_l("To"), filters=[_strip])
    staff_id = SelectField(_l("Person"), validate_choice=False)
    verdict = SelectField(_l("Verdict"), validate_choice=False)

    def __init__(self, roster: Roster, today: date, **kwargs) -> None:
        super().__init__(**kwargs)
        self.roster = roster
        self.today = today
        self.staff_id.choices = [("", _("everyone"))] + _people(roster, active_only=False)
        self.verdict.choices = [("", _("all"))] + [(v, str(ATTENDANCE_NAMES[v])) for v in VERDICTS]
        self.first: date = today - timedelta(days=6)
        self.last: date = today

    def _day_of(self, field, default: date) -> date:
        if not field.data:
            return default
        parsed = _day(field.data)
        if parsed is None:
            raise ValidationError(_("%(value)s is not a day: write it as YYYY-MM-DD, e.g. %(example)s.", value=field.data[:40], example=self.today.isoformat()))
        return parsed

    def validate_first_day(self, field) -> None:
        self.first = self._day_of(field, self.today - timedelta(days=6))

    def validate_last_day(self, field) -> None:
        self.last = self._day_of(field, self.today)

    def validate_staff_id(self, field) -> None:
        if field.data and field.data not in self.roster.staff:
            raise ValidationError(_("%(value)s is not in the staff registry; choose a person from the list.", value=field.data[:64]))

    def validate_verdict(self, field) -> None:
        if field.data and field.data not in VERDICTS:
            raise ValidationError(_("Choose one of the verdicts offered."))

    def validate(self, extra_validators=None) -> bool:
        if not super().validate(extra_validators):
            return False
        if self.first > self.last:
            self.first_day.errors.append(_("The first day must not be after the last day."))
            return False
        if (self.last - self.first).days >= RANGE_MAX_DAYS:
            self.first_day.errors.append(_("Show at most %(days)d days at once.", days=RANGE_MAX_DAYS))
            return False
        return True


def _refusal(exc: RosterRejected) -> str:
    """The roster's refusal in the reader's language ('Not saved: …'); its own words otherwise."""
    template = ROSTER_REFUSALS.get(exc.code or "")
    if template is None:
        return _("Not saved: %(reason)s", reason=exc.reason)
    # Times as people write them: 2026-11-26 09:00, not 2026-11-26T09:00:00+08:00.
    params = {k: v[:16].replace("T", " ") if k in ("start", "end", "at") else v for k, v in exc.params.items()}
    return _("Not saved: %(reason)s", reason=str(template) % params)


def _rejected(form: FlaskForm, exc: RosterRejected, fields: dict[str, str]) -> None:
    """The roster's refusal, beside the field it names (or above the form)."""
    message = _refusal(exc)
    target = getattr(form, fields.get(exc.field, ""), None)
    if target is not None:
        target.errors = [*target.errors, message]
    else:
        form.form_errors.append(message)


def _hhmm(iso: str) -> str:
    return iso[11:16]


def period(start: str, end: str) -> str:
    """A leave's span as people say it: whole days as days ('2026-11-25 – 2026-11-26'), else to the minute."""
    t0, t1 = datetime.fromisoformat(start), datetime.fromisoformat(end)
    if t0.time() == time(0) and t1.time() == time(0):
        last = (t1 - timedelta(days=1)).date()
        return t0.date().isoformat() if last <= t0.date() else f"{t0.date().isoformat()} – {last.isoformat()}"
    return f"{start[:16].replace('T', ' ')} – {end[:16].replace('T', ' ')}"


def _roster_alarms() -> list:
    return [a for a in hall().store.active_alarms() if a.code in (ALARM_REFERENCES, ALARM_INVALID)]


@bp.context_processor
def _names() -> dict:
    return {"attendance_names": ATTENDANCE_NAMES, "day_kinds": DAY_KINDS, "leave_kind_names": LEAVE_KIND_NAMES, "card_reasons": CARD_REASONS, "hhmm": _hhmm, "period": period}


def _render(template: str, status: int = 200, **context):
    return render_template(template, **context), status


# -- today's duty ----------------------------------------------------------------------------


def _shift_state(entry: dict | None, now: datetime, roster: Roster) -> str | None:
    """What the page says about one of today's shifts: the summary's status, or 'not yet'."""
    if entry is None:
        return None
    status = entry["status"]
    if status == "no_record":
        start = datetime.fromisoformat(entry["start"])
        if now < start:
            return "upcoming"
        if now < start + timedelta(minutes=roster.rules.absent_after_min):
            return "waiting"
    return status


@bp.get("")
@roles_required(*ROSTER_ROLES)
def today():
    h = hall()
    roster = page_roster(h)
    now = h.clock.now()
    duty = roster.on_duty_today(now)
    summary = roster.summary(now.date(), now)
    by_shift = {(s["staff_id"], s["window"], s["start"]): s for s in summary["shifts"]}
    present = roster.present()
    held = {p["staff_id"] for p in present if p["verdict"] == "pending"}
    for w in duty["windows"]:
        for person in w["scheduled"]:
            entry = by_shift.get((person["staff_id"], w["window"], person["start"]))
            person["state"] = _shift_state(entry, now, roster)
            if person["state"] == "unverified" and person["staff_id"] in held:
                person["state"] = "pending"  # this boot's check-in: judged once the clock is synchronised
            person["minutes_late"] = entry["minutes_late"] if entry else None
    day_start = datetime.combine(now.date(), time(0), tzinfo=roster.tz).isoformat(timespec="seconds")
    day_end = datetime.combine(now.date() + timedelta(days=1), time(0), tzinfo=roster.tz).isoformat(timespec="seconds")
    on_leave = [lv for lv in roster.leaves(current_only=True) if lv["start"] < day_end and (lv["ended_at"] or lv["end"]) > day_start and lv["ended_at"] != lv["start"]]
    for lv in on_leave:
        lv["name"] = roster.staff[lv["staff_id"]].name if lv["staff_id"] in roster.staff else lv["staff_id"]
    windows = {w.id: w.name for w in h.config.windows}
    return _render(
        "roster/today.html",
        duty=duty,
        present=present,
        on_leave=sorted(on_leave, key=lambda lv: lv["start"]),
        unknown=len(roster.unknown_cards()),
        known=roster.known,
        alarms=_roster_alarms(),
        windows=windows,
        synced=h.clock.is_synced(),
    )


# -- the week ----------------------------------------------------------------------------------


@bp.get("/week")
@roles_required(*ROSTER_ROLES)
def week():
    h = hall()
    roster = page_roster(h)
    today = h.clock.now().date()
    raw = request.args.get("start", "")
    start = _day(raw) if raw else today - timedelta(days=today.weekday())
    if start is None:
        return error_page(400, _("start = %(value)s: not a day. Fix: write it as YYYY-MM-DD, e.g. %(example)s", value=raw[:40], example=today.isoformat()))
    windows = {w.id: w.name for w in h.config.windows}

    def name(sid: str | None) -> str | None:
        if sid is None:
            return None
        member = roster.staff.get(sid)
        return member.name if member else sid

    days = []
    for i in range(7):
        d = start + timedelta(days=i)
        shifts = [
            {
                "window": s.window,
                "window_name": windows.get(s.window, s.window),
                "staff_id": s.staff_id,
                "name": name(s.staff_id),
                "start": s.start.strftime("%H:%M"),
                "end": s.end.strftime("%H:%M"),
                "overnight": s.end.date() > s.day,
                "on_leave": roster.leave_at(s.staff_id, s.start) is not None,
            }
            for s in roster.shifts_on(d)
        ]
        leader = roster.leader_on(d)
        days.append({
            "day": d,
            "kind": roster.day_kind(d),
            "leader": name(leader),
            "leader_on_leave": leader is not None and roster.leave_at(leader, datetime.combine(d, time(12), tzinfo=roster.tz)) is not None,
            "shifts": shifts,
            "county_duty": d in roster.duty,
            "today": d == today,
        })
    return _render(
        "roster/week.html",
        days=days,
        start=start,
        previous=start - timedelta(days=7),
        next=start + timedelta(days=7),
        sources={name: in_force(h, name) for name in ("shifts", "duty")},
        known=roster.known,
        alarms=_roster_alarms(),
    )


# -- staff and cards ---------------------------------------------------------------------------


def _staff_page(roster: Roster, form: CardForm, status: int = 200):
    h = hall()
    windows = {w.id: w.name for w in h.config.windows}
    local = [
        {"card": card, "staff_id": sid, "name": roster.staff[sid].name if sid in roster.staff else sid, "recorded_by": by, "recorded_at": at}
        for card, sid, by, at in h.store.rows("SELECT card, staff_id, recorded_by, recorded_at FROM local_cards ORDER BY recorded_at DESC")
    ]
    return _render(
        "roster/staff.html",
        status,
        staff=list(roster.staff.values()),
        windows=windows,
        source=in_force(h, "staff"),
        unknown=roster.unknown_cards(),
        local=local,
        form=form,
        alarms=_roster_alarms(),
    )


@bp.get("/staff")
@roles_required(*ROSTER_ROLES)
def staff():
    roster = page_roster(hall())
    form = CardForm(roster, formdata=None)
    # "Register" beside an unknown card fills the form in with it.
    form.card.data = request.args.get("card", "")[:64]
    return _staff_page(roster, form)


@bp.post("/cards")
@roles_required(*ROSTER_ROLES)
def register_card():
    roster = page_roster(hall(), g.user.username)
    form = CardForm(roster)
    if not form.validate_on_submit():
        return _staff_page(roster, form, 422)
    try:
        data = roster.register_card(form.card.data, form.staff_id.data, g.user.username)
    except RosterRejected as exc:
        _rejected(form, exc, {"card": "card", "staff_id": "staff_id"})
        return _staff_page(roster, form, 422)
    flash(_("Card %(card)s now checks in %(name)s. The county is told, so it can add the card to the staff registry.", card=data["card"], name=data["name"]), "info")
    return redirect(url_for("roster.staff"), 303)


# -- leave (请假, 销假) -------------------------------------------------------------------------


def _leave_page(roster: Roster, form: LeaveForm, status: int = 200, end_errors: dict | None = None):
    h = hall()
    now = h.clock.now().isoformat(timespec="seconds")
    leaves = sorted(roster.leaves(current_only=True), key=lambda lv: lv["start"])
    for lv in leaves:
        member = roster.staff.get(lv["staff_id"])
        lv["name"] = member.name if member else lv["staff_id"]
        lv["withdrawn"] = lv["ended_at"] is not None and lv["ended_at"] == lv["start"]
        lv["running"] = lv["start"] <= now
    end_errors = end_errors or {}
    # A leave already ended or over has left the list: its refusal is shown above it.
    elsewhere = [message for leave_id, message in end_errors.items() if leave_id not in {lv["leave_id"] for lv in leaves}]
    return _render("roster/leave.html", status, form=form, leaves=leaves, end_errors=end_errors, elsewhere=elsewhere, alarms=_roster_alarms())


@bp.get("/leave")
@roles_required(*ROSTER_ROLES)
def leave():
    roster = page_roster(hall())
    form = LeaveForm(roster, formdata=None)
    form.staff_id.data = request.args.get("staff_id", "")[:64]
    return _leave_page(roster, form)


@bp.post("/leave")
@roles_required(*ROSTER_ROLES)
def record_leave():
    roster = page_roster(hall(), g.user.username)
    form = LeaveForm(roster)
    if not form.validate_on_submit():
        return _leave_page(roster, form, 422)
    try:
        data = roster.record_leave(form.staff_id.data, form.start, form.end, form.kind.data, g.user.username, form.note.data or "")
    except RosterRejected as exc:
        _rejected(form, exc, {"staff_id": "staff_id", "kind": "kind", "note": "note", "start": "start_day", "end": "end_day"})
        return _leave_page(roster, form, 422)
    message = _("Leave recorded: %(name)s, %(kind)s, %(period)s.", name=data["name"], kind=LEAVE_KIND_NAMES[data["kind"]], period=period(data["start"], data["end"]))
    if data["cancels"]:
        count = len(data["cancels"])
        message += " " + ngettext("It cancels %(num)d absence already reported.", "It cancels %(num)d absences already reported.", count)
    flash(message, "info")
    return redirect(url_for("roster.leave"), 303)


@bp.post("/leave/<leave_id>/end")
@roles_required(*ROSTER_ROLES)
def end_leave(leave_id: str):
    if not LEAVE_ID.match(leave_id):
        abort(404)
    if not FlaskForm().validate_on_submit():
        abort(400)
    roster = page_roster(hall(), g.user.username)
    try:
        data = roster.end_leave(leave_id, g.user.username)
    except RosterRejected as exc:
        if exc.field == "leave_id" and not hall().store.rows("SELECT 1 FROM leaves WHERE id = ?", (leave_id,)):
            abort(404)
        message = _refusal(exc)
        return _leave_page(roster, LeaveForm(roster, formdata=None), 422, end_errors={leave_id: message})
    if data["withdrawn"]:
        flash(_("The leave of %(name)s is withdrawn: it had not begun.", name=data["name"]), "info")
    else:
        flash(_("%(name)s is back (销假) from %(time)s; later shifts are judged again.", name=data["name"], time=data["ended_at"][:16].replace("T", " ")), "info")
    return redirect(url_for("roster.leave"), 303)


# -- the attendance record -----------------------------------------------------------------------


@bp.get("/attendance")
@roles_required(*ROSTER_ROLES)
def attendance():
    h = hall()
    roster = page_roster(h)
    form = AttendanceFilter(roster, h.clock.now().date(), formdata=request.args)
    if not form.validate():
        return _render("roster/attendance.html", 400, form=form, entries=[], total=0, limit=RECORD_LIMIT)
    entries, total = attendance_record(h, roster, form.first, form.last, form.staff_id.data or "", form.verdict.data or "")
    form.first_day.data, form.last_day.data = form.first.isoformat(), form.last.isoformat()
    return _render("roster/attendance.html", form=form, entries=entries, total=total, limit=RECORD_LIMIT)

"""The LED board (电子显示屏): the hall's own items, the county's beside them, a preview, the live frame.

For the hall director and county IT. The hall's items are added, changed and ended here (see
``items.py`` for how a change is stored, recorded and audited); the county's come as desired
state and are shown read-only. Each item is checked by ``services.board.validate_item`` — the
same check the daemon makes — and every problem is shown beside its field, worded here from
the service's fault codes. A preview draws the text with the board's own font and renderer,
without saving. The live frame is the daemon's (``frame`` on the control socket): the emulator
and a real MAX7219 chain both keep the last frame they showed.
"""

from __future__ import annotations

import base64
import re
from datetime import date, datetime, time, timedelta

from flask import Blueprint, Response, abort, current_app, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import HiddenField, SelectField, StringField, TextAreaField
from wtforms.validators import InputRequired, ValidationError

from services.board import DEFAULT_PRIORITY, HALL_TZ, ID_PATTERN, KINDS, MAX_TEXT, PRIORITIES, BoardRejected, FontMissing, normalise_text, text_faults, validate_item
from services.calendar import HOURS

from ...accounts import COUNTY_IT, DIRECTOR
from ...errors import ControlError
from ..error_pages import error_page
from ..guards import roles_required
from ..hall import hall
from ..labels import BOARD_KINDS, BOARD_STATES, SETTING_SOURCES
from . import items as store_items
from .items import AlreadyEnded, BoardPictures, CountyItem, ItemChanged, ItemNotFound, ItemsFull, Saved

bp = Blueprint("board", __name__, url_prefix="/board", template_folder="templates")

BOARD_ROLES = (DIRECTOR, COUNTY_IT)
# What a date-and-time field takes: a browser's datetime-local value, or a day alone.
WHEN = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?)?\Z")
SPAN_SEPARATORS = re.compile(r"[\s,，;；、]+")
PREVIEW_SCALE = 4  # screen pixels per LED, as the emulator's frame


def _strip(value):
    return value.strip() if isinstance(value, str) else value


def shown_chars(chars) -> str:
    """Characters as a person can read them back: themselves, or U+XXXX when invisible."""
    return " ".join(c if c.isprintable() else f"U+{ord(c):04X}" for c in chars)


def _parse_when(raw: str, *, end: bool) -> datetime | None:
    """A field's date and time in hall time; a day alone is its start, or for an end the end of it."""
    m = WHEN.match(raw)
    if not m:
        return None
    try:
        day = date(int(m[1]), int(m[2]), int(m[3]))
        at = time(int(m[4]), int(m[5]), int(m[6] or 0)) if m[4] else time(0)
    except ValueError:
        return None
    if not 2000 <= day.year <= 2100 or (end and not m[4] and day == date(2100, 12, 31)):
        return None  # the service takes years 2000 to 2100: the end of 2100-12-31 is in 2101
    when = datetime.combine(day, at, tzinfo=HALL_TZ)
    return when + timedelta(days=1) if end and not m[4] else when


def _field_value(iso: str | None) -> str:
    """A stored time as a datetime-local field shows it (hall time, to the minute unless it has seconds)."""
    if not iso:
        return ""
    when = datetime.fromisoformat(iso).astimezone(HALL_TZ)
    return when.strftime("%Y-%m-%dT%H:%M:%S" if when.second else "%Y-%m-%dT%H:%M")


def text_messages(text: str, font) -> list[str]:
    """What keeps ``text`` off the board, in the reader's language (empty when it can be shown)."""
    messages = []
    for fault in text_faults(text, font):
        if fault.code == "empty":
            messages.append(_("Enter the text to show."))
        elif fault.code == "too_long":
            messages.append(_("The text has %(count)d characters; the board takes at most %(max)d (that already scrolls for about four minutes). Shorten it or split it into several items.", count=fault.length, max=MAX_TEXT))
        elif fault.code == "invisible":
            messages.append(_("Remove the control or invisible characters: %(chars)s", chars=shown_chars(fault.chars)))
        elif fault.code == "marks":
            messages.append(_("The board draws combining marks as separate boxes: %(chars)s. Use precomposed letters.", chars=" ".join(f"U+{ord(c):04X}" for c in fault.chars)))
        elif fault.code == "mongolian":
            messages.append(_("The board cannot show traditional Mongolian script (it would draw the letters unjoined, left to right): put the Mongolian text on the printed notice."))
        else:
            messages.append(_("These characters are not in the board's font: %(chars)s", chars=shown_chars(fault.chars)))
    return messages


class ItemForm(FlaskForm):
    """A hall item: kind, text, from and until, priority, daily schedule. The id is made when it is first saved."""

    kind = SelectField(_l("Kind of item"), validate_choice=False, validators=[InputRequired(_l("Choose what kind of item it is."))])
    text = TextAreaField(_l("Text to show"), description=_l("One line on the board; line breaks become spaces. At most %(max)d characters.", max=MAX_TEXT))
    start = StringField(_l("From (optional)"), filters=[_strip], description=_l("Empty: from now."))
    end = StringField(_l("Until (optional)"), filters=[_strip], description=_l("Empty: until it is ended. Required for an urgent item."))
    priority = SelectField(_l("Priority"), validate_choice=False, default=str(DEFAULT_PRIORITY))
    schedule = StringField(_l("Daily schedule (optional)"), filters=[_strip], description=_l("Times of day it may show, e.g. 08:00-12:00, 14:30-17:00. Empty: all day."))
    version = HiddenField()

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.kind.choices = [("", _("— choose —"))] + [(k, str(BOARD_KINDS[k])) for k in KINDS]
        self.priority.choices = [(str(p), _("%(n)d (lowest)", n=p) if p == PRIORITIES.start else _("%(n)d (highest)", n=p) if p == PRIORITIES.stop - 1 else str(p)) for p in PRIORITIES]
        self.starts: datetime | None = None
        self.ends: datetime | None = None
        self.spans: list[str] = []
        self.stored_end: str | None = None  # an edit: the item's end as stored

    def validate_kind(self, field) -> None:
        if field.data not in KINDS:
            raise ValidationError(_("Choose one of the kinds offered."))

    def validate_text(self, field) -> None:
        field.data = normalise_text(field.data or "")
        messages = text_messages(field.data, _pictures().font)
        if messages:
            field.errors = [*field.errors, *messages[:-1]]
            raise ValidationError(messages[-1])

    def _when(self, field, *, end: bool) -> datetime | None:
        if not field.data:
            return None
        when = _parse_when(field.data, end=end)
        if when is None:
            example = hall().clock.now().astimezone(HALL_TZ).strftime("%Y-%m-%d %H:%M")
            raise ValidationError(_("%(value)s is not a date and time: write it as YYYY-MM-DD HH:MM, e.g. %(example)s, or leave it empty.", value=field.data[:40], example=example))
        return when

    def validate_start(self, field) -> None:
        self.starts = self._when(field, end=False)

    def validate_end(self, field) -> None:
        self.ends = self._when(field, end=True)

    def validate_priority(self, field) -> None:
        if not re.fullmatch(r"[0-9]{1,2}", field.data or "") or int(field.data) not in PRIORITIES:
            raise ValidationError(_("Choose a priority from 1 (lowest) to 9 (highest)."))

    def validate_schedule(self, field) -> None:
        spans = [s for s in SPAN_SEPARATORS.split(field.data or "") if s]
        parsed = []
        for span in spans:
            m = HOURS.fullmatch(span)
            if not m:
                raise ValidationError(_("%(span)s is not a span of the day: write it as HH:MM-HH:MM, e.g. 08:00-12:00; separate several with commas.", span=span[:40]))
            if (m[3], m[4]) <= (m[1], m[2]):
                raise ValidationError(_("%(span)s ends before it starts.", span=span))
            parsed.append(((m[1], m[2]), (m[3], m[4]), span))
        parsed.sort()
        for (s1, e1, first), (s2, _e2, second) in zip(parsed, parsed[1:]):
            if s2 < e1:
                raise ValidationError(_("%(first)s and %(second)s overlap.", first=first, second=second))
        self.spans = spans

    def validate(self, extra_validators=None) -> bool:
        ok = super().validate(extra_validators)
        if not self.end.errors and not self.start.errors:
            if self.starts is not None and self.ends is not None and self.ends <= self.starts:
                self.end.errors.append(_("The item must end after it starts (%(start)s).", start=self.starts.strftime("%Y-%m-%d %H:%M")))
                ok = False
            elif self.ends is not None and self.ends <= hall().clock.now() and not (self.stored_end and datetime.fromisoformat(self.stored_end) == self.ends):
                self.end.errors.append(_("This end (%(end)s) has already passed, so the item would never be shown. To take an item off the board, use “End” in the list.", end=self.ends.strftime("%Y-%m-%d %H:%M")))
                ok = False
        if not self.end.errors and not self.kind.errors and self.kind.data == "urgent" and self.ends is None:
            self.end.errors.append(_("An urgent item takes over the board until it ends: give its end."))
            ok = False
        return ok

    def fields(self) -> dict:
        """The item as ``validate_item`` takes it (without id and version)."""
        raw: dict = {"kind": self.kind.data, "text": self.text.data, "priority": int(self.priority.data)}
        if self.starts is not None:
            raw["start"] = self.starts.isoformat()
        if self.ends is not None:
            raw["end"] = self.ends.isoformat()
        if self.spans:
            raw["schedule"] = self.spans
        return raw

    def fill(self, item: dict) -> None:
        """Show a stored item in the form."""
        self.kind.data = item["kind"]
        self.text.data = item["text"]
        self.start.data = _field_value(item.get("start"))
        self.end.data = _field_value(item.get("end"))
        self.priority.data = str(item.get("priority", DEFAULT_PRIORITY))
        self.schedule.data = ", ".join(item.get("schedule", []))
        self.version.data = str(item.get("version", 1))

    def rejected(self, exc: BoardRejected) -> None:
        """What ``validate_item`` still refused (the form checks first, so rarely anything), beside its field."""
        for path, reason in exc.problems:
            target = getattr(self, path.rsplit(".", 1)[-1].split("[")[0], None)
            message = _("Not accepted: %(reason)s", reason=reason)
            if isinstance(target, (SelectField, StringField, TextAreaField)) and target is not self.version:
                target.errors = [*target.errors, message]
            else:
                self.form_errors.append(message if path in ("items", "item") else f"{path}: {message}")


def _pictures() -> BoardPictures:
    return store_items.pictures(current_app, hall().config)


@bp.errorhandler(FontMissing)
def _font_missing(exc: FontMissing):
    return error_page(503, _("The board's font cannot be read, so board content cannot be checked: %(reason)s", reason=str(exc)))


@bp.context_processor
def _names() -> dict:
    return {"board_kinds": BOARD_KINDS, "board_states": BOARD_STATES, "scope_names": SETTING_SOURCES, "show_time": _show_time, "show_spans": _show_spans}


def _show_spans(item) -> str:
    return ", ".join(f"{s:%H:%M}–{e:%H:%M}" for s, e in item.schedule)


def _show_time(value: datetime | None) -> str:
    return value.astimezone(HALL_TZ).strftime("%Y-%m-%d %H:%M") if value else ""


# -- the live frame -----------------------------------------------------------------------------


def live_frame() -> tuple[bytes | None, dict | None, str]:
    """The board's live frame (a PNG with LED dots) and what it shows, or why it cannot be had."""
    try:
        answer = hall().daemon("frame")
    except ControlError as exc:
        return None, None, str(exc)
    return base64.b64decode(answer["png"]), answer.get("status"), ""


def frame_response():
    png, _status, reason = live_frame()
    if png is None:
        return error_page(503, _("The board's frame is not available: %(reason)s", reason=reason))
    return Response(png, mimetype="image/png", headers={"Cache-Control": "no-store"})


@bp.get("/frame.png")
@roles_required(*BOARD_ROLES)
def frame():
    """The live frame, refreshed by the page's script; the same picture as the simulator's panel."""
    return frame_response()


# -- the list -----------------------------------------------------------------------------------


def _list_page(status: int = 200, end_errors: dict | None = None):
    h = hall()
    font = _pictures().font
    now = h.clock.now()
    version, hall_listed, refused = store_items.hall_items(h.store, font, now)
    county, unreadable = store_items.county_items(h.store, font, now)
    order = {"in_force": 0, "off_schedule": 1, "upcoming": 2, "ended": 3}
    hall_listed.sort(key=lambda x: (order[x.state], -x.item.priority, x.item.id))
    county.sort(key=lambda x: (order[x.state], -x.item.priority, x.item.id))
    _png, board_status, frame_note = live_frame()
    return (
        render_template(
            "board/index.html",
            hall_items=hall_listed,
            hall_version=version,
            refused=[(bad, " ".join(text_messages(bad.text, font)) or str(bad.problem)) for bad in refused],
            county_items=county,
            unreadable=unreadable,
            board_status=board_status,
            frame_note=frame_note,
            display_enabled=h.config.display.enabled,
            end_errors=end_errors or {},
            ended_kept_days=store_items.ENDED_KEPT_DAYS,
        ),
        status,
    )


@bp.get("")
@roles_required(*BOARD_ROLES)
def index():
    return _list_page()


# -- adding and changing an item ------------------------------------------------------------------


def _item_page(form: ItemForm, item_id: str | None, status: int = 200, preview=None, previewed: bool = False):
    h = hall()
    return (
        render_template(
            "board/item.html",
            form=form,
            item_id=item_id,
            preview=preview,
            previewed=previewed,
            preview_src=None if preview is None else "data:image/png;base64," + base64.b64encode(preview.png).decode(),
            scale=PREVIEW_SCALE,
            display_enabled=h.config.display.enabled,
        ),
        status,
    )


def _checked_item(form: ItemForm, item_id: str | None) -> dict | None:
    """The form's item as the daemon would accept it, or None with every problem beside its field."""
    if not form.validate_on_submit():
        return None
    try:
        return validate_item({"id": item_id or "new", **form.fields(), "version": 1}, _pictures().font, source="hall").to_dict()
    except BoardRejected as exc:
        form.rejected(exc)
        return None


def _submitted(form: ItemForm, item_id: str | None, save):
    action = request.form.get("action", "save")
    if action not in ("preview", "save"):
        abort(400)
    item = _checked_item(form, item_id)
    if item is None:
        return _item_page(form, item_id, 422)
    form.text.data = item["text"]  # as the board will show it: normalised
    if action == "preview":
        return _item_page(form, item_id, preview=_pictures().preview(item["text"]), previewed=True)
    try:
        saved = save(form)
    except ItemChanged as exc:
        form.form_errors.append(_("Someone changed this item while you were editing it (it is now version %(version)d), so your change was not saved. Open it again to see theirs.", version=exc.version))
        return _item_page(form, item_id, 409)
    except ItemsFull as exc:
        form.form_errors.append(_full_refusal(exc))
        return _item_page(form, item_id, 422)
    except BoardRejected as exc:
        form.form_errors.append(_("Not saved: %(reason)s", reason=exc.reason))
        return _item_page(form, item_id, 422)
    _saved_message(saved)
    return redirect(url_for("board.index", _anchor=f"item-{saved.item_id}"), 303)


def _full_refusal(exc: ItemsFull) -> str:
    return _("Not saved: the hall already has %(max)d items that have not ended, the most the board rotates through (a rotation that long takes hours). End or withdraw some in the list first.", max=exc.limit)


def _saved_message(saved: Saved) -> None:
    messages = {
        "added": _("Saved: %(id)s is added to the hall's items (version %(version)d).", id=saved.item_id, version=saved.version),
        "changed": _("Saved: %(id)s is changed (the hall's items are now version %(version)d).", id=saved.item_id, version=saved.version),
        "ended": _("%(id)s is ended: it has left the board (the hall's items are now version %(version)d).", id=saved.item_id, version=saved.version),
        "withdrawn": _("%(id)s is withdrawn: it had not begun (the hall's items are now version %(version)d).", id=saved.item_id, version=saved.version),
    }
    try:
        hall().daemon("reload")
    except ControlError as exc:
        flash(messages[saved.action] + " " + _("The board did not take the change now (%(reason)s); it applies when the daemon next starts.", reason=str(exc)), "warning")
        return
    flash(messages[saved.action] + " " + _("The board has it now."), "info")


@bp.get("/new")
@roles_required(*BOARD_ROLES)
def new():
    form = ItemForm(formdata=None)
    form.kind.data = request.args.get("kind", "") if request.args.get("kind") in KINDS else ""
    return _item_page(form, None)


@bp.post("/new")
@roles_required(*BOARD_ROLES)
def add():
    form = ItemForm()
    return _submitted(form, None, lambda f: store_items.add_item(hall(), _pictures().font, g.user.username, f.fields()))


def _hall_item(item_id: str) -> dict:
    """The stored hall item, or the page's refusal: 404 for none, 403 for the county's."""
    if not ID_PATTERN.match(item_id):
        abort(404)
    try:
        return store_items.find_item(hall(), _pictures().font, item_id)
    except CountyItem as exc:
        abort(error_page(403, _county_refusal(exc)))
    except ItemNotFound:
        abort(404)


def _county_refusal(exc: CountyItem) -> str:
    return _("%(id)s is the county's item (%(scope)s): the hall cannot change or end it. The county changes or withdraws it.", id=exc.item_id, scope=SETTING_SOURCES.get(exc.scope, exc.scope))


@bp.get("/items/<item_id>")
@roles_required(*BOARD_ROLES)
def edit(item_id: str):
    item = _hall_item(item_id)
    form = ItemForm(formdata=None)
    form.fill(item)
    return _item_page(form, item_id)


@bp.post("/items/<item_id>")
@roles_required(*BOARD_ROLES)
def change(item_id: str):
    item = _hall_item(item_id)
    form = ItemForm()
    form.stored_end = item.get("end")
    opened = int(form.version.data) if re.fullmatch(r"[0-9]{1,9}", form.version.data or "") else None
    return _submitted(form, item_id, lambda f: store_items.edit_item(hall(), _pictures().font, g.user.username, item_id, f.fields(), opened))


@bp.post("/items/<item_id>/end")
@roles_required(*BOARD_ROLES)
def end(item_id: str):
    if not ID_PATTERN.match(item_id):
        abort(404)
    if not FlaskForm().validate_on_submit():
        abort(400)
    try:
        saved = store_items.end_item(hall(), _pictures().font, g.user.username, item_id)
    except CountyItem as exc:
        return error_page(403, _county_refusal(exc))
    except ItemNotFound:
        abort(404)
    except AlreadyEnded as exc:
        return _list_page(409, end_errors={item_id: _("Not saved: %(id)s already ended at %(time)s.", id=item_id, time=_show_time(datetime.fromisoformat(exc.end)))})
    except ItemsFull as exc:  # a list stored over the limit by hand: ending one cannot be saved either
        return _list_page(409, end_errors={item_id: _full_refusal(exc)})
    _saved_message(saved)
    return redirect(url_for("board.index", _anchor="hall-items"), 303)

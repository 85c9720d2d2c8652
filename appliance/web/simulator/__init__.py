"""The simulator panel (simulator only): press window buttons, swipe a badge, watch what is published.

Every action goes to the daemon's control socket, which drives the mock pin or the virtual
reader: the same path a real press or swipe takes.
"""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import HiddenField, StringField
from wtforms.validators import InputRequired, Length, Regexp

from ...errors import ControlError
from ..board import frame_response
from ..guards import login_required
from ..hall import hall
from ..labels import LEVEL_NAMES

bp = Blueprint("simulator", __name__, url_prefix="/simulator", template_folder="templates")

EVENTS_SHOWN = 12
CARD_MAX = 64


class PressForm(FlaskForm):
    window = HiddenField(validators=[InputRequired(_l("Choose a window.")), Length(max=64, message=_l("Use at most %(max)d characters."))])
    level = HiddenField(validators=[InputRequired(_l("Choose a rating level.")), Length(max=32, message=_l("Use at most %(max)d characters."))])


class BadgeForm(FlaskForm):
    card = StringField(
        _l("Card number"),
        filters=[lambda v: v.strip() if isinstance(v, str) else v],
        validators=[
            InputRequired(_l("Enter a card number.")),
            Length(max=CARD_MAX, message=_l("Use at most %(max)d characters.")),
            Regexp(r"^[0-9A-Za-z]+\Z", message=_l("Use only the letters and digits printed on the card.")),
        ],
    )


def _frame() -> str:
    """Why the board's frame cannot be shown, or "" when it can."""
    try:
        hall().daemon("frame")
    except ControlError as exc:
        return str(exc)
    return ""


def _panel(badge: BadgeForm | None = None, press_error: str | None = None, status: int = 200):
    h = hall()
    return (
        render_template(
            "simulator/index.html",
            windows=h.config.windows,
            level_names=LEVEL_NAMES,
            press=PressForm(formdata=None),
            badge=badge or BadgeForm(formdata=None),
            press_error=press_error,
            frame_note=_frame(),
            events=h.store.recent_events(EVENTS_SHOWN),
        ),
        status,
    )


@bp.get("")
@login_required
def index():
    return _panel()


@bp.post("/press")
@login_required
def press():
    form = PressForm()
    if not form.validate_on_submit():
        return _panel(press_error=" ".join(str(e) for errors in form.errors.values() for e in errors), status=422)
    window, level = form.window.data, form.level.data
    known = {(w.id, lv) for w in hall().config.windows for lv, _pin in w.buttons}
    if (window, level) not in known:
        return _panel(press_error=_("There is no %(level)s button at window %(window)s.", level=level, window=window), status=422)
    try:
        result = hall().daemon("press", window=window, level=level)
    except ControlError as exc:
        return _panel(press_error=_("The press did not reach the daemon: %(reason)s", reason=str(exc)), status=503)
    hall().accounts.audit(g.user.username, "sim.press", {"window": window, "level": level, "seq": result.get("seq")})
    if result.get("recorded", True):
        flash(_("Pressed “%(level)s” at %(window)s.", level=LEVEL_NAMES.get(level, level), window=window), "info")
    else:
        # The debouncer took no press: that button is held down, or jammed (see the alarms).
        flash(_("Pressed “%(level)s” at %(window)s, but no rating was recorded: that button is held down or jammed.", level=LEVEL_NAMES.get(level, level), window=window), "warning")
    return redirect(url_for("simulator.index"), 303)


@bp.post("/badge")
@login_required
def badge():
    form = BadgeForm()
    if not form.validate_on_submit():
        return _panel(badge=form, status=422)
    try:
        result = hall().daemon("badge", card=form.card.data)
    except ControlError as exc:
        form.card.errors.append(_("The daemon did not take the swipe: %(reason)s", reason=str(exc)))
        return _panel(badge=form, status=422)
    hall().accounts.audit(g.user.username, "sim.badge", {"card": form.card.data})
    flash(_("Badge %(card)s swiped: %(result)s", card=form.card.data, result=result), "info")
    return redirect(url_for("simulator.index"), 303)


@bp.get("/frame.png")
@login_required
def frame():
    """The board's live frame, as the emulator draws it (the panel's script refreshes it)."""
    return frame_response()


@bp.get("/events")
@login_required
def events():
    """The last events, as the panel's script refreshes them."""
    return render_template("_events.html", events=hall().store.recent_events(EVENTS_SHOWN))

"""The ratings page: a day's figures per window, the flagged presses, the open 差评 follow-ups.

Read from the store through the ratings service's functions, so the page shows exactly
what the daemon counts and publishes, with the daemon running or not.
"""

from __future__ import annotations

from datetime import date

from flask import Blueprint, render_template, request
from flask_babel import gettext as _

from services.ratings import day_figures, flagged_presses, open_followups

from ..error_pages import error_page
from ..guards import login_required
from ..hall import hall

bp = Blueprint("ratings", __name__, template_folder="templates")


@bp.get("/ratings")
@login_required
def index():
    h = hall()
    today = h.clock.now().date()
    raw = request.args.get("day", "")
    try:
        day = date.fromisoformat(raw) if raw else today
    except ValueError:
        return error_page(400, _("day = %(value)s: not a date. Fix: write it as YYYY-MM-DD, e.g. %(example)s", value=raw[:40], example=today.isoformat()))
    windows = {w.id: w.name for w in h.config.windows}
    now = h.clock.now().isoformat(timespec="seconds")
    followups = open_followups(h.store)
    for f in followups:
        f["callback_overdue"] = not f["provisional"] and f["called_back_at"] is None and f["callback_due"] <= now
        f["rectify_overdue"] = not f["provisional"] and f["rectify_due"] <= now
        f["window_name"] = windows.get(f["window"], f["window"])
    return render_template(
        "ratings/index.html",
        figures=day_figures(h.store, windows, day.isoformat()),
        flagged=flagged_presses(h.store, day.isoformat()),
        followups=followups,
        windows=windows,
        day=day,
        today=today,
        synced=h.clock.is_synced(),
    )

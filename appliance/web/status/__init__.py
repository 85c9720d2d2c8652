"""The status page (the landing page) and its JSON twin for monitoring tools.

Everything the store knows is read from the store, so the page works with the daemon down;
only what is live (the uplink's connection, the in-memory counters) comes from the daemon.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, datetime

from flask import Blueprint, g, jsonify, render_template, request
from flask_babel import gettext as _

from services.ratings import day_figures

from ... import __version__
from ...clock import HALL_TZ
from ...errors import ControlError
from ...store import Store
from ..auth import source_address, too_many
from ..error_pages import error_page
from ..guards import login_required
from ..hall import Hall, hall

bp = Blueprint("status", __name__, template_folder="templates")

RECENT_EVENTS = 15


def todays_figures(h: Hall, day: date) -> dict:
    """The day's ratings per window and level with the satisfaction rate (the ratings service's figures)."""
    return day_figures(h.store, {w.id: w.name for w in h.config.windows}, day.isoformat())


def last_publish(store: Store) -> str | None:
    """When the broker last accepted an event of ours, as the store remembers it."""
    rows = store.rows("SELECT MAX(published_at) FROM outbox")
    if not rows or rows[0][0] is None:
        return None
    return datetime.fromtimestamp(rows[0][0], HALL_TZ).isoformat(timespec="seconds")


def collect_status(h: Hall) -> dict:
    """Everything the status page shows, as JSON-able data (the page and /api/status share it)."""
    try:
        live = h.daemon("status")
        daemon = {"running": True, "error": None, "version": live.get("version")}
    except ControlError as exc:
        live = None
        daemon = {"running": False, "error": str(exc), "version": None}
    outbox = h.store.outbox_summary()
    if live:
        # Only the daemon counts telemetry it dropped; the page's own store object has none.
        outbox["dropped_telemetry"] = live.get("outbox", {}).get("dropped_telemetry", 0)
        clock = live["clock"]
    else:
        clock = {"synced": h.clock.is_synced(), "source": h.config.clock.source, "now": h.clock.now().isoformat(timespec="seconds")}
    uplink = live.get("uplink") if live else None
    today = h.clock.now().date()
    return {
        "version": __version__,
        "daemon": daemon,
        "device": asdict(h.config.device),
        "uplink": uplink,
        "last_publish": last_publish(h.store) or (uplink or {}).get("last_publish_ok"),
        "outbox": outbox,
        "clock": clock,
        "alarms": [asdict(a) for a in h.store.active_alarms()],
        "today": todays_figures(h, today),
        "recent_events": h.store.recent_events(RECENT_EVENTS),
        "update": live.get("update") if live else _update_state(h),
    }


def _update_state(h: Hall) -> dict | None:
    """The last software update's outcome from the updater's file, when the daemon cannot say."""
    path = h.config.store.path.parent / "update-state.json"
    if not path.exists():
        return None
    from ...update import read_update_state

    return read_update_state(path)


@bp.get("/")
@login_required
def index():
    return render_template("status/index.html", s=collect_status(hall()), windows=hall().config.windows)


@bp.get("/api/status")
def api():
    """For monitoring tools: a signed-in session, or HTTP Basic credentials of an account."""
    if g.user is None:
        refused = _basic_auth()
        if refused is not None:
            return refused
    return jsonify(collect_status(hall()))


def _basic_auth():
    h = hall()
    auth = request.authorization
    if auth is None or auth.type != "basic" or not auth.username:
        return _challenge(_("Sign in, or send the user name and password of an account (HTTP Basic)."))
    username, password, source = auth.username.lower(), auth.password or "", source_address()
    keys = h.delays.keys(username, source)
    wait = h.delays.wait(keys)
    if wait > 0:
        return too_many(wait)
    if h.accounts.verify(username, password) is None:
        h.delays.failed(keys)
        h.accounts.audit(username[:64], "signin.failed", {"source": source, "via": "api"})
        return _challenge(_("Wrong user name or password."))
    h.delays.succeeded(keys)
    return None


def _challenge(message: str):
    response = error_page(401, message)
    response.headers["WWW-Authenticate"] = 'Basic realm="hall appliance", charset="UTF-8"'
    return response

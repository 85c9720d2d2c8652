"""The status page (the landing page) and its JSON twin for monitoring tools.

Everything the store knows is read from the store, so the page works with the daemon down;
only what is live (the uplink's connection, the in-memory counters) comes from the daemon.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, datetime

from flask import Blueprint, g, jsonify, render_template, request
from flask_babel import gettext as _

from ... import __version__
from ...clock import HALL_TZ
from ...config import WindowConfig
from ...errors import ControlError
from ...store import Store
from ..auth import source_address, too_many
from ..error_pages import error_page
from ..guards import login_required
from ..hall import Hall, hall

bp = Blueprint("status", __name__, template_folder="templates")

RECENT_EVENTS = 15
# Both shapes of a press: the core's button.pressed and the ratings work's rating.recorded.
PRESS_TYPES = ("button.pressed", "rating.recorded")


def todays_presses(store: Store, windows: tuple[WindowConfig, ...], day: date) -> list[dict]:
    """Presses on ``day`` per window and level, counted from the press events in the outbox.

    The one place the page's figures come from: the ratings work replaces the source (its
    counted ratings) here and nowhere else. Acknowledged events stay for the retention
    period, so a day's presses are all still there.
    """
    rows = store.rows(
        "SELECT json_extract(CAST(payload AS TEXT), '$.data.window'), json_extract(CAST(payload AS TEXT), '$.data.level'), COUNT(*)"
        f" FROM outbox WHERE type IN ({', '.join('?' * len(PRESS_TYPES))}) AND substr(created_at, 1, 10) = ? GROUP BY 1, 2",
        (*PRESS_TYPES, day.isoformat()),
    )
    counts = {(window, level): n for window, level, n in rows}
    return [
        {
            "window": w.id,
            "name": w.name,
            "levels": {level: counts.get((w.id, level), 0) for level, _pin in w.buttons},
            "total": sum(counts.get((w.id, level), 0) for level, _pin in w.buttons),
        }
        for w in windows
    ]


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
        "today": {"day": today.isoformat(), "windows": todays_presses(h.store, h.config.windows, today)},
        "recent_events": h.store.recent_events(RECENT_EVENTS),
    }


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

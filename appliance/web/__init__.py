"""The local config page: a small Flask app on the hall network.

It runs as its own unprivileged process (``hall-appliance web``) or, in the simulator, as a
thread beside the daemon. It reads and writes through the store and reaches the daemon only
through the control socket, so it keeps working — showing the daemon as down — when the daemon
is not running. It never imports ``drivers``.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping

from flask import Flask, current_app, flash, g, redirect, request, session, url_for
from flask_babel import Babel, get_locale
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from .. import __version__
from ..accounts import HASH_METHOD, Accounts, SignInDelays
from ..clock import SystemClock, boot_id
from ..config import Config, load_config
from ..control import ControlClient
from ..errors import StoreError
from ..events import Recorder
from ..store import Store
from .error_pages import error_page
from .guards import end_session
from .hall import Hall, hall
from .labels import AUDIT_ACTIONS, DEFAULT_LANGUAGE, FLAG_NAMES, HTML_LANG, LANGUAGES, LEVEL_NAMES, OUTBOX_STATES, ROLE_NAMES, SETTING_NAMES, SETTING_SOURCES, UPDATE_OUTCOMES, UPLINK_STATES

DEFAULT_CONFIG = "/etc/hall-appliance/appliance.toml"

DEFAULTS: dict[str, Any] = {
    # The appliance's config: a Config, a path, or None for $HALL_APPLIANCE_CONFIG or /etc.
    "HALL_CONFIG": None,
    # A Clock (tests pass a FakeClock); default: the system clock as [clock] source says.
    "HALL_CLOCK": None,
    # True in `hall-appliance simulate`: adds the simulator panel.
    "HALL_SIMULATOR": False,
    # Served over TLS (Secure cookies); None: whenever [web] names a certificate.
    "HALL_TLS": None,
    # A session unused this long has ended (a hall PC is shared).
    "HALL_SESSION_IDLE_S": 30 * 60,
    "HALL_CONTROL_TIMEOUT_S": 5.0,
    # werkzeug's method string for new password hashes (tests use a cheaper scrypt).
    "HALL_PASSWORD_HASH": HASH_METHOD,
    "HALL_SIGNIN_FREE_FAILURES": 3,
    "HALL_SIGNIN_FIRST_DELAY_S": 2.0,
    "HALL_SIGNIN_MAX_DELAY_S": 60.0,
    "HALL_SIGNIN_FORGET_S": 15 * 60,
    # However active, a session ends after this long.
    "PERMANENT_SESSION_LIFETIME": timedelta(hours=12),
    "SESSION_COOKIE_NAME": "hall_session",
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Strict",
    # No form of ours comes near this; anything bigger is refused with 413 before it is read.
    "MAX_CONTENT_LENGTH": 64 * 1024,
    # The session's idle limit (with the injectable clock) ends stale forms instead.
    "WTF_CSRF_TIME_LIMIT": None,
}

# Everything the page loads is its own: the hall network may have no internet.
CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the page. ``test_config`` overrides ``DEFAULTS`` and Flask's own settings."""
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    if test_config:
        app.config.from_mapping(test_config)

    config = _load(app.config["HALL_CONFIG"])
    clock = app.config["HALL_CLOCK"] or SystemClock(config.clock.source)
    tls = app.config["HALL_TLS"] if app.config["HALL_TLS"] is not None else config.web.cert_file is not None
    # recover=False: only the daemon moves a damaged store aside; the page reports it.
    store = Store(config.store.path, outbox_cap=config.store.outbox_cap, reserve_mb=0, recover=False)
    app.extensions["hall"] = Hall(
        config=config,
        store=store,
        accounts=Accounts(store, clock, hash_method=app.config["HALL_PASSWORD_HASH"]),
        delays=SignInDelays(
            lambda: clock.monotonic_ns() / 1e9,
            free_failures=app.config["HALL_SIGNIN_FREE_FAILURES"],
            first_delay_s=app.config["HALL_SIGNIN_FIRST_DELAY_S"],
            max_delay_s=app.config["HALL_SIGNIN_MAX_DELAY_S"],
            forget_after_s=app.config["HALL_SIGNIN_FORGET_S"],
        ),
        control=ControlClient(config.control.socket, timeout=app.config["HALL_CONTROL_TIMEOUT_S"]),
        clock=clock,
        simulator=bool(app.config["HALL_SIMULATOR"]),
        tls=tls,
        # The kernel's boot id, as the daemon's: events of one boot share it whichever process records them.
        recorder=Recorder(store, config.device, clock, boot_id()),
    )
    app.config["SESSION_COOKIE_SECURE"] = tls
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _secret_key(store)

    # Times are shown as recorded (hall time, with their offset): no time zone database needed.
    Babel(app, locale_selector=_select_locale, default_locale=DEFAULT_LANGUAGE)
    # Before CSRFProtect's own hook: a form sent after the session ended is told so, rather
    # than blamed on its token.
    app.before_request(_load_user)
    CSRFProtect(app)

    from .auth import bp as auth_bp
    from .board import bp as board_bp
    from .complaints import init_app as init_complaints
    from .ratings import bp as ratings_bp
    from .roster import bp as roster_bp
    from .settings import bp as settings_bp
    from .status import bp as status_bp

    app.register_blueprint(auth_bp)
    app.register_blueprint(status_bp)
    app.register_blueprint(ratings_bp)
    app.register_blueprint(roster_bp)
    app.register_blueprint(board_bp)
    app.register_blueprint(settings_bp)
    init_complaints(app)  # the complaint box's pages, with its key and flood limiters
    if app.extensions["hall"].simulator:
        from .simulator import bp as simulator_bp

        app.register_blueprint(simulator_bp)

    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(StoreError, _store_error)
    app.register_error_handler(sqlite3.Error, _store_error)
    app.after_request(_headers)
    app.context_processor(_page_globals)
    app.jinja_env.filters["when"] = when
    app.jinja_env.filters["summary"] = summary
    # JSON for people too: Chinese names as themselves, not \u escapes.
    app.json.ensure_ascii = False
    return app


def _load(value: Config | str | Path | None) -> Config:
    if isinstance(value, Config):
        return value
    return load_config(value or os.environ.get("HALL_APPLIANCE_CONFIG") or DEFAULT_CONFIG)


def _secret_key(store: Store) -> str:
    # Kept in the store, so sessions and device cookies outlive a restart of the page; anyone
    # who can read the store could rewrite its password hashes anyway.
    with store.transaction() as conn:
        row = conn.execute("SELECT value FROM meta WHERE key = 'web_secret'").fetchone()
        if row:
            return row[0]
        key = secrets.token_hex(32)
        conn.execute("INSERT INTO meta (key, value) VALUES ('web_secret', ?)", (key,))
    return key


def _select_locale() -> str:
    user = g.get("user")
    if user is not None and user.language in LANGUAGES:
        return user.language
    chosen = session.get("lang")
    return chosen if chosen in LANGUAGES else DEFAULT_LANGUAGE


def _load_user():
    g.user = None
    if request.endpoint == "static" or "user" not in session:
        return None
    h = hall()
    now = h.clock.now().timestamp()
    account = h.accounts.get(session["user"])
    limit = int(current_app.config["HALL_SESSION_IDLE_S"])
    if account is not None and account.stamp == session.get("pw") and now - session.get("at", 0.0) <= limit:
        session["at"] = now
        g.user = account
        if account.must_change and request.endpoint not in ("auth.password", "auth.logout", "auth.language", "status.api"):
            return redirect(url_for("auth.password"))
        return None
    if account is None or account.stamp != session.get("pw"):
        message = _("Your password was changed or your account removed: sign in again.")
    else:
        message = _("Your session ended after %(minutes)d minutes without use: sign in again.", minutes=limit // 60)
    end_session()
    if request.method in ("GET", "HEAD") and not request.path.startswith("/api/"):
        flash(message, "warning")
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    return error_page(401, _("%(reason)s Nothing was saved.", reason=message))


def _csrf_error(exc: CSRFError):
    return error_page(400, _("This form has expired or did not come from this page, so nothing was saved. Reload the page and send it again."))


def _http_error(exc: HTTPException):
    if exc.code is None:
        return exc
    response = error_page(exc.code)
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def _store_error(exc: Exception):
    return error_page(503, _("The appliance's store cannot be used right now (%(reason)s). Nothing was saved.", reason=str(exc)))


def _headers(response):
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    # same-origin, not no-referrer: Flask-WTF checks the Referer of forms sent over HTTPS.
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "static":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _page_globals() -> dict:
    h = hall()
    language = str(get_locale() or DEFAULT_LANGUAGE)
    return {
        "device": h.config.device,
        "user": g.get("user"),
        "languages": LANGUAGES,
        "language": language,
        "html_lang": HTML_LANG.get(language, "zh-Hans"),
        "simulator": h.simulator,
        "version": __version__,
        "role_names": ROLE_NAMES,
        "level_names": LEVEL_NAMES,
        "flag_names": FLAG_NAMES,
        "uplink_states": UPLINK_STATES,
        "update_outcomes": UPDATE_OUTCOMES,
        "outbox_states": OUTBOX_STATES,
        "setting_names": SETTING_NAMES,
        "setting_sources": SETTING_SOURCES,
        "audit_actions": AUDIT_ACTIONS,
    }


def when(value: str | None) -> str:
    """An ISO time as people read it in the hall: '2026-11-25 09:00:01' (always hall time)."""
    if not value:
        return ""
    return value.replace("T", " ")[:19]


def summary(event: dict) -> str:
    """One line saying what an event is about."""
    data = event.get("data") or {}
    if "window" in data and "level" in data:
        level = LEVEL_NAMES.get(data["level"])
        return f"{data.get('window_name') or data['window']} · {level if level is not None else data['level']}"
    text = json.dumps(data, ensure_ascii=False, separators=(", ", ": "))
    return text if len(text) <= 120 else text[:119] + "…"

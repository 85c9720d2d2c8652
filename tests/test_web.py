"""The config page through Flask's test client: every route and role, sign-in, CSRF, delays, audit."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from appliance.clock import FakeClock
from appliance.config import load_config
from appliance.daemon import Daemon
from appliance.events import Recorder
from appliance.store import Store
from appliance.web import create_app
from services.calendar import HallCalendar
from services.ratings import Ratings, day_figures
from conftest import REPO, write_config

FAST_HASH = "scrypt:1024:8:1"
PASSWORDS = {"director": "director-pass-1", "county-it": "county-it-pass-1"}
ROLE_USER = {"director": "director", "county_it": "county-it"}
CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


@pytest.fixture
def hall_dir():
    # Not tmp_path: a Unix socket path must stay under 108 bytes, and parametrized test
    # names make pytest's directories long.
    d = Path(tempfile.mkdtemp(prefix="hall-web-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def config_path(hall_dir):
    return write_config(hall_dir)


@pytest.fixture
def clock():
    return FakeClock()


def make_app(config_path, clock, **extra):
    # A cheap scrypt keeps the suite fast; test_accounts checks the real cost is the default.
    app = create_app({"HALL_CONFIG": str(config_path), "HALL_CLOCK": clock, "HALL_SIMULATOR": True, "TESTING": True, "HALL_PASSWORD_HASH": FAST_HASH, **extra})
    accounts = app.extensions["hall"].accounts
    accounts.set_password("director", PASSWORDS["director"], by="test", role="director")
    accounts.set_password("county-it", PASSWORDS["county-it"], by="test", role="county_it")
    return app


@pytest.fixture
def app(config_path, clock):
    app = make_app(config_path, clock)
    yield app
    app.extensions["hall"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def daemon(config_path):
    """The daemon beside the page, as on a device (no broker: it records and queues)."""
    d = Daemon(load_config(config_path), clock=FakeClock(), simulate=True)
    d.start()
    yield d
    d.stop()


def token(client, path: str = "/login") -> str:
    """The CSRF token of the client's session, read off a page as a browser would."""
    page = client.get(path, follow_redirects=True)
    match = CSRF.search(page.text)
    assert match, page.text[:500]
    return match.group(1)


def sign_in(client, username: str, password: str | None = None, *, next: str | None = None, source: str = "127.0.0.1"):
    data = {"csrf_token": token(client), "username": username, "password": password or PASSWORDS[username]}
    if next is not None:
        data["next"] = next
    return client.post("/login", data=data, environ_base={"REMOTE_ADDR": source})


def as_role(client, role: str):
    if role != "anonymous":
        assert sign_in(client, ROLE_USER[role]).status_code == 302
    return client


def audit_actions(app) -> list[tuple[str, str]]:
    return [(e.username, e.action) for e in reversed(app.extensions["hall"].accounts.audit_log(1000))]


def english(client) -> None:
    client.post("/language", data={"csrf_token": token(client, "/login"), "lang": "en"})


# -- every route, every role -------------------------------------------------------------

ROUTES = [
    # method, path, form data, {role: status}; the daemon is not running.
    ("GET", "/login", None, {"anonymous": 200, "director": 302, "county_it": 302}),
    ("GET", "/", None, {"anonymous": 302, "director": 200, "county_it": 200}),
    ("GET", "/api/status", None, {"anonymous": 401, "director": 200, "county_it": 200}),
    ("GET", "/password", None, {"anonymous": 302, "director": 200, "county_it": 200}),
    ("POST", "/logout", {}, {"anonymous": 401, "director": 302, "county_it": 302}),
    ("POST", "/language", {"lang": "en"}, {"anonymous": 302, "director": 302, "county_it": 302}),
    ("GET", "/settings", None, {"anonymous": 302, "director": 403, "county_it": 200}),
    ("GET", "/settings/audit", None, {"anonymous": 302, "director": 403, "county_it": 200}),
    ("POST", "/settings/health_interval", {"health_interval-value": "600"}, {"anonymous": 401, "director": 403, "county_it": 302}),
    ("POST", "/settings/health_interval/clear", {}, {"anonymous": 401, "director": 403, "county_it": 302}),
    ("POST", "/settings/no_such_setting", {"no_such_setting-value": "1"}, {"anonymous": 401, "director": 403, "county_it": 404}),
    ("GET", "/simulator", None, {"anonymous": 302, "director": 200, "county_it": 200}),
    ("GET", "/simulator/events", None, {"anonymous": 302, "director": 200, "county_it": 200}),
    # The daemon is down: a press cannot happen (503), a swipe is refused beside the field (422).
    ("POST", "/simulator/press", {"window": "w1", "level": "satisfied"}, {"anonymous": 401, "director": 503, "county_it": 503}),
    ("POST", "/simulator/badge", {"card": "12345678"}, {"anonymous": 401, "director": 422, "county_it": 422}),
    ("GET", "/static/style.css", None, {"anonymous": 200, "director": 200, "county_it": 200}),
    ("GET", "/static/simulator.js", None, {"anonymous": 200, "director": 200, "county_it": 200}),
    ("GET", "/no/such/page", None, {"anonymous": 404, "director": 404, "county_it": 404}),
    ("GET", "/logout", None, {"anonymous": 405, "director": 405, "county_it": 405}),
    ("GET", "/simulator/press", None, {"anonymous": 405, "director": 405, "county_it": 405}),
    ("DELETE", "/settings", None, {"anonymous": 405, "director": 405, "county_it": 405}),
]


@pytest.mark.parametrize("role", ["anonymous", "director", "county_it"])
def test_every_route_answers_each_role(app, role):
    for method, path, data, expected in ROUTES:
        client = as_role(app.test_client(), role)
        if data is not None:
            data = {"csrf_token": token(client), **data}
        response = client.open(path, method=method, data=data)
        assert response.status_code == expected[role], (method, path, role, response.text[:400])
        if response.status_code >= 400 and not path.startswith("/api/"):
            assert "<h1>" in response.text  # a page that says what went wrong, not a bare error
        if response.status_code == 405:
            assert response.headers["Allow"]


def test_anonymous_browser_is_sent_to_sign_in_and_brought_back(client):
    response = client.get("/settings/audit")
    assert response.status_code == 302 and response.headers["Location"] == "/login?next=/settings/audit"
    response = sign_in(client, "county-it", next="/settings/audit")
    assert response.headers["Location"] == "/settings/audit"


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"])
def test_sign_in_never_leads_off_the_appliance(client, target):
    assert sign_in(client, "director", next=target).headers["Location"] == "/"


def test_director_sees_why_settings_are_refused(client):
    as_role(client, "director")
    english(client)
    response = client.get("/settings")
    assert response.status_code == 403
    assert "This page is for county IT; you are signed in as the hall director." in response.text


def test_the_simulator_panel_exists_only_in_the_simulator(config_path, clock):
    app = make_app(config_path, clock, HALL_SIMULATOR=False)
    try:
        client = as_role(app.test_client(), "county_it")
        assert client.get("/simulator").status_code == 404
        assert "/simulator" not in client.get("/").text
    finally:
        app.extensions["hall"].close()


# -- signing in --------------------------------------------------------------------------


def test_a_new_appliance_has_no_default_password_and_says_how_to_make_one(config_path, clock):
    app = create_app({"HALL_CONFIG": str(config_path), "HALL_CLOCK": clock, "TESTING": True, "HALL_PASSWORD_HASH": FAST_HASH})
    try:
        client = app.test_client()
        page = client.get("/login").text
        assert "hall-appliance passwd 用户名 --role director" in page
        for username in ("admin", "director", "county-it", "root"):
            assert sign_in(client, username, "admin").status_code == 401
    finally:
        app.extensions["hall"].close()


def test_sign_in_lands_on_the_status_page_in_chinese(client, app):
    response = sign_in(client, "director")
    assert response.status_code == 302 and response.headers["Location"] == "/"
    page = client.get("/")
    assert page.status_code == 200
    assert '<html lang="zh-Hans">' in page.text and "<h1>运行状态</h1>" in page.text
    assert ("director", "signin") in audit_actions(app)


def test_wrong_password_is_401_the_same_as_an_unknown_user_and_audited(client, app):
    wrong = sign_in(client, "director", "not-the-password")
    unknown = sign_in(client, "nobody", "not-the-password")
    assert wrong.status_code == unknown.status_code == 401
    assert "用户名或密码错误。" in wrong.text and "用户名或密码错误。" in unknown.text
    assert "WWW-Authenticate" not in wrong.headers  # no browser dialog over the form
    assert client.get("/").status_code == 302
    failures = app.extensions["hall"].accounts.audit_log(10, "signin.failed")
    assert [e.username for e in failures] == ["nobody", "director"]
    assert failures[0].detail["source"] == "127.0.0.1"


def test_missing_csrf_token_is_400_with_a_clear_page_and_nothing_changes(client, app):
    response = client.post("/login", data={"username": "director", "password": PASSWORDS["director"]})
    assert response.status_code == 400
    assert "此表单已过期或不是从本页提交的，因此没有保存任何内容。" in response.text
    assert client.get("/").status_code == 302  # not signed in
    as_role(client, "county_it")
    response = client.post("/settings/health_interval", data={"health_interval-value": "600", "csrf_token": "forged"})
    assert response.status_code == 400
    assert app.extensions["hall"].store.local_settings() == {}
    assert ("county-it", "settings.changed") not in audit_actions(app)


@pytest.mark.parametrize(
    ("role", "path", "field", "data", "message"),
    [
        ("anonymous", "/login", "username", {"username": "d" * 33, "password": "x"}, "Use at most 32 characters."),
        ("anonymous", "/login", "password", {"username": "director", "password": "p" * 129}, "Use at most 128 characters."),
        ("anonymous", "/login", "username", {"username": "", "password": "x"}, "Enter your user name."),
        ("director", "/password", "new", {"current": PASSWORDS["director"], "new": "n" * 129, "repeat": "n" * 129}, "Use 10 to 128 characters."),
        ("director", "/password", "new", {"current": PASSWORDS["director"], "new": "short", "repeat": "short"}, "Use 10 to 128 characters."),
        ("director", "/password", "repeat", {"current": PASSWORDS["director"], "new": "a-new-password", "repeat": "another-one"}, "The two new passwords differ."),
        ("director", "/password", "new", {"current": PASSWORDS["director"], "new": "Director", "repeat": "Director"}, "Use 10 to 128 characters."),
        ("director", "/simulator/badge", "card", {"card": "1" * 65}, "Use at most 64 characters."),
        ("director", "/simulator/badge", "card", {"card": "12 34<script>"}, "Use only the letters and digits printed on the card."),
        ("county_it", "/settings/health_interval", "health_interval-value", {"health_interval-value": "1" * 13}, "health_interval = '111111111111…': is too long (at most 12 characters). Fix: give a whole number from 10 to 86400"),
        ("county_it", "/settings/health_interval", "health_interval-value", {"health_interval-value": "--5"}, "health_interval = '--5': must be a whole number. Fix: give a whole number from 10 to 86400"),
        ("county_it", "/settings/health_interval", "health_interval-value", {"health_interval-value": "６０"}, "health_interval = '６０': must be a whole number. Fix: give a whole number from 10 to 86400"),
    ],
)
def test_bad_fields_are_422_with_the_message_beside_the_field(client, app, role, path, field, data, message):
    as_role(client, role)
    english(client)
    before = audit_actions(app)
    response = client.post(path, data={"csrf_token": token(client), **data})
    assert response.status_code == 422
    beside = re.search(rf'id="{re.escape(field)}-error">([^<]*)</p>', response.text)
    assert beside, response.text
    assert message in beside.group(1).replace("&#39;", "'")
    assert audit_actions(app) == before  # nothing half-written


def test_an_over_large_request_is_refused_before_it_is_read(client):
    response = client.post("/login", data={"csrf_token": token(client), "username": "director", "password": "x" * 70_000})
    assert response.status_code == 413


def test_session_cookie_is_httponly_samesite_strict_and_secure_over_tls(config_path, clock, client):
    cookie = sign_in(client, "director").headers.getlist("Set-Cookie")
    session = next(c for c in cookie if c.startswith("hall_session="))
    assert "HttpOnly" in session and "SameSite=Strict" in session and "Secure" not in session
    app = make_app(config_path, clock, HALL_TLS=True)
    try:
        cookies = sign_in(app.test_client(), "director").headers.getlist("Set-Cookie")
        assert all("Secure" in c and "HttpOnly" in c and "SameSite=Strict" in c for c in cookies)
        assert {c.split("=")[0] for c in cookies} == {"hall_session", "hall_device"}
    finally:
        app.extensions["hall"].close()


def test_an_idle_session_ends_and_the_browser_is_told_so(client, clock):
    as_role(client, "director")
    english(client)
    clock.advance(29 * 60)
    assert client.get("/").status_code == 200  # in use: the idle clock starts again
    clock.advance(31 * 60)
    response = client.get("/simulator")
    assert response.status_code == 302 and response.headers["Location"] == "/login?next=/simulator"
    assert "Your session ended after 30 minutes without use: sign in again." in client.get("/login").text


def test_a_form_sent_after_the_session_ended_is_401_and_saves_nothing(client, clock, app):
    as_role(client, "county_it")
    csrf = token(client, "/settings")
    clock.advance(31 * 60)
    response = client.post("/settings/health_interval", data={"csrf_token": csrf, "health_interval-value": "600"})
    assert response.status_code == 401 and "没有保存任何内容" in response.text
    assert app.extensions["hall"].store.local_settings() == {}


def test_a_password_reset_elsewhere_ends_existing_sessions(client, app):
    as_role(client, "director")
    app.extensions["hall"].accounts.set_password("director", "reset-by-county-it", by="cli:root")
    response = client.get("/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    assert sign_in(client, "director", "reset-by-county-it").status_code == 302


def test_a_password_someone_else_chose_must_be_changed_first(client, app):
    app.extensions["hall"].accounts.set_password("director", "given-at-the-counter", by="cli:root", must_change=True)
    sign_in(client, "director", "given-at-the-counter")
    assert client.get("/").headers["Location"] == "/password"
    assert client.get("/settings").headers["Location"] == "/password"
    response = client.post("/password", data={"csrf_token": token(client, "/password"), "current": "given-at-the-counter", "new": "my-own-password", "repeat": "my-own-password"})
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_password_change_checks_the_current_password_and_is_audited(client, app):
    as_role(client, "director")
    english(client)
    wrong = client.post("/password", data={"csrf_token": token(client, "/password"), "current": "not-it-at-all", "new": "a-new-password", "repeat": "a-new-password"})
    assert wrong.status_code == 422 and "This is not your current password." in wrong.text
    ok = client.post("/password", data={"csrf_token": token(client, "/password"), "current": PASSWORDS["director"], "new": "a-new-password", "repeat": "a-new-password"})
    assert ok.status_code == 302
    assert client.get("/").status_code == 200  # this session goes on
    assert app.extensions["hall"].accounts.verify("director", "a-new-password") is not None
    assert app.extensions["hall"].accounts.verify("director", PASSWORDS["director"]) is None
    assert ("director", "password.changed") in audit_actions(app)


# -- growing delays ------------------------------------------------------------------------


def fail(client, username="director", source="127.0.0.1"):
    return client.post("/login", data={"csrf_token": token(client), "username": username, "password": "wrong-password"}, environ_base={"REMOTE_ADDR": source})


def test_failed_sign_ins_bring_growing_delays_that_expire(client, clock):
    english(client)
    for _ in range(3):
        assert fail(client).status_code == 401  # the first few cost nothing
    response = fail(client)
    assert response.status_code == 401 and "Wrong user name or password. Wait 2 seconds before the next try." in response.text
    held = sign_in(client, "director")  # even the right password is not checked while held
    assert held.status_code == 429 and held.headers["Retry-After"] == "2"
    assert "Too many failed sign-ins. Wait 2 seconds, then try again." in held.text
    clock.advance(2)
    assert fail(client).status_code == 401
    assert fail(client).headers["Retry-After"] == "4"  # doubled
    waits = []
    for _ in range(6):
        clock.advance(60)
        fail(client)
        waits.append(int(fail(client).headers["Retry-After"]))
    assert waits == [8, 16, 32, 60, 60, 60]  # capped, never a lockout
    clock.advance(60)
    assert sign_in(client, "director").status_code == 302  # the right password works again
    assert client.post("/logout", data={"csrf_token": token(client, "/")}).status_code == 302
    assert fail(client).status_code == 401  # and the success cleared the counters


def test_delays_count_per_source_too(client):
    for name in ("a", "b", "c", "d"):
        fail(client, username=f"guess-{name}", source="10.0.0.66")
    assert fail(client, username="guess-e", source="10.0.0.66").status_code == 429
    # Another computer in the hall is not held up by that one.
    assert client.post("/login", data={"csrf_token": token(client), "username": "county-it", "password": PASSWORDS["county-it"]}, environ_base={"REMOTE_ADDR": "10.0.0.7"}).status_code == 302


def test_someone_failing_as_director_does_not_keep_the_directors_own_browser_out(app, clock):
    director = app.test_client()
    as_role(director, "director")  # this browser now carries the director's device cookie
    director.post("/logout", data={"csrf_token": token(director, "/")})
    stranger = app.test_client()
    for i in range(8):
        fail(stranger, source=f"10.0.0.{100 + i}")
    # A new browser for 'director' waits (the account's counter)...
    newcomer = app.test_client()
    assert sign_in(newcomer, "director", source="10.0.0.9").status_code == 429
    # ...the director's own does not.
    assert sign_in(director, "director").status_code == 302


def test_delays_are_forgotten_after_a_quiet_quarter_hour(client, clock):
    for _ in range(5):
        fail(client)
    clock.advance(15 * 60 + 1)
    for _ in range(3):
        assert fail(client).status_code == 401


# -- the status page -------------------------------------------------------------------------


def record_presses(config_path, presses, clock: FakeClock | None = None) -> None:
    """Ratings recorded into the store by the ratings service, as the daemon would, without a daemon."""
    config = load_config(config_path)
    store = Store(config.store.path, reserve_mb=0)
    try:
        clock = clock or FakeClock()
        recorder = Recorder(store, config.device, clock, "boot-1")
        ratings = Ratings(recorder, store, clock, HallCalendar(), {w.id: w.name for w in config.windows})
        for window, level in presses:
            ratings.press(window, level)
            clock.advance(10)
        recorder.raise_alarm("clock_unsynced", "the clock is not synchronised yet")
    finally:
        store.close()


def test_status_page_works_with_the_daemon_down_from_the_store(client, config_path):
    record_presses(config_path, [("w1", "satisfied"), ("w1", "satisfied"), ("w2", "dissatisfied")])
    as_role(client, "director")
    page = client.get("/").text
    assert "后台服务未运行。" in page and "未知：后台服务未运行" in page
    assert "clock_unsynced" in page  # alarms come from the store
    status = client.get("/api/status").json
    assert status["daemon"]["running"] is False and "not running" in status["daemon"]["error"]
    assert status["uplink"] is None
    # Three ratings, the follow-up the 不满意 opened, and the alarm.
    assert status["outbox"]["depth"] == 5 and status["outbox"]["oldest"]["type"] == "rating.recorded"
    assert [e["type"] for e in status["recent_events"]][:1] == ["alarm.raised"]
    by_window = {w["window"]: w for w in status["today"]["windows"]}
    assert by_window["w1"]["levels"]["satisfied"] == 2 and by_window["w1"]["counted"] == 2 and by_window["w1"]["rate"] == 1.0
    assert by_window["w2"]["levels"]["dissatisfied"] == 1 and by_window["w2"]["rate"] == 0.0
    assert status["today"]["total"] == {"counted": 3, "satisfied": 2, "flagged": 0, "rate": 0.6667}
    assert status["device"]["id"] == "hall-01" and status["version"]
    assert status["clock"]["synced"] is True


def test_todays_figures_leave_out_other_days(config_path):
    record_presses(config_path, [("w1", "very_satisfied")])
    config = load_config(config_path)
    store = Store(config.store.path, reserve_mb=0, recover=False)
    try:
        windows = {w.id: w.name for w in config.windows}
        assert day_figures(store, windows, "2026-11-25")["total"]["counted"] == 1
        assert day_figures(store, windows, "2026-11-26")["total"]["counted"] == 0
    finally:
        store.close()


# -- the ratings page ------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["director", "county_it"])
def test_the_ratings_page_shows_figures_followups_and_flagged_presses(client, config_path, role):
    config = load_config(config_path)
    store = Store(config.store.path, reserve_mb=0)
    try:
        clock = FakeClock()  # 09:00 on Wednesday 25 November 2026
        ratings = Ratings(Recorder(store, config.device, clock, "boot-1"), store, clock, HallCalendar(), {w.id: w.name for w in config.windows})
        for advance, window, level in [(0, "w1", "satisfied"), (10, "w2", "very_satisfied"), (1, "w2", "satisfied"), (3589, "w1", "very_dissatisfied")]:
            clock.advance(advance)
            ratings.press(window, level)
    finally:
        store.close()
    as_role(client, role)
    page = client.get("/ratings")
    assert page.status_code == 200
    text = page.text
    assert "好差评与差评整改" in text and "未办结的差评整改" in text
    assert "非常不满意" in text and "2026-11-26 10:00:00" in text  # call back within one working day
    assert '<span class="tag">重复</span>' in text  # the second press at w2, 1 s after the first
    assert "66.7%" in text  # 2 of 3 counted ratings satisfied (the repeat is not counted)
    english = client.get("/ratings?day=2026-11-24")
    assert english.status_code == 200 and "没有被标记的按键。" in english.text


def test_the_ratings_page_refuses_a_bad_day_clearly(client):
    as_role(client, "director")
    r = client.get("/ratings?day=2026-13-45")
    assert r.status_code == 400
    assert "day = 2026-13-45" in r.text and "YYYY-MM-DD" in r.text


def test_the_ratings_page_needs_a_signed_in_user(client):
    r = client.get("/ratings")
    assert r.status_code == 302 and "/login" in r.headers["Location"]


def test_status_with_the_daemon_running_shows_the_live_uplink(daemon, client):
    as_role(client, "county_it")
    status = client.get("/api/status").json
    assert status["daemon"] == {"running": True, "error": None, "version": status["version"]}
    assert status["uplink"]["state"] == "disabled"
    english(client)
    assert "off (no broker configured: recording and queueing only)" in client.get("/").text


def test_api_status_takes_basic_credentials_of_an_account(client, app):
    def basic(user, password):
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    anonymous = client.get("/api/status")
    assert anonymous.status_code == 401 and anonymous.json["error"]
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic ")
    assert client.get("/api/status", headers=basic("director", "wrong-password")).status_code == 401
    ok = client.get("/api/status", headers=basic("director", PASSWORDS["director"]))
    assert ok.status_code == 200 and ok.json["device"]["hall"] == "测试政务服务中心"
    for _ in range(4):
        client.get("/api/status", headers=basic("county-it", "wrong-password"))
    held = client.get("/api/status", headers=basic("county-it", PASSWORDS["county-it"]))
    assert held.status_code == 429 and held.json["error"] and held.headers["Retry-After"]
    assert [e.detail.get("via") for e in app.extensions["hall"].accounts.audit_log(10, "signin.failed")][0] == "api"


# -- device settings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "health_interval = 'abc': must be a whole number. Fix: give a whole number from 10 to 86400"),
        ("5", "health_interval = 5: must be between 10 and 86400. Fix: give a whole number from 10 to 86400"),
        ("86401", "health_interval = 86401: must be between 10 and 86400. Fix: give a whole number from 10 to 86400"),
        ("-20", "health_interval = -20: must be between 10 and 86400. Fix: give a whole number from 10 to 86400"),
        ("12.5", "health_interval = '12.5': must be a whole number. Fix: give a whole number from 10 to 86400"),
        ("", "health_interval = (missing): is required. Fix: give a whole number from 10 to 86400"),
    ],
)
def test_settings_are_checked_with_check_configs_wording(client, app, value, message):
    as_role(client, "county_it")
    english(client)
    response = client.post("/settings/health_interval", data={"csrf_token": token(client, "/settings"), "health_interval-value": value})
    assert response.status_code == 422
    beside = re.search(r'id="health_interval-value-error">([^<]*)</p>', response.text).group(1).replace("&#39;", "'")
    assert beside == message
    assert app.extensions["hall"].store.local_settings() == {}


def test_settings_messages_are_in_chinese_too(client):
    as_role(client, "county_it")
    response = client.post("/settings/status_interval", data={"csrf_token": token(client, "/settings"), "status_interval-value": "5"})
    assert "status_interval = 5：必须在 10 到 3600 之间。修改方法：填写 10 到 3600 之间的整数" in response.text


def test_a_setting_change_is_saved_audited_and_reloaded_into_the_daemon(daemon, client, app):
    as_role(client, "county_it")
    english(client)
    response = client.post("/settings/health_interval", data={"csrf_token": token(client, "/settings"), "health_interval-value": " 600 "})
    assert response.status_code == 302
    assert "health_interval is now 600. The daemon uses it now." in client.get("/settings").text
    assert daemon.settings["health_interval"] == 600
    row = app.extensions["hall"].store.rows("SELECT value, changed_by FROM settings WHERE key = 'health_interval'")
    assert row == [("600", "county-it")]
    entry = app.extensions["hall"].accounts.audit_log(1, "settings.changed")[0]
    assert (entry.username, entry.detail, entry.at) == ("county-it", {"setting": "health_interval", "from": 300, "to": 600}, "2026-11-25T09:00:00+08:00")
    # Undo: the setting follows the county (here: the default) again.
    assert client.post("/settings/health_interval/clear", data={"csrf_token": token(client, "/settings")}).status_code == 302
    assert daemon.settings["health_interval"] == 300
    assert app.extensions["hall"].accounts.audit_log(1)[0].action == "settings.cleared"


def test_a_setting_changed_with_the_daemon_down_applies_when_it_starts(client, config_path, app):
    as_role(client, "county_it")
    english(client)
    client.post("/settings/status_interval", data={"csrf_token": token(client, "/settings"), "status_interval-value": "120"})
    assert "the change applies when it starts" in client.get("/settings").text
    d = Daemon(load_config(config_path), clock=FakeClock(), simulate=True)
    d.start()
    try:
        assert d.settings["status_interval"] == 120
    finally:
        d.stop()


def test_settings_page_shows_identity_and_broker_but_never_a_password(hall_dir, clock):
    secret = hall_dir / "broker-password"
    secret.write_text("s3cret-broker-pass\n")
    config = write_config(hall_dir, broker_extra=f'password_file = "{secret}"')
    app = make_app(config, clock)
    try:
        client = as_role(app.test_client(), "county_it")
        page = client.get("/settings").text
        assert "hall-01" in page and "test-township" in page and "测试政务服务中心" in page
        assert "保存在文件中，不显示" in page
        assert "s3cret-broker-pass" not in page
        assert "s3cret-broker-pass" not in client.get("/api/status").text
    finally:
        app.extensions["hall"].close()


# -- the simulator panel ----------------------------------------------------------------------


def test_a_simulated_press_goes_through_the_daemon_and_shows_in_the_events(daemon, client, app):
    as_role(client, "director")
    response = client.post("/simulator/press", data={"csrf_token": token(client, "/simulator"), "window": "w2", "level": "dissatisfied"})
    assert response.status_code == 303 and response.headers["Location"] == "/simulator"
    latest = daemon.store.recent_events(5)
    press = next(e for e in latest if e["data"].get("window") == "w2")
    assert press["data"]["level"] == "dissatisfied"
    fragment = client.get("/simulator/events").text
    assert "社保医保窗口 · 不满意" in fragment
    assert ("director", "sim.press") in audit_actions(app)


def test_a_simulated_press_on_a_button_held_down_says_nothing_was_recorded(daemon, client):
    as_role(client, "director")
    english(client)
    daemon.buttons.pin("w2", "dissatisfied").drive_low()  # somebody is leaning on it
    before = len(daemon.store.recent_events(50))
    response = client.post("/simulator/press", data={"csrf_token": token(client, "/simulator"), "window": "w2", "level": "dissatisfied"}, follow_redirects=True)
    assert 'class="flash warning"' in response.text
    assert "but no rating was recorded: that button is held down or jammed." in response.text
    assert len(daemon.store.recent_events(50)) == before
    # Released, the next press is recorded and said so.
    response = client.post("/simulator/press", data={"csrf_token": token(client, "/simulator"), "window": "w2", "level": "dissatisfied"}, follow_redirects=True)
    assert re.search(r'class="flash info"[^>]*>Pressed “[^”]+” at w2\.<', response.text), response.text[:2000]
    assert "no rating was recorded" not in response.text


def test_the_panel_refuses_a_button_the_window_does_not_have(daemon, client):
    as_role(client, "director")
    english(client)
    response = client.post("/simulator/press", data={"csrf_token": token(client, "/simulator"), "window": "w2", "level": "very_satisfied"})
    assert response.status_code == 422 and "There is no very_satisfied button at window w2." in response.text
    assert [e for e in daemon.store.recent_events(5) if e["data"].get("window") == "w2"] == []


def test_a_badge_swipe_shows_the_daemons_answer_beside_the_field(daemon, client):
    as_role(client, "director")
    english(client)
    response = client.post("/simulator/badge", data={"csrf_token": token(client, "/simulator"), "card": "04A1B2C3"})
    assert response.status_code == 422
    beside = re.search(r'id="card-error">([^<]*)</p>', response.text).group(1)
    assert beside == "The daemon did not take the swipe: card: the badge reader is disabled; set [badge] enabled = true"
    assert "The daemon says: this appliance has no LED board" in response.text


# -- language, audit, headers ---------------------------------------------------------------------


def test_language_is_chosen_per_user_and_remembered(app):
    director = as_role(app.test_client(), "director")
    english(director)
    assert '<html lang="en">' in director.get("/").text
    other = as_role(app.test_client(), "county_it")
    assert '<html lang="zh-Hans">' in other.get("/").text
    again = as_role(app.test_client(), "director")  # a new browser: the account remembers
    assert "<h1>Status</h1>" in again.get("/").text
    assert app.extensions["hall"].accounts.get("director").language == "en"


def test_an_unknown_language_is_refused(client):
    response = client.post("/language", data={"csrf_token": token(client), "lang": "fr"})
    assert response.status_code == 400 and "请选择页面提供的语言之一。" in response.text


def test_every_change_is_in_the_audit_log_with_who_and_when(client, app, clock):
    fail(client)
    as_role(client, "county_it")
    english(client)
    client.post("/settings/status_interval", data={"csrf_token": token(client, "/settings"), "status_interval-value": "90"})
    client.post("/password", data={"csrf_token": token(client, "/password"), "current": PASSWORDS["county-it"], "new": "county-it-pass-2", "repeat": "county-it-pass-2"})
    client.post("/logout", data={"csrf_token": token(client, "/")})
    assert audit_actions(app)[-6:] == [
        ("director", "signin.failed"),
        ("county-it", "signin"),
        ("county-it", "language.changed"),
        ("county-it", "settings.changed"),
        ("county-it", "password.changed"),
        ("county-it", "signout"),
    ]
    assert all(e.at == "2026-11-25T09:00:00+08:00" for e in app.extensions["hall"].accounts.audit_log(6))
    sign_in(client, "county-it", "county-it-pass-2")
    page = client.get("/settings/audit").text
    assert "changed a setting" in page and "status_interval" in page


def test_pages_carry_security_headers_and_load_nothing_from_elsewhere(client):
    as_role(client, "director")
    response = client.get("/")
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY" and response.headers["Cache-Control"] == "no-store"
    for page in ("/", "/simulator", "/login"):
        text = client.get(page).text
        assert not re.search(r'(src|href)="(https?:)?//', text), page


def test_the_page_never_imports_the_drivers():
    code = "import sys, appliance.web, appliance.web.server, appliance.accounts; from appliance.web import create_app; print(sorted(m for m in sys.modules if m.split('.')[0] in ('drivers', 'gpiozero')))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_a_damaged_store_is_reported_not_moved_aside_by_the_page(hall_dir, clock):
    config = write_config(hall_dir)
    db = hall_dir / "hall.db"
    db.write_bytes(b"this is not a database" * 100)
    from appliance.errors import StoreError

    with pytest.raises(StoreError, match="the daemon repairs it when it starts"):
        create_app({"HALL_CONFIG": str(config), "HALL_CLOCK": clock})
    assert db.read_bytes().startswith(b"this is not a database")


def test_status_page_shows_the_previous_software_and_what_the_last_update_came_to(client, config_path):
    """From the updater's update-state.json when the daemon is down (the daemon's status says the same when it runs)."""
    state = {
        "running": "0.1.0",
        "previous": "0.2.0",
        "last": {"outcome": "rolled_back", "version": "0.2.0", "from_version": "0.1.0", "at": "2026-11-25T21:30:00+08:00", "reason": "the new release never reported READY within 60 s"},
    }
    (load_config(config_path).store.path.parent / "update-state.json").write_text(json.dumps(state), encoding="utf-8")
    as_role(client, "director")
    page = client.get("/").text
    assert "上一版本" in page and "0.2.0" in page
    assert "新版本未能启动，已恢复运行上一版本" in page and "never reported READY" in page
    assert client.get("/api/status").json["update"]["last"]["outcome"] == "rolled_back"

"""The duty roster pages: every route and role, each form's good and bad input, the audit log, and
what the daemon makes of what the page records (a card registered, leave cancelling an absence).

The county's documents are in the store as the daemon's command router keeps them once it has
applied them (validated, with their version and scope); the browser test sends them as retained
messages to the simulator's broker instead. Swipes go through a daemon's simulated badge reader,
and absences come from its roster's tick; the page runs beside it with its own Roster over the
same store.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pytest

from appliance.clock import HALL_TZ, FakeClock
from appliance.config import load_config
from appliance.daemon import Daemon
from appliance.store import Store
from services.roster import VALIDATORS
from conftest import REPO, write_config
from contract import validate_message
from test_web import audit_actions, english, make_app, token
from test_web import as_role as _as_role

URINA, BATER, QIQIGE, ZHANG = "0012345678", "0087654321", "0011112222", "0099990000"
NEW_CARD = "0055550000"
STAFF = {
    "staff": [
        {"id": "s-001", "name": "乌日娜", "cards": [URINA], "windows": ["w1"]},
        {"id": "s-002", "name": "巴特尔", "cards": [BATER], "windows": ["w2"]},
        {"id": "s-003", "name": "其其格", "cards": [QIQIGE], "windows": ["w1", "w2"]},
        {"id": "s-009", "name": "张建国", "cards": [ZHANG], "leader": True},
        {"id": "s-010", "name": "李明", "cards": ["0010101010"], "windows": ["w2"], "active": False},
    ]
}
WORKDAYS = ["mon", "tue", "wed", "thu", "fri"]
SHIFTS = {
    "weekly": [
        {"staff": "s-001", "window": "w1", "days": WORKDAYS, "start": "08:30", "end": "17:30"},
        {"staff": "s-002", "window": "w2", "days": WORKDAYS, "start": "08:30", "end": "12:00"},
        {"staff": "s-002", "window": "w2", "days": WORKDAYS, "start": "14:30", "end": "17:30"},
    ],
    "leaders": {d: "s-009" for d in WORKDAYS},
}
DUTY = {
    "days": {
        "2026-10-05": {"leader": "s-009", "shifts": [{"staff": "s-003", "window": "w1", "start": "09:00", "end": "12:00"}]},
        "2026-10-10": {"as_weekday": "fri"},
    }
}
BADGE = '\n[badge]\nenabled = true\ndriver = "simulated"\n'


def wed(h: int, mi: int = 0) -> datetime:
    """Wednesday 25 November 2026, an ordinary working day."""
    return datetime(2026, 11, 25, h, mi, tzinfo=HALL_TZ)


@pytest.fixture
def hall_dir():
    # Short: the control socket's path must stay under 108 bytes.
    d = Path(tempfile.mkdtemp(prefix="hall-roster-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def config_path(hall_dir):
    path = write_config(hall_dir)
    path.write_text(path.read_text() + BADGE)
    return path


@pytest.fixture
def clock():
    return FakeClock(wed(8, 0))


# (name, scope, version, data) as the county sent them.
DOCUMENTS = [("staff", "device", 7, STAFF), ("shifts", "device", 3, SHIFTS), ("duty", "township", 12, DUTY)]


@pytest.fixture
def county(config_path):
    """The county's registry, shifts and duty roster, applied: kept in the store as the command router keeps them."""
    config = load_config(config_path)
    windows = {w.id: w.name for w in config.windows}
    store = Store(config.store.path, reserve_mb=0)
    try:
        with store.transaction() as conn:
            for name, scope, version, data in DOCUMENTS:
                store.save_state(conn, name, scope, version, VALIDATORS[name](data, windows), "2026-11-20T10:00:00+08:00")
    finally:
        store.close()


@pytest.fixture
def daemon(config_path, clock, county):
    """The daemon beside the page (no broker: it records and queues), for swipes and its roster's tick."""
    d = Daemon(load_config(config_path), clock=clock, simulate=True)
    d.start()
    assert d.roster.known
    yield d
    d.stop()


@pytest.fixture
def app(config_path, clock, county):
    # Tests move the clock by hours: keep the session from ending for want of use.
    app = make_app(config_path, clock, HALL_SESSION_IDLE_S=7 * 86400)
    yield app
    app.extensions["hall"].close()


def as_role(app, role: str, language: str = "en"):
    client = _as_role(app.test_client(), role)
    if language == "en":
        english(client)
    return client


def swipe(daemon: Daemon, card: str) -> dict:
    """A card on the daemon's (simulated) reader: what the roster made of it."""
    [read] = daemon.badge.swipe(card)
    return read["result"].as_dict()


def beside(response, field_id: str) -> str:
    """The message shown beside a form field."""
    match = re.search(rf'id="{re.escape(field_id)}-error"[^>]*>([^<]*)</p>', response.text)
    assert match, response.text
    return match.group(1).replace("&#39;", "'").replace("&#34;", '"').replace("&quot;", '"')


def outbox(app, event_type: str) -> list[dict]:
    """The events of ``event_type`` waiting in the outbox; each must match the MQTT contract."""
    rows = app.extensions["hall"].store.rows("SELECT topic, payload FROM outbox WHERE type = ? ORDER BY id", (event_type,))
    for topic, payload in rows:
        validate_message(topic, payload)
    return [json.loads(payload) for _topic, payload in rows]


def leave_form(**fields) -> dict:
    return {"staff_id": "s-002", "kind": "sick", "start_day": "2026-11-26", "start_time": "", "end_day": "2026-11-27", "end_time": "", "note": ""} | fields


def text(response) -> str:
    """The page's words, without tags."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.text))


# -- every route, every role ---------------------------------------------------------------------


PAGES = ["/roster", "/roster/week", "/roster/week?start=2026-10-05", "/roster/staff", "/roster/leave", "/roster/attendance", "/roster/attendance?verdict=late"]


@pytest.mark.parametrize("role", ["anonymous", "director", "county_it"])
def test_every_roster_route_answers_each_role(app, role):
    client = as_role(app, role) if role != "anonymous" else app.test_client()
    for path in PAGES:
        response = client.get(path)
        if role == "anonymous":
            assert response.status_code == 302 and response.headers["Location"].startswith("/login?next=/roster"), path
        else:
            assert response.status_code == 200, (path, response.text[:300])
    csrf = token(client, "/login")
    posts = [
        ("/roster/leave", leave_form()),
        ("/roster/cards", {"card": NEW_CARD, "staff_id": "s-003"}),
    ]
    for path, data in posts:
        response = client.post(path, data={"csrf_token": csrf, **data})
        assert response.status_code == (401 if role == "anonymous" else 303), (path, response.text[:300])
    leave_id = "00000000-0000-0000-0000-000000000000"
    if role != "anonymous":
        [(leave_id,)] = app.extensions["hall"].store.rows("SELECT id FROM leaves")
    response = client.post(f"/roster/leave/{leave_id}/end", data={"csrf_token": csrf})
    assert response.status_code == (401 if role == "anonymous" else 303)
    if role != "anonymous":
        who = {"director": "director", "county_it": "county-it"}[role]
        assert [a for a in audit_actions(app) if a[1].startswith("roster.")] == [(who, "roster.leave"), (who, "roster.card_registered"), (who, "roster.leave_ended")]
    # Read-only things stay read-only, and unknown things are not found.
    assert client.post("/roster/staff", data={"csrf_token": csrf}).status_code == 405
    assert client.get("/roster/cards").status_code == 405
    assert client.post("/roster/leave/not-a-leave/end", data={"csrf_token": csrf}).status_code == (401 if role == "anonymous" else 404)
    assert client.post("/roster/leave/11111111-1111-1111-1111-111111111111/end", data={"csrf_token": csrf}).status_code == (401 if role == "anonymous" else 404)


def test_an_anonymous_browser_is_sent_to_sign_in_and_brought_back(app):
    client = app.test_client()
    response = client.get("/roster/leave")
    assert response.status_code == 302 and response.headers["Location"] == "/login?next=/roster/leave"
    response = client.post("/login", data={"csrf_token": token(client), "username": "director", "password": "director-pass-1", "next": "/roster/leave"})
    assert response.headers["Location"] == "/roster/leave"


def test_the_roster_is_in_the_navigation_for_both_roles_and_in_chinese(app):
    for role in ("director", "county_it"):
        page = as_role(app, role, language="zh").get("/roster")
        assert '<a href="/roster" aria-current="page">值班考勤</a>' in page.text
        assert "<h1>今日值班" in page.text and "带班领导" in page.text and "工作日" in page.text


def test_a_role_other_than_director_or_county_it_is_refused(app):
    # Every account today is one or the other; the roster names both, so a role added later is not let in by default.
    from flask import g

    from appliance.accounts import Account

    for endpoint in ("roster.today", "roster.record_leave"):
        with app.test_request_context("/roster"):
            g.user = Account("visitor", "auditor", False, "en", "stamp")
            response = app.view_functions[endpoint]()
        assert response.status_code == 403
        assert "This page is for: hall director / county IT." in response.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/roster/leave", "/roster/cards", "/roster/leave/00000000-0000-0000-0000-000000000000/end"])
def test_a_form_without_its_csrf_token_is_400_and_changes_nothing(app, path):
    client = as_role(app, "director")
    data = leave_form() if path == "/roster/leave" else {"card": NEW_CARD, "staff_id": "s-003"}
    response = client.post(path, data=data)
    assert response.status_code == 400
    assert "This form has expired or did not come from this page, so nothing was saved." in response.text
    store = app.extensions["hall"].store
    assert store.rows("SELECT COUNT(*) FROM leaves")[0][0] == 0 and store.rows("SELECT COUNT(*) FROM local_cards")[0][0] == 0
    assert [a for a in audit_actions(app) if a[1].startswith("roster.")] == []


# -- today's duty and the week ---------------------------------------------------------------------


def test_today_shows_the_leader_and_each_windows_scheduled_and_present_staff(app, daemon, clock):
    swipe(daemon, URINA)
    clock.advance(40 * 60)  # 08:40: 巴特尔 is past his start, not yet absent
    page = text(as_role(app, "director").get("/roster"))
    assert "Today's duty 2026-11-25 · working day" in page
    assert "Leader on duty 张建国 not checked in" in page
    assert "综合受理窗口 w1 Scheduled Shift State 乌日娜 08:30–17:30 on time in the hall At the window now: 乌日娜" in page
    assert "社保医保窗口 w2 Scheduled Shift State 巴特尔 08:30–12:00 not checked in yet 巴特尔 14:30–17:30 not started At the window now: nobody" in page
    assert "Checked in now 1 Person Window Since Verdict 乌日娜 综合受理窗口 08:00 on time" in page
    # The page reads the store, not the daemon: it shows the same with the daemon stopped.
    daemon.stop()
    assert "At the window now: 乌日娜" in text(as_role(app, "county_it").get("/roster"))


def test_today_says_when_the_county_has_sent_no_registry(config_path, clock):
    app = make_app(config_path, clock)
    try:
        client = as_role(app, "director")
        assert "The county has not sent a staff registry yet" in client.get("/roster").text
        response = client.post("/roster/leave", data={"csrf_token": token(client, "/roster/leave"), **leave_form()})
        assert response.status_code == 422 and beside(response, "staff_id") == "s-002 is not in the staff registry; choose a person from the list."
    finally:
        app.extensions["hall"].close()


def test_the_week_marks_holidays_tiaoxiu_and_the_countys_duty_roster(app):
    client = as_role(app, "director")
    response = client.get("/roster/week?start=2026-10-05")
    assert response.status_code == 200
    days = {m.group(1): text_of(m.group(0)) for m in re.finditer(r'<section class="card day[^"]*" id="day-([0-9-]+)">.*?</section>', response.text, re.S)}
    assert list(days) == [f"2026-10-{d:02d}" for d in range(5, 12)]
    # National Day: only the county's duty roster for the date.
    assert days["2026-10-05"] == "Mon 2026-10-05 public holiday Leader on duty: 张建国 09:00–12:00 综合受理窗口 · 其其格 This day's roster is the county's duty roster for the date."
    assert days["2026-10-06"] == "Tue 2026-10-06 public holiday Leader on duty: — No shifts: the hall is closed."
    assert days["2026-10-08"].startswith("Thu 2026-10-08 Leader on duty: 张建国 08:30–17:30 综合受理窗口 · 乌日娜")
    # The Saturday worked for the holiday (调休) works Friday's shifts, as the county said.
    assert days["2026-10-10"].startswith("Sat 2026-10-10 weekend worked (调休) Leader on duty: 张建国 08:30–17:30 综合受理窗口 · 乌日娜")
    assert days["2026-10-11"] == "Sun 2026-10-11 weekend Leader on duty: — No shifts: the hall is closed."
    assert "Weekly shifts: from the county, version 3 (county, for this device) · Holiday duty and leaders: from the county, version 12 (township)" in text(response)
    assert 'href="/roster/week?start=2026-09-28"' in response.text and 'href="/roster/week?start=2026-10-12"' in response.text


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def test_the_week_defaults_to_this_week_and_marks_leave(app):
    client = as_role(app, "director")
    client.post("/roster/leave", data={"csrf_token": token(client, "/roster/leave"), **leave_form(start_day="2026-11-27", end_day="2026-11-27")})
    response = client.get("/roster/week")
    assert '<section class="card day day-workday today" id="day-2026-11-25">' in response.text
    friday = text_of(re.search(r'id="day-2026-11-27">.*?</section>', response.text, re.S).group(0))
    assert "08:30–12:00 社保医保窗口 · 巴特尔 on leave" in friday and "14:30–17:30 社保医保窗口 · 巴特尔 on leave" in friday
    thursday = text_of(re.search(r'id="day-2026-11-26">.*?</section>', response.text, re.S).group(0))
    assert "on leave" not in thursday


@pytest.mark.parametrize("start", ["2026-13-01", "next-week", "2026-1-5", "9999-12-31", "0001-01-01"])
def test_the_week_refuses_a_bad_start_day_clearly(app, start):
    response = as_role(app, "director").get(f"/roster/week?start={start}")
    assert response.status_code == 400
    assert f"start = {start}: not a day. Fix: write it as YYYY-MM-DD, e.g. 2026-11-25" in response.text


# -- staff and cards --------------------------------------------------------------------------------


def test_the_registry_is_shown_read_only_with_the_countys_version(app):
    response = as_role(app, "director").get("/roster/staff")
    page = text(response)
    assert "From the county, version 7 (county, for this device). The county manages the registry" in page
    assert "乌日娜 s-001 综合受理窗口 1 yes" in page and "其其格 s-003 综合受理窗口、社保医保窗口 1 yes" in page
    assert "李明 s-010 社保医保窗口 1 no" in page
    assert URINA not in response.text  # the county's card numbers are not shown
    forms = re.findall(r'<form method="post" action="([^"]+)"', response.text)
    assert forms == ["/logout", "/language", "/roster/cards"]  # nothing here edits the registry


def test_an_unknown_card_just_swiped_is_given_to_a_person_audited_and_then_checks_them_in(app, daemon, clock):
    assert swipe(daemon, NEW_CARD)["outcome"] == "unknown_card"
    client = as_role(app, "director")
    page = client.get("/roster/staff")
    assert re.search(rf"<code>{NEW_CARD}</code></td><td>not registered</td><td[^>]*>2026-11-25 08:00:00</td><td[^>]*>1</td>", page.text)
    assert f'href="/roster/staff?card={NEW_CARD}#register"' in page.text
    prefilled = client.get(f"/roster/staff?card={NEW_CARD}")
    assert re.search(rf'<input [^>]*id="card"[^>]*value="{NEW_CARD}"', prefilled.text)
    clock.advance(20)  # the person swipes again well within the duplicate interval
    response = client.post("/roster/cards", data={"csrf_token": token(client, "/roster/staff"), "card": NEW_CARD.lower(), "staff_id": "s-003"})
    assert response.status_code == 303 and response.headers["Location"] == "/roster/staff"
    page = client.get("/roster/staff")
    assert f"Card {NEW_CARD} now checks in 其其格. The county is told, so it can add the card to the staff registry." in page.text
    assert f"<code>{NEW_CARD}</code></td><td class=\"nowrap\">其其格</td><td><code>director</code></td>" in page.text  # registered here
    assert "Cards swiped that nobody owns None." in text(page)
    [event] = outbox(app, "attendance.card_registered")
    assert event["data"] == {"card": NEW_CARD, "staff_id": "s-003", "name": "其其格", "recorded_by": "director"}
    [entry] = app.extensions["hall"].accounts.audit_log(1, "roster.card_registered")
    assert entry.username == "director" and entry.detail == {"card": NEW_CARD, "staff_id": "s-003", "name": "其其格", "event_id": event["event_id"]}
    assert entry.at == "2026-11-25T08:00:20+08:00"
    # The daemon never heard of the page's roster; the card works there at once.
    result = swipe(daemon, NEW_CARD)
    assert (result["outcome"], result["staff_id"], result["window"]) == ("checked_in", "s-003", "w1")
    assert "其其格 综合受理窗口 08:00 no shift" in text(client.get("/roster"))


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"card": "", "staff_id": "s-003"}, "card", "Enter the card number, or choose one of the cards just swiped."),
        ({"card": "12-34", "staff_id": "s-003"}, "card", "12-34 is not a card number: 4 to 64 digits (0-9, or A-F for a hex reader), as the reader types them."),
        ({"card": "1" * 65, "staff_id": "s-003"}, "card", "Use at most 64 characters."),
        ({"card": URINA, "staff_id": "s-003"}, "card", f"Not saved: card {URINA} already belongs to 乌日娜 (s-001) in the county's staff registry"),
        ({"card": NEW_CARD, "staff_id": ""}, "staff_id", "Choose a person."),
        ({"card": NEW_CARD, "staff_id": "s-404"}, "staff_id", "s-404 is not in the staff registry; choose a person from the list."),
        ({"card": NEW_CARD, "staff_id": "s-010"}, "staff_id", "李明 is inactive in the staff registry."),
    ],
)
def test_registering_a_card_refuses_bad_input_beside_the_field(app, data, field, message):
    client = as_role(app, "county_it")
    response = client.post("/roster/cards", data={"csrf_token": token(client, "/roster/staff"), **data})
    assert response.status_code == 422
    assert beside(response, field) == message
    assert outbox(app, "attendance.card_registered") == [] and app.extensions["hall"].accounts.audit_log(5, "roster.card_registered") == []


def test_a_card_registered_here_already_is_refused_by_the_roster(app):
    client = as_role(app, "director")
    client.post("/roster/cards", data={"csrf_token": token(client, "/roster/staff"), "card": NEW_CARD, "staff_id": "s-003"})
    response = client.post("/roster/cards", data={"csrf_token": token(client, "/roster/staff"), "card": NEW_CARD, "staff_id": "s-001"})
    assert response.status_code == 422
    assert beside(response, "card") == f"Not saved: card {NEW_CARD} was already registered on this device to 其其格"


def test_the_rosters_refusals_are_in_chinese_on_the_chinese_page(app):
    client = as_role(app, "director", "zh_Hans")
    response = client.post("/roster/cards", data={"csrf_token": token(client, "/roster/staff"), "card": URINA, "staff_id": "s-003"})
    assert response.status_code == 422
    assert beside(response, "card") == f"未保存：卡号 {URINA} 在县人员名册中已属于 乌日娜（s-001）"
    client.post("/roster/leave", data={"csrf_token": token(client, "/roster/leave"), **leave_form()})
    response = client.post("/roster/leave", data={"csrf_token": token(client, "/roster/leave"), **leave_form(kind="personal", start_day="2026-11-27", end_day="2026-11-30")})
    assert response.status_code == 422
    assert beside(response, "start_day") == "未保存：巴特尔 在 2026-11-26 00:00 至 2026-11-28 00:00 已有请假；请先销假或另选日期"


# -- leave (请假) and 销假 ----------------------------------------------------------------------------


def test_leave_is_recorded_listed_sent_to_the_county_and_audited(app):
    client = as_role(app, "director")
    response = client.post("/roster/leave", data={"csrf_token": token(client, "/roster/leave"), **leave_form(note=" 住院 ")})
    assert response.status_code == 303 and response.headers["Location"] == "/roster/leave"
    page = client.get("/roster/leave")
    assert "Leave recorded: 巴特尔, sick leave, 2026-11-26 – 2026-11-27." in page.text
    assert "巴特尔 sick leave 住院 2026-11-26 – 2026-11-27 director Withdraw" in text(page)
    [event] = outbox(app, "attendance.leave")
    assert event["stream"] == "person"
    data = event["data"]
    assert (data["staff_id"], data["kind"], data["start"], data["end"], data["note"], data["recorded_by"]) == ("s-002", "sick", "2026-11-26T00:00:00+08:00", "2026-11-28T00:00:00+08:00", "住院", "director")
    [entry] = app.extensions["hall"].accounts.audit_log(1, "roster.leave")
    assert entry.username == "director" and entry.detail["leave_id"] == data["leave_id"] == event["event_id"] and entry.detail["note"] == "住院"


def test_part_of_a_day_is_leave_to_the_minute(app):
    client = as_role(app, "county_it")
    client.post("/roster/leave", data={"csrf_token": token(client, "/roster/leave"), **leave_form(kind="business", start_day="2026-11-25", start_time="14:30", end_day="2026-11-25", end_time="17:30")})
    [event] = outbox(app, "attendance.leave")
    assert (event["data"]["start"], event["data"]["end"]) == ("2026-11-25T14:30:00+08:00", "2026-11-25T17:30:00+08:00")
    assert "Leave recorded: 巴特尔, away on official business, 2026-11-25 14:30 – 2026-11-25 17:30." in client.get("/roster/leave").text


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"staff_id": ""}, "staff_id", "Choose a person."),
        ({"staff_id": "s-404"}, "staff_id", "s-404 is not in the staff registry; choose a person from the list."),
        ({"staff_id": "s-010"}, "staff_id", "李明 is inactive in the staff registry."),
        ({"kind": ""}, "kind", "Choose the kind of leave."),
        ({"kind": "holiday"}, "kind", "Choose one of the kinds of leave offered."),
        ({"start_day": ""}, "start_day", "Enter the first day of the leave."),
        ({"start_day": "2026-02-30"}, "start_day", "2026-02-30 is not a day: write it as YYYY-MM-DD, e.g. 2026-11-25."),
        ({"end_day": "27/11/2026"}, "end_day", "27/11/2026 is not a day: write it as YYYY-MM-DD, e.g. 2026-11-25."),
        ({"start_time": "25:00"}, "start_time", "25:00 is not a time: write it as HH:MM, e.g. 14:30, or leave it empty for the whole day."),
        ({"end_day": "2026-11-25"}, "end_day", "The leave must end after it starts (2026-11-26 00:00)."),
        ({"end_day": "2026-11-26", "start_time": "15:00", "end_time": "09:00"}, "end_day", "The leave must end after it starts (2026-11-26 15:00)."),
        ({"note": "字" * 201}, "note", "Use at most 200 characters."),
        ({"end_day": "2027-12-31"}, "end_day", "Not saved: leave of more than a year is recorded in parts"),
        ({"end_day": "9999-12-31"}, "end_day", "9999-12-31 is not a day: write it as YYYY-MM-DD, e.g. 2026-11-25."),
        ({"start_day": "0001-01-01", "end_day": "0001-01-01"}, "start_day", "0001-01-01 is not a day: write it as YYYY-MM-DD, e.g. 2026-11-25."),
    ],
)
def test_bad_leave_is_refused_beside_the_field(app, fields, field, message):
    client = as_role(app, "director")
    response = client.post("/roster/leave", data={"csrf_token": token(client, "/roster/leave"), **leave_form(**fields)})
    assert response.status_code == 422
    assert beside(response, field) == message
    assert outbox(app, "attendance.leave") == [] and app.extensions["hall"].accounts.audit_log(5, "roster.leave") == []


def test_overlapping_leave_is_refused_by_the_roster_beside_the_first_day(app):
    client = as_role(app, "director")
    client.post("/roster/leave", data={"csrf_token": token(client, "/roster/leave"), **leave_form()})
    response = client.post("/roster/leave", data={"csrf_token": token(client, "/roster/leave"), **leave_form(kind="personal", start_day="2026-11-27", end_day="2026-11-30")})
    assert response.status_code == 422
    assert beside(response, "start_day") == "Not saved: 巴特尔 already has leave from 2026-11-26 00:00 to 2026-11-28 00:00; end it (销假) or choose other dates"
    # What was typed stays in the form.
    assert re.search(r'<input [^>]*id="end_day"[^>]*type="date" value="2026-11-30"', response.text)


def test_leave_recorded_after_an_absence_cancels_it_on_the_page(app, daemon, clock):
    clock.advance(61 * 60)  # 09:01: 巴特尔 was due by 09:00
    assert daemon.roster.tick() >= 1
    [absent] = [e for e in outbox(app, "attendance.absent") if e["data"]["staff_id"] == "s-002"]
    client = as_role(app, "director")
    assert "巴特尔 08:30–12:00 absent" in text(client.get("/roster"))
    record = text(client.get("/roster/attendance?verdict=absent"))
    assert "2026-11-25 巴特尔 社保医保窗口 absent shift from 08:30" in record and "cancelled" not in record

    client.post("/roster/leave", data={"csrf_token": token(client, "/roster/leave"), **leave_form(start_day="2026-11-25", end_day="2026-11-25")})
    assert "Leave recorded: 巴特尔, sick leave, 2026-11-25. It cancels 1 absence already reported." in client.get("/roster/leave").text
    [event] = outbox(app, "attendance.leave")
    assert event["data"]["cancels"] == [absent["event_id"]]
    today = text(client.get("/roster"))
    assert "巴特尔 08:30–12:00 on leave 巴特尔 14:30–17:30 on leave" in today
    assert "On leave today 1 巴特尔 · sick leave 2026-11-25" in today
    assert "2026-11-25 巴特尔 社保医保窗口 absent shift from 08:30 cancelled: on leave" in text(client.get("/roster/attendance?verdict=absent"))
    # The daemon's afternoon check agrees: no second absence for someone on leave.
    clock.advance(6 * 3600)
    daemon.roster.tick()
    assert [e["data"]["staff_id"] for e in outbox(app, "attendance.absent")] == ["s-001", "s-002"]  # 乌日娜 this morning


def test_xiaojia_ends_running_leave_and_withdraws_leave_not_yet_begun(app, clock):
    client = as_role(app, "director")
    csrf = token(client, "/roster/leave")
    client.post("/roster/leave", data={"csrf_token": csrf, **leave_form(start_day="2026-11-24", end_day="2026-11-26")})
    client.post("/roster/leave", data={"csrf_token": csrf, **leave_form(staff_id="s-001", kind="annual", start_day="2026-12-01", end_day="2026-12-04")})
    running, coming = (r[0] for r in app.extensions["hall"].store.rows("SELECT id FROM leaves ORDER BY start_at"))
    page = client.get("/roster/leave")
    assert f'action="/roster/leave/{running}/end"' in page.text and "销假 (back now)" in page.text and "Withdraw" in page.text

    clock.advance(3600)
    response = client.post(f"/roster/leave/{running}/end", data={"csrf_token": csrf})
    assert response.status_code == 303
    page = client.get("/roster/leave")
    assert "巴特尔 is back (销假) from 2026-11-25 09:00; later shifts are judged again." in page.text
    assert f'id="leave-{running}"' not in page.text  # over now: it leaves the list
    [ended] = outbox(app, "attendance.leave_ended")
    assert ended["data"] | {"leave_id": "…"} == {"leave_id": "…", "staff_id": "s-002", "name": "巴特尔", "ended_at": "2026-11-25T09:00:00+08:00", "planned_end": "2026-11-27T00:00:00+08:00", "withdrawn": False, "recorded_by": "director"}
    assert "巴特尔 · sick leave" not in text(client.get("/roster"))

    again = client.post(f"/roster/leave/{running}/end", data={"csrf_token": csrf})
    assert again.status_code == 422
    assert beside(again, "end-leave") == "Not saved: this leave was already ended (销假) at 2026-11-25 09:00"

    assert client.post(f"/roster/leave/{coming}/end", data={"csrf_token": csrf}).status_code == 303
    page = client.get("/roster/leave")
    assert "The leave of 乌日娜 is withdrawn: it had not begun." in page.text
    assert "withdrawn by director" in page.text
    assert [a for a in audit_actions(app) if a[1].startswith("roster.")] == [("director", "roster.leave")] * 2 + [("director", "roster.leave_ended")] * 2


def test_leave_already_over_cannot_be_ended(app, clock):
    client = as_role(app, "director")
    csrf = token(client, "/roster/leave")
    client.post("/roster/leave", data={"csrf_token": csrf, **leave_form(start_day="2026-11-25", start_time="08:00", end_day="2026-11-25", end_time="10:00")})
    [(leave_id,)] = app.extensions["hall"].store.rows("SELECT id FROM leaves")
    page = client.get("/roster/leave")  # the page is left open past the end of the leave
    assert f'action="/roster/leave/{leave_id}/end"' in page.text
    clock.advance(3 * 3600)
    response = client.post(f"/roster/leave/{leave_id}/end", data={"csrf_token": csrf})
    assert response.status_code == 422
    assert beside(response, "end-leave") == "Not saved: the leave is already over: it ended at 2026-11-25 10:00"


# -- the attendance record ----------------------------------------------------------------------------


def test_the_attendance_record_filters_by_days_person_and_verdict(app, daemon, clock):
    swipe(daemon, URINA)  # 08:00, on time
    clock.advance(50 * 60)
    swipe(daemon, BATER)  # 08:50: late by 20 minutes
    clock.advance(3 * 3600)
    swipe(daemon, URINA)  # 11:50: leaves early
    clock.advance((datetime(2026, 11, 25, 22, 0, tzinfo=HALL_TZ) - clock.now()).total_seconds())
    daemon.roster.tick()  # 22:00: 巴特尔 never checked out
    clock.advance(11 * 3600 + 5 * 60)
    daemon.roster.tick()  # Thursday 09:05: both absent
    client = as_role(app, "director")

    everything = text(client.get("/roster/attendance"))
    assert "Check-ins and absences 4" in everything
    assert "2026-11-26 乌日娜 综合受理窗口 absent shift from 08:30" in everything
    assert "2026-11-26 巴特尔 社保医保窗口 absent shift from 08:30" in everything
    late = text(client.get("/roster/attendance?verdict=late"))
    assert "Check-ins and absences 1" in late and "2026-11-25 巴特尔 社保医保窗口 08:50 late 20 min no check-out" in late
    assert "Check-ins and absences 1" in text(client.get("/roster/attendance?verdict=missed_checkout"))
    assert "Check-ins and absences 2" in text(client.get("/roster/attendance?verdict=absent"))
    early = text(client.get("/roster/attendance?verdict=early_leave"))
    assert "2026-11-25 乌日娜 综合受理窗口 08:00 on time 11:50 left early 340 min" in early
    one_day = text(client.get("/roster/attendance?first_day=2026-11-26&last_day=2026-11-26&staff_id=s-001"))
    assert "Check-ins and absences 1" in one_day and "乌日娜 综合受理窗口 absent" in one_day
    nobody = text(client.get("/roster/attendance?first_day=2026-11-20&last_day=2026-11-24"))
    assert "Check-ins and absences 0" in nobody and "Nothing recorded for these filters." in nobody


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("first_day=2026-02-30", "first_day", "2026-02-30 is not a day: write it as YYYY-MM-DD, e.g. 2026-11-25."),
        ("last_day=yesterday", "last_day", "yesterday is not a day: write it as YYYY-MM-DD, e.g. 2026-11-25."),
        ("first_day=0001-01-01&last_day=0001-01-02", "first_day", "0001-01-01 is not a day: write it as YYYY-MM-DD, e.g. 2026-11-25."),
        ("first_day=9999-12-30&last_day=9999-12-31", "first_day", "9999-12-30 is not a day: write it as YYYY-MM-DD, e.g. 2026-11-25."),
        ("first_day=2026-11-26&last_day=2026-11-25", "first_day", "The first day must not be after the last day."),
        ("first_day=2026-01-01&last_day=2026-11-25", "first_day", "Show at most 92 days at once."),
        ("staff_id=s-404", "staff_id", "s-404 is not in the staff registry; choose a person from the list."),
        ("verdict=asleep", "verdict", "Choose one of the verdicts offered."),
    ],
)
def test_the_attendance_filters_refuse_bad_input_beside_the_field(app, query, field, message):
    response = as_role(app, "county_it").get(f"/roster/attendance?{query}")
    assert response.status_code == 400
    assert beside(response, field) == message


# -- the real thing: `hall-appliance simulate` in Chromium ----------------------------------------------


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="/usr/bin/chromium is not installed (apt-get install chromium; `make test` does)")
def test_director_on_a_phone_reads_todays_duty_and_records_leave(simulator, browser, tmp_path):
    from playwright.sync_api import expect

    from appliance.control import ControlClient

    assert simulator.broker, "the simulator started no private Mosquitto (apt-get install mosquitto)"
    today = datetime.now(HALL_TZ).date().isoformat()
    # The county's retained desired state on the simulator's broker, as from the county's publisher.
    import paho.mqtt.client as mqtt

    base = "hall/v1/sim-county/sim-township/sim-hall-01/set"
    county = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-county-publisher", protocol=mqtt.MQTTv5)
    county.connect(*simulator.broker)
    county.loop_start()
    try:
        documents = {
            "staff": {"staff": STAFF["staff"][:4]},
            "duty": {"days": {today: {"leader": "s-009", "shifts": [
                {"staff": "s-001", "window": "w1", "start": "00:00", "end": "23:59"},
                {"staff": "s-002", "window": "w2", "start": "00:00", "end": "23:59"},
            ]}}},
        }
        for name, data in documents.items():
            county.publish(f"{base}/{name}", json.dumps({"version": 1, "data": data}), qos=1, retain=True).wait_for_publish(10)
    finally:
        county.disconnect()
        county.loop_stop()
    control = ControlClient(simulator.config.parent / "control.sock")
    deadline = time.monotonic() + 10
    while set(control.call("status")["applied"]) < {"staff", "duty"}:
        assert time.monotonic() < deadline, control.call("status")["applied"]
        time.sleep(0.1)
    r = subprocess.run([sys.executable, "-m", "appliance.cli", "sim", "--config", str(simulator.config), "badge", URINA], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and '"checked_in"' in r.stdout, r.stdout + r.stderr

    page = browser(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
    sign_in(page, simulator, "director")
    page.click("nav >> text=值班考勤")
    expect(page.locator("h1")).to_contain_text("今日值班")
    expect(page.locator("#leader")).to_contain_text("张建国")
    expect(page.locator("#window-w1")).to_contain_text(re.compile(r"此刻在窗口：\s*乌日娜"))
    expect(page.locator("#window-w2")).to_contain_text("巴特尔")

    page.click(".tabs >> text=请销假")
    page.select_option("#staff_id", "s-002")
    page.select_option("#kind", "sick")
    page.fill("#start_day", today)
    page.fill("#end_day", today)
    page.fill("#note", "发烧")
    page.click("#record-leave button[type=submit]")
    expect(page.locator(".flash")).to_contain_text(f"已记录请假：巴特尔，病假，{today}。")
    expect(page.locator("#leaves")).to_contain_text("发烧")
    for path in ("/roster", "/roster/week", "/roster/staff", "/roster/leave", "/roster/attendance"):
        page.goto(simulator.url.rstrip("/") + path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (path, overflow)
    page.goto(simulator.url + "roster")
    expect(page.locator("#window-w2")).to_contain_text("请假")
    screenshot(page, tmp_path / "roster-phone.png")

    # The page's event leaves through the daemon's uplink although no listener of the daemon's
    # store heard it being written: the broker takes it (PUBACK) within moments.
    store = sqlite3.connect(f"file:{simulator.config.parent / 'hall.db'}?mode=ro", uri=True)
    try:
        deadline = time.monotonic() + 10
        while store.execute("SELECT state FROM outbox WHERE type = 'attendance.leave'").fetchone()[0] == "pending":
            assert time.monotonic() < deadline, "the leave was never published"
            time.sleep(0.1)
    finally:
        store.close()


from test_web_browser import browser, screenshot, sign_in, simulator  # noqa: E402,F401 - the browser fixtures, shared

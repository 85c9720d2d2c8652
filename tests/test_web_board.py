"""The board page: every route and role, an item's good and bad input with the exact messages, the
preview, ending, the county's items read-only, what is recorded and audited, and the daemon's
board taking a change.

The county's items are in the store as the daemon's command router keeps them once applied; the
hall's are written only through the page. The daemon runs in this process with the emulated
board and a fake clock on a Wednesday morning, so the hall is open and the board is lit.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import sqlite3
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from appliance.clock import HALL_TZ, FakeClock
from appliance.config import load_config
from appliance.daemon import Daemon
from appliance.store import Store
from services.board import Font, Renderer
from conftest import write_config
from test_web import audit_actions, english, make_app, token
from test_web import as_role as _as_role

DISPLAY = '[display]\nenabled = true\ndriver = "emulator"\nwidth = 128\nheight = 16\n\n'
COUNTY = {"items": [{"id": "yibao-2026", "kind": "policy", "text": "城乡居民医保缴费截至12月31日", "end": "2026-12-31", "priority": 7}]}
TOWNSHIP = {"items": [{"id": "jobs-1125", "kind": "job", "text": "镇养殖合作社招工两名", "start": "2026-11-20", "version": 2}]}
NOTICE = "本周五下午停电检修"  # fits the board: held, centred
LONG = "二〇二六年度城乡居民医疗保险集中缴费期为十一月一日至十二月三十一日，请按时缴费"  # scrolls


def wed(h: int, mi: int = 0) -> datetime:
    """Wednesday 25 November 2026, an ordinary working day."""
    return datetime(2026, 11, 25, h, mi, tzinfo=HALL_TZ)


@pytest.fixture(scope="module")
def font():
    return Font()


@pytest.fixture
def hall_dir():
    # Short: the control socket's path must stay under 108 bytes.
    d = Path(tempfile.mkdtemp(prefix="hall-board-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def config_path(hall_dir):
    path = write_config(hall_dir)
    path.write_text(path.read_text().replace("[control]", DISPLAY + "[control]"))
    return path


@pytest.fixture
def clock():
    return FakeClock(wed(10, 0))


@pytest.fixture
def county(config_path):
    """The county's board items, applied at two scopes, as the command router keeps them."""
    store = Store(load_config(config_path).store.path, reserve_mb=0)
    try:
        with store.transaction() as conn:
            store.save_state(conn, "board", "county", 4, COUNTY, "2026-11-20T10:00:00+08:00")
            store.save_state(conn, "board", "township", 9, TOWNSHIP, "2026-11-20T10:00:00+08:00")
    finally:
        store.close()


@pytest.fixture
def app(config_path, clock, county):
    app = make_app(config_path, clock, HALL_SESSION_IDLE_S=7 * 86400)
    yield app
    app.extensions["hall"].close()


@pytest.fixture
def daemon(config_path, clock, county):
    """The daemon beside the page, driving the emulated board (no broker: it records and queues)."""
    d = Daemon(load_config(config_path), clock=clock, simulate=True)
    d.start()
    yield d
    d.stop()


def as_role(app, role: str, language: str = "en"):
    client = _as_role(app.test_client(), role)
    if language == "en":
        english(client)
    return client


def item_form(**fields) -> dict:
    return {"kind": "announcement", "text": NOTICE, "start": "", "end": "", "priority": "5", "schedule": "", "action": "save"} | fields


def post_item(client, path: str = "/board/new", **fields):
    return client.post(path, data={"csrf_token": token(client, "/board/new"), **item_form(**fields)})


def beside(response, field_id: str) -> str:
    """The message shown beside a form field."""
    match = re.search(rf'id="{re.escape(field_id)}-error"[^>]*>([^<]*)</p>', response.text)
    assert match, response.text
    return match.group(1).replace("&#39;", "'").replace("&#34;", '"').replace("&quot;", '"').replace("&amp;", "&")


def text(response) -> str:
    """The page's words, without tags."""
    return text_of(response.text)


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace("&#39;", "'").strip()


def hall_state(app) -> tuple[int, list[dict]] | None:
    found = app.extensions["hall"].store.applied_state("board").get("hall")
    return (found[0], found[1]["items"]) if found else None


def events(app, event_type: str = "board.hall_items") -> list[dict]:
    rows = app.extensions["hall"].store.rows("SELECT payload FROM outbox WHERE type = ? ORDER BY id", (event_type,))
    return [json.loads(payload) for (payload,) in rows]


def board_audit(app) -> list[tuple[str, str]]:
    return [a for a in audit_actions(app) if a[1].startswith("board.")]


def lit(png: bytes) -> Image.Image:
    """A 1-LED-per-pixel preview as a 1-bit picture: palette index 1 is a lit LED."""
    picture = Image.open(io.BytesIO(png))
    assert picture.mode == "P" and picture.getpalette()[:6] == [52, 14, 10, 255, 64, 32]
    return Image.frombytes("L", picture.size, picture.tobytes()).point(lambda v: 255 if v else 0).convert("1")


def preview_of(response) -> bytes:
    match = re.search(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" width="(\d+)" height="(\d+)"', response.text)
    assert match, response.text[:2000]
    return base64.b64decode(match.group(1))


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and a.convert("1").tobytes() == b.convert("1").tobytes()


# -- every route, every role -------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["anonymous", "director", "county_it"])
def test_every_board_route_answers_each_role(app, role):
    client = as_role(app, role) if role != "anonymous" else app.test_client()
    for path in ("/board", "/board/new", "/board/frame.png"):
        response = client.get(path)
        if role == "anonymous":
            assert response.status_code == 302 and response.headers["Location"] == f"/login?next={path}", path
        else:
            # The daemon is down: the page works, the live frame is not available.
            assert response.status_code == (503 if path.endswith(".png") else 200), (path, response.text[:300])
    csrf = token(client, "/login")
    response = client.post("/board/new", data={"csrf_token": csrf, **item_form()})
    assert response.status_code == (401 if role == "anonymous" else 303), response.text[:300]
    item_id = "hall-20261125-1"
    if role != "anonymous":
        assert client.get(f"/board/items/{item_id}").status_code == 200
    response = client.post(f"/board/items/{item_id}", data={"csrf_token": csrf, **item_form(text="本周五下午停电检修，请相互转告")})
    assert response.status_code == (401 if role == "anonymous" else 303)
    response = client.post(f"/board/items/{item_id}/end", data={"csrf_token": csrf})
    assert response.status_code == (401 if role == "anonymous" else 303)
    if role != "anonymous":
        who = {"director": "director", "county_it": "county-it"}[role]
        assert board_audit(app) == [(who, "board.added"), (who, "board.changed"), (who, "board.ended")]
    # Unknown items are not found, a malformed id never reaches the store, GET does not end.
    for path in ("/board/items/no-such-item", "/board/items/-not-an-id"):
        assert client.get(path).status_code == (302 if role == "anonymous" else 404), path
    assert client.post("/board/items/no-such-item/end", data={"csrf_token": csrf}).status_code == (401 if role == "anonymous" else 404)
    assert client.get(f"/board/items/{item_id}/end").status_code == 405
    assert client.post("/board", data={"csrf_token": csrf}).status_code == 405


def test_a_role_other_than_director_or_county_it_is_refused(app):
    from flask import g

    from appliance.accounts import Account

    for endpoint in ("board.index", "board.add", "board.frame"):
        with app.test_request_context("/board"):
            g.user = Account("visitor", "auditor", False, "en", "stamp")
            response = app.view_functions[endpoint]()
        assert response.status_code == 403
        assert "This page is for: hall director / county IT." in response.get_data(as_text=True)


def test_the_board_is_in_the_navigation_in_chinese(app):
    page = as_role(app, "director", language="zh").get("/board")
    assert '<a href="/board" aria-current="page">LED 显示屏</a>' in page.text
    assert "<h1>LED 显示屏</h1>" in page.text and "旗县区的内容" in page.text


@pytest.mark.parametrize("path", ["/board/new", "/board/items/hall-20261125-1", "/board/items/hall-20261125-1/end"])
def test_a_form_without_its_csrf_token_is_400_and_changes_nothing(app, path):
    client = as_role(app, "director")
    assert post_item(client).status_code == 303
    before = hall_state(app)
    response = client.post(path, data=item_form(text="改过的文字"))
    assert response.status_code == 400
    assert "This form has expired or did not come from this page, so nothing was saved." in response.text
    assert hall_state(app) == before and len(events(app)) == 1 and board_audit(app) == [("director", "board.added")]


# -- an item's input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, field, message",
    [
        ({"text": "   \n  "}, "text", "Enter the text to show."),
        ({"text": "政" * 501}, "text", "The text has 501 characters; the board takes at most 500 (that already scrolls for about four minutes). Shorten it or split it into several items."),
        ({"text": "通知𠀀：活动😀取消𠀀"}, "text", "These characters are not in the board's font: 𠀀 😀"),
        ({"text": "通知\u200b取消"}, "text", "Remove the control or invisible characters: U+200B"),
        ({"text": "ᠮᠣᠩᠭᠣᠯ"}, "text", "The board cannot show traditional Mongolian script (it would draw the letters unjoined, left to right): put the Mongolian text on the printed notice."),
        ({"kind": "weather"}, "kind", "Choose one of the kinds offered."),
        ({"kind": ""}, "kind", "Choose what kind of item it is."),
        ({"start": "2026-11-26T09:00", "end": "2026-11-26T08:00"}, "end", "The item must end after it starts (2026-11-26 09:00)."),
        ({"start": "26/11/2026"}, "start", "26/11/2026 is not a date and time: write it as YYYY-MM-DD HH:MM, e.g. 2026-11-25 10:00, or leave it empty."),
        ({"end": "2026-02-30T09:00"}, "end", "2026-02-30T09:00 is not a date and time: write it as YYYY-MM-DD HH:MM, e.g. 2026-11-25 10:00, or leave it empty."),
        ({"end": "2026-11-25T09:59"}, "end", "This end (2026-11-25 09:59) has already passed, so the item would never be shown. To take an item off the board, use “End” in the list."),
        ({"kind": "urgent"}, "end", "An urgent item takes over the board until it ends: give its end."),
        ({"priority": "10"}, "priority", "Choose a priority from 1 (lowest) to 9 (highest)."),
        ({"priority": "²"}, "priority", "Choose a priority from 1 (lowest) to 9 (highest)."),
        ({"end": "2100-12-31"}, "end", "2100-12-31 is not a date and time: write it as YYYY-MM-DD HH:MM, e.g. 2026-11-25 10:00, or leave it empty."),
        ({"schedule": "8-12"}, "schedule", "8-12 is not a span of the day: write it as HH:MM-HH:MM, e.g. 08:00-12:00; separate several with commas."),
        ({"schedule": "12:00-08:00"}, "schedule", "12:00-08:00 ends before it starts."),
        ({"schedule": "08:00-12:00, 11:00-13:00"}, "schedule", "08:00-12:00 and 11:00-13:00 overlap."),
    ],
)
def test_bad_item_input_is_422_with_the_message_beside_the_field_and_saves_nothing(app, fields, field, message):
    client = as_role(app, "director")
    for action in ("save", "preview"):
        response = post_item(client, action=action, **fields)
        assert response.status_code == 422
        assert beside(response, field) == message
        assert "data:image/png" not in response.text
    assert hall_state(app) is None and events(app) == [] and board_audit(app) == []


def test_every_problem_is_shown_at_once(app):
    response = post_item(as_role(app, "director"), kind="weather", text="", schedule="9-5", priority="0")
    assert response.status_code == 422
    assert beside(response, "kind") == "Choose one of the kinds offered."
    assert beside(response, "text") == "Enter the text to show."
    assert beside(response, "schedule").startswith("9-5 is not a span of the day")
    assert beside(response, "priority") == "Choose a priority from 1 (lowest) to 9 (highest)."


def test_a_missing_glyph_is_named_in_chinese(app):
    client = as_role(app, "director", language="zh")
    response = post_item(client, text="办事指南𠀀")
    assert response.status_code == 422
    assert beside(response, "text") == "这些字符屏幕字体没有: 𠀀"
    assert 'aria-invalid="true"' in response.text


def test_a_good_item_is_saved_with_its_event_and_audit_row_as_the_next_version(app, clock):
    client = as_role(app, "director")
    response = post_item(client, text="本周五下午  停电\n检修", start="2026-11-25T13:00", end="2026-11-27", priority="7", schedule="08:00-12:00，14:30-17:30")
    assert response.status_code == 303 and response.headers["Location"] == "/board#item-hall-20261125-1"
    item = {
        "id": "hall-20261125-1", "kind": "announcement", "text": "本周五下午 停电 检修", "priority": 7, "version": 1,
        "start": "2026-11-25T13:00:00+08:00", "end": "2026-11-28T00:00:00+08:00", "schedule": ["08:00-12:00", "14:30-17:30"],
    }
    assert hall_state(app) == (1, [item])
    [event] = events(app)
    assert event["stream"] == "person" and event["type"] == "board.hall_items"
    assert event["data"] == {"version": 1, "action": "added", "item_id": "hall-20261125-1", "item": item, "ids": ["hall-20261125-1"], "recorded_by": "director"}
    [entry] = [e for e in app.extensions["hall"].accounts.audit_log(5) if e.action == "board.added"]
    assert entry.detail == {"item_id": "hall-20261125-1", "version": 1, "event_id": event["event_id"]} and entry.username == "director"
    # The daemon is down: the change waits for it.
    page = client.get("/board")
    assert "The board did not take the change now (the appliance daemon is not running" in page.text
    assert "it applies when the daemon next starts." in page.text
    # A second item gets the next number; the list is version 2.
    clock.advance(60)
    post_item(client, text="医保缴费请到二号窗口")
    version, items = hall_state(app)
    assert version == 2 and [i["id"] for i in items] == ["hall-20261125-1", "hall-20261125-2"]
    assert events(app)[-1]["data"]["ids"] == ["hall-20261125-1", "hall-20261125-2"]


def test_the_list_shows_the_halls_items_with_actions_and_the_countys_read_only(app):
    client = as_role(app, "director")
    post_item(client, text=NOTICE, start="2026-11-26T08:00")
    page = client.get("/board")
    assert page.status_code == 200
    words = text(page)
    assert "The hall's items version 1" in words
    assert "announcement hall-20261125-1 本周五下午停电检修 from 2026-11-26 08:00 5 not begun yet Edit Withdraw" in words
    assert "policy notice (惠农政策) yibao-2026 城乡居民医保缴费截至12月31日 until 2027-01-01 00:00 7 in the rotation county (all halls) version 4" in words
    assert "job posting (用工/致富信息) jobs-1125 镇养殖合作社招工两名 from 2026-11-20 00:00 5 in the rotation township version 9" in words
    # Nothing on the county's rows changes them.
    county_rows = re.search(r'<section class="card" id="county-items">.*?</section>', page.text, re.S).group(0)
    assert "<form" not in county_rows and "/board/items/" not in county_rows


def test_a_county_item_cannot_be_edited_or_ended(app):
    client = as_role(app, "director")
    csrf = token(client, "/board")
    message = "yibao-2026 is the county's item (county (all halls)): the hall cannot change or end it. The county changes or withdraws it."
    response = client.get("/board/items/yibao-2026")
    assert response.status_code == 403 and message in text(response)
    response = client.post("/board/items/yibao-2026", data={"csrf_token": csrf, **item_form()})
    assert response.status_code == 403 and message in text(response)
    response = client.post("/board/items/jobs-1125/end", data={"csrf_token": csrf})
    assert response.status_code == 403 and "jobs-1125 is the county's item (township)" in text(response)
    assert hall_state(app) is None and events(app) == [] and board_audit(app) == []


def test_the_event_and_the_audit_row_are_written_together_or_not_at_all(app, monkeypatch):
    client = as_role(app, "director")
    h = app.extensions["hall"]
    seq = h.store.last_seq("person")

    def failing(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(h.accounts, "audit", failing)
    response = post_item(client)
    assert response.status_code == 503 and "Nothing was saved." in response.text
    assert hall_state(app) is None and events(app) == [] and h.store.last_seq("person") == seq


def test_an_item_is_edited_as_its_next_version_and_a_stale_form_is_refused(app, clock):
    client = as_role(app, "director")
    post_item(client, text=NOTICE)
    form = client.get("/board/items/hall-20261125-1")
    assert re.search(r'<textarea [^>]*id="text"[^>]*>\s*本周五下午停电检修</textarea>', form.text)
    assert re.search(r'<input [^>]*id="version"[^>]*value="1"', form.text)
    clock.advance(60)
    response = post_item(client, "/board/items/hall-20261125-1", text="本周五下午停电检修，请相互转告", version="1", priority="8")
    assert response.status_code == 303
    version, [item] = hall_state(app)
    assert version == 2 and item["version"] == 2 and item["text"] == "本周五下午停电检修，请相互转告" and item["priority"] == 8
    assert events(app)[-1]["data"]["action"] == "changed"
    # Someone else's form, opened at version 1, would undo that change.
    response = post_item(client, "/board/items/hall-20261125-1", text="旧的文字", version="1")
    assert response.status_code == 409
    assert "Someone changed this item while you were editing it (it is now version 2), so your change was not saved." in text(response)
    assert hall_state(app)[1][0]["text"] == "本周五下午停电检修，请相互转告"


def test_ending_keeps_the_item_as_ended_and_an_item_not_begun_is_withdrawn(app, clock):
    client = as_role(app, "director")
    post_item(client, text=NOTICE)
    post_item(client, text="下周一起办公时间调整", start="2026-11-30T08:00")
    clock.advance(90)
    csrf = token(client, "/board")
    assert client.post("/board/items/hall-20261125-1/end", data={"csrf_token": csrf}).status_code == 303
    assert client.post("/board/items/hall-20261125-2/end", data={"csrf_token": csrf}).status_code == 303
    version, [item] = hall_state(app)
    assert version == 4 and item["id"] == "hall-20261125-1" and item["end"] == "2026-11-25T10:01:30+08:00" and item["version"] == 2
    assert [(e["data"]["action"], e["data"]["item"] is None) for e in events(app)[2:]] == [("ended", False), ("withdrawn", True)]
    rows = re.search(r'<section class="card" id="hall-items">.*?</section>', client.get("/board").text, re.S).group(0)
    assert "hall-20261125-1 本周五下午停电检修 until 2026-11-25 10:01 5 ended Edit" in text_of(rows)
    assert "hall-20261125-2" not in rows
    # Ending it again says it already ended, beside it.
    response = client.post("/board/items/hall-20261125-1/end", data={"csrf_token": csrf})
    assert response.status_code == 409
    assert beside(response, "item-hall-20261125-1") == "Not saved: hall-20261125-1 already ended at 2026-11-25 10:01."
    # It can be opened again by giving it a later end; its past end alone is not refused.
    response = post_item(client, "/board/items/hall-20261125-1", text=NOTICE, end="2026-11-25T10:01:30", version="2")
    assert response.status_code == 303
    response = post_item(client, "/board/items/hall-20261125-1", text=NOTICE, end="2026-11-26T18:00", version="3")
    assert response.status_code == 303 and hall_state(app)[1][0]["end"] == "2026-11-26T18:00:00+08:00"


def test_items_ended_over_30_days_ago_leave_the_list_at_the_next_change(app, clock):
    client = as_role(app, "director")
    post_item(client, text=NOTICE)
    clock.advance(60)
    client.post("/board/items/hall-20261125-1/end", data={"csrf_token": token(client, "/board")})
    clock.advance(30 * 86400)
    post_item(as_role(app, "director"), text="新的通知")  # a new session: the last one ended long ago
    version, items = hall_state(app)
    assert [i["id"] for i in items] == ["hall-20261225-1"]
    assert events(app)[-1]["data"]["ids"] == ["hall-20261225-1"]
    [entry] = [e for e in app.extensions["hall"].accounts.audit_log(5) if e.action == "board.added" and e.detail["version"] == 3]
    assert entry.detail["dropped"] == ["hall-20261125-1"]


def store_hall_items(app, items: list[dict]) -> None:
    with app.extensions["hall"].store.transaction() as conn:
        Store.save_state(conn, "board", "hall", 1, {"items": items}, "2026-11-25T09:00:00+08:00")


def test_the_list_holds_at_most_100_items_that_have_not_ended(app, config_path):
    store_hall_items(app, [{"id": f"old-{i}", "kind": "announcement", "text": "通知", "version": 1, "priority": 5} for i in range(100)])
    response = post_item(as_role(app, "director", "zh_Hans"))  # the director's language is kept: Chinese first
    assert response.status_code == 422 and "未保存：本厅已有 100 条未结束的内容" in text(response)
    response = post_item(as_role(app, "director"))
    assert response.status_code == 422
    assert "Not saved: the hall already has 100 items that have not ended, the most the board rotates through" in text(response)
    assert hall_state(app)[0] == 1


def test_items_that_have_ended_make_room_oldest_first(app):
    ended = [{"id": f"ended-{i}", "kind": "announcement", "text": "通知", "version": 2, "priority": 5, "end": f"2026-11-{10 + i:02d}T18:00:00+08:00"} for i in range(3)]
    live = [{"id": f"live-{i}", "kind": "announcement", "text": "通知", "version": 1, "priority": 5} for i in range(97)]
    store_hall_items(app, ended + live)
    assert post_item(as_role(app, "director"), text=NOTICE).status_code == 303
    ids = [i["id"] for i in hall_state(app)[1]]
    assert len(ids) == 100 and "ended-0" not in ids and {"ended-1", "ended-2"} <= set(ids)
    [entry] = [e for e in app.extensions["hall"].accounts.audit_log(5) if e.action == "board.added"]
    assert entry.detail["dropped"] == ["ended-0"]


def test_an_item_the_font_can_no_longer_show_blocks_nothing_and_can_be_withdrawn(app):
    store_hall_items(app, [
        {"id": "old-1", "kind": "announcement", "text": "旧通知𠀀", "version": 1, "priority": 5},  # stored under another font
        {"id": "old-2", "kind": "announcement", "text": "明日上午停水", "version": 1, "priority": 5},
        {"id": "old-3", "kind": "announcement", "text": "已结束𠀀", "version": 2, "priority": 5, "end": "2026-11-20T18:00:00+08:00"},
    ])  # fmt: skip
    client = as_role(app, "director", "zh_Hans")
    listing = client.get("/board")
    assert "一条之前保存的内容现在无法显示，已不在屏上：旧通知𠀀（这些字符屏幕字体没有: 𠀀）" in text(listing)
    assert "撤下" in text(listing)
    client = as_role(app, "director")
    assert "An item stored earlier can no longer be shown, so it is off the board: 旧通知𠀀 (These characters are not in the board's font: 𠀀)" in text(client.get("/board"))
    # Other changes go through: ending the good item, adding one.
    assert client.post("/board/items/old-2/end", data={"csrf_token": token(client, "/board")}).status_code == 303
    assert post_item(client, text=NOTICE).status_code == 303
    # The bad ones are withdrawn from the list with the button beside their alerts, ended or not.
    for bad in ("old-1", "old-3"):
        assert client.post(f"/board/items/{bad}/end", data={"csrf_token": token(client, "/board")}).status_code == 303
        version, items = hall_state(app)
        assert bad not in [i["id"] for i in items] and events(app)[-1]["data"]["action"] == "withdrawn"
    assert "can no longer be shown" not in text(client.get("/board"))


def test_a_stored_item_that_no_longer_passes_is_named_not_fatal(app):
    # Written before a font change, say: the page lists the rest and says what is wrong.
    items = [{"id": "old-1", "kind": "announcement", "text": "旧通知𠀀", "version": 1, "priority": 5}, {"id": "old-2", "kind": "job", "text": "招工", "version": 1, "priority": 5}]
    with app.extensions["hall"].store.transaction() as conn:
        Store.save_state(conn, "board", "hall", 1, {"items": items}, "2026-11-25T09:00:00+08:00")
    page = as_role(app, "director").get("/board")
    assert page.status_code == 200 and "item-old-2" in page.text and "item-old-1" not in page.text
    assert "An item stored earlier can no longer be shown, so it is off the board: 旧通知𠀀 (These characters are not in the board's font: 𠀀) Withdraw it" in text(page)


# -- the preview ------------------------------------------------------------------------------------


@pytest.mark.parametrize("words", [NOTICE, LONG])
def test_the_preview_is_the_renderers_strip_and_saves_nothing(app, font, words):
    client = as_role(app, "director")
    response = post_item(client, action="preview", text=words)
    assert response.status_code == 200
    strip = Renderer(font, 128, 16).strip(words)
    expected = strip.tape.crop((0, 0, strip.text_width, 16)) if strip.scrolls else strip.tape
    picture = lit(preview_of(response))
    assert same_pixels(picture, expected) and picture.getbbox() is not None
    assert re.search(rf'width="{expected.width * 4}" height="64"', response.text)
    words_shown = text(response)
    if strip.scrolls:
        assert f"Wider than the board ({strip.text_width} of 128 LEDs): it scrolls, one pass takes {round(strip.duration)} s." in words_shown
    else:
        assert "Fits on the board: shown centred for 6 s." in words_shown
    # The form keeps what was typed, ready to save.
    assert re.search(rf"<textarea [^>]*>\s*{words}</textarea>", response.text)
    assert hall_state(app) is None and events(app) == []


# -- the daemon -------------------------------------------------------------------------------------


def wait_until(predicate, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.02)
    raise TimeoutError(f"{what} not reached in {timeout} s")


def test_saving_reaches_the_running_daemons_board(app, daemon, font):
    client = as_role(app, "director")
    # An urgent item takes the board at once, whatever the county's rotation is showing.
    response = post_item(client, kind="urgent", text="暴雪预警今日闭厅", end="2026-11-25T18:00")
    assert response.status_code == 303
    assert "The board has it now." in client.get("/board").text
    assert [i.id for i in daemon.board.items("hall")] == ["hall-20261125-1"]
    wait_until(lambda: (daemon.board.status()["item"] or {}).get("id") == "hall-20261125-1", what="the urgent item on the board")
    expected = Renderer(font, 128, 16).strip("暴雪预警今日闭厅").tape  # fits: held
    wait_until(lambda: same_pixels(daemon.display.frame, expected), what="the emulator showing it")
    # The page's live frame is the daemon's picture of it.
    frame = client.get("/board/frame.png")
    assert frame.status_code == 200 and frame.mimetype == "image/png" and frame.headers["Cache-Control"] == "no-store"
    assert frame.data == daemon.display.frame_png()
    page = client.get("/board")
    assert 'id="live-board"' in page.text and "Showing the hall's item hall-20261125-1." in page.text
    # Ending it takes it off the board.
    client.post("/board/items/hall-20261125-1/end", data={"csrf_token": token(client, "/board")})
    wait_until(lambda: (daemon.board.status()["item"] or {}).get("id") == "yibao-2026", what="the county's rotation again")


def test_a_change_made_while_the_daemon_is_down_is_on_the_board_when_it_starts(app, config_path, clock, county):
    client = as_role(app, "director")
    post_item(client, text=NOTICE, priority="9")
    d = Daemon(load_config(config_path), clock=clock, simulate=True)
    d.start()
    try:
        assert [i.id for i in d.board.items("hall")] == ["hall-20261125-1"]
        wait_until(lambda: (d.board.status()["item"] or {}).get("id") == "hall-20261125-1", what="the item on the board")
    finally:
        d.stop()


def test_without_a_board_the_page_says_so(hall_dir, clock):
    app = make_app(write_config(hall_dir), clock)
    try:
        client = as_role(app, "county_it")
        page = text(client.get("/board"))
        assert "This appliance drives no LED board ([display] enabled = false)." in page
        assert "The daemon says: the appliance daemon is not running" in page
        assert post_item(client).status_code == 303  # kept for when a board is configured
    finally:
        app.extensions["hall"].close()

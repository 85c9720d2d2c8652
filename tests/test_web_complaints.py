"""The complaint box's pages: the public form and lookup, privacy, flood control, the staff form, the hall view, the notice."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import shutil
import tempfile
import urllib.request
from pathlib import Path

import pytest
import segno
from nacl.public import PrivateKey

from appliance.clock import FakeClock
from appliance.web.complaints.box import lookup_address, wifi_payload
from appliance.web.server import PageServer, without_addresses
from conftest import write_config
from provisioning.complaints import open_sealed
from services.complaints import (
    CATEGORIES,
    PRIVATE_KEY_TAG,
    PUBLIC_KEY_TAG,
    STATUS_LABELS_EN,
    STATUSES,
    TEXT_MAX,
    Complaints,
    format_key_file,
    new_receipt,
)
from test_web import english, make_app, sign_in, token

# What a citizen writes, and what their phone says about itself: distinctive enough to
# search the card for, byte for byte.
TEXT = "窗口工作人员要求我先交两百元“加急费”才给办理低保材料。marker-c0ffee-text"
CONTACT = "13912345678 白音锡勒嘎查 marker-c0ffee-contact"
STAFF = "乌日娜"
CLIENT = "198.51.100.77"
USER_AGENT = "Mozilla/5.0 (Linux; Android 13; marker-phone-ua-4471) Mobile"
ADDRESS = "https://hall-01.local:8080/ts"
RECEIPT = re.compile(r"[2-9A-HJKMNP-TV-Z]{4}-[2-9A-HJKMNP-TV-Z]{4}-[2-9A-HJKMNP-TV-Z]{4}")
FIELD_ERROR = re.compile(r'<p class="field-error" id="([a-z_]+)-error"[^>]*>([^<]*)</p>')


@pytest.fixture
def hall_dir():
    d = Path(tempfile.mkdtemp(prefix="hall-cp-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def county_key() -> PrivateKey:
    """The supervisor's key pair, as hall-provision complaints keygen makes it."""
    return PrivateKey.generate()


def toml(value: str) -> str:
    # JSON's string escapes are TOML's basic-string escapes for these values.
    return json.dumps(value, ensure_ascii=False)


def complaint_config(hall_dir: Path, county_key: PrivateKey | None, **keys) -> Path:
    """A test appliance's config with a [complaints] section; ``county_key`` None: no key configured."""
    path = write_config(hall_dir)
    lines = ["", "[complaints]"]
    if county_key is not None:
        pub = hall_dir / "complaints.pub"
        pub.write_text(format_key_file(PUBLIC_KEY_TAG, bytes(county_key.public_key), "test supervisor key"))
        lines.append(f"public_key = {toml(str(pub))}")
    keys = {"address": ADDRESS} | keys
    for name, value in keys.items():
        if value is not None:
            lines.append(f"{name} = {toml(value) if isinstance(value, str) else value}")
    path.write_text(path.read_text() + "\n".join(lines) + "\n")
    return path


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def build(hall_dir, county_key, clock):
    """``build(**complaints_keys)`` → the page with that [complaints] section; closed for you at the end."""
    apps = []

    def make(key: PrivateKey | None | str = "default", **keys):
        path = complaint_config(hall_dir, county_key if key == "default" else key, **keys)
        app = make_app(path, clock)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["hall"].close()


@pytest.fixture
def app(build):
    return build()


@pytest.fixture
def client(app):
    return app.test_client()


def citizen(app, address: str = CLIENT):
    """A phone on the hall Wi-Fi: every request from ``address`` with USER_AGENT."""
    client = app.test_client()
    client.environ_base.update({"REMOTE_ADDR": address, "HTTP_USER_AGENT": USER_AGENT})
    return client


def submit(client, **fields):
    data = {"category": "fees", "text": TEXT, "contact": CONTACT, "window": "w1", "staff": STAFF} | fields
    return client.post("/ts", data={"csrf_token": token(client, "/ts")} | {k: v for k, v in data.items() if v is not None})


def look_up(client, code: str):
    return client.post("/ts/receipt", data={"csrf_token": token(client, "/ts/receipt"), "code": code})


def receipt_of(response) -> str:
    match = RECEIPT.search(re.sub(r"</span><span class=\"dash\">-</span><span class=\"group\">", "-", response.text))
    assert match, response.text[:2000]
    return match.group(0)


def field_errors(response) -> dict[str, str]:
    return dict(FIELD_ERROR.findall(response.text))


def complaint_rows(app) -> list[tuple]:
    return app.extensions["hall"].store.rows("SELECT receipt, category, channel, transcribed_by, sealed FROM complaints ORDER BY seq")


def opened(app, county_key, receipt: str) -> dict:
    sealed = app.extensions["hall"].store.rows("SELECT sealed FROM complaints WHERE receipt = ?", (receipt,))[0][0]
    return open_sealed(bytes(county_key), bytes(sealed))


def apply_status(app, args: dict) -> None:
    """The county's complaint.status, as the daemon applies it: validate, apply in a transaction, announce."""
    h = app.extensions["hall"]
    service = Complaints(h.recorder, h.store, h.clock, None)
    checked = service.validate_status(args)
    with h.store.transaction() as conn:
        service.apply_status(conn, checked)
    service.announce_status()


def card_bytes(hall_dir: Path) -> bytes:
    """Every byte of the store on the card: the database, its WAL and shared memory."""
    return b"".join(p.read_bytes() for p in sorted(hall_dir.glob("hall.db*")))


# -- the citizen's way through ----------------------------------------------------------------


def test_citizen_submits_keeps_the_receipt_and_reads_the_countys_answer(app, county_key, clock):
    phone = citizen(app)
    form = phone.get("/ts")
    assert form.status_code == 200
    for promise in ("匿名", "纪检监察", "工作人员无法阅读", "可不填"):
        assert promise in form.text
    assert f"最多 {TEXT_MAX} 个字" in form.text

    response = submit(phone)
    assert response.status_code == 200
    code = receipt_of(response)
    assert "请保存回执码" in response.text
    assert 'href="/ts/receipt"' in response.text

    # The text reached the county's key, and only it: the row holds ciphertext.
    doc = opened(app, county_key, code)
    assert (doc["text"], doc["contact"], doc["window"], doc["staff"], doc["category"], doc["receipt"]) == (TEXT, CONTACT, "w1", STAFF, "fees", code)
    assert complaint_rows(app)[0][1:4] == ("fees", "form", None)

    status = look_up(phone, code)
    assert status.status_code == 200
    assert "已受理" in status.text and "违规收费" in status.text

    clock.advance(86400 * 2)
    apply_status(app, {"receipt": code, "status": "answered", "reply": "已核实，退还费用并对当事人批评教育。", "by": "县纪委监委 王"})
    # Typed as a citizen reads it off a photo: lower case, spaces, no dashes.
    typed = code.replace("-", " ").lower()[:7] + code.replace("-", "").lower()[6:]
    answered = look_up(phone, typed)
    assert answered.status_code == 200
    assert "已答复" in answered.text
    assert "已核实，退还费用并对当事人批评教育。" in answered.text
    assert "2026-11-27" in answered.text  # the day the county set it
    assert "县纪委监委" not in answered.text  # who set it is for the county, not the lookup


def test_the_form_offers_every_category_and_the_halls_windows_in_chinese(client):
    page = client.get("/ts").text
    for category in CATEGORIES:
        assert f'value="{category.code}"' in page and category.label in page
    assert "综合受理窗口" in page and "社保医保窗口" in page


def test_labels_on_the_page_are_the_services_own(app):
    from flask_babel import force_locale

    from appliance.web.labels import COMPLAINT_CATEGORIES, COMPLAINT_STATUSES

    with app.test_request_context():
        with force_locale("zh_Hans"):
            assert {c.code: str(COMPLAINT_CATEGORIES[c.code]) for c in CATEGORIES} == {c.code: c.label for c in CATEGORIES}
            assert {k: str(v) for k, v in COMPLAINT_STATUSES.items()} == STATUSES
        with force_locale("en"):
            assert {c.code: str(COMPLAINT_CATEGORIES[c.code]) for c in CATEGORIES} == {c.code: c.label_en for c in CATEGORIES}
            assert {k: str(v) for k, v in COMPLAINT_STATUSES.items()} == STATUS_LABELS_EN


# -- bad input: the form comes back, with the fix beside the field and what was typed kept ---------

BAD_INPUT = [
    ({"text": "   \r\n "}, "text", "Write what happened: this field is empty."),
    ({"text": "长" * (TEXT_MAX + 1)}, "text", f"What happened is {TEXT_MAX + 1} characters long; at most {TEXT_MAX} fit. Shorten it, or send the rest as a second complaint."),
    ({"text": "bell\x07"}, "text", "What happened contains control characters: type or paste plain text."),
    ({"category": ""}, "category", "Choose what the complaint is about from the list."),
    ({"category": "parking"}, "category", "“parking” is not one of the categories: choose one from the list."),
    ({"window": "w9"}, "window", "“w9” is not a window of this hall: choose one from the list, or leave it empty."),
    ({"contact": "1" * 101}, "contact", "The contact is 101 characters long; use at most 100 (a phone number or an address), or leave it empty to stay anonymous."),
    ({"staff": "乌日娜\n巴特尔"}, "staff", "Keep this to one line, without line breaks or tabs."),
    ({"staff": "名" * 51}, "staff", "The staff member is 51 characters long; use at most 50 (a name or staff number), or leave it empty."),
]


@pytest.mark.parametrize("fields, field, message", BAD_INPUT, ids=[f"{f}-{i}" for i, (_d, f, _m) in enumerate(BAD_INPUT)])
def test_bad_input_comes_back_beside_its_field_with_what_was_typed(app, fields, field, message):
    phone = citizen(app)
    english(phone)
    response = submit(phone, **fields)
    assert response.status_code == 422
    assert field_errors(response) == {field: message}
    # What the citizen typed is still there (the fields that were fine, too).
    kept = {"text": TEXT, "contact": CONTACT, "staff": STAFF} | fields
    for name in ("text", "contact", "staff"):
        if kept[name].strip():
            assert kept[name] in response.text, name
    assert complaint_rows(app) == []


def test_bad_input_in_chinese_names_the_field_and_the_fix(app):
    response = submit(citizen(app), text="", window="w9")
    assert response.status_code == 422
    errors = field_errors(response)
    assert errors["text"] == "请写下发生了什么：这一栏是空的。"
    assert "不是本大厅的窗口" in errors["window"]


def test_an_expired_form_comes_back_as_typed_instead_of_losing_it(app):
    phone = citizen(app)
    phone.get("/ts")
    response = phone.post("/ts", data={"csrf_token": "stale", "category": "delay", "text": TEXT})
    assert response.status_code == 400
    assert TEXT in response.text and "表单已过期" in response.text
    assert complaint_rows(app) == []
    # The page carries a fresh token: sending it again works.
    again = phone.post("/ts", data={"csrf_token": CSRF_IN(response.text), "category": "delay", "text": TEXT})
    assert again.status_code == 200 and receipt_of(again)


def CSRF_IN(page: str) -> str:
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)


# -- flood control ------------------------------------------------------------------------------


def test_a_flood_from_one_phone_is_refused_with_when_to_try_again(build, clock):
    app = build(per_client_per_hour=2)
    phone = citizen(app)
    assert submit(phone).status_code == 200
    clock.advance(60)
    assert submit(phone).status_code == 200
    clock.advance(60)
    refused = submit(phone)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == str(3600 - 120)
    assert "过去一小时内" in refused.text and "58 分钟后再试" in refused.text
    assert TEXT in refused.text  # kept, to send later or copy onto paper
    assert len(complaint_rows(app)) == 2
    # Another phone is not held back by this one.
    other = citizen(app, "198.51.100.78")
    assert submit(other).status_code == 200
    clock.advance(3600 - 120)
    assert submit(phone).status_code == 200


def test_simultaneous_posts_from_one_phone_cannot_all_slip_past_its_limit(build):
    import threading

    app = build(per_client_per_hour=2)
    phones = [citizen(app) for _ in range(8)]
    forms = [{"csrf_token": token(p, "/ts"), "category": "fees", "text": TEXT} for p in phones]
    start = threading.Barrier(len(phones))
    codes: list[int] = []

    def post(phone, data) -> None:
        start.wait()
        codes.append(phone.post("/ts", data=data).status_code)

    threads = [threading.Thread(target=post, args=pair) for pair in zip(phones, forms)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200, 200] + [429] * 6
    assert len(complaint_rows(app)) == 2


def test_a_flood_from_many_phones_is_refused_for_the_minute(build, clock):
    app = build(per_minute=3)
    for i in range(3):
        assert submit(citizen(app, f"198.51.100.{i}")).status_code == 200
    refused = submit(citizen(app, "198.51.100.9"))
    assert refused.status_code == 429 and "1 分钟后再试" in refused.text
    clock.advance(61)
    assert submit(citizen(app, "198.51.100.9")).status_code == 200


def test_a_refused_form_does_not_count_against_the_citizen(build):
    app = build(per_client_per_hour=1)
    phone = citizen(app)
    for _ in range(3):
        assert submit(phone, text="").status_code == 422
    assert submit(phone).status_code == 200


# -- the lookup ---------------------------------------------------------------------------------


LOOKUP_PROBLEMS = [
    ("", 422, "Type the 12-character code from your receipt, like 7KQM-X3PD-9HTR."),
    ("7KQM-X3PD-9HT", 422, "You typed 11 characters; a receipt code has 12, like 7KQM-X3PD-9HTR."),
    ("7KQM-X3PD-9HT0", 422, "Receipt codes never use 0, O, 1, I, L or U: compare the code with your receipt again."),
    ("7KQM-X3PD-9HT#", 422, "A receipt code has only the digits 2 to 9 and capital letters, like 7KQM-X3PD-9HTR."),
]


@pytest.mark.parametrize("code, status, message", LOOKUP_PROBLEMS)
def test_a_malformed_receipt_code_is_explained(client, code, status, message):
    english(client)
    response = look_up(client, code)
    assert response.status_code == status
    assert field_errors(response) == {"code": message}
    assert f'value="{code}"' in response.text or not code


def test_a_mistyped_receipt_code_is_caught_by_its_check_character(client):
    english(client)
    code = new_receipt()
    # Change one character to another symbol: the check character no longer fits.
    wrong = code[:-1] + ("2" if code[-1] != "2" else "3")
    response = look_up(client, wrong)
    assert response.status_code == 422
    assert "misread" in field_errors(response)["code"]


def test_an_unknown_receipt_code_says_so(client):
    code = new_receipt()
    response = look_up(client, code)
    assert response.status_code == 404
    assert field_errors(response) == {"code": f"本大厅没有回执码为 {code} 的投诉。请与回执核对；在其他大厅提交的投诉请到那里查询。"}


def test_guessing_receipt_codes_is_rate_limited_but_a_citizens_own_code_never(app):
    phone = citizen(app)
    code = receipt_of(submit(phone))
    for _ in range(10):
        assert look_up(phone, new_receipt()).status_code == 404
    refused = look_up(phone, new_receipt())
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert "分钟后再试" in refused.text
    # Looking up one's own code counts nothing, and another phone is not held back.
    assert look_up(citizen(app, "198.51.100.5"), code).status_code == 200


# -- the box closed --------------------------------------------------------------------------------


def test_without_a_key_the_box_says_it_is_closed_and_takes_nothing(build):
    app = build(key=None)
    phone = citizen(app)
    page = phone.get("/ts")
    assert page.status_code == 200
    assert "投诉箱暂时关闭" in page.text and 'name="text"' not in page.text
    response = phone.post("/ts", data={"csrf_token": token(phone, "/ts/receipt"), "category": "fees", "text": TEXT})
    assert response.status_code == 503 and "投诉箱暂时关闭" in response.text
    assert complaint_rows(app) == []
    # The hall is told why, and what county IT does about it.
    staff = app.test_client()
    sign_in(staff, "director")
    hall_view = staff.get("/complaints").text
    assert "no supervisor key is configured" in hall_view and "public_key" in hall_view
    transcribe = staff.post("/complaints/transcribe", data={"csrf_token": token(staff, "/complaints"), "source": "paper", "category": "fees", "text": TEXT})
    assert transcribe.status_code == 503 and complaint_rows(app) == []


def test_a_private_key_in_place_of_the_public_one_keeps_the_box_closed(build, hall_dir, county_key):
    build()
    hall_dir.joinpath("complaints.pub").write_text(format_key_file(PRIVATE_KEY_TAG, bytes(county_key), "oops"))
    # The key is read once, when the page starts: a new page sees the mistake.
    page = make_app(hall_dir / "appliance.toml", FakeClock())
    try:
        assert "投诉箱暂时关闭" in page.test_client().get("/ts").text
        staff = page.test_client()
        sign_in(staff, "director")
        assert "PRIVATE key" in staff.get("/complaints").text
    finally:
        page.extensions["hall"].close()


# -- privacy ------------------------------------------------------------------------------------------


def test_nothing_identifying_and_no_plaintext_reaches_the_card_or_the_log(app, hall_dir, caplog):
    caplog.set_level(logging.DEBUG)
    phone = citizen(app)
    code = receipt_of(submit(phone))
    look_up(phone, code)
    look_up(phone, new_receipt())
    submit(phone, text="")  # a refused one, too
    data = card_bytes(hall_dir)
    assert data, "the store is on the card"
    for secret in (TEXT, CONTACT, STAFF, CLIENT, USER_AGENT, "marker-c0ffee", "marker-phone-ua"):
        assert secret.encode() not in data, secret
        assert secret not in caplog.text, secret
    # And no audit row: an anonymous citizen is not an account.
    assert app.extensions["hall"].accounts.audit_log(100, action="complaint.transcribed") == []


def test_public_pages_set_no_login_session_only_the_forms_token(app):
    phone = citizen(app)
    responses = [phone.get("/ts")]
    responses.append(phone.post("/ts", data={"csrf_token": CSRF_IN(responses[0].text), "category": "fees", "text": TEXT}))
    code = receipt_of(responses[-1])
    responses += [phone.get("/ts/receipt"), look_up(phone, code)]
    set_cookies = [header for r in responses for header in r.headers.getlist("Set-Cookie")]
    assert set_cookies and {header.split("=", 1)[0] for header in set_cookies} == {"hall_session"}
    # A browser-session cookie: no expiry, so nothing stays on the phone once the browser closes.
    assert not any("expires" in header.lower() or "max-age" in header.lower() for header in set_cookies)
    cookie = phone.get_cookie("hall_session")
    session = app.session_interface.get_signing_serializer(app).loads(cookie.value)
    assert set(session) == {"csrf_token"}


def test_the_server_writes_no_client_address_to_its_log(app, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    from appliance.config import WebConfig

    page = PageServer(app, WebConfig(host="127.0.0.1", port=0, cert_file=None, key_file=None)).start()
    try:
        with urllib.request.urlopen(page.url + "ts", timeout=10) as response:
            assert response.status == 200
        # What cheroot says about a TLS client that drops the handshake.
        page.server.error_log("Client ('192.0.2.5', 50312) lost — peer dropped the TLS connection suddenly")
        page.server.error_log("Client ('fe80::1%eth0', 50312, 0, 0) attempted to speak plain HTTP")
    finally:
        page.stop()
    out, err = capfd.readouterr()
    for text in (caplog.text, out, err):
        for address in ("127.0.0.1", "192.0.2.5", "fe80::1"):
            assert address not in text.replace(page.url, ""), (address, text)
    assert "peer dropped the TLS connection" in caplog.text


def test_addresses_are_taken_out_of_any_log_line():
    assert without_addresses("Client ('10.1.2.3', 443) lost; from 172.16.0.9 too") == "Client (client address withheld) lost; from (client address withheld) too"


# -- the staff form ---------------------------------------------------------------------------------


def test_the_staff_form_needs_sign_in(client):
    assert client.get("/complaints/transcribe").headers["Location"] == "/login?next=/complaints/transcribe"
    response = client.post("/complaints/transcribe", data={"csrf_token": token(client), "source": "paper", "category": "fees", "text": TEXT})
    assert response.status_code == 401
    assert client.get("/complaints").status_code == 302
    assert client.get("/complaints/notice").status_code == 302


@pytest.mark.parametrize("username", ["director", "county-it"])
def test_staff_type_in_a_paper_complaint_and_get_its_receipt(app, county_key, username):
    staff = app.test_client()
    sign_in(staff, username)
    page = staff.get("/complaints/transcribe")
    assert page.status_code == 200 and "纸质意见箱" in page.text and "电话" in page.text
    data = {"csrf_token": token(staff, "/complaints/transcribe"), "source": "phone", "category": "bribery", "text": TEXT, "contact": CONTACT, "window": "w2"}
    response = staff.post("/complaints/transcribe", data=data)
    assert response.status_code == 200, response.text[:2000]
    code = receipt_of(response)
    assert "写在纸条上" in response.text
    assert complaint_rows(app)[0][:4] == (code, "bribery", "transcribed", username)
    doc = opened(app, county_key, code)
    assert doc["text"] == "【来源：电话，工作人员录入】\n" + TEXT and doc["contact"] == CONTACT and doc["window"] == "w2"
    audit = app.extensions["hall"].accounts.audit_log(10, action="complaint.transcribed")
    assert [(e.username, e.detail["receipt"], e.detail["category"], e.detail["source"]) for e in audit] == [(username, code, "bribery", "phone")]
    assert TEXT not in json.dumps(audit[0].detail, ensure_ascii=False) and CONTACT not in json.dumps(audit[0].detail, ensure_ascii=False)


def test_the_staff_form_asks_where_the_complaint_came_from(app):
    staff = app.test_client()
    sign_in(staff, "director")
    english(staff)
    response = staff.post("/complaints/transcribe", data={"csrf_token": token(staff, "/complaints/transcribe"), "source": "", "category": "fees", "text": TEXT})
    assert response.status_code == 422
    assert field_errors(response) == {"source": "Choose where the complaint came from: the paper box or the telephone."}
    assert TEXT in response.text


# -- the hall's view and the notice ----------------------------------------------------------------------


def test_the_hall_sees_counts_and_receipts_never_contents(app):
    phone = citizen(app)
    codes = [receipt_of(submit(phone, category=c)) for c in ("fees", "fees", "delay")]
    apply_status(app, {"receipt": codes[0], "status": "in_progress"})
    staff = app.test_client()
    sign_in(staff, "director")
    page = staff.get("/complaints")
    assert page.status_code == 200
    for code in codes:
        assert code in page.text
    assert TEXT not in page.text and CONTACT not in page.text and STAFF not in page.text
    by_status = page.text.split('id="by-status"')[1].split("</section>")[0]
    assert re.search(r"已受理</th><td class=\"num\">2<", by_status) and re.search(r"办理中</th><td class=\"num\">1<", by_status)
    assert re.search(r"违规收费</th><td class=\"num\">2<", page.text)
    assert 'href="/complaints/transcribe"' in page.text and 'href="/complaints/notice"' in page.text
    # In the navigation of every signed-in page.
    assert 'href="/complaints"' in staff.get("/").text


def qr_images(page: str) -> dict[str, bytes]:
    """The notice's QR codes by figure id, as the PNG bytes the browser shows."""
    found = re.findall(r'<figure class="qr" id="([a-z]+)">\s*<img src="data:image/png;base64,([^"]+)"', page)
    return {name: base64.b64decode(data) for name, data in found}


def qr_matrix(png: bytes) -> list[list[int]]:
    """The modules of a rendered code, read back from its pixels (8 per module, 4 modules of border)."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("L")
    modules = img.width // 8
    return [[1 if img.getpixel((x * 8 + 4, y * 8 + 4)) < 128 else 0 for x in range(4, modules - 4)] for y in range(4, modules - 4)]


def decoded(png: bytes) -> str | None:
    """What a phone's camera reads from the code (zxing-cpp), or None where it is not installed."""
    try:
        import zxingcpp
    except ImportError:
        return None
    from PIL import Image

    results = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)).convert("L"))
    assert len(results) == 1
    return results[0].text


def test_the_notice_carries_the_address_and_the_wifi_as_qr_codes(build):
    ssid, password = 'Hall;Net,"1":\\x', "pa:ss;wo,rd\"9\\"
    app = build(wifi_ssid=ssid, wifi_password=password)
    staff = app.test_client()
    sign_in(staff, "director")
    page = staff.get("/complaints/notice")
    assert page.status_code == 200
    qrs = qr_images(page.text)
    assert set(qrs) == {"wifi", "address"}
    wifi = 'WIFI:T:WPA;S:Hall\\;Net\\,\\"1\\"\\:\\\\x;P:pa\\:ss\\;wo\\,rd\\"9\\\\;;'
    assert wifi_payload(ssid, password) == wifi
    for name, expected in (("address", ADDRESS), ("wifi", wifi)):
        assert qr_matrix(qrs[name]) == [[int(m) for m in row] for row in segno.make_qr(expected, error="m").matrix], name
        assert decoded(qrs[name]) in (expected, None), name
    assert ADDRESS in page.text and ADDRESS + "/receipt" in page.text and "Hall;Net" in page.text
    assert device_name_in(page.text)
    # Printable: the stylesheet's A4 page, a print button run by the static script, nothing inline.
    assert "data-print" in page.text and "/static/complaints.js" in page.text
    assert "<style" not in page.text and " style=" not in page.text and re.search(r"<script>(?!</script>)", page.text) is None
    css = staff.get("/static/style.css").text
    assert "@page { size: A4" in css and ".top, footer, .no-print" in css


def device_name_in(page: str) -> bool:
    return page.count("测试政务服务中心") >= 2  # the header and the notice itself


def test_an_open_wifi_joins_with_nopass():
    assert wifi_payload("政务大厅", None) == "WIFI:T:nopass;S:政务大厅;;"


def test_without_an_address_the_notice_says_how_county_it_sets_it(build):
    app = build(address=None, wifi_ssid="政务大厅")
    staff = app.test_client()
    sign_in(staff, "director")
    page = staff.get("/complaints/notice")
    assert page.status_code == 200
    assert 'id="no-address"' in page.text and "[complaints]" in page.text and "address" in page.text
    assert set(qr_images(page.text)) == {"wifi"}
    assert decoded(qr_images(page.text)["wifi"]) in ("WIFI:T:nopass;S:政务大厅;;", None)


def test_the_lookup_address_follows_the_forms():
    assert lookup_address("https://hall-01.local:8080/ts") == "https://hall-01.local:8080/ts/receipt"
    assert lookup_address("https://hall-01.local:8080/ts/") == "https://hall-01.local:8080/ts/receipt"
    assert lookup_address("http://10.0.0.5/complain") is None
    assert lookup_address(None) is None


def test_the_pages_speak_english_when_asked(app):
    phone = citizen(app)
    english(phone)
    page = phone.get("/ts").text
    assert "Anonymous by default." in page and "What happened" in page
    assert "Sent back and forth" in page

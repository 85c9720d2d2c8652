"""The sealed complaint box: sealing, the card, receipts, validation, the county's status, flood control."""

from __future__ import annotations

import base64
import json
import logging
import re
import sqlite3
from pathlib import Path

import pytest
from nacl.public import PrivateKey

from appliance.clock import FakeClock
from appliance.commands import ActionHandler, CommandRouter
from appliance.config import DeviceConfig
from appliance.errors import CommandRejected
from appliance.events import Recorder
from appliance.store import Store
from provisioning.complaints import open_sealed
from services.complaints import (
    CATEGORIES,
    PAD_TO,
    PRIVATE_KEY_TAG,
    PUBLIC_KEY_TAG,
    RECEIPT_ALPHABET,
    REPLY_MAX,
    TEXT_MAX,
    AddressKey,
    ComplaintRejected,
    Complaints,
    KeyInvalid,
    RateLimited,
    Sealer,
    SubmissionLimiter,
    UnknownReceipt,
    format_key_file,
    key_id,
    new_receipt,
    normalize_receipt,
)

DEVICE = DeviceConfig(id="hall-01", hall="测试政务服务中心", township="test-township", county="test-county")
WINDOWS = {"w1": "综合受理窗口", "w2": "社保医保窗口"}
# What a citizen might write; distinctive enough to search the card for, byte for byte.
TEXT = "窗口工作人员要求我先交两百元“加急费”才给办理低保材料。marker-7f3a9c"
CONTACT = "13912345678 白音锡勒嘎查"
STAFF = "乌日娜"


class Hall:
    """A hall's complaint box: the real store and recorder, a fake clock, the county's key pair."""

    def __init__(self, tmp_path: Path, **store_kwargs) -> None:
        self.path = tmp_path / "hall.db"
        self.clock = FakeClock()
        self.store = Store(self.path, reserve_mb=0, free_space_floor_mb=0, **store_kwargs)
        self.recorder = Recorder(self.store, DEVICE, self.clock, "boot-1")
        self.county_key = PrivateKey.generate()
        self.sealer = Sealer(bytes(self.county_key.public_key))
        self.complaints = Complaints(self.recorder, self.store, self.clock, self.sealer, WINDOWS)

    def events(self, event_type: str) -> list[dict]:
        return [json.loads(p) for (p,) in self.store.rows("SELECT payload FROM outbox WHERE type = ? ORDER BY id", (event_type,))]

    def open(self, event: dict) -> dict:
        return open_sealed(bytes(self.county_key), base64.b64decode(event["data"]["ciphertext"]))


@pytest.fixture
def hall(tmp_path):
    h = Hall(tmp_path)
    yield h
    h.store.close()


def handler_for(complaints: Complaints, *, after: bool = True) -> ActionHandler:
    """complaint.status as the daemon registers it: the service's rejection becomes CommandRejected."""

    def validate(args):
        try:
            return complaints.validate_status(args)
        except ComplaintRejected as exc:
            raise CommandRejected(exc.reason, exc.field) from None

    return ActionHandler(validate=validate, apply=complaints.apply_status, after=complaints.announce_status if after else None)


def command(router: CommandRouter, args: dict, command_id: str = "c-1") -> None:
    payload = json.dumps({"command_id": command_id, "args": args}, ensure_ascii=False).encode()
    router.handle("cmd", "device", "complaint.status", payload, "hall/v1/test-county/test-township/hall-01/cmd/complaint.status")


# -- sealing, end to end -----------------------------------------------------------------------------


def test_a_sealed_complaint_opens_with_the_county_key_to_the_original_text(hall):
    receipt = hall.complaints.submit("bribery", TEXT, contact=CONTACT, window="w1", staff=STAFF)

    [event] = hall.events("complaint.received")
    assert event["stream"] == "person" and event["seq"] == receipt.seq == 1
    assert event["data"]["receipt"] == receipt.code
    assert {k: event["data"][k] for k in ("category", "channel", "transcribed_by", "key_id")} == {
        "category": "bribery",
        "channel": "form",
        "transcribed_by": None,
        "key_id": key_id(bytes(hall.county_key.public_key)),
    }
    opened = hall.open(event)
    assert (opened["text"], opened["contact"], opened["window"], opened["staff"]) == (TEXT, CONTACT, "w1", STAFF)
    assert (opened["receipt"], opened["category"]) == (receipt.code, "bribery")
    row = hall.store.rows("SELECT receipt, event_id, category, channel, sealed, status, reply FROM complaints")
    assert row == [(receipt.code, event["event_id"], "bribery", "form", base64.b64decode(event["data"]["ciphertext"]), "received", None)]


def test_what_is_sealed_has_a_padded_length_so_it_does_not_tell_how_much_was_written(hall):
    hall.complaints.submit("attitude", "慢")
    hall.complaints.submit("attitude", "慢" * 120, contact=CONTACT)
    short, longer = (len(base64.b64decode(e["data"]["ciphertext"])) for e in hall.events("complaint.received"))
    assert short == longer == PAD_TO + 48  # the ephemeral public key (32) and the MAC (16)


def test_the_plaintext_is_nowhere_on_the_card_in_the_log_or_in_what_is_published(hall, caplog):
    caplog.set_level(logging.DEBUG)
    hall.complaints.submit("bribery", TEXT, contact=CONTACT, window="w1", staff=STAFF)
    hall.complaints.submit("fees", TEXT + "\n第二次", transcribed_by="s-007")
    with pytest.raises(ComplaintRejected) as rejected:
        hall.complaints.submit("fees", TEXT * 50, contact=CONTACT)  # too long: refused, never stored
    assert TEXT not in str(rejected.value) and CONTACT not in str(rejected.value)
    needles = [TEXT, CONTACT, STAFF, "marker-7f3a9c", "加急费"]
    forms = [form for n in needles for form in (n.encode("utf-8"), json.dumps(n).encode("ascii").strip(b'"'))]

    payloads = b"".join(p for (p,) in hall.store.rows("SELECT payload FROM outbox"))
    logged = caplog.text.encode("utf-8") + repr([r.__dict__ for r in caplog.records]).encode("utf-8")
    # The open store (its WAL holds the new pages), then the file after a checkpoint.
    on_card = b"".join(p.read_bytes() for p in sorted(hall.path.parent.glob("hall.db*")))
    assert Path(str(hall.path) + "-wal").exists()
    hall.store.close()
    on_card += hall.path.read_bytes()
    for form in forms:
        assert form not in payloads, form
        assert form not in logged, form
        assert form not in on_card, form
    assert b"marker-7f3a9c" not in b"".join(p.read_bytes() for p in hall.path.parent.iterdir() if p.is_file())


def test_a_complaint_and_its_event_commit_together_and_are_kept_past_the_outbox_cap(tmp_path):
    h = Hall(tmp_path, outbox_cap=1)
    h.recorder.telemetry("device.health", {}, droppable=False)
    assert h.recorder.telemetry("device.health", {}) is None  # telemetry gives way at the cap…
    h.complaints.submit("delay", TEXT)  # …a complaint never does
    assert h.store.depth == 2
    assert h.store.rows("SELECT COUNT(*) FROM complaints") == [(1,)]
    h.store.close()


def test_a_receipt_drawn_twice_is_drawn_again_and_the_seq_has_no_gap(tmp_path):
    h = Hall(tmp_path)
    draws = iter(["7KQM-X3PD-9HTR", "7KQM-X3PD-9HTR", "2345-6789-ABCD"])
    h.complaints = Complaints(h.recorder, h.store, h.clock, h.sealer, WINDOWS, draw_receipt=lambda: next(draws))
    first = h.complaints.submit("other", "第一件")
    second = h.complaints.submit("other", "第二件")
    assert (first.code, second.code) == ("7KQM-X3PD-9HTR", "2345-6789-ABCD")
    assert [e["seq"] for e in h.events("complaint.received")] == [1, 2]
    assert h.open(h.events("complaint.received")[1])["receipt"] == "2345-6789-ABCD"
    h.store.close()


def test_a_generator_that_only_repeats_itself_records_nothing(tmp_path):
    h = Hall(tmp_path)
    h.complaints = Complaints(h.recorder, h.store, h.clock, h.sealer, WINDOWS, draw_receipt=lambda: "7KQM-X3PD-9HTR")
    h.complaints.submit("other", "第一件")
    with pytest.raises(RuntimeError, match="could not draw an unused receipt code"):
        h.complaints.submit("other", "第二件")
    assert h.store.rows("SELECT COUNT(*) FROM complaints") == [(1,)]
    assert h.store.last_seq("person") == 1 and h.store.depth == 1
    h.store.close()


def test_the_card_refuses_a_second_complaint_with_the_same_receipt(hall):
    code = hall.complaints.submit("other", "一件").code
    with pytest.raises(sqlite3.IntegrityError):
        hall.store.write_many(
            "INSERT INTO complaints (receipt, event_id, seq, category, channel, key_id, sealed, received_at, clock_synced) VALUES (?, 'e', 9, 'other', 'form', 'k', x'00', 'now', 1)",
            [(code,)],
        )


def test_a_transcribed_complaint_names_its_transcriber(hall):
    receipt = hall.complaints.submit("runaround", "电话反映：材料让跑了三次。", transcribed_by="s-007")
    assert receipt.channel == "transcribed"
    [event] = hall.events("complaint.received")
    assert (event["data"]["channel"], event["data"]["transcribed_by"]) == ("transcribed", "s-007")
    assert hall.store.rows("SELECT channel, transcribed_by FROM complaints") == [("transcribed", "s-007")]


def test_complaints_outlive_the_outbox_retention(hall):
    code = hall.complaints.submit("other", "一件").code
    hall.store.apply_ack("person", 99)
    assert hall.store.prune(now=4e9) == 1
    assert hall.store.rows("SELECT receipt FROM complaints") == [(code,)]
    assert hall.complaints.lookup(code).status == "received"


def test_there_is_no_way_to_delete_a_complaint_through_the_service():
    names = [n for n in dir(Complaints) if not n.startswith("__")]
    assert not [n for n in names if re.search(r"delete|remove|purge|drop|clear|prune", n)]


# -- receipts -----------------------------------------------------------------------------------------

RECEIPT = re.compile(rf"^[{RECEIPT_ALPHABET}]{{4}}-[{RECEIPT_ALPHABET}]{{4}}-[{RECEIPT_ALPHABET}]{{4}}$")


def test_receipt_codes_are_unique_over_100000_and_free_of_ambiguous_characters():
    codes = [new_receipt() for _ in range(100_000)]
    assert len(set(codes)) == len(codes)
    assert all(RECEIPT.match(c) for c in codes)
    assert not set("".join(codes)) & set("0O1ILU")
    assert set("".join(codes).replace("-", "")) == set(RECEIPT_ALPHABET)  # every symbol is used
    assert all(normalize_receipt(c) == c for c in codes[:2000])


def test_the_check_character_catches_every_misread_character_and_most_swaps():
    for _ in range(50):
        code = new_receipt().replace("-", "")
        for i, ch in enumerate(code):
            for other in RECEIPT_ALPHABET.replace(ch, ""):
                with pytest.raises(ComplaintRejected) as exc:
                    normalize_receipt(code[:i] + other + code[i + 1 :])
                assert exc.value.code == "typo"
    swapped = caught = 0
    for _ in range(500):
        code = new_receipt().replace("-", "")
        for i in range(len(code) - 1):
            if code[i] != code[i + 1]:
                swapped += 1
                try:
                    normalize_receipt(code[:i] + code[i + 1] + code[i] + code[i + 2 :])
                except ComplaintRejected:
                    caught += 1
    assert caught / swapped > 0.9


def _full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


@pytest.mark.parametrize(
    "typing",
    [str.lower, lambda c: c.replace("-", " "), lambda c: f" {c.replace('-', '')}\n", _full_width, lambda c: _full_width(c.lower())],
    ids=["lower case", "spaces", "no dashes", "full width", "full width lower case"],
)
def test_a_receipt_typed_any_way_reads_the_same(typing):
    code = new_receipt()
    assert normalize_receipt(typing(code)) == code


@pytest.mark.parametrize(
    "typed, code, message",
    [
        ("", "empty", "receipt: is empty: type the 12-character code on the receipt, like 7KQM-X3PD-9HTR"),
        ("7KQM-X3PD", "malformed", "receipt: has 8 characters; a receipt code has 12, like 7KQM-X3PD-9HTR"),
        ("7KQM-X3PD-9HTRR", "malformed", "receipt: has 13 characters; a receipt code has 12, like 7KQM-X3PD-9HTR"),
        ("7KQ0-X3PD-9HTR", "malformed", "receipt: has 0: receipt codes never use 0, O, 1, I, L or U; compare it with the receipt again"),
        ("7KQM-X3PD-9HT#", "malformed", "receipt: has characters no receipt code uses: only the digits 2-9 and capital letters"),
        (None, "malformed", "receipt: must be text: the 12-character code on the receipt, like 7KQM-X3PD-9HTR"),
    ],
)
def test_a_code_that_cannot_be_a_receipt_is_refused_with_what_to_check(hall, typed, code, message):
    with pytest.raises(ComplaintRejected) as exc:
        hall.complaints.lookup(typed)
    assert (exc.value.code, str(exc.value)) == (code, message)
    assert not isinstance(exc.value, UnknownReceipt)


def test_a_well_formed_code_of_no_complaint_is_unknown(hall):
    with pytest.raises(UnknownReceipt) as exc:
        hall.complaints.lookup(new_receipt())
    assert exc.value.code == "unknown" and exc.value.field == "receipt"
    assert "no complaint has this code on this hall's appliance" in exc.value.reason


def test_a_receipt_looks_up_its_status_but_never_the_complaint(hall):
    receipt = hall.complaints.submit("attitude", TEXT, contact=CONTACT)
    status = hall.complaints.lookup(receipt.code.lower().replace("-", " "))
    assert (status.receipt, status.category, status.category_label, status.status, status.status_label, status.reply) == (
        receipt.code, "attitude", "服务态度", "received", "已受理", None,
    )
    assert status.received_on == "2026-11-25"
    assert TEXT not in repr(status) and CONTACT not in repr(status)


# -- validation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "category, text, extra, field, code, message",
    [
        ("attitude", "", {}, "text", "empty", "text: is empty: write what happened"),
        ("attitude", " \n\t ", {}, "text", "empty", "text: is empty: write what happened"),
        ("attitude", "字" * (TEXT_MAX + 1), {}, "text", "too_long", f"text: is {TEXT_MAX + 1} characters; at most {TEXT_MAX} — shorten it, or send the rest as a second complaint"),
        ("attitude", "a\x00b", {}, "text", "invalid", "text: has control characters; type or paste plain text"),
        ("attitude", 42, {}, "text", "invalid", "text: must be text: write what happened"),
        ("rudeness", "太慢", {}, "category", "unknown_category", "category: is not a complaint category; choose one of attitude, delay, runaround, discipline, fees, bribery, favoritism, other"),
        ("", "太慢", {}, "category", "empty", "category: is required: choose one of attitude, delay, runaround, discipline, fees, bribery, favoritism, other"),
        ("attitude", "太慢", {"contact": "1" * 101}, "contact", "too_long", "contact: is 101 characters; at most 100"),
        ("attitude", "太慢", {"contact": "139\n1234"}, "contact", "invalid", "contact: has control characters or line breaks; keep it to one line"),
        ("attitude", "太慢", {"window": "w9"}, "window", "unknown_window", "window: is not a window of this hall; windows: w1, w2"),
        ("attitude", "太慢", {"staff": "名" * 51}, "staff", "too_long", "staff: is 51 characters; at most 50"),
        ("attitude", "太慢", {"transcribed_by": "  "}, "transcribed_by", "empty", "transcribed_by: must name who transcribed it (their staff id)"),
    ],
)
def test_a_bad_submission_is_refused_naming_the_field_and_nothing_is_recorded(hall, category, text, extra, field, code, message):
    with pytest.raises(ComplaintRejected) as exc:
        hall.complaints.submit(category, text, **extra)
    assert (exc.value.field, exc.value.code, str(exc.value)) == (field, code, message)
    assert hall.store.depth == 0 and hall.store.rows("SELECT COUNT(*) FROM complaints") == [(0,)]


def test_every_problem_of_a_submission_is_listed_at_once(hall):
    with pytest.raises(ComplaintRejected) as exc:
        hall.complaints.submit("nope", "", contact="x" * 200, window="w9")
    assert [f for f, _ in exc.value.problems] == ["category", "text", "contact", "window"]


def test_text_is_kept_as_written_apart_from_line_endings_and_outer_spaces(hall):
    hall.complaints.submit("other", "  第一行\r\n第二行\r第三行\t完  ", contact="  138  ", window="")
    opened = hall.open(hall.events("complaint.received")[0])
    assert (opened["text"], opened["contact"], opened["window"], opened["staff"]) == ("第一行\n第二行\n第三行\t完", "138", None, None)


def test_categories_have_stable_unique_codes_and_chinese_labels():
    codes = [c.code for c in CATEGORIES]
    assert len(set(codes)) == len(codes) and codes[-1] == "other"
    assert all(re.fullmatch(r"[a-z_]+", c.code) and re.search(r"[\u4e00-\u9fff]", c.label) for c in CATEGORIES)


# -- the supervisor's public key -----------------------------------------------------------------------


def test_the_public_key_file_from_provisioning_makes_a_sealer(tmp_path):
    key = PrivateKey.generate()
    path = tmp_path / "complaints.pub"
    path.write_text(format_key_file(PUBLIC_KEY_TAG, bytes(key.public_key), "comment\nmore"))
    sealer = Sealer.from_file(path)
    assert sealer.key_id == key_id(bytes(key.public_key))


@pytest.mark.parametrize(
    "content, message",
    [
        (lambda k: format_key_file(PRIVATE_KEY_TAG, bytes(k), ""), "is the supervisor's PRIVATE key: it must never be on a hall device"),
        (lambda k: f"{PUBLIC_KEY_TAG} AAAA\n", "the key is 3 bytes, not 32"),
        (lambda k: f"{PUBLIC_KEY_TAG} not*base64\n", "the key is not valid base64"),
        (lambda k: "", "expected one line 'hall-complaints-public-v1 <base64>', found 0"),
        (lambda k: "ssh-ed25519 AAAA\n", "starts with 'ssh-ed25519', not 'hall-complaints-public-v1'"),
    ],
)
def test_a_wrong_public_key_file_is_refused_with_what_to_do(tmp_path, content, message):
    path = tmp_path / "complaints.pub"
    path.write_text(content(PrivateKey.generate()))
    with pytest.raises(KeyInvalid, match=re.escape(message)):
        Sealer.from_file(path)


def test_a_missing_public_key_file_is_named(tmp_path):
    with pytest.raises(KeyInvalid, match="cannot read the complaint supervisor's public key"):
        Sealer.from_file(tmp_path / "absent.pub")


# -- the county's status ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, field, reason",
    [
        ([], "args", 'must be an object, e.g. {"receipt": "7KQM-X3PD-9HTR", "status": "in_progress"}'),
        ({"receipt": "R", "status": "answered", "note": "x"}, "args.note", "is not an argument of complaint.status; it takes receipt, status, reply, by"),
        ({"status": "answered"}, "args.receipt", "is required: the receipt code of the complaint.received event"),
        ({"receipt": "7KQM", "status": "answered"}, "args.receipt", "has 4 characters; a receipt code has 12, like 7KQM-X3PD-9HTR"),
        ({"receipt": "R"}, "args.status", "is required: one of received, in_progress, answered"),
        ({"receipt": "R", "status": "closed"}, "args.status", '"closed" is not a status; use one of received, in_progress, answered'),
        ({"receipt": "R", "status": "answered", "reply": "字" * (REPLY_MAX + 1)}, "args.reply", f"is {REPLY_MAX + 1} characters; at most {REPLY_MAX}"),
        ({"receipt": "R", "status": "answered", "reply": 7}, "args.reply", 'must be text (the public reply the citizen sees), or "" to remove it'),
        ({"receipt": "R", "status": "answered", "by": "x\ny"}, "args.by", "must be text of at most 100 characters on one line (who set the status)"),
        ({"receipt": "UNKNOWN", "status": "answered"}, "args.receipt", "is not a complaint recorded on this device"),
    ],
)
def test_a_bad_status_command_is_refused_naming_the_field(hall, args, field, reason):
    code = hall.complaints.submit("other", "一件").code
    other = new_receipt()
    if isinstance(args, dict) and args.get("receipt") in ("R", "UNKNOWN"):
        args = dict(args, receipt=code if args["receipt"] == "R" else other)
    with pytest.raises(ComplaintRejected) as exc:
        hall.complaints.validate_status(args)
    assert exc.value.field == field
    assert exc.value.reason.endswith(reason)


def test_the_county_sets_a_status_and_a_public_reply_through_the_command_router(hall):
    code = hall.complaints.submit("fees", TEXT).code
    router = CommandRouter(hall.recorder)
    router.register_action("complaint.status", handler_for(hall.complaints))

    command(router, {"receipt": code.lower(), "status": "in_progress", "by": "县纪委 王"}, "c-1")
    command(router, {"receipt": code, "status": "answered", "reply": "已核实，退还费用并批评教育。"}, "c-2")
    command(router, {"receipt": code, "status": "answered", "reply": "重复的命令"}, "c-2")  # a repeat: ignored

    applied = hall.events("command.applied")
    assert [a["data"]["command_id"] for a in applied] == ["c-1", "c-2"]
    assert applied[0]["data"]["result"] == {"receipt": code, "status": "in_progress", "status_at": "2026-11-25T09:00:00+08:00"}
    changed = [e["data"] for e in hall.events("complaint.status_changed")]
    assert changed == [
        {"receipt": code, "status": "in_progress", "reply": None, "set_by": "县纪委 王", "set_at": "2026-11-25T09:00:00+08:00"},
        {"receipt": code, "status": "answered", "reply": "已核实，退还费用并批评教育。", "set_by": None, "set_at": "2026-11-25T09:00:00+08:00"},
    ]
    assert all(e["stream"] == "telemetry" for e in hall.events("complaint.status_changed"))
    status = hall.complaints.lookup(code)
    assert (status.status, status.status_label, status.reply) == ("answered", "已答复", "已核实，退还费用并批评教育。")


def test_a_reply_left_out_is_kept_and_an_empty_one_removes_it(hall):
    code = hall.complaints.submit("fees", "一件").code
    router = CommandRouter(hall.recorder)
    router.register_action("complaint.status", handler_for(hall.complaints))
    command(router, {"receipt": code, "status": "answered", "reply": "已答复"}, "c-1")
    command(router, {"receipt": code, "status": "in_progress"}, "c-2")
    assert hall.complaints.lookup(code).reply == "已答复"
    command(router, {"receipt": code, "status": "in_progress", "reply": ""}, "c-3")
    assert hall.complaints.lookup(code).reply is None


def test_a_forged_or_malformed_status_command_is_rejected_and_changes_nothing(hall):
    code = hall.complaints.submit("fees", "一件").code
    router = CommandRouter(hall.recorder)
    router.register_action("complaint.status", handler_for(hall.complaints))
    command(router, {"receipt": new_receipt(), "status": "answered", "reply": "伪造"}, "f-1")
    command(router, {"receipt": code, "status": "deleted"}, "f-2")
    router.handle("cmd", "device", "complaint.status", b"{not json", "t")

    rejected = [(e["data"].get("command_id"), e["data"]["field"]) for e in hall.events("command.rejected")]
    assert rejected == [("f-1", "args.receipt"), ("f-2", "args.status"), (None, "payload")]
    assert hall.events("complaint.status_changed") == []
    assert hall.complaints.lookup(code).status == "received"


def test_a_status_change_a_power_cut_left_unannounced_goes_out_at_start_once(tmp_path):
    h = Hall(tmp_path)
    code = h.complaints.submit("delay", "一件").code
    router = CommandRouter(h.recorder)
    router.register_action("complaint.status", handler_for(h.complaints, after=False))  # the cut: after() never ran
    command(router, {"receipt": code, "status": "in_progress"})
    assert h.events("complaint.status_changed") == []
    h.store.close()

    store = Store(h.path, reserve_mb=0, free_space_floor_mb=0)
    complaints = Complaints(Recorder(store, DEVICE, h.clock, "boot-2"), store, h.clock, h.sealer, WINDOWS)
    assert complaints.announce_status() == 1
    assert complaints.announce_status() == 0
    changed = [json.loads(p) for (p,) in store.rows("SELECT payload FROM outbox WHERE type = 'complaint.status_changed'")]
    assert [(e["boot_id"], e["data"]["status"]) for e in changed] == [("boot-2", "in_progress")]
    store.close()


# -- what the hall sees -----------------------------------------------------------------------------


def test_the_hall_sees_counts_and_receipts_never_contents(hall):
    codes = [hall.complaints.submit(cat, TEXT, contact=CONTACT, **extra).code for cat, extra in [("attitude", {}), ("attitude", {"transcribed_by": "s-1"}), ("bribery", {"window": "w1"})]]
    router = CommandRouter(hall.recorder)
    router.register_action("complaint.status", handler_for(hall.complaints))
    command(router, {"receipt": codes[2], "status": "in_progress"})

    counts = hall.complaints.counts()
    assert counts["total"] == 3
    assert counts["by_status"] == {"received": 2, "in_progress": 1, "answered": 0}
    assert counts["by_category"]["attitude"] == 2 and counts["by_category"]["bribery"] == 1 and counts["by_category"]["fees"] == 0
    assert counts["by_channel"] == {"form": 2, "transcribed": 1}
    listed = hall.complaints.receipts()
    assert sorted(r["receipt"] for r in listed) == sorted(codes)
    assert set(listed[0]) == {"receipt", "category", "channel", "transcribed_by", "status", "received_at", "status_at"}
    assert TEXT not in repr(listed) and CONTACT not in repr(listed) and "w1" not in repr(listed)


# -- flood control ------------------------------------------------------------------------------------


class Ticks:
    """A monotonic clock a test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_client_over_its_limit_is_refused_until_the_window_slides():
    ticks = Ticks()
    limiter = SubmissionLimiter(per_client=3, window_s=600, monotonic=ticks)
    for _ in range(3):
        limiter.check("a")
        limiter.count("a")
        ticks.t += 60
    with pytest.raises(RateLimited) as exc:
        limiter.check("a")
    assert exc.value.field == "submission" and exc.value.code == "rate_limited"
    assert exc.value.retry_after_s == pytest.approx(420)
    assert str(exc.value) == "submission: 3 complaints were sent from this device in the last 10 minutes; try again in 7 minutes"
    limiter.check("b")  # another client is not held back
    ticks.t += 420
    limiter.check("a")  # the first one left the window


def test_checking_alone_does_not_use_up_the_limit():
    limiter = SubmissionLimiter(per_client=1, window_s=600, monotonic=Ticks())
    for _ in range(10):
        limiter.check("a")  # a citizen correcting a form that was refused
    limiter.count("a")
    with pytest.raises(RateLimited):
        limiter.check("a")


def test_a_flood_from_many_clients_meets_the_hall_wide_limit():
    ticks = Ticks()
    limiter = SubmissionLimiter(per_client=5, window_s=600, hall_limit=10, hall_window_s=3600, monotonic=ticks)
    for i in range(10):
        limiter.check(f"client-{i}")
        limiter.count(f"client-{i}")
        ticks.t += 1
    assert limiter.saturated
    with pytest.raises(RateLimited, match=r"the complaint box has taken 10 complaints in the last 60 minutes; try again in 60 minutes"):
        limiter.check("someone-new")
    assert limiter.refused == 1
    ticks.t += 3600
    assert not limiter.saturated
    limiter.check("someone-new")


def test_the_limiter_forgets_clients_once_their_window_is_over_and_holds_a_bounded_number():
    ticks = Ticks()
    limiter = SubmissionLimiter(per_client=2, window_s=600, hall_limit=10_000, monotonic=ticks, max_clients=100)
    for i in range(250):
        limiter.count(f"k{i}")
    assert limiter.clients() == 100
    ticks.t += 601
    assert limiter.clients() == 0


def test_the_address_key_is_opaque_stable_within_a_rotation_and_changes_after():
    ticks = Ticks()
    keyer = AddressKey(rotate_s=3600, monotonic=ticks)
    first = keyer("192.168.8.23")
    assert first == keyer("192.168.8.23") != keyer("192.168.8.24")
    # An HMAC in hex, not the address: "192" may well occur in random hex, the address may not.
    assert re.fullmatch(r"[0-9a-f]{32}", first) and "192.168" not in first
    ticks.t += 3600
    assert keyer("192.168.8.23") != first

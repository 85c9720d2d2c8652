"""The MQTT contract: the schemas are sound, cover everything the code publishes, pass what the
real code produces and refuse what drifts from it. The contract itself is docs/mqtt.md."""

from __future__ import annotations

import ast
import base64
import copy
import errno
import json
import re
import time
import unicodedata
import uuid
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator, ValidationError
from nacl.public import PrivateKey, SealedBox

from appliance.accounts import Accounts, SignInDelays
from appliance.clock import HALL_TZ, FakeClock
from appliance.config import CLOCK_SOURCES, PIN_FACTORIES, Config, DeviceConfig, load_config
from appliance.control import ControlClient
from appliance.daemon import Daemon
from appliance.events import SCOPES, Recorder, Topics
from appliance.settings import SETTINGS
from appliance.store import STREAMS, Store
from appliance.web.board.items import add_item, edit_item, end_item
from appliance.web.hall import Hall
from conftest import write_config
from contract import SCHEMA_DIR, event_types, registry, schema_for_topic, schemas, validate_message
from drivers.badge import LETTERS, PARTIAL, TOO_LONG, TOO_SHORT, SimulatedBadgeReader
from services.board import (
    ASCII_SPACE,
    COMPLAINT_ID,
    DEFAULT_PRIORITY,
    FIELDS,
    ID_PATTERN,
    KINDS,
    MAX_ITEMS,
    MAX_TEXT,
    MONGOLIAN,
    PRIORITIES,
    SOURCES,
    BoardRejected,
    BoardService,
    BoardSettings,
    Font,
    merge_scopes,
    validate_board_state,
    validate_item,
    validate_items,
)
from services.calendar import HOURS, CalendarInvalid, HallCalendar, validate_calendar
from services.complaints import CATEGORIES, STATUSES, Complaints, Sealer
from services.levels import LEVELS
from services.ratings import BURST, REPEAT, UNSTAFFED, Ratings
from services.roster import (
    CARD,
    CLOCK_TIME,
    LEAVE_KINDS,
    MAX_DUTY_DAYS,
    MAX_SHIFTS,
    MAX_STAFF,
    RULE_LIMITS,
    STAFF_ID,
    WEEKDAYS,
    AttendanceRules,
    Roster,
    RosterRejected,
    validate_duty,
    validate_shifts,
    validate_staff,
)

REPO = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("appliance", "services", "drivers")
# Calls that record an event (first argument: its type) or raise/clear an alarm (its code).
RECORDING_CALLS = {"record", "telemetry", "EventSpec"}
ALARM_CALLS = {"raise_alarm", "clear_alarm"}

DEVICE = DeviceConfig(id="xlgl-baiyinxile-01", hall="白音锡勒苏木政务服务中心", township="baiyinxile", county="xilinhot")
TOPICS = Topics.for_device(DEVICE)
STORE_ID = "5b0f6a4e-2d3c-4f7a-9b1e-8c6d2a4f0e13"
FOLLOWUP_ID = "c3a1f0d2-6b4e-4f8a-9d2c-7e5b1a3f9c60"
# 2027 as the State Council might announce it (New Year, Spring Festival with a worked Sunday).
GOOD_2027 = {"holidays": ["2027-01-01", "2027-02-05", "2027-02-08", "2027-02-09", "2027-02-10", "2027-02-11"], "workdays": ["2027-02-14"]}
PAYLOAD_SCHEMAS = sorted(set(schemas()) - {"common"})
# The windows of the test config (tests/conftest.py), which the roster's documents are checked against.
WINDOWS = {"w1": "综合受理窗口", "w2": "社保医保窗口"}
ATTENDANCE = sorted(t for t in event_types() if t.startswith("attendance."))


@lru_cache(maxsize=1)
def board_font() -> Font:
    """GNU Unifont as the device reads it, once: the board's checks ask it for glyphs."""
    return Font()


def string_values(node: ast.AST, constants: dict[str, str]) -> set[str]:
    """The strings an expression can evaluate to: a literal, a module constant, or either branch of a condition.

    Not the constants inside it: in ``clear_alarm(args["code"])`` the code is not "code".
    """
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Name) and node.id in constants:
        return {constants[node.id]}
    if isinstance(node, ast.IfExp):
        return string_values(node.body, constants) | string_values(node.orelse, constants)
    return set()


def _own_constants(tree: ast.Module) -> dict[str, str]:
    """A module's top-level names bound to a string literal (``LATE = "attendance.late"``)."""
    found = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found.update({t.id: node.value.value for t in targets if isinstance(t, ast.Name)})
    return found


def _imported_from(path: Path, node: ast.ImportFrom) -> Path | None:
    """The file of this repository a ``from … import`` reads, or None."""
    base = REPO
    if node.level:
        base = path.parent
        for _ in range(node.level - 1):
            base = base.parent
    target = base.joinpath(*node.module.split(".")) if node.module else base
    return target.with_suffix(".py") if target.with_suffix(".py").is_file() else None


def string_constants(path: Path, tree: ast.Module) -> dict[str, str]:
    """The string constants a module can name: its own, and those it imports from the repository."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (source := _imported_from(path, node)) is not None:
            theirs = _own_constants(ast.parse(source.read_text(encoding="utf-8")))
            found.update({a.asname or a.name: theirs[a.name] for a in node.names if a.name in theirs})
    return found | _own_constants(tree)


def literals_passed_to(names: set[str]) -> set[str]:
    """Every string passed as the first argument (or ``type=``/``code=``) of calls to ``names``.

    Reads the syntax tree, so a type chosen by a condition ("button.stuck" if … else
    "button.freed") or named by a module constant (``EventSpec(LATE, …)``) is found as well.
    """
    found = set()
    for path in sorted(p for d in SOURCE_DIRS for p in (REPO / d).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = string_constants(path, tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if name not in names:
                continue
            args = node.args[:1] + [k.value for k in node.keywords if k.arg in ("type", "event_type", "code")]
            found |= {value for a in args for value in string_values(a, constants)}
    return found


def walk(node, path=()):
    """Every (path, subschema) pair in a schema document."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, path + (i,))


# -- the schemas themselves ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(schemas()))
def test_schema_is_a_valid_draft_2020_12_schema_with_id_title_and_description(name):
    doc = schemas()[name]
    Draft202012Validator.check_schema(doc)
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert doc["$id"] == f"https://hall-appliance.example/schemas/{name}.json"
    assert doc["title"] and doc["description"]


@pytest.mark.parametrize("name", sorted(schemas()))
def test_every_property_has_a_description(name):
    missing = []
    for path, node in walk(schemas()[name]):
        # Conditions (if/then/else/not) only narrow properties described elsewhere.
        if any(k in ("if", "then", "else", "not") for k in path):
            continue
        props = node.get("properties")
        if not isinstance(props, dict):
            continue
        for prop, sub in props.items():
            if "description" not in sub:
                missing.append("/".join(map(str, path + ("properties", prop))))
    assert not missing, f"properties without a description: {missing}"


@pytest.mark.parametrize("name", sorted(schemas()))
def test_every_ref_resolves_locally(name):
    doc = schemas()[name]
    resolver = registry().resolver(base_uri=doc["$id"])
    refs = [node["$ref"] for _, node in walk(doc) if isinstance(node.get("$ref"), str)]
    for ref in refs:
        resolver.lookup(ref)  # raises if it would need the network or does not exist


def test_every_event_type_the_code_records_has_a_schema_and_no_schema_is_stale():
    recorded = literals_passed_to(RECORDING_CALLS)
    assert {"alarm.raised", "state.applied", "command.rejected"} <= recorded, "the source scan found too little"
    assert sorted(recorded - event_types()) == [], "event types recorded without a schema in appliance/schemas/"
    assert sorted(event_types() - recorded) == [], "schemas for event types nothing records any more"


@pytest.mark.parametrize("event_type", sorted(event_types()))
def test_event_schema_validates_the_whole_message(event_type):
    doc = schemas()[f"event.{event_type}"]
    assert {"$ref": "envelope.json"} in doc["allOf"]
    assert doc["properties"]["type"]["const"] == event_type
    assert doc["properties"]["stream"]["const"] in STREAMS
    assert doc["properties"]["data"]["additionalProperties"] is False


def test_alarm_codes_in_the_source_are_the_documented_ones():
    codes = literals_passed_to(ALARM_CALLS)
    documented = set(schemas()["event.alarm.raised"]["properties"]["data"]["properties"]["code"]["examples"])
    assert codes == documented
    mqtt_md = (REPO / "docs" / "mqtt.md").read_text(encoding="utf-8")
    assert [c for c in sorted(codes) if f"`{c}`" not in mqtt_md] == []


def test_enumerations_match_the_code():
    common = schemas()["common"]["$defs"]
    assert common["stream"]["enum"] == list(STREAMS)
    assert common["scope"]["enum"] == list(SCOPES)
    assert common["level"]["enum"] == [level.code for level in LEVELS]
    assert common["poor_level"]["enum"] == [level.code for level in LEVELS if level.is_poor]
    rating = schemas()["event.rating.recorded"]["properties"]["data"]
    assert rating["properties"]["level_label"]["enum"] == [level.label for level in LEVELS]
    assert rating["properties"]["flags"]["items"]["enum"] == [REPEAT, BURST, UNSTAFFED]
    # One if/then per level, pinning its label and score, and a follow-up for 差评 only.
    pinned = {c["if"]["properties"]["level"]["const"]: c["then"]["properties"] for c in rating["allOf"]}
    assert pinned == {
        level.code: {"level_label": {"const": level.label}, "score": {"const": level.score}, "followup_id": {"type": "string" if level.is_poor else "null"}}
        for level in LEVELS
    }
    complaint = schemas()["event.complaint.received"]["properties"]["data"]["properties"]
    assert complaint["category"]["enum"] == [c.code for c in CATEGORIES]
    assert schemas()["event.complaint.status_changed"]["properties"]["data"]["properties"]["status"]["enum"] == list(STATUSES)
    online = schemas()["status"]["$defs"]["online"]["properties"]
    assert online["pin_factory"]["enum"] == [f for f in PIN_FACTORIES if f != "auto"]
    assert online["clock"]["properties"]["source"]["enum"] == list(CLOCK_SOURCES)


def test_settings_schema_matches_the_daemons_settings():
    props = schemas()["desired-state.settings"]["properties"]["data"]["properties"]
    assert {key: (p["minimum"], p["maximum"]) for key, p in props.items()} == {key: (lo, hi) for key, (lo, hi, _) in SETTINGS.items()}
    for key, (_, _, default) in SETTINGS.items():
        assert f"default {default}" in props[key]["description"]


def _code_pattern(regex: re.Pattern) -> str:
    # The device ends its patterns with \Z (no trailing newline); JSON Schema has only $.
    return regex.pattern.replace("\\Z", "$")


def test_roster_schemas_match_the_roster():
    common = schemas()["common"]["$defs"]
    assert common["weekday"]["enum"] == list(WEEKDAYS)
    assert common["staff_member_id"]["pattern"] == common["staff_id"]["pattern"] == _code_pattern(STAFF_ID)
    assert common["clock_time"]["pattern"] == _code_pattern(CLOCK_TIME)
    staff = schemas()["desired-state.staff"]["properties"]["data"]["properties"]["staff"]
    assert staff["maxItems"] == MAX_STAFF
    assert staff["items"]["additionalProperties"] is False
    assert staff["items"]["properties"]["cards"]["items"]["pattern"] == _code_pattern(CARD)
    shifts = schemas()["desired-state.shifts"]["properties"]["data"]["properties"]
    assert shifts["weekly"]["maxItems"] == MAX_SHIFTS
    rules = shifts["rules"]["properties"]
    assert {key: (p["minimum"], p["maximum"]) for key, p in rules.items()} == {key: (lo, hi) for key, (lo, hi, _) in RULE_LIMITS.items()}
    for key in RULE_LIMITS:
        assert f"default {getattr(AttendanceRules(), key)})" in rules[key]["description"]
    days = schemas()["desired-state.duty"]["properties"]["data"]["properties"]["days"]
    assert days["maxProperties"] == MAX_DUTY_DAYS
    assert days["additionalProperties"]["properties"]["as_weekday"]["enum"] == list(WEEKDAYS[:5])
    leave = schemas()["event.attendance.leave"]["properties"]["data"]
    assert leave["properties"]["kind"]["enum"] == list(LEAVE_KINDS)
    assert leave["properties"]["kind_label"]["enum"] == list(LEAVE_KINDS.values())
    assert {c["if"]["properties"]["kind"]["const"]: c["then"]["properties"]["kind_label"]["const"] for c in leave["allOf"]} == LEAVE_KINDS
    bad_read = schemas()["event.attendance.bad_read"]["properties"]["data"]["properties"]
    assert bad_read["kind"]["enum"] == [LETTERS, TOO_LONG, TOO_SHORT, PARTIAL]
    # The verdicts quote the rule they applied, within the range the county may set.
    for event_type, rule in (("late", "late_grace_min"), ("early_leave", "early_leave_grace_min"), ("absent", "absent_after_min")):
        prop = schemas()[f"event.attendance.{event_type}"]["properties"]["data"]["properties"][rule]
        assert (prop["minimum"], prop["maximum"]) == RULE_LIMITS[rule][:2]


def test_board_schemas_match_the_board():
    common = schemas()["common"]["$defs"]
    assert common["board_kind"]["enum"] == list(KINDS)
    assert common["board_source"]["enum"] == list(SOURCES)
    item_id = ID_PATTERN.pattern.removesuffix("\\Z")  # the device anchors its start with match()
    assert common["board_item_id"]["pattern"] == f"^{item_id}$"
    # What the board reports may also be its own complaint item, whose id no author can give.
    assert common["board_shown_id"]["pattern"] == f"^({COMPLAINT_ID}|{item_id})$"
    assert not re.search(common["board_item_id"]["pattern"], COMPLAINT_ID)
    item = common["board_item"]
    assert set(item["properties"]) == set(FIELDS)
    assert item["additionalProperties"] is False
    assert common["board_text"]["maxLength"] == MAX_TEXT
    priority = item["properties"]["priority"]
    assert (priority["minimum"], priority["maximum"]) == (PRIORITIES.start, PRIORITIES.stop - 1)
    assert f"default {DEFAULT_PRIORITY}" in priority["description"]
    assert item["properties"]["schedule"]["items"]["pattern"] == f"^{HOURS.pattern}$"
    assert schemas()["desired-state.board"]["properties"]["data"]["properties"]["items"]["maxItems"] == MAX_ITEMS


def _bmp() -> list[str]:
    """Every character of the Basic Multilingual Plane but the surrogates, which UTF-8 JSON cannot carry."""
    return [chr(c) for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF]


def test_the_board_text_schema_refuses_exactly_the_invisible_characters_and_mongolian():
    """The schema's character rule is the device's, for the whole BMP: never stricter, and what
    it leaves out (combining marks, glyphs) its description says the device checks."""
    refused = re.compile(schemas()["common"]["$defs"]["board_text"]["not"]["pattern"])
    by_schema = {c for c in _bmp() if refused.search(c)}
    invisible = {c for c in _bmp() if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") and not ASCII_SPACE.fullmatch(c)}
    assert by_schema == invisible | {chr(c) for c in MONGOLIAN}
    accepted_by_the_device = []
    for c in sorted(by_schema):
        try:
            validate_item({"id": "n-1", "kind": "announcement", "text": f"通知{c}通知"}, board_font())
            accepted_by_the_device.append(f"U+{ord(c):04X}")
        except BoardRejected as exc:
            assert exc.field == "text"
    assert accepted_by_the_device == []


# -- real payloads from the real code --------------------------------------------------------


@pytest.fixture
def recorder(tmp_path):
    store = Store(tmp_path / "hall.db", free_space_floor_mb=0, reserve_mb=0)
    yield Recorder(store, DEVICE, FakeClock(synced=False), str(uuid.uuid4()))
    store.close()


# The county's board content at its three scopes: a policy notice and a job posting
# county-wide, the township's own version of that posting (same id, raised version), and one
# hall's 六公开 item, shown in opening hours only.
BOARD_COUNTY = {"items": [
    {"id": "yibao-2026", "kind": "policy", "text": "城乡居民医保缴费截至12月31日", "start": "2026-11-01", "end": "2026-12-31", "priority": 7, "version": 3},
    {"id": "zhaopin-1125", "kind": "job", "text": "牧业公司招聘饲养员两名", "end": "2026-12-15T17:30+08:00"},
]}
BOARD_TOWNSHIP = {"items": [{"id": "zhaopin-1125", "kind": "job", "text": "白音锡勒牧业公司招聘饲养员三名", "end": "2026-12-15T17:30+08:00", "version": 2}]}
BOARD_DEVICE = {"items": [{"id": "liugongkai-11", "kind": "publicity", "text": "十一月村务公开：低保名单已张贴", "schedule": ["08:30-12:00", "14:30-17:30"]}]}
# The hall's own, as its page keeps them: a notice, and an urgent one that ends at 23:59:20.
HALL_ITEMS = [
    {"id": "hall-20261125-1", "kind": "announcement", "text": "明日上午停水", "version": 2},
    {"id": "hall-20261125-2", "kind": "urgent", "text": "系统升级 暂停办理", "end": "2026-11-25T23:59:20+08:00"},
]


def notice(**fields) -> dict:
    """A board item, the hall's notice of a water cut unless ``fields`` say otherwise."""
    return {"id": "n-1", "kind": "announcement", "text": "明日上午停水"} | fields


def play_the_board(font: Font) -> list[dict]:
    """Proof of play from the real board service, frame by frame at 30 frames a second on a
    fake clock: the last minute of 25 November before NTP answers, then the first of the 26th.

    The county's scopes merged, the hall's items, the complaint address, an urgent item that
    interrupts and ends, a thank-you (never counted): every field of a row, and both forms of
    ``provisional``.
    """
    clock = FakeClock(datetime(2026, 11, 25, 23, 59, tzinfo=HALL_TZ), synced=False)
    board = BoardService(font, 128, 16, HallCalendar(), clock, BoardSettings(blank_when_closed=False), complaint_address="hall.local/ts")
    scopes = {"county": BOARD_COUNTY, "township": BOARD_TOWNSHIP, "device": BOARD_DEVICE}
    board.set_items("county", merge_scopes({scope: validate_board_state(data, font) for scope, data in scopes.items()}))
    board.set_items("hall", validate_items(HALL_ITEMS, font, source="hall"))

    def run(seconds: float) -> None:
        for _ in range(round(seconds * 30)):
            board.next_frame()
            clock.advance(1 / 30)

    run(25)  # the urgent item, held three times until its end; then the round
    board.on_rating()
    run(25)
    clock.synced = True
    run(70)  # past midnight
    return board.take_proof_of_play()


def complaint_box(recorder: Recorder) -> tuple[Complaints, PrivateKey]:
    """The real complaint box on ``recorder``, sealing to a county key pair made here."""
    county_key = PrivateKey.generate()
    sealer = Sealer(bytes(county_key.public_key))
    return Complaints(recorder, recorder.store, recorder.clock, sealer, {"w1": "综合受理窗口"}), county_key


def set_status(complaints: Complaints, args: dict) -> None:
    """complaint.status as the service applies it: checked, set in one transaction, announced.

    (The daemon does not route the command yet; this is what its handler will do.)
    """
    checked = complaints.validate_status(args)
    with complaints.store.transaction() as conn:
        complaints.apply_status(conn, checked)
    complaints.announce_status()


def record_one_of_each(recorder: Recorder) -> None:
    """One event of every type: the ratings service's own, and the rest with data shaped as
    the daemon and the command router make it."""
    clock = recorder.clock
    ratings = Ratings(recorder, recorder.store, clock, HallCalendar(), {"w1": "综合受理窗口"})
    ratings.press("w1", "very_dissatisfied")  # rating.recorded and followup.opened, provisional
    recorder.raise_alarm("clock_unsynced", "the clock is not synchronised yet; time-of-day verdicts stay provisional")
    clock.advance(41.25)
    clock.synced = True
    recorder.telemetry("clock.synced", {"boot_id": recorder.boot_id, "mono_ns": clock.monotonic_ns(), "time": clock.now().isoformat(timespec="milliseconds")}, droppable=False)
    recorder.clear_alarm("clock_unsynced")
    ratings.settle(clock.now(), clock.monotonic_ns(), recorder.boot_id)  # followup.updated
    recorder.telemetry("device.health", {"uptime_s": 41, "outbox_depth": 4, "free_mb": 5120, "alarms": [], "uplink": "connected"})
    recorder.telemetry("button.stuck", {"window": "w1", "level": "satisfied"}, droppable=False)
    recorder.telemetry("button.freed", {"window": "w1", "level": "satisfied"}, droppable=False)
    clock.advance(86400)  # a working day later: the call-back is overdue
    ratings.check_overdue()  # followup.overdue
    ratings.calendar.set_county_years(validate_calendar({"years": {"2026": {"holidays": ["2026-12-14"]}}}))  # the county's 2026: one day off
    ratings.reschedule()  # followup.rescheduled
    recorder.telemetry("state.applied", {"name": "settings", "scope": "township", "version": 7}, droppable=False)
    recorder.telemetry("command.applied", {"name": "resync", "command_id": "7d2c", "result": {"unacked": 6}}, droppable=False)
    recorder.telemetry("command.rejected", {"topic": TOPICS.command("resync"), "kind": "action", "name": "resync", "field": "args", "reason": "takes no arguments, got full", "command_id": "r-2"}, droppable=False)
    recorder.telemetry("board.played", {"plays": play_the_board(board_font())})  # as Daemon.publish_proof_of_play
    complaints, _ = complaint_box(recorder)
    receipt = complaints.submit("fees", "收了两百元加急费", contact="13912345678", window="w1", transcribed_by="s-007")
    set_status(complaints, {"receipt": receipt.code, "status": "answered", "reply": "已核实，退还费用。", "by": "县纪委监委 王"})


def outbox(store: Store) -> list[tuple[str, bytes]]:
    return [(row.topic, row.payload) for row in store.unacked_after(0, 1000)]


def test_every_event_recorded_through_the_recorder_validates_on_its_topic(recorder):
    record_one_of_each(recorder)
    used = [validate_message(topic, payload) for topic, payload in outbox(recorder.store)]
    # Attendance events come from the roster, the hall's board items from the page: below.
    # Update events come from the updater's own process: tests/test_update.py validates every one it records.
    assert sorted(used) == sorted(f"event.{t}" for t in event_types() if t not in ATTENDANCE and t != "board.hall_items" and not t.startswith("update."))


def test_proof_of_play_from_the_board_service_validates_in_every_form(recorder):
    plays = play_the_board(board_font())
    row = schemas()["event.board.played"]["properties"]["data"]["properties"]["plays"]["items"]
    assert all(list(p) == row["required"] and set(p) == set(row["properties"]) for p in plays)
    recorder.telemetry("board.played", {"plays": plays})
    [(topic, payload)] = outbox(recorder.store)
    assert validate_message(topic, payload) == "event.board.played"
    assert {(p["source"], p["provisional"]) for p in plays} == {("county", True), ("county", False), ("hall", True), ("hall", False)}
    assert {p["day"] for p in plays} == {"2026-11-25", "2026-11-26"}
    # The township's posting replaced the county's; the 六公开 item keeps to opening hours.
    assert {(p["item_id"], p["version"]) for p in plays if p["source"] == "county"} == {("yibao-2026", 3), ("zhaopin-1125", 2)}
    assert {p["item_id"] for p in plays if p["source"] == "hall"} == {"hall-20261125-1", "hall-20261125-2", COMPLAINT_ID}
    assert [p["shows"] for p in plays if p["kind"] == "urgent"] == [3]  # a fourth showing, cut short by its end, is not counted
    assert plays == sorted(plays, key=lambda p: (p["day"], p["source"], p["item_id"], p["version"]))


COMPLAINT_TEXT = "窗口工作人员要求先交两百元“加急费”才给办理。marker-5e1d"


def test_complaint_events_from_the_complaint_box_validate_on_their_topics(recorder):
    complaints, county_key = complaint_box(recorder)
    by_form = complaints.submit("bribery", COMPLAINT_TEXT, contact="13912345678", window="w1", staff="乌日娜")
    by_staff = complaints.submit("other", COMPLAINT_TEXT + "\n电话转录", transcribed_by="s-007")
    set_status(complaints, {"receipt": by_form.code.lower(), "status": "in_progress"})  # no reply, no by
    recorder.clock.advance(3600)
    set_status(complaints, {"receipt": by_form.code, "status": "answered", "reply": "已核实。\n退还费用并批评教育。", "by": "县纪委监委 王"})
    set_status(complaints, {"receipt": by_form.code, "status": "in_progress"})  # the reply given before stays

    published = outbox(recorder.store)
    assert [validate_message(topic, payload) for topic, payload in published] == ["event.complaint.received"] * 2 + ["event.complaint.status_changed"] * 3
    events = [json.loads(payload) for _, payload in published]
    assert [topic for topic, _ in published] == [TOPICS.event(e["type"]) for e in events]
    received, (in_progress, answered, kept) = events[:2], events[2:]
    assert [(e["data"]["receipt"], e["data"]["channel"], e["data"]["transcribed_by"]) for e in received] == [
        (by_form.code, "form", None),
        (by_staff.code, "transcribed", "s-007"),
    ]
    assert (in_progress["data"]["reply"], in_progress["data"]["set_by"]) == (None, None)
    assert (answered["data"]["reply"], answered["data"]["set_by"]) == ("已核实。\n退还费用并批评教育。", "县纪委监委 王")
    assert kept["data"]["reply"] == answered["data"]["reply"] and kept["data"]["set_by"] is None
    assert [e["stream"] for e in events] == ["person"] * 2 + ["telemetry"] * 3
    # Only ciphertext travels: the text, contact and staff named are in no payload, and the
    # county's key opens the ciphertext to them.
    for _, payload in published:
        assert "marker-5e1d" not in payload.decode() and "13912345678" not in payload.decode() and "乌日娜" not in payload.decode()
    opened = json.loads(SealedBox(county_key).decrypt(base64.b64decode(received[0]["data"]["ciphertext"])))
    assert (opened["text"], opened["contact"], opened["window"], opened["staff"]) == (COMPLAINT_TEXT, "13912345678", "w1", "乌日娜")


URINA, BATER, QIQIGE, ZHANG, LI = "0012345678", "0087654321", "0011112222", "0099990000", "0010101010"
UNKNOWN_CARD = "0055555555"
ROSTER_STAFF = {
    "staff": [
        {"id": "s-001", "name": "乌日娜", "cards": [URINA], "windows": ["w1"]},
        {"id": "s-002", "name": "巴特尔", "cards": [BATER], "windows": ["w2"]},
        {"id": "s-003", "name": "其其格", "cards": [QIQIGE], "windows": ["w1", "w2"]},
        {"id": "s-009", "name": "张建国", "cards": [ZHANG], "leader": True},
        {"id": "s-010", "name": "李明", "cards": [LI], "windows": ["w2"], "active": False},
    ]
}
ROSTER_SHIFTS = {
    "weekly": [
        {"staff": "s-001", "window": "w1", "days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:30", "end": "17:30"},
        {"staff": "s-002", "window": "w2", "days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:30", "end": "12:00"},
        {"staff": "s-002", "window": "w2", "days": ["mon", "tue", "wed", "thu", "fri"], "start": "14:30", "end": "17:30"},
        {"staff": "s-003", "window": "w1", "days": ["wed"], "start": "10:00", "end": "16:00"},
    ],
    "leaders": {"mon": "s-009", "tue": "s-009", "wed": "s-009", "thu": "s-009", "fri": "s-009"},
}


def wed(h: int, mi: int = 0, s: int = 0) -> datetime:
    """Wednesday 25 November 2026, an ordinary working day."""
    return datetime(2026, 11, 25, h, mi, s, tzinfo=HALL_TZ)


def attend(store: Store) -> None:
    """A Wednesday at the hall through the real roster, badge reader and calendar: every
    attendance event, in both forms where a field may be null.

    The day starts after a power cut with the clock an hour behind and unsynchronised:
    check-ins and a check-out are held, then judged when it syncs. Then an absence the
    director's leave cancels, another the person's late arrival cancels, early leave, gaps at
    a window, cards unknown and inactive, a card registered, leave ended and withdrawn, the
    daily summary, and a leader's check-in with no window, never checked out.
    """
    clock = FakeClock(wed(7, 20), synced=False)  # really 08:20
    boot = str(uuid.uuid4())
    roster = Roster(Recorder(store, DEVICE, clock, boot), store, clock, HallCalendar(), WINDOWS)
    for name, data in (("staff", ROSTER_STAFF), ("shifts", ROSTER_SHIFTS)):
        roster.apply_state(name, {"county": roster.validator(name)(data)})
    reader = SimulatedBadgeReader(roster.swipe, roster.bad_read, clock=lambda: clock.monotonic_ns() / 1e9)

    def at(when: datetime) -> None:
        """Move the clock to ``when`` and let the daemon's tick run once."""
        clock.advance((when - clock.now()).total_seconds())
        roster.tick()

    reader.swipe(URINA)  # checked_in, provisional: on time, judged at the sync
    clock.advance(20)
    reader.swipe(URINA)  # a duplicate: counted, not recorded
    at(wed(7, 50))  # really 08:50
    reader.swipe(BATER)  # checked_in, provisional: late
    reader.swipe("12AB")  # bad_read: letters, which a reader set to decimal never types
    reader.swipe(UNKNOWN_CARD)  # unknown_card, unknown
    at(wed(8, 30))  # really 09:30
    reader.swipe(BATER)  # checked_out, provisional: early
    clock.advance(60)
    clock.set_wall(wed(9, 31), synced=True)  # NTP answers
    roster.settle(clock.now(), clock.monotonic_ns(), boot)  # late and early_leave, settled
    at(wed(9, 31, 5))  # window_unstaffed: w2, 巴特尔 gone
    at(wed(10, 30))  # absent: 其其格
    at(wed(11, 0))
    sick = roster.record_leave("s-003", "2026-11-25T09:00", "2026-11-25T18:00", "sick", "director", "发烧，已电话请假")  # cancels her absence
    at(wed(12, 0))  # window_unstaffed_ended: schedule_end
    reader.swipe(LI)  # unknown_card, inactive
    roster.register_card(UNKNOWN_CARD, "s-009", "director")  # card_registered
    at(wed(12, 30))
    reader.swipe(UNKNOWN_CARD)  # checked_in: 张建国, no shift, no window
    at(wed(13, 0))
    roster.end_leave(sick["leave_id"], "director")  # leave_ended: back at 13:00
    annual = roster.record_leave("s-001", "2026-11-26", "2026-11-26", "annual", "director")
    roster.end_leave(annual["leave_id"], "director")  # leave_ended: withdrawn before it began
    at(wed(14, 35))  # window_unstaffed: w2, 巴特尔's afternoon
    at(wed(15, 0))  # absent: 巴特尔
    at(wed(15, 10))
    reader.swipe(BATER)  # checked_in and late, cancelling the absence
    at(wed(15, 10, 5))  # window_unstaffed_ended: check_in
    at(wed(16, 0))
    reader.swipe(BATER)  # checked_out and early_leave
    at(wed(16, 0, 5))  # window_unstaffed: w2 again
    at(wed(17, 35))
    reader.swipe(URINA)  # checked_out, on time, one duplicate
    at(wed(18, 0))  # the summary: the last shift's end (17:30) plus summary_delay_min
    at(datetime(2026, 11, 26, 0, 31, tzinfo=HALL_TZ))  # missed_checkout: 张建国 never checked out


@pytest.fixture(scope="module")
def attendance(tmp_path_factory) -> list[tuple[str, bytes]]:
    """(topic, payload) of every event of the attendance day, in the order recorded."""
    store = Store(tmp_path_factory.mktemp("attendance") / "hall.db", free_space_floor_mb=0, reserve_mb=0)
    try:
        attend(store)
        return outbox(store)
    finally:
        store.close()


def test_every_attendance_event_the_roster_records_validates_on_its_topic(attendance):
    used = [validate_message(topic, payload) for topic, payload in attendance]
    assert set(used) == {f"event.{t}" for t in ATTENDANCE}
    events = [json.loads(payload) for _, payload in attendance]
    # Both forms of what may be null or may vary, from the real code.
    seen = {
        (e["type"], variant)
        for e in events
        for variant in {
            "attendance.checked_in": lambda d: ("provisional" if d["provisional"] else "judged", "shift" if d["shift"] else "no shift", "window" if d["window"] else "no window"),
            "attendance.checked_out": lambda d: ("provisional" if d["provisional"] else "judged",),
            "attendance.unknown_card": lambda d: (d["reason"],),
            "attendance.late": lambda d: ("settled" if d["settled"] else "at the swipe", "cancels" if d["cancels"] else "cancels nothing"),
            "attendance.early_leave": lambda d: ("settled" if d["settled"] else "at the swipe",),
            "attendance.leave": lambda d: ("cancels" if d["cancels"] else "cancels nothing",),
            "attendance.leave_ended": lambda d: ("withdrawn" if d["withdrawn"] else "ended",),
            "attendance.window_unstaffed_ended": lambda d: (d["ended_by"],),
            "attendance.missed_checkout": lambda d: ("window" if d["window"] else "no window",),
        }.get(e["type"], lambda d: ())(e["data"])
    }
    assert seen >= {
        ("attendance.checked_in", "provisional"), ("attendance.checked_in", "judged"), ("attendance.checked_in", "shift"), ("attendance.checked_in", "no shift"),
        ("attendance.checked_in", "window"), ("attendance.checked_in", "no window"),
        ("attendance.checked_out", "provisional"), ("attendance.checked_out", "judged"),
        ("attendance.unknown_card", "unknown"), ("attendance.unknown_card", "inactive"),
        ("attendance.late", "settled"), ("attendance.late", "at the swipe"), ("attendance.late", "cancels"), ("attendance.late", "cancels nothing"),
        ("attendance.early_leave", "settled"), ("attendance.early_leave", "at the swipe"),
        ("attendance.leave", "cancels"), ("attendance.leave", "cancels nothing"),
        ("attendance.leave_ended", "withdrawn"), ("attendance.leave_ended", "ended"),
        ("attendance.window_unstaffed_ended", "check_in"), ("attendance.window_unstaffed_ended", "schedule_end"),
        ("attendance.missed_checkout", "no window"),
    }  # fmt: skip
    [summary] = [e["data"] for e in events if e["type"] == "attendance.summary"]
    assert [(s["staff_id"], s["status"], s["early_leave"]) for s in summary["shifts"]] == [
        ("s-001", "on_time", False), ("s-002", "late", True), ("s-003", "leave", False), ("s-002", "late", True)
    ]
    assert [u["staff_id"] for u in summary["unscheduled"]] == ["s-009"]
    assert summary["counts"]["scheduled"] == sum(summary["counts"][k] for k in ("on_time", "late", "absent", "leave", "no_record", "unverified"))


def test_person_and_telemetry_streams_split_facts_from_verdicts(attendance):
    streams = {json.loads(p)["type"]: json.loads(p)["stream"] for _, p in attendance}
    facts = ("checked_in", "checked_out", "unknown_card", "leave", "leave_ended", "card_registered")
    assert {t: s for t, s in streams.items() if s == "person"} == {f"attendance.{t}": "person" for t in facts}


def test_a_verdict_names_the_swipe_it_judges_and_the_absence_it_cancels(attendance):
    events = [json.loads(p) for _, p in attendance]
    by_id = {e["event_id"]: e for e in events}
    for late in (e for e in events if e["type"] == "attendance.late"):
        checked_in = by_id[late["data"]["checked_in_event_id"]]
        assert checked_in["type"] == "attendance.checked_in" and checked_in["data"]["staff_id"] == late["data"]["staff_id"]
        if late["data"]["cancels"]:
            assert by_id[late["data"]["cancels"]]["type"] == "attendance.absent"
        if not late["data"]["settled"]:  # judged at the swipe: in its transaction, at the next telemetry seq
            assert events.index(late) == events.index(checked_in) + 1
    for early in (e for e in events if e["type"] == "attendance.early_leave"):
        assert by_id[early["data"]["checked_out_event_id"]]["type"] == "attendance.checked_out"
    for leave in (e for e in events if e["type"] == "attendance.leave"):
        assert leave["event_id"] == leave["data"]["leave_id"]
        assert all(by_id[c]["type"] == "attendance.absent" for c in leave["data"]["cancels"])
    for ended in (e for e in events if e["type"] == "attendance.window_unstaffed_ended"):
        assert by_id[ended["data"]["unstaffed_event_id"]]["data"]["window"] == ended["data"]["window"]


def test_a_known_persons_card_number_is_not_published_with_their_swipes(attendance):
    swipes = [p.decode() for _, p in attendance if json.loads(p)["type"] in ("attendance.checked_in", "attendance.checked_out")]
    assert swipes and not any(card in p for p in swipes for card in (URINA, BATER, ZHANG, UNKNOWN_CARD))


@pytest.fixture
def daemon(tmp_path):
    """An in-process daemon on mock GPIO with no broker and the simulated badge reader, its clock not yet synced."""
    clock = FakeClock(synced=False)
    path = write_config(tmp_path / "dev")
    path.write_text(path.read_text().replace("[control]", '[badge]\nenabled = true\ndriver = "simulated"\n\n[control]'))
    d = Daemon(load_config(path), clock=clock, simulate=True)
    d.start()
    yield d
    d.stop()


def hold_until_stuck(d: Daemon, window: str, level: str) -> None:
    """Hold a button down until the button driver reports it stuck.

    The daemon's buttons run on the real monotonic clock, not the test's FakeClock: rather
    than wait ratings.stuck_after (20 s), the press is dated that long ago.
    """
    d.buttons.pin(window, level).drive_low()
    contact = d.buttons.contacts[(window, level)]
    contact.pressed_at -= contact.stuck_after_s
    d.buttons.tick()


def release(d: Daemon, window: str, level: str) -> None:
    """Let go of a button, past the debounce time so the release is not taken for chatter.

    A jammed button is freed once it has stayed open for free_after_s: as in
    hold_until_stuck, the opening is dated that long ago rather than waited for.
    """
    contact = d.buttons.contacts[(window, level)]
    time.sleep(contact.debounce_s)
    d.buttons.pin(window, level).drive_high()
    if contact.freeing_since is not None:
        contact.freeing_since -= contact.free_after_s
    d.buttons.tick()


def command(**args) -> bytes:
    """A one-off command's payload with a fresh command_id."""
    return json.dumps({"command_id": str(uuid.uuid4()), "args": args}, ensure_ascii=False).encode()


def drive_daemon(d: Daemon) -> None:
    """A few days in the hall, through the daemon's own code paths: ratings (one a repeat, one
    差评 before the clock syncs), a jammed button, an overdue follow-up the county closes,
    settings and the calendar pushed (one moving the follow-up's deadline), bad commands refused,
    then a day of attendance."""
    t = d.recorder.topics
    d.buttons.press("w1", "satisfied")
    d.buttons.press("w1", "satisfied")  # at once again: flagged repeat
    d.buttons.press("w2", "dissatisfied")  # 差评: its follow-up opens with provisional deadlines
    d.watch_clock()  # first look: unsynced → alarm.raised
    d.clock.advance(95.5)
    d.clock.synced = True
    d.watch_clock()  # → clock.synced, alarm.cleared, followup.updated
    d.recorder.telemetry("device.health", d.health())
    hold_until_stuck(d, "w1", "basically_satisfied")  # → rating.recorded, button.stuck, alarm.raised
    d.router.handle("cmd", "device", "alarm.clear", command(code="button_stuck"), t.command("alarm.clear"))  # → command.applied, alarm.cleared
    d.router.handle("cmd", "device", "alarm.clear", command(code="disk_low"), t.command("alarm.clear"))  # not active
    release(d, "w1", "basically_satisfied")  # → button.freed
    d.clock.advance(86400)  # Thursday: nobody called the citizen back
    d.maintenance()  # → followup.overdue
    # The township's whole 2026, as far as this test needs it: one day off in December.
    local = {"version": 1, "data": {"years": {"2026": {"holidays": ["2026-12-14"]}}}}
    d.router.handle("set", "township", "calendar", json.dumps(local).encode(), t.desired("township", "calendar"))  # → followup.rescheduled
    (followup,) = d.ratings.open_followups()
    fid = followup["followup_id"]
    d.router.handle("cmd", "device", "followup.close", command(followup_id=fid, outcome="called_back", note="已电话回访"), t.command("followup.close"))
    d.router.handle("cmd", "device", "followup.close", command(followup_id=fid, outcome="rectified", closed_by="county-supervisor"), t.command("followup.close"))
    d.router.handle("cmd", "device", "followup.close", command(followup_id=fid), t.command("followup.close"))  # already closed
    d.router.handle("set", "county", "settings", b'{"version": 2, "data": {"health_interval": 600}}', t.desired("county", "settings"))
    d.router.handle("set", "device", "settings", b'{"version": 1, "data": {"status_interval": 5}}', t.desired("device", "settings"))
    calendar = {"version": 1, "data": {"years": {"2027": {"holidays": ["2027-01-01"], "workdays": []}}}}
    d.router.handle("set", "county", "calendar", json.dumps(calendar).encode(), t.desired("county", "calendar"))
    calendar = {"version": 1, "data": {"years": {"2027": {"holidays": ["2028-01-01"]}}}}
    d.router.handle("set", "device", "calendar", json.dumps(calendar).encode(), t.desired("device", "calendar"))  # not in 2027
    d.router.handle("cmd", "device", "resync", json.dumps({"command_id": str(uuid.uuid4())}).encode(), t.command("resync"))
    d.router.handle("cmd", "device", "self-destruct", b'{"command_id": "x1"}', t.command("self-destruct"))
    d.router.handle("cmd", "device", "resync", b'{"args": {}}', t.command("resync"))
    attend_at_the_daemon(d)


def attend_at_the_daemon(d: Daemon) -> None:
    """Thursday 26 November through the daemon's roster wiring: the county's documents through
    the command router (one refused), the main loop's tick, badges through the simulated reader."""
    t = d.recorder.topics
    staff = {"version": 1, "data": {"staff": [{"id": "s-001", "name": "乌日娜", "cards": [URINA], "windows": ["w1"]}]}}
    shifts = {"version": 1, "data": {"weekly": [{"staff": "s-001", "window": "w1", "days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:30", "end": "17:30"}]}}
    duty = {"version": 1, "data": {"days": {"2026-12-31": {"shifts": []}}}}
    backwards = {"version": 1, "data": {"weekly": [{"staff": "s-001", "window": "w1", "days": ["thu"], "start": "17:30", "end": "08:30"}]}}
    d.router.handle("set", "county", "staff", json.dumps(staff, ensure_ascii=False).encode(), t.desired("county", "staff"))
    d.router.handle("set", "township", "shifts", json.dumps(shifts).encode(), t.desired("township", "shifts"))
    d.router.handle("set", "device", "duty", json.dumps(duty).encode(), t.desired("device", "duty"))
    d.router.handle("set", "device", "shifts", json.dumps(backwards).encode(), t.desired("device", "shifts"))  # ends before it starts: refused
    d.roster.tick()  # 09:01: 乌日娜 is absent and w1 unstaffed
    d.badge.swipe(URINA)  # she comes: checked_in, late, cancelling the absence
    d.badge.swipe("0055555555")  # nobody's card
    d.badge.swipe("12AB")  # letters, which a reader set to decimal never types
    d.roster.tick()  # w1 is staffed again
    d.clock.advance(2 * 3600)
    d.badge.swipe(URINA)  # 11:01: checked_out, early
    d.clock.advance(7 * 3600)
    d.roster.tick()  # 18:01: the day's summary (closing at 17:30, plus 30 minutes)


def test_every_event_from_a_running_daemon_validates_on_its_topic(daemon):
    drive_daemon(daemon)
    used = [validate_message(topic, payload) for topic, payload in outbox(daemon.store)]
    # Leave and cards come from the director's page, a missed check-out from a night: attend() has them.
    # This daemon has no board: proof of play, and the hall's items from the page, come with the one below.
    elsewhere = {f"event.attendance.{t}" for t in ("leave", "leave_ended", "card_registered", "missed_checkout")} | {"event.board.played", "event.board.hall_items"}
    # The daemon does not run the complaint box yet: its events come from the service itself, above.
    elsewhere |= {"event.complaint.received", "event.complaint.status_changed"}
    # Update events come from the updater's own process (appliance/update.py), never the daemon's: tests/test_update.py.
    elsewhere |= {"event.update.started", "event.update.succeeded", "event.update.failed"}
    assert set(used) == {f"event.{t}" for t in event_types()} - elsewhere
    assert used.count("event.command.rejected") == 7
    events = [json.loads(payload) for _, payload in outbox(daemon.store)]
    ratings = [e["data"] for e in events if e["type"] == "rating.recorded"]
    assert [(r["window"], r["level"], r["flags"]) for r in ratings] == [("w1", "satisfied", []), ("w1", "satisfied", ["repeat"]), ("w2", "dissatisfied", []), ("w1", "basically_satisfied", [])]
    (moved,) = [e["data"] for e in events if e["type"] == "followup.rescheduled"]
    assert (moved["previous_rectify_due"][:10], moved["rectify_due"][:10]) == ("2026-12-16", "2026-12-17")  # past the township's day off
    results = [e["data"]["result"] for e in events if e["type"] == "command.applied" and e["data"]["name"] == "followup.close"]
    assert [r["state"] for r in results] == ["open", "closed"]
    rejected = [(e["data"]["name"], e["data"]["field"]) for e in events if e["type"] == "command.rejected"]
    assert ("followup.close", "args.followup_id") in rejected and ("calendar", "data.years.2027.holidays[0]") in rejected and ("alarm.clear", "args.code") in rejected
    assert ("shifts", "data.weekly[0].end") in rejected
    applied = [(e["data"]["name"], e["data"]["scope"]) for e in events if e["type"] == "state.applied"]
    assert {("staff", "county"), ("shifts", "township"), ("duty", "device")} <= set(applied)
    late = [e["data"] for e in events if e["type"] == "attendance.late"]
    assert [(d["staff_id"], d["minutes_late"], d["settled"], d["cancels"] is not None) for d in late] == [("s-001", 32, False, True)]


@pytest.mark.parametrize(("online", "reason"), [(True, None), (False, "connection lost"), (False, "shutdown")])
def test_status_birth_will_and_shutdown_validate(daemon, online, reason):
    drive_daemon(daemon)  # alarms, applied versions and a non-empty outbox in the birth
    daemon.recorder.raise_alarm("disk_low", "less than 200 MB free beside the store")
    payload = daemon.uplink._status_payload(online, 3, reason)
    assert validate_message(daemon.recorder.topics.status, payload) == "status"
    assert json.loads(payload)["online"] is online


def test_every_command_the_daemon_knows_has_a_schema(daemon):
    assert {n for n in schemas() if n.startswith("desired-state.")} == {f"desired-state.{n}" for n in daemon.router.states}
    assert {n for n in schemas() if n.startswith("command.")} == {f"command.{n}" for n in daemon.router.actions}


@pytest.fixture
def board_daemon(tmp_path):
    """An in-process daemon driving the emulated LED board, on mock GPIO with no broker, its clock not yet synced."""
    path = write_config(tmp_path / "dev")
    path.write_text(path.read_text().replace("[control]", '[display]\nenabled = true\ndriver = "emulator"\n\n[control]'))
    d = Daemon(load_config(path), clock=FakeClock(synced=False), simulate=True)
    d.start()
    yield d
    d.stop()


def show_the_board(d: Daemon, seconds: float) -> None:
    """Run the board ``seconds`` on the daemon's fake clock, half a second a step.

    The daemon's board loop draws frames in between; a frame here after every step makes sure
    each showing that completes is counted whatever the loop was doing.
    """
    for _ in range(round(seconds * 2)):
        d.clock.advance(0.5)
        d.board.next_frame()


def page_for(config: Config, store: Store, clock: FakeClock, boot: str) -> Hall:
    """The device's page on ``store``, as create_app makes it (its own recorder, the daemon's boot)."""
    return Hall(
        config=config,
        store=store,
        accounts=Accounts(store, clock),
        delays=SignInDelays(lambda: clock.monotonic_ns() / 1e9),
        control=ControlClient(config.control.socket),
        clock=clock,
        simulator=True,
        tls=False,
        recorder=Recorder(store, config.device, clock, boot),
    )


def change_the_hall_items(page: Hall) -> str:
    """The director keeps the hall's own board items on the page (appliance.web.board.items) in
    every way it records: an item added and changed, one for tomorrow added and withdrawn, an
    urgent one added and ended. Returns the id of the one left on the board."""
    water = add_item(page, board_font(), "director", {"kind": "announcement", "text": "明日上午停水"})
    edit_item(page, board_font(), "director", water.item_id, {"kind": "announcement", "text": "明日上午九点至十一点停水", "priority": 6}, water.item["version"])
    tomorrow = add_item(page, board_font(), "director", {"kind": "job", "text": "招聘保洁员两名", "start": "2026-11-26T08:30"})
    end_item(page, board_font(), "director", tomorrow.item_id)  # not begun: withdrawn
    upgrade = add_item(page, board_font(), "director", {"kind": "urgent", "text": "系统升级 暂停办理", "end": "2026-11-25T12:00+08:00"})
    end_item(page, board_font(), "director", upgrade.item_id)  # begun: ended now, kept in the list
    return water.item_id


def eventually(condition, timeout: float = 5.0) -> None:
    """Wait for ``condition()`` to hold (the board loop runs on its own thread, on real time)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come about"
        time.sleep(0.02)


def test_a_refused_board_list_names_its_first_problem_and_counts_and_names_the_rest(board_daemon):
    d = board_daemon
    items = [
        {"id": "ok-1", "kind": "announcement", "text": "明日上午停水"},
        {"id": "storm", "kind": "urgent", "text": "暴雪预警"},  # no end
        {"id": "ok-1", "kind": "job", "text": "招聘饲养员", "end": "2027-02-30"},  # id repeated, no such day
    ]
    payload = json.dumps({"version": 1, "data": {"items": items}}, ensure_ascii=False).encode()
    topic = d.recorder.topics.desired("county", "board")
    d.router.handle("set", "county", "board", payload, topic)
    [(rejected_payload,)] = d.store.rows("SELECT payload FROM outbox WHERE type = 'command.rejected'")
    assert validate_message(d.recorder.topics.event("command.rejected"), rejected_payload) == "event.command.rejected"
    rejected = json.loads(rejected_payload)["data"]
    assert rejected["field"] == "data.items[1].end" and rejected["reason"].startswith("is required for an urgent item")
    assert "(and 2 more: data.items[2].end: '2027-02-30' is not a date and time" in rejected["reason"]
    assert "; data.items[2].id: 'ok-1' repeats data.items[0].id" in rejected["reason"]
    assert d.store.applied_state("board") == {}


def test_a_daemon_with_a_board_publishes_what_the_contract_says(board_daemon, monkeypatch):
    """The county's three scopes and a refused list through the command router, the leader on
    duty from the roster, the hall's own items changed on the page in every way, proof of play
    before and after the clock syncs, the board unplugged and back, and the status message
    with the board in it."""
    d = board_daemon
    t = d.recorder.topics
    page = page_for(d.config, Store(d.config.store.path, free_space_floor_mb=0, reserve_mb=0, recover=False), d.clock, d.boot_id)

    def publish(scope: str, name: str, version: int, data: dict) -> None:
        d.router.handle("set", scope, name, json.dumps({"version": version, "data": data}, ensure_ascii=False).encode(), t.desired(scope, name))

    publish("county", "board", 1, BOARD_COUNTY)
    publish("township", "board", 1, BOARD_TOWNSHIP)
    publish("device", "board", 1, BOARD_DEVICE)
    publish("device", "board", 2, {"items": [{"id": "wx-1", "kind": "announcement", "text": "扫码办事😀"}]})  # refused: no such glyph
    publish("county", "staff", 1, ROSTER_STAFF)
    publish("county", "shifts", 1, ROSTER_SHIFTS)
    d.maintenance()  # the leader on duty joins the hall's items
    water = change_the_hall_items(page)
    page.daemon("reload")
    page.close()
    d.watch_clock()
    show_the_board(d, 45)
    d.publish_proof_of_play()
    d.clock.synced = True
    d.watch_clock()
    show_the_board(d, 45)
    d.publish_proof_of_play()
    birth = d.uplink._status_payload(True, 3, None)

    def unplugged(level: int) -> None:
        raise OSError(errno.EREMOTEIO, "Remote I/O error")

    monkeypatch.setattr(d.display, "set_contrast", unplugged)
    eventually(lambda: "board_error" in [a.code for a in d.store.active_alarms()])
    failing = d.uplink._status_payload(True, 3, None)
    monkeypatch.undo()
    eventually(lambda: "board_error" not in [a.code for a in d.store.active_alarms()])

    assert validate_message(t.status, birth) == validate_message(t.status, failing) == "status"
    board = json.loads(birth)["board"]
    assert board["state"] == "showing" and board["items"] == 6
    assert json.loads(birth)["applied"]["board"] == {"county": 1, "township": 1, "device": 1, "hall": 6}
    used = [validate_message(topic, payload) for topic, payload in outbox(d.store)]
    assert used.count("event.board.played") == 2 and used.count("event.board.hall_items") == 6
    events = [json.loads(payload) for _, payload in outbox(d.store)]
    assert {(e["data"]["name"], e["data"]["scope"]) for e in events if e["type"] == "state.applied"} >= {("board", "county"), ("board", "township"), ("board", "device")}
    [rejected] = [e["data"] for e in events if e["type"] == "command.rejected"]
    assert (rejected["name"], rejected["scope"], rejected["version"], rejected["field"]) == ("board", "device", 2, "data.items[0].text")
    assert "has no glyph for '😀' (U+1F600)" in rejected["reason"]
    alarms = [(e["type"], e["data"]["code"]) for e in events if e["type"].startswith("alarm.")]
    assert ("alarm.raised", "board_error") in alarms and ("alarm.cleared", "board_error") in alarms
    before, after = [e["data"]["plays"] for e in events if e["type"] == "board.played"]
    assert {p["provisional"] for p in before} == {True} and {p["provisional"] for p in after} == {False}
    shown = {(p["source"], p["item_id"], p["version"], p["kind"]) for p in before + after}
    assert shown == {
        ("county", "yibao-2026", 3, "policy"), ("county", "zhaopin-1125", 2, "job"), ("county", "liugongkai-11", 1, "publicity"),
        ("hall", "duty-today", 1, "duty"), ("hall", water, 2, "announcement"),
    }  # fmt: skip
    changes = [(e["data"]["action"], e["data"]["version"], e["data"]["item"] is None, len(e["data"]["ids"])) for e in events if e["type"] == "board.hall_items"]
    assert changes == [("added", 1, False, 1), ("changed", 2, False, 1), ("added", 3, False, 2), ("withdrawn", 4, True, 1), ("added", 5, False, 2), ("ended", 6, False, 2)]


# -- what the county sends -------------------------------------------------------------------


GOOD_INBOUND = [
    (TOPICS.ack, {"store_id": STORE_ID, "seq": 1520, "telemetry_seq": 9031}, "ack"),
    (TOPICS.ack, {"store_id": STORE_ID, "seq": 0}, "ack"),
    (TOPICS.desired("county", "settings"), {"version": 4, "data": {"health_interval": 900}}, "desired-state.settings"),
    (TOPICS.desired("township", "settings"), {"version": 1, "data": {"status_interval": 30, "health_interval": 60}}, "desired-state.settings"),
    (TOPICS.desired("device", "settings"), {"version": 9, "data": {}}, "desired-state.settings"),
    (TOPICS.command("resync"), {"command_id": "0b8e2f4c-1f7e-4c0a-9d51-3b6f9e2a7c10"}, "command.resync"),
    (TOPICS.command("resync"), {"command_id": "r-1", "args": {}}, "command.resync"),
    (TOPICS.desired("county", "calendar"), {"version": 1, "data": {"years": {"2027": GOOD_2027}}}, "desired-state.calendar"),
    (TOPICS.desired("township", "calendar"), {"version": 3, "data": {"years": {"2027": {"holidays": ["2027-05-04"]}, "2028": {}}}}, "desired-state.calendar"),
    (TOPICS.desired("device", "calendar"), {"version": 2, "data": {"years": {}}}, "desired-state.calendar"),
    (TOPICS.command("followup.close"), {"command_id": "c-1", "args": {"followup_id": FOLLOWUP_ID}}, "command.followup.close"),
    (TOPICS.command("followup.close"), {"command_id": "c-2", "args": {"followup_id": FOLLOWUP_ID, "outcome": "called_back", "note": "已电话回访，群众表示理解"}}, "command.followup.close"),
    (TOPICS.command("followup.close"), {"command_id": "c-3", "args": {"followup_id": FOLLOWUP_ID, "outcome": "unfounded", "note": "x" * 1000, "closed_by": "y" * 100}}, "command.followup.close"),
    (TOPICS.command("alarm.clear"), {"command_id": "a-1", "args": {"code": "store_damaged"}}, "command.alarm.clear"),
    (TOPICS.desired("device", "staff"), {"version": 7, "data": ROSTER_STAFF}, "desired-state.staff"),
    (TOPICS.desired("county", "staff"), {"version": 1, "data": {"staff": []}}, "desired-state.staff"),
    # A hex card in lower case, a window twice, a name with spaces round it: taken, normalised.
    (TOPICS.desired("township", "staff"), {"version": 2, "data": {"staff": [{"id": "Wang.Li_02", "name": " 王丽 ", "cards": ["3a5f01bc", "00000001"], "windows": ["w2", "w2"], "leader": False, "active": True}]}}, "desired-state.staff"),
    (TOPICS.desired("device", "staff"), {"version": 8, "data": {"staff": [{"id": f"s-{i:03}", "name": "x" * 50} for i in range(500)]}}, "desired-state.staff"),
    (TOPICS.desired("device", "shifts"), {"version": 3, "data": ROSTER_SHIFTS | {"rules": {"late_grace_min": 5, "absent_after_min": 30}, "opening_hours": ["08:30-12:00", "14:30-17:30"]}}, "desired-state.shifts"),
    (TOPICS.desired("county", "shifts"), {"version": 1, "data": {"weekly": []}}, "desired-state.shifts"),
    # Weekend shifts, one across Sunday midnight; every rule at its limit; the config's opening hours.
    (TOPICS.desired("township", "shifts"), {"version": 4, "data": {
        "weekly": [{"staff": "s-003", "window": "w2", "days": ["sun"], "start": "22:00", "end": "06:00", "overnight": True},
                   {"staff": "s-003", "window": "w2", "days": ["mon", "sat"], "start": "06:00", "end": "12:00", "overnight": False}],
        "leaders": {"sat": "s-003", "sun": "s-003"},
        "rules": {"late_grace_min": 240, "absent_after_min": 720, "early_leave_grace_min": 240, "check_in_open_min": 720, "missed_checkout_after_min": 1440, "duplicate_interval_s": 3600, "summary_delay_min": 720},
        "opening_hours": []}}, "desired-state.shifts"),
    (TOPICS.desired("device", "shifts"), {"version": 5, "data": {"weekly": [], "leaders": {}, "rules": {"late_grace_min": 0, "absent_after_min": 1, "early_leave_grace_min": 0, "check_in_open_min": 0, "missed_checkout_after_min": 0, "duplicate_interval_s": 0, "summary_delay_min": 0}}}, "desired-state.shifts"),
    (TOPICS.desired("device", "duty"), {"version": 12, "data": {"days": {
        "2026-10-01": {"leader": "s-009", "shifts": [{"staff": "s-003", "window": "w1", "start": "09:00", "end": "12:00"}]},
        "2026-10-02": {"shifts": []},
        "2026-10-10": {"as_weekday": "fri"},
        "2026-11-26": {"leader": "s-001"}}}}, "desired-state.duty"),
    (TOPICS.desired("county", "duty"), {"version": 1, "data": {"days": {}}}, "desired-state.duty"),
    # An overnight duty, then the next morning's for the same person; a date saying nothing.
    (TOPICS.desired("township", "duty"), {"version": 2, "data": {"days": {
        "2027-02-10": {"shifts": [{"staff": "s-003", "window": "w1", "start": "22:00", "end": "06:00", "overnight": True}]},
        "2027-02-11": {"shifts": [{"staff": "s-003", "window": "w1", "start": "06:00", "end": "09:00"}], "as_weekday": "mon"},
        "2027-02-12": {}}}}, "desired-state.duty"),
    (TOPICS.desired("county", "board"), {"version": 12, "data": BOARD_COUNTY}, "desired-state.board"),
    (TOPICS.desired("township", "board"), {"version": 2, "data": BOARD_TOWNSHIP}, "desired-state.board"),
    (TOPICS.desired("device", "board"), {"version": 1, "data": BOARD_DEVICE}, "desired-state.board"),
    (TOPICS.desired("county", "board"), {"version": 13, "data": {"items": []}}, "desired-state.board"),
    # Every kind; every spelling of a time the contract knows, and null for none; priority and
    # id at their limits; line breaks, a tab and a letter NFC composes: taken, normalised.
    (TOPICS.desired("township", "board"), {"version": 3, "data": {"items": [
        {"id": "butie-2026", "kind": "policy", "text": "惠农补贴\n每亩一百二十元", "start": "2026-03-01", "end": "2026-03-31"},
        {"id": "Job.2026_03-b", "kind": "job", "text": "招聘\t保洁员", "start": "2026-03-01T08:00", "end": "2026-03-01T17:30:00", "priority": 1},
        {"id": "x" * 64, "kind": "publicity", "text": "六公开：本月低保名单", "start": "2026-03-01T00:00:00.000Z", "end": "2026-03-02T00:00:00.123456+08:00", "priority": 9},
        {"id": "duty-0301", "kind": "duty", "text": "今日带班领导：张建国", "start": None, "end": None, "schedule": [], "version": 7},
        {"id": "cafe", "kind": "announcement", "text": "Cafe\u0301 咖啡　Wi-Fi 免费", "schedule": ["00:00-08:30", "08:30-23:59"]},
        {"id": "storm-1125", "kind": "urgent", "text": "暴雪预警：今日14:00闭厅", "end": "2026-11-25"}]}}, "desired-state.board"),
    (TOPICS.desired("device", "board"), {"version": 2, "data": {"items": [{"id": f"n-{i:03}", "kind": "announcement", "text": "通" * 500} for i in range(100)]}}, "desired-state.board"),
]  # fmt: skip


@pytest.mark.parametrize(("topic", "payload", "schema"), GOOD_INBOUND)
def test_good_messages_to_the_device_validate(topic, payload, schema):
    assert validate_message(topic, json.dumps(payload).encode()) == schema


# -- what drifts is refused ------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_events(tmp_path_factory) -> dict[str, tuple[str, dict]]:
    """event type → (topic, envelope) as the real recorder made them."""
    store = Store(tmp_path_factory.mktemp("good") / "hall.db", free_space_floor_mb=0, reserve_mb=0)
    try:
        record_one_of_each(Recorder(store, DEVICE, FakeClock(synced=False), str(uuid.uuid4())))
        attend(store)  # the last of each attendance type is kept
        config = load_config(write_config(tmp_path_factory.mktemp("page")))
        change_the_hall_items(page_for(config, store, FakeClock(), str(uuid.uuid4())))  # the last: an item ended
        return {json.loads(p)["type"]: (t, json.loads(p)) for t, p in outbox(store)}
    finally:
        store.close()


DELETE = object()


def _set(doc, path, value):
    """Set (or, with DELETE, remove) the value at ``path`` in a JSON document."""
    *parents, last = path
    for key in parents:
        doc = doc[key]
    if value is DELETE:
        del doc[last]
    else:
        doc[last] = value

def close_answer(result: dict) -> dict:
    """command.applied data answering a followup.close, with ``result``."""
    return {"name": "followup.close", "command_id": "c-1", "result": result}


BAD_EVENTS = [
    ("missing seq", "rating.recorded", ("seq",), DELETE, "'seq' is a required property"),
    ("seq 0", "rating.recorded", ("seq",), 0, "0 is less than the minimum of 1"),
    ("seq as text", "rating.recorded", ("seq",), "1", "'1' is not of type 'integer'"),
    ("seq with a decimal point", "alarm.raised", ("seq",), 1.0, "1.0 is not of type 'integer'"),
    ("unknown stream", "device.health", ("stream",), "people", "'people' is not one of ['person', 'telemetry']"),
    ("a rating in the telemetry stream", "rating.recorded", ("stream",), "telemetry", "'person' was expected"),
    ("a follow-up in the telemetry stream", "followup.opened", ("stream",), "telemetry", "'person' was expected"),
    ("an overdue notice in the person stream", "followup.overdue", ("stream",), "person", "'telemetry' was expected"),
    ("a stuck button in the person stream", "button.stuck", ("stream",), "person", "'telemetry' was expected"),
    ("time without an offset", "rating.recorded", ("time",), "2026-11-25T09:00:00.000", "does not match"),
    ("time in UTC", "rating.recorded", ("time",), "2026-11-25T01:00:00.000Z", "does not match"),
    ("time to the second only", "state.applied", ("time",), "2026-11-25T09:00:41+08:00", "does not match"),
    ("extra field in rating.recorded data", "rating.recorded", ("data", "staff"), "张三", "Additional properties are not allowed ('staff' was unexpected)"),
    ("extra envelope field", "alarm.cleared", ("received_at",), "x", "Additional properties are not allowed ('received_at' was unexpected)"),
    ("label of another level", "rating.recorded", ("data", "level_label"), "非常满意", "'非常不满意' was expected"),
    ("score of another level", "rating.recorded", ("data", "score"), 2, "1 was expected"),
    ("score off the scale", "rating.recorded", ("data", "score"), 0, "0 is less than the minimum of 1"),
    ("level not on the scale", "rating.recorded", ("data", "level"), "ok", "'ok' is not one of"),
    ("a 差评 without its follow-up", "rating.recorded", ("data", "followup_id"), None, "None is not of type 'string'"),
    ("unknown flag", "rating.recorded", ("data", "flags"), ["double"], "'double' is not one of ['repeat', 'burst', 'unstaffed']"),
    ("a flag twice", "rating.recorded", ("data", "flags"), ["repeat", "repeat"], "has non-unique elements"),
    ("flags as text", "rating.recorded", ("data", "flags"), "repeat", "'repeat' is not of type 'array'"),
    ("rating without staff_id", "rating.recorded", ("data", "staff_id"), DELETE, "'staff_id' is a required property"),
    ("empty staff_id", "rating.recorded", ("data", "staff_id"), "", "should be non-empty"),
    ("store_id not a UUID", "rating.recorded", ("store_id",), "store-1", "'store-1' is not a 'uuid'"),
    ("follow-up without its rating", "followup.opened", ("data", "rating_event_id"), DELETE, "'rating_event_id' is a required property"),
    ("follow-up for a good level", "followup.opened", ("data", "level"), "satisfied", "'satisfied' is not one of ['dissatisfied', 'very_dissatisfied']"),
    ("deadline without an offset", "followup.opened", ("data", "callback_due"), "2026-11-26T09:00:00", "does not match"),
    ("deadline in UTC", "followup.opened", ("data", "rectify_due"), "2026-12-16T01:00:00Z", "does not match"),
    ("deadline as a date", "followup.opened", ("data", "rectify_due"), "2026-12-16", "does not match"),
    ("provisional as text", "followup.opened", ("data", "provisional"), "true", "'true' is not of type 'boolean'"),
    ("update without corrected", "followup.updated", ("data", "corrected"), DELETE, "'corrected' is a required property"),
    ("update with milliseconds", "followup.updated", ("data", "opened_at"), "2026-11-25T09:00:00.000+08:00", "does not match"),
    ("overdue missing nothing", "followup.overdue", ("data", "missed"), [], "should be non-empty"),
    ("overdue for an unknown deadline", "followup.overdue", ("data", "missed"), ["reply"], "'reply' is not one of ['callback', 'rectify']"),
    ("overdue twice for one deadline", "followup.overdue", ("data", "missed"), ["callback", "callback"], "has non-unique elements"),
    ("stuck button without its level", "button.stuck", ("data", "level"), DELETE, "'level' is a required property"),
    ("freed button off the scale", "button.freed", ("data", "level"), "ok", "'ok' is not one of"),
    ("clock_synced as text", "clock.synced", ("clock_synced",), "true", "'true' is not of type 'boolean'"),
    ("negative mono_ns", "clock.synced", ("mono_ns",), -5, "-5 is less than the minimum of 0"),
    ("anchor without its boot", "clock.synced", ("data", "boot_id"), DELETE, "'boot_id' is a required property"),
    ("envelope version 2", "alarm.raised", ("v",), 2, "1 was expected"),
    ("device id not an id", "alarm.raised", ("device_id",), "Hall 01", "does not match"),
    ("health with an unknown uplink state", "device.health", ("data", "uplink"), "online", "'online' is not one of"),
    ("resync result without unacked", "command.applied", ("data", "result"), {}, "'unacked' is a required property"),
    ("followup.close result without the follow-up", "command.applied", ("data",), close_answer({"state": "open", "called_back_at": "2026-11-26T10:00:00+08:00"}), "'followup_id' is a required property"),
    ("followup.close result in an unknown state", "command.applied", ("data",), close_answer({"followup_id": FOLLOWUP_ID, "state": "pending"}), "'pending' is not one of ['open', 'closed']"),
    ("followup.close closed without an outcome", "command.applied", ("data",), close_answer({"followup_id": FOLLOWUP_ID, "state": "closed", "closed_at": "2026-11-26T10:00:00+08:00"}), "'outcome' is a required property"),
    ("followup.close still open with a closing time", "command.applied", ("data",), close_answer({"followup_id": FOLLOWUP_ID, "state": "open", "called_back_at": "2026-11-26T10:00:00+08:00", "closed_at": "2026-11-26T10:00:00+08:00"}), "should not be valid"),
    ("state.applied version 0", "state.applied", ("data", "version"), 0, "0 is less than the minimum of 1"),
    ("rejected action with a scope", "command.rejected", ("data", "scope"), "device", "should not be valid"),
    ("rejection without a reason", "command.rejected", ("data", "reason"), DELETE, "'reason' is a required property"),
    ("rejection echoing an empty command_id", "command.rejected", ("data", "command_id"), "", "should be non-empty"),
    ("alarm.clear result without the code", "command.applied", ("data",), {"name": "alarm.clear", "command_id": "a-1", "result": {}}, "'code' is a required property"),
    # Attendance: the last of each type from attend(), e.g. 巴特尔's late check-in at w2.
    ("a check-in in the telemetry stream", "attendance.checked_in", ("stream",), "telemetry", "'person' was expected"),
    ("a verdict in the person stream", "attendance.late", ("stream",), "person", "'telemetry' was expected"),
    ("a check-in publishing the card", "attendance.checked_in", ("data", "card"), BATER, "('card' was unexpected)"),
    ("a check-in without provisional", "attendance.checked_in", ("data", "provisional"), DELETE, "'provisional' is a required property"),
    ("a window's name without the window", "attendance.checked_in", ("data", "window"), None, "'社保医保窗口' is not of type 'null'"),
    ("a staff id with a space", "attendance.checked_in", ("data", "staff_id"), "s 002", "'s 002' does not match"),
    ("a staff id of 65 characters", "attendance.checked_in", ("data", "staff_id"), "s" * 65, "does not match"),
    ("a name of spaces", "attendance.checked_in", ("data", "name"), "   ", "'   ' does not match"),
    ("a shift from an unknown source", "attendance.checked_out", ("data", "shift", "source"), "manual", "'manual' is not one of ['weekly', 'duty']"),
    ("a shift's end in UTC", "attendance.checked_out", ("data", "shift", "end"), "2026-11-25T09:30:00+00:00", "does not match"),
    ("a provisional check-out naming its shift", "attendance.checked_out", ("data", "provisional"), True, "is not of type 'null'"),
    ("negative duplicates", "attendance.checked_out", ("data", "duplicates"), -1, "-1 is less than the minimum of 0"),
    ("a card in lower case", "attendance.unknown_card", ("data", "card"), "3a5f01bc", "'3a5f01bc' does not match"),
    ("a card of three digits", "attendance.unknown_card", ("data", "card"), "123", "'123' does not match"),
    ("a card as a number", "attendance.card_registered", ("data", "card"), 55555555, "55555555 is not of type 'string'"),
    ("an inactive card without its owner", "attendance.unknown_card", ("data", "staff_id"), None, "None is not of type 'string'"),
    ("an unknown card with an owner", "attendance.unknown_card", ("data", "reason"), "unknown", "'s-010' is not of type 'null'"),
    ("leave of an unknown kind", "attendance.leave", ("data", "kind"), "maternity", "'maternity' is not one of"),
    ("leave labelled as another kind", "attendance.leave", ("data", "kind_label"), "病假", "'年休假' was expected"),
    ("leave from a time in UTC", "attendance.leave", ("data", "start"), "2026-11-25T16:00:00+00:00", "does not match"),
    ("a leave note of 201 characters", "attendance.leave", ("data", "note"), "x" * 201, "is too long"),
    ("leave recorded by nobody", "attendance.leave", ("data", "recorded_by"), "", "should be non-empty"),
    ("an absence cancelled twice", "attendance.leave", ("data", "cancels"), [FOLLOWUP_ID, FOLLOWUP_ID], "has non-unique elements"),
    ("withdrawn as text", "attendance.leave_ended", ("data", "withdrawn"), "true", "'true' is not of type 'boolean'"),
    ("late by no minutes", "attendance.late", ("data", "minutes_late"), 0, "0 is less than the minimum of 1"),
    ("a grace past the rule's range", "attendance.late", ("data", "late_grace_min"), 241, "241 is greater than the maximum of 240"),
    ("a late verdict without its check-in", "attendance.late", ("data", "checked_in_event_id"), DELETE, "'checked_in_event_id' is a required property"),
    ("early by no minutes", "attendance.early_leave", ("data", "minutes_early"), 0, "0 is less than the minimum of 1"),
    ("early leave without settled", "attendance.early_leave", ("data", "settled"), DELETE, "'settled' is a required property"),
    ("an absence without its deadline", "attendance.absent", ("data", "due"), DELETE, "'due' is a required property"),
    ("absent after no minutes", "attendance.absent", ("data", "absent_after_min"), 0, "0 is less than the minimum of 1"),
    ("a missed check-out without its check-in", "attendance.missed_checkout", ("data", "checked_in_event_id"), DELETE, "'checked_in_event_id' is a required property"),
    ("a gap with nobody expected", "attendance.window_unstaffed", ("data", "expected"), [], "should be non-empty"),
    ("expected staff without on_leave", "attendance.window_unstaffed", ("data", "expected", 0, "on_leave"), DELETE, "'on_leave' is a required property"),
    ("a gap ended by nobody's check-in", "attendance.window_unstaffed_ended", ("data", "ended_by"), "check_in", "None is not of type 'string'"),
    ("a gap ended by the schedule naming someone", "attendance.window_unstaffed_ended", ("data", "staff_id"), "s-001", "'s-001' is not of type 'null'"),
    ("a bad read of an unknown kind", "attendance.bad_read", ("data", "kind"), "smudge", "'smudge' is not one of ['letters', 'too_long', 'too_short', 'partial']"),
    ("a bad read without its reason", "attendance.bad_read", ("data", "reason"), "", "should be non-empty"),
    ("a summary of an unknown kind of day", "attendance.summary", ("data", "day_kind"), "friday", "'friday' is not one of ['workday', 'tiaoxiu', 'weekend', 'holiday']"),
    ("a shift status unknown", "attendance.summary", ("data", "shifts", 0, "status"), "sick", "'sick' is not one of"),
    ("a late shift without its minutes", "attendance.summary", ("data", "shifts", 1, "minutes_late"), None, "None is not of type 'integer'"),
    ("minutes late for a shift on time", "attendance.summary", ("data", "shifts", 0, "minutes_late"), 3, "3 is not of type 'null'"),
    ("no record with a check-in", "attendance.summary", ("data", "shifts", 0, "status"), "no_record", "is not of type 'null'"),
    ("an open gap with its minutes", "attendance.summary", ("data", "windows_unstaffed", 0, "until"), None, "149 is not of type 'null'"),
    ("a summary missing a count", "attendance.summary", ("data", "counts", "unknown_cards"), DELETE, "'unknown_cards' is a required property"),
    ("a count of its own", "attendance.summary", ("data", "counts", "sick"), 1, "('sick' was unexpected)"),
    # Proof of play: play_the_board()'s rows, the first the county's policy notice on the 25th.
    ("proof of play in the person stream", "board.played", ("stream",), "person", "'telemetry' was expected"),
    ("proof of play of nothing", "board.played", ("data", "plays"), [], "should be non-empty"),
    ("plays as one row", "board.played", ("data", "plays"), {"day": "2026-11-25"}, "is not of type 'array'"),
    ("a row without its day", "board.played", ("data", "plays", 0, "day"), DELETE, "'day' is a required property"),
    ("a day with its time", "board.played", ("data", "plays", 0, "day"), "2026-11-25T00:00:00+08:00", "is not a 'date'"),
    ("a row from a township", "board.played", ("data", "plays", 0, "source"), "township", "'township' is not one of ['county', 'hall']"),
    ("an item id no author or device gives", "board.played", ("data", "plays", 0, "item_id"), "_hall", "'_hall' does not match"),
    ("a row of no showings", "board.played", ("data", "plays", 0, "shows"), 0, "0 is less than the minimum of 1"),
    ("showings counted in frames", "board.played", ("data", "plays", 0, "frames"), 180, "('frames' was unexpected)"),
    ("an item's version 0", "board.played", ("data", "plays", 0, "version"), 0, "0 is less than the minimum of 1"),
    ("a row of an unknown kind", "board.played", ("data", "plays", 0, "kind"), "notice", "'notice' is not one of"),
    ("provisional as text", "board.played", ("data", "plays", 0, "provisional"), "true", "'true' is not of type 'boolean'"),
    # The hall's own items: the last change of change_the_hall_items(), an urgent item ended.
    ("hall items in the telemetry stream", "board.hall_items", ("stream",), "telemetry", "'person' was expected"),
    ("an action of its own", "board.hall_items", ("data", "action"), "deleted", "'deleted' is not one of ['added', 'changed', 'ended', 'withdrawn']"),
    ("an ended item left out", "board.hall_items", ("data", "item"), None, "None is not of type 'object'"),
    ("a withdrawal carrying its item", "board.hall_items", ("data", "action"), "withdrawn", "is not of type 'null'"),
    ("list version 0", "board.hall_items", ("data", "version"), 0, "0 is less than the minimum of 1"),
    ("an id twice in the list", "board.hall_items", ("data", "ids"), ["hall-20261125-1", "hall-20261125-1"], "has non-unique elements"),
    ("a kept item without its version", "board.hall_items", ("data", "item", "version"), DELETE, "'version' is a required property"),
    ("a kept item without its priority", "board.hall_items", ("data", "item", "priority"), DELETE, "'priority' is a required property"),
    ("a kept item with a source", "board.hall_items", ("data", "item", "source"), "hall", "('source' was unexpected)"),
    ("a kept end without its offset's colon", "board.hall_items", ("data", "item", "end"), "2026-11-25T09:00:00+0800", "does not match"),
    ("changed by nobody", "board.hall_items", ("data", "recorded_by"), "", "should be non-empty"),
    # Complaints: record_one_of_each()'s, a transcribed one about fees, then answered with a reply.
    ("a complaint carrying its text in plain", "complaint.received", ("data", "text"), "收了两百元加急费", "('text' was unexpected)"),
    ("a complaint carrying the contact in plain", "complaint.received", ("data", "contact"), "13912345678", "('contact' was unexpected)"),
    ("a complaint naming the window in plain", "complaint.received", ("data", "window"), "w1", "('window' was unexpected)"),
    ("a complaint in the telemetry stream", "complaint.received", ("stream",), "telemetry", "'person' was expected"),
    ("a receipt in lower case", "complaint.received", ("data", "receipt"), "7kqm-x3pd-9htr", "does not match"),
    ("a receipt without its dashes", "complaint.received", ("data", "receipt"), "7KQMX3PD9HTR", "does not match"),
    ("a receipt with an O", "complaint.received", ("data", "receipt"), "7KQM-X3PD-9HTO", "does not match"),
    ("a receipt of eleven characters", "complaint.received", ("data", "receipt"), "7KQM-X3PD-9HT", "does not match"),
    ("an unknown category", "complaint.received", ("data", "category"), "corruption", "'corruption' is not one of"),
    ("an unknown channel", "complaint.received", ("data", "channel"), "phone", "'phone' is not one of ['form', 'transcribed']"),
    ("a form complaint naming a transcriber", "complaint.received", ("data", "channel"), "form", "'s-007' is not of type 'null'"),
    ("a transcribed complaint naming nobody", "complaint.received", ("data", "transcribed_by"), None, "None is not of type 'string'"),
    ("a transcriber on two lines", "complaint.received", ("data", "transcribed_by"), "s-007\nx", "does not match"),
    ("a key id in upper case", "complaint.received", ("data", "key_id"), "3F2A9C1B" * 4, "does not match"),
    ("a whole SHA-256 as key id", "complaint.received", ("data", "key_id"), "3f2a9c1b" * 8, "does not match"),
    ("a ciphertext that is not base64", "complaint.received", ("data", "ciphertext"), "密文" * 400, "does not match"),
    ("a ciphertext shorter than any sealed box", "complaint.received", ("data", "ciphertext"), "AAAA" * 100, "is too short"),
    ("a complaint without its ciphertext", "complaint.received", ("data", "ciphertext"), DELETE, "'ciphertext' is a required property"),
    ("a status change in the person stream", "complaint.status_changed", ("stream",), "person", "'telemetry' was expected"),
    ("a status of its own", "complaint.status_changed", ("data", "status"), "closed", "'closed' is not one of ['received', 'in_progress', 'answered']"),
    ("a status change for a bad receipt", "complaint.status_changed", ("data", "receipt"), "7KQM-X3PD-9HT1", "does not match"),
    ("an empty reply instead of null", "complaint.status_changed", ("data", "reply"), "", "should be non-empty"),
    ("a reply of 1001 characters", "complaint.status_changed", ("data", "reply"), "答" * 1001, "is too long"),
    ("a status change without set_by", "complaint.status_changed", ("data", "set_by"), DELETE, "'set_by' is a required property"),
    ("set_at with milliseconds", "complaint.status_changed", ("data", "set_at"), "2026-11-26T09:00:00.000+08:00", "does not match"),
]


@pytest.mark.parametrize(("event_type", "path", "value", "message"), [c[1:] for c in BAD_EVENTS], ids=[c[0] for c in BAD_EVENTS])
def test_bad_event_is_refused(good_events, event_type, path, value, message):
    topic, envelope = good_events[event_type]
    doc = copy.deepcopy(envelope)
    _set(doc, path, value)
    with pytest.raises(ValidationError) as caught:
        validate_message(topic, json.dumps(doc, ensure_ascii=False).encode())
    assert message in caught.value.message


def test_event_whose_type_differs_from_its_topic_is_refused(good_events):
    topic, _ = good_events["alarm.raised"]
    _, cleared = good_events["alarm.cleared"]
    with pytest.raises(ValidationError, match="'alarm.raised' was expected"):
        validate_message(topic, json.dumps(cleared).encode())


@pytest.mark.parametrize(("key", "value"), [("device_id", "xlgl-baiyinxile-02"), ("township", "other-township"), ("county", "other-county")])
def test_event_from_another_device_than_its_topic_is_refused(good_events, key, value):
    topic, envelope = good_events["rating.recorded"]
    doc = dict(envelope, **{key: value})
    with pytest.raises(ValidationError, match=f"is '{value}' but the topic says"):
        validate_message(topic, json.dumps(doc).encode())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"level": "satisfied", "level_label": "满意", "score": 4}, "is not of type 'null'", id="a good rating naming a follow-up"),
        pytest.param({"level": "dissatisfied", "level_label": "不满意", "score": 1}, "2 was expected", id="the score of another 差评 level"),
        pytest.param({"level": "basically_satisfied", "level_label": "基本满意", "score": 3, "followup_id": None}, None, id="a good rating without one is fine"),
        pytest.param({"flags": ["repeat", "burst", "unstaffed"]}, None, id="every flag at once is fine"),
        pytest.param({"staff_id": "staff-007", "flags": ["unstaffed"]}, None, id="staff_id and unstaffed are not cross-checked"),
    ],
)
def test_a_ratings_level_label_score_and_followup_go_together(good_events, change, message):
    topic, envelope = good_events["rating.recorded"]
    doc = copy.deepcopy(envelope)
    doc["data"].update(change)
    payload = json.dumps(doc, ensure_ascii=False).encode()
    if message is None:
        assert validate_message(topic, payload) == "event.rating.recorded"
        return
    with pytest.raises(ValidationError) as caught:
        validate_message(topic, payload)
    assert message in caught.value.message


def test_the_followup_names_the_rating_that_opened_it(good_events):
    _, rating = good_events["rating.recorded"]
    _, opened = good_events["followup.opened"]
    assert opened["data"]["rating_event_id"] == rating["event_id"]
    assert rating["data"]["followup_id"] == opened["data"]["followup_id"]
    assert (opened["stream"], opened["seq"]) == ("person", rating["seq"] + 1)


BIRTH = {
    "v": 1, "online": True, "connect_count": 12, "device_id": DEVICE.id, "store_id": STORE_ID, "boot_id": "0f2c5a1e-7b3d-4e6f-8a9b-1c2d3e4f5a6b",
    "time": "2026-11-25T09:03:00+08:00", "clock_synced": True, "version": "0.1.0",
    "device": {"id": DEVICE.id, "hall": DEVICE.hall, "township": DEVICE.township, "county": DEVICE.county},
    "uplink": {"state": "connected", "broker": "mqtt.county.example:8883", "connected_since": "2026-11-25T09:02:58+08:00", "last_publish_ok": None,
               "last_error": None, "connect_count": 12, "inflight": 0, "refused_publishes": 0, "ignored_acks": 0, "acks": {"person": 1520}},
    "outbox": {"depth": 0, "cap": 200000, "oldest": None, "refused": 0, "last_refusal": None, "dropped_telemetry": 0},
    "clock": {"synced": True, "source": "system", "now": "2026-11-25T09:03:00+08:00"},
    "alarms": [], "applied": {"settings": {"county": 4}, "calendar": {"county": 1}, "board": {"county": 12, "township": 2, "hall": 5}}, "pin_factory": "lgpio", "simulated": False,
    "calendar": {"2026": "library", "2027": "county"}, "ratings_today": {"counted": 37, "satisfied": 35, "flagged": 2, "rate": 0.9459},
    "board": {"state": "showing", "item": {"source": "county", "id": "yibao-2026", "kind": "policy", "version": 3}, "contrast": 64, "in_force": 4, "items": 6},
    "badge_reader": {"connected": True, "detail": "/dev/input/by-id/usb-Reader-event-kbd: reading (grabbed)"},
}  # fmt: skip
WILL = {k: BIRTH[k] for k in ("v", "connect_count", "device_id", "store_id", "boot_id", "time", "clock_synced")} | {"online": False, "reason": "connection lost"}

BAD_STATUS = [
    ("birth without connect_count", BIRTH, ("connect_count",), DELETE, "'connect_count' is a required property"),
    ("connect_count 0", BIRTH, ("connect_count",), 0, "0 is less than the minimum of 1"),
    ("birth without the outbox", BIRTH, ("outbox",), DELETE, "'outbox' is a required property"),
    ("birth with milliseconds", BIRTH, ("time",), "2026-11-25T09:03:00.000+08:00", "does not match"),
    ("birth with an unknown field", BIRTH, ("firmware",), "x", "Unevaluated properties are not allowed ('firmware' was unexpected)"),
    ("birth with auto as the pin factory", BIRTH, ("pin_factory",), "auto", "'auto' is not one of"),
    ("ack seq as text in the uplink block", BIRTH, ("uplink", "acks", "person"), "1520", "'1520' is not of type 'integer'"),
    ("birth without the calendar sources", BIRTH, ("calendar",), DELETE, "'calendar' is a required property"),
    ("calendar source unknown", BIRTH, ("calendar", "2027"), "guess", "'guess' is not one of ['county', 'library', 'weekday_rule']"),
    ("calendar year not four digits", BIRTH, ("calendar", "27"), "county", "'27' does not match"),
    ("birth without today's ratings", BIRTH, ("ratings_today",), DELETE, "'ratings_today' is a required property"),
    ("rate as a percentage", BIRTH, ("ratings_today", "rate"), 94.59, "94.59 is greater than the maximum of 1"),
    ("a rate with nothing counted", BIRTH, ("ratings_today",), {"counted": 0, "satisfied": 0, "flagged": 3, "rate": 0.0}, "0.0 is not of type 'null'"),
    ("no rate with ratings counted", BIRTH, ("ratings_today", "rate"), None, "None is not of type 'number'"),
    ("birth without the badge reader", BIRTH, ("badge_reader",), DELETE, "'badge_reader' is a required property"),
    ("badge reader connected as text", BIRTH, ("badge_reader", "connected"), "yes", "'yes' is not of type 'boolean'"),
    ("badge reader without a detail", BIRTH, ("badge_reader", "detail"), "", "should be non-empty"),
    ("badge reader with its card count", BIRTH, ("badge_reader", "swipes"), 3, "('swipes' was unexpected)"),
    ("birth without the board", BIRTH, ("board",), DELETE, "'board' is a required property"),
    ("board in a state of its own", BIRTH, ("board", "state"), "scrolling", "'scrolling' is not one of ['showing', 'thanks', 'closed', 'empty']"),
    ("board showing without its item", BIRTH, ("board", "item"), None, "None is not of type 'object'"),
    ("board closed with an item", BIRTH, ("board", "state"), "closed", "is not of type 'null'"),
    ("board item from a township", BIRTH, ("board", "item", "source"), "township", "'township' is not one of ['county', 'hall']"),
    ("board item without its version", BIRTH, ("board", "item", "version"), DELETE, "'version' is a required property"),
    ("board contrast past 255", BIRTH, ("board", "contrast"), 256, "256 is greater than the maximum of 255"),
    ("board with its frame count", BIRTH, ("board", "frames"), 1800, "('frames' was unexpected)"),
    ("a hall scope for settings", BIRTH, ("applied", "settings", "hall"), 1, "'hall' is not one of ['county', 'township', 'device']"),
    ("a board scope of its own", BIRTH, ("applied", "board", "page"), 1, "'page' is not one of ['county', 'township', 'device', 'hall']"),
    ("will with an unknown reason", WILL, ("reason",), "power cut", "'power cut' is not one of"),
    ("will without a reason", WILL, ("reason",), DELETE, "'reason' is a required property"),
    ("will carrying the birth's fields", WILL, ("version",), "0.1.0", "Unevaluated properties are not allowed ('version' was unexpected)"),
    ("online as text", WILL, ("online",), "false", "'false' is not of type 'boolean'"),
]


@pytest.mark.parametrize(("base", "path", "value", "message"), [c[1:] for c in BAD_STATUS], ids=[c[0] for c in BAD_STATUS])
def test_bad_status_is_refused(base, path, value, message):
    doc = copy.deepcopy(base)
    _set(doc, path, value)
    with pytest.raises(ValidationError) as caught:
        validate_message(TOPICS.status, json.dumps(doc, ensure_ascii=False).encode())
    assert message in caught.value.message


def test_the_board_in_the_status_validates_in_every_state():
    """BoardService.status() on a fake clock: open and empty, showing, thanking, closed for lunch."""
    clock = FakeClock(datetime(2026, 11, 25, 11, 59, 50, tzinfo=HALL_TZ))
    board = BoardService(board_font(), 128, 16, HallCalendar(), clock)
    states = []

    def look(seconds: float = 0.0) -> None:
        clock.advance(seconds)
        board.next_frame()
        status = board.status()
        states.append(status["state"])
        validate_message(TOPICS.status, json.dumps(BIRTH | {"board": status}, ensure_ascii=False).encode())

    look()
    board.set_items("hall", validate_items(HALL_ITEMS[:1], board_font(), source="hall"))
    look()
    board.on_rating()
    look()
    look(10)  # 12:00: the lunch break
    assert states == ["empty", "showing", "thanks", "closed"]


def test_status_of_another_device_than_its_topic_is_refused():
    with pytest.raises(ValidationError, match="but the topic says"):
        validate_message(TOPICS.status, json.dumps(dict(WILL, device_id="xlgl-baiyinxile-02")).encode())


BAD_INBOUND = [
    ("ack with a text seq", TOPICS.ack, {"store_id": STORE_ID, "seq": "1520"}, "'1520' is not of type 'integer'"),
    ("ack with seq 5.0", TOPICS.ack, {"store_id": STORE_ID, "seq": 5.0}, "5.0 is not of type 'integer'"),
    ("ack with a negative seq", TOPICS.ack, {"store_id": STORE_ID, "seq": -1}, "-1 is less than the minimum of 0"),
    ("ack without store_id", TOPICS.ack, {"seq": 3}, "'store_id' is a required property"),
    ("ack without seq", TOPICS.ack, {"store_id": STORE_ID, "telemetry_seq": 3}, "'seq' is a required property"),
    ("ack with a misspelt telemetry_seq", TOPICS.ack, {"store_id": STORE_ID, "seq": 3, "telemetrySeq": 4}, "('telemetrySeq' was unexpected)"),
    ("settings version 0", TOPICS.desired("county", "settings"), {"version": 0, "data": {}}, "0 is less than the minimum of 1"),
    ("settings version as text", TOPICS.desired("county", "settings"), {"version": "7", "data": {}}, "'7' is not of type 'integer'"),
    ("settings without data", TOPICS.desired("township", "settings"), {"version": 2}, "'data' is a required property"),
    ("settings out of range", TOPICS.desired("device", "settings"), {"version": 2, "data": {"status_interval": 5}}, "5 is less than the minimum of 10"),
    ("unknown setting", TOPICS.desired("device", "settings"), {"version": 2, "data": {"colour": "red"}}, "('colour' was unexpected)"),
    ("command without command_id", TOPICS.command("resync"), {"args": {}}, "'command_id' is a required property"),
    ("empty command_id", TOPICS.command("resync"), {"command_id": ""}, "should be non-empty"),
    ("command_id of 129 characters", TOPICS.command("resync"), {"command_id": "x" * 129}, "is too long"),
    ("resync with arguments", TOPICS.command("resync"), {"command_id": "r-2", "args": {"full": True}}, "is expected to be empty"),
    ("command with an unknown field", TOPICS.command("resync"), {"command_id": "r-3", "pad": "x"}, "('pad' was unexpected)"),
    ("calendar without years", TOPICS.desired("county", "calendar"), {"version": 1, "data": {"2027": GOOD_2027}}, "'years' is a required property"),
    ("calendar year in two digits", TOPICS.desired("county", "calendar"), {"version": 1, "data": {"years": {"27": GOOD_2027}}}, "'27' does not match"),
    ("calendar year with a leading zero", TOPICS.desired("county", "calendar"), {"version": 1, "data": {"years": {"02027": GOOD_2027}}}, "'02027' does not match"),
    ("calendar year past 2100", TOPICS.desired("county", "calendar"), {"version": 1, "data": {"years": {"2101": {}}}}, "'2101' does not match"),
    ("calendar days as one text", TOPICS.desired("county", "calendar"), {"version": 1, "data": {"years": {"2027": {"holidays": "2027-01-01"}}}}, "'2027-01-01' is not of type 'array'"),
    ("calendar month 13", TOPICS.desired("county", "calendar"), {"version": 1, "data": {"years": {"2027": {"holidays": ["2027-13-01"]}}}}, "is not a 'date'"),
    ("calendar 30 February", TOPICS.desired("county", "calendar"), {"version": 1, "data": {"years": {"2027": {"holidays": ["2027-02-30"]}}}}, "'2027-02-30' is not a 'date'"),
    ("calendar ISO week date", TOPICS.desired("county", "calendar"), {"version": 1, "data": {"years": {"2027": {"holidays": ["2027-W01-5"]}}}}, "is not a 'date'"),
    ("calendar date with a time", TOPICS.desired("county", "calendar"), {"version": 1, "data": {"years": {"2027": {"holidays": ["2027-01-01T00:00:00+08:00"]}}}}, "is not a 'date'"),
    ("calendar with a third list", TOPICS.desired("township", "calendar"), {"version": 1, "data": {"years": {"2027": {"holidays": [], "halfdays": []}}}}, "('halfdays' was unexpected)"),
    ("calendar with a key beside years", TOPICS.desired("device", "calendar"), {"version": 1, "data": {"years": {}, "source": "国务院办公厅"}}, "('source' was unexpected)"),
    ("followup.close without args", TOPICS.command("followup.close"), {"command_id": "c-4"}, "'args' is a required property"),
    ("followup.close without followup_id", TOPICS.command("followup.close"), {"command_id": "c-5", "args": {"outcome": "rectified"}}, "'followup_id' is a required property"),
    ("followup.close for a followup_id not a UUID", TOPICS.command("followup.close"), {"command_id": "c-6", "args": {"followup_id": "F-17"}}, "'F-17' is not a 'uuid'"),
    ("followup.close with an unknown outcome", TOPICS.command("followup.close"), {"command_id": "c-7", "args": {"followup_id": FOLLOWUP_ID, "outcome": "forgotten"}}, "'forgotten' is not one of ['called_back', 'rectified', 'unfounded']"),
    ("followup.close with a misspelt outcome", TOPICS.command("followup.close"), {"command_id": "c-8", "args": {"followup_id": FOLLOWUP_ID, "outcom": "called_back"}}, "('outcom' was unexpected)"),
    ("followup.close with a note of 1001 characters", TOPICS.command("followup.close"), {"command_id": "c-9", "args": {"followup_id": FOLLOWUP_ID, "note": "x" * 1001}}, "is too long"),
    ("followup.close with closed_by of 101 characters", TOPICS.command("followup.close"), {"command_id": "c-10", "args": {"followup_id": FOLLOWUP_ID, "closed_by": "y" * 101}}, "is too long"),
    ("followup.close with a note as a number", TOPICS.command("followup.close"), {"command_id": "c-11", "args": {"followup_id": FOLLOWUP_ID, "note": 5}}, "5 is not of type 'string'"),
    ("alarm.clear without a code", TOPICS.command("alarm.clear"), {"command_id": "a-2", "args": {}}, "'code' is a required property"),
    ("alarm.clear of a code not in snake_case", TOPICS.command("alarm.clear"), {"command_id": "a-3", "args": {"code": "Disk Low"}}, "'Disk Low' does not match"),
    ("alarm.clear of every alarm", TOPICS.command("alarm.clear"), {"command_id": "a-4", "args": {"code": "disk_low", "all": True}}, "('all' was unexpected)"),
    ("resync with a non-object args", TOPICS.command("resync"), {"command_id": "r-4", "args": []}, "[] is not of type 'object'"),
    *[
        (name, TOPICS.desired("device", "staff"), {"version": 2, "data": data}, message)
        for name, data, message in [
            ("staff without the list", {"people": []}, "'staff' is a required property"),
            ("staff as one person", {"staff": {"id": "s-001", "name": "乌日娜"}}, "is not of type 'array'"),
            ("staff with a key beside the list", {"staff": [], "hall": "白音锡勒"}, "('hall' was unexpected)"),
            ("501 people", {"staff": [{"id": f"s-{i:03}", "name": "x"} for i in range(501)]}, "is too long"),
            ("a person without an id", {"staff": [{"name": "乌日娜"}]}, "'id' is a required property"),
            ("a person without a name", {"staff": [{"id": "s-001"}]}, "'name' is a required property"),
            ("a staff id in Chinese", {"staff": [{"id": "乌日娜", "name": "乌日娜"}]}, "'乌日娜' does not match"),
            ("a staff id starting with a dash", {"staff": [{"id": "-001", "name": "乌日娜"}]}, "'-001' does not match"),
            ("a staff id of 65 characters", {"staff": [{"id": "s" * 65, "name": "乌日娜"}]}, "does not match"),
            ("a name of 51 characters", {"staff": [{"id": "s-001", "name": "x" * 51}]}, "is too long"),
            ("a name of spaces", {"staff": [{"id": "s-001", "name": "   "}]}, "'   ' does not match"),
            ("a name as a number", {"staff": [{"id": "s-001", "name": 7}]}, "7 is not of type 'string'"),
            ("a person with a phone number", {"staff": [{"id": "s-001", "name": "乌日娜", "phone": "13800000000"}]}, "('phone' was unexpected)"),
            ("a card of three digits", {"staff": [{"id": "s-001", "name": "乌日娜", "cards": ["123"]}]}, "'123' does not match"),
            ("a card with a G", {"staff": [{"id": "s-001", "name": "乌日娜", "cards": ["00G12345"]}]}, "'00G12345' does not match"),
            ("a card as a number", {"staff": [{"id": "s-001", "name": "乌日娜", "cards": [12345678]}]}, "12345678 is not of type 'string'"),
            ("a card listed twice", {"staff": [{"id": "s-001", "name": "乌日娜", "cards": ["0012345678", "0012345678"]}]}, "has non-unique elements"),
            ("cards as one text", {"staff": [{"id": "s-001", "name": "乌日娜", "cards": "0012345678"}]}, "is not of type 'array'"),
            ("windows as one text", {"staff": [{"id": "s-001", "name": "乌日娜", "windows": "w1"}]}, "'w1' is not of type 'array'"),
            ("a window in capitals", {"staff": [{"id": "s-001", "name": "乌日娜", "windows": ["W1"]}]}, "'W1' does not match"),
            ("leader as text", {"staff": [{"id": "s-009", "name": "张建国", "leader": "yes"}]}, "'yes' is not of type 'boolean'"),
            ("active as a number", {"staff": [{"id": "s-010", "name": "李明", "active": 0}]}, "0 is not of type 'boolean'"),
        ]
    ],
    *[
        (name, TOPICS.desired("township", "shifts"), {"version": 2, "data": data}, message)
        for name, data, message in [
            ("shifts without the weekly list", {"leaders": {}}, "'weekly' is a required property"),
            ("shifts with a key of its own", {"weekly": [], "holidays": []}, "('holidays' was unexpected)"),
            ("2001 shifts", {"weekly": [{"staff": "s-001", "window": "w1", "days": ["mon"], "start": "08:30", "end": "09:00"}] * 2001}, "is too long"),
            ("a shift without days", {"weekly": [{"staff": "s-001", "window": "w1", "start": "08:30", "end": "17:30"}]}, "'days' is a required property"),
            ("a shift on no day", {"weekly": [{"staff": "s-001", "window": "w1", "days": [], "start": "08:30", "end": "17:30"}]}, "should be non-empty"),
            ("a day spelt out", {"weekly": [{"staff": "s-001", "window": "w1", "days": ["monday"], "start": "08:30", "end": "17:30"}]}, "'monday' is not one of"),
            ("a day twice", {"weekly": [{"staff": "s-001", "window": "w1", "days": ["mon", "mon"], "start": "08:30", "end": "17:30"}]}, "has non-unique elements"),
            ("a shift without its staff", {"weekly": [{"window": "w1", "days": ["mon"], "start": "08:30", "end": "17:30"}]}, "'staff' is a required property"),
            ("a shift without an end", {"weekly": [{"staff": "s-001", "window": "w1", "days": ["mon"], "start": "08:30"}]}, "'end' is a required property"),
            ("a start without its leading zero", {"weekly": [{"staff": "s-001", "window": "w1", "days": ["mon"], "start": "8:30", "end": "17:30"}]}, "'8:30' does not match"),
            ("a start at 24:00", {"weekly": [{"staff": "s-001", "window": "w1", "days": ["mon"], "start": "24:00", "end": "17:30"}]}, "'24:00' does not match"),
            ("a start with seconds", {"weekly": [{"staff": "s-001", "window": "w1", "days": ["mon"], "start": "08:30:00", "end": "17:30"}]}, "'08:30:00' does not match"),
            ("a start in full-width digits", {"weekly": [{"staff": "s-001", "window": "w1", "days": ["mon"], "start": "０８:３０", "end": "17:30"}]}, "'０８:３０' does not match"),
            ("overnight as text", {"weekly": [{"staff": "s-001", "window": "w1", "days": ["mon"], "start": "22:00", "end": "06:00", "overnight": "yes"}]}, "'yes' is not of type 'boolean'"),
            ("a shift with a break", {"weekly": [{"staff": "s-001", "window": "w1", "days": ["mon"], "start": "08:30", "end": "17:30", "break": "12:00-14:30"}]}, "('break' was unexpected)"),
            ("leaders as a list", {"weekly": [], "leaders": ["s-009"]}, "is not of type 'object'"),
            ("a leader for a holiday", {"weekly": [], "leaders": {"holiday": "s-009"}}, "'holiday' is not one of"),
            ("a leader's id in Chinese", {"weekly": [], "leaders": {"mon": "张建国"}}, "'张建国' does not match"),
            ("an unknown rule", {"weekly": [], "rules": {"lunch_min": 90}}, "('lunch_min' was unexpected)"),
            ("a grace past its range", {"weekly": [], "rules": {"late_grace_min": 241}}, "241 is greater than the maximum of 240"),
            ("absent at the start", {"weekly": [], "rules": {"absent_after_min": 0}}, "0 is less than the minimum of 1"),
            ("a rule as text", {"weekly": [], "rules": {"late_grace_min": "5"}}, "'5' is not of type 'integer'"),
            ("a rule with a decimal point", {"weekly": [], "rules": {"duplicate_interval_s": 1.5}}, "1.5 is not of type 'integer'"),
            ("opening hours as one text", {"weekly": [], "opening_hours": "08:30-17:30"}, "is not of type 'array'"),
            ("opening hours without their leading zero", {"weekly": [], "opening_hours": ["8:30-12:00"]}, "'8:30-12:00' does not match"),
            ("opening hours with a dash of another kind", {"weekly": [], "opening_hours": ["08:30–12:00"]}, "does not match"),
        ]
    ],
    *[
        (name, TOPICS.desired("county", "duty"), {"version": 2, "data": data}, message)
        for name, data, message in [
            ("duty without days", {"2026-10-01": {"leader": "s-009"}}, "'days' is a required property"),
            ("duty days as a list", {"days": [{"date": "2026-10-01"}]}, "is not of type 'object'"),
            ("duty with a key beside the days", {"days": {}, "year": 2026}, "('year' was unexpected)"),
            ("801 dates", {"days": {(date(2026, 1, 1) + timedelta(days=i)).isoformat(): {} for i in range(801)}}, "has too many properties"),
            ("a date without its leading zero", {"days": {"2026-10-1": {}}}, "'2026-10-1' is not a 'date'"),
            ("a date without dashes", {"days": {"20261001": {}}}, "'20261001' is not a 'date'"),
            ("month 13", {"days": {"2026-13-01": {}}}, "'2026-13-01' is not a 'date'"),
            ("30 February", {"days": {"2027-02-30": {}}}, "'2027-02-30' is not a 'date'"),
            ("a day as a list of shifts", {"days": {"2026-10-01": []}}, "[] is not of type 'object'"),
            ("a day with a note", {"days": {"2026-10-01": {"note": "国庆"}}}, "('note' was unexpected)"),
            ("a leader's id in Chinese", {"days": {"2026-10-01": {"leader": "张建国"}}}, "'张建国' does not match"),
            ("a weekend as the weekday followed", {"days": {"2026-10-10": {"as_weekday": "sat"}}}, "'sat' is not one of ['mon', 'tue', 'wed', 'thu', 'fri']"),
            ("the weekday followed as a number", {"days": {"2026-10-10": {"as_weekday": 5}}}, "5 is not one of"),
            ("duty shifts as one shift", {"days": {"2026-10-01": {"shifts": {"staff": "s-003", "window": "w1", "start": "09:00", "end": "12:00"}}}}, "is not of type 'array'"),
            ("a duty shift with days", {"days": {"2026-10-01": {"shifts": [{"staff": "s-003", "window": "w1", "days": ["thu"], "start": "09:00", "end": "12:00"}]}}}, "('days' was unexpected)"),
            ("a duty shift without a start", {"days": {"2026-10-01": {"shifts": [{"staff": "s-003", "window": "w1", "end": "12:00"}]}}}, "'start' is a required property"),
        ]
    ],
    *[
        (name, TOPICS.desired("county", "board"), {"version": 5, "data": data}, message)
        for name, data, message in [
            ("a board without its items", {"notices": []}, "'items' is a required property"),
            ("board items as one item", {"items": notice()}, "is not of type 'array'"),
            ("a board with a key beside the items", {"items": [], "hall": "白音锡勒"}, "('hall' was unexpected)"),
            ("101 items", {"items": [notice(id=f"n-{i}") for i in range(101)]}, "is too long"),
            ("an item as text", {"items": ["明日上午停水"]}, "is not of type 'object'"),
        ]
    ],
    *[
        (name, TOPICS.desired(scope, "board"), {"version": 5, "data": {"items": [item]}}, message)
        for scope, cases in [
            ("county", [
                ("an item without an id", {"kind": "policy", "text": "医保缴费"}, "'id' is a required property"),
                ("an item without a kind", {"id": "n-1", "text": "医保缴费"}, "'kind' is a required property"),
                ("an item without text", {"id": "n-1", "kind": "policy"}, "'text' is a required property"),
                ("an id in Chinese", notice(id="通知一"), "'通知一' does not match"),
                ("an id starting with an underscore", notice(id=COMPLAINT_ID), "'_complaint' does not match"),
                ("an id with a space", notice(id="n 1"), "'n 1' does not match"),
                ("an id of 65 characters", notice(id="x" * 65), "does not match"),
                ("an id as a number", notice(id=7), "7 is not of type 'string'"),
                ("a kind of its own", notice(kind="notice"), "'notice' is not one of ['policy', 'job', 'publicity', 'duty', 'announcement', 'urgent']"),
                ("a kind in capitals", notice(kind="Policy"), "'Policy' is not one of"),
                ("a field of its own", notice(title="医保"), "('title' was unexpected)"),
                ("a misspelt priority", notice(priorty=7), "('priorty' was unexpected)"),
                ("a source given by the author", notice(source="county"), "('source' was unexpected)"),
            ]),
            ("township", [
                ("text as a number", notice(text=110), "110 is not of type 'string'"),
                ("empty text", notice(text=""), "should be non-empty"),
                ("text of spaces", notice(text="   "), "'   ' does not match"),
                ("text of ideographic spaces", notice(text="\u3000\u3000"), "does not match"),
                ("text of 501 characters", notice(text="通" * 501), "is too long"),
                ("a zero-width space pasted from Word", notice(text="明日\u200b停水"), "should not be valid under"),
                ("a soft hyphen", notice(text="Wi\u00adFi 免费"), "should not be valid under"),
                ("a right-to-left override", notice(text="\u202e明日停水"), "should not be valid under"),
                ("a bell", notice(text="明日停水\u0007"), "should not be valid under"),
                ("a line separator inside", notice(text="明日\u2028停水"), "should not be valid under"),
                ("a byte-order mark", notice(text="\ufeff明日停水"), "should not be valid under"),
                ("traditional Mongolian script", notice(text="ᠮᠣᠩᠭᠣᠯ 明日停水"), "should not be valid under"),
            ]),
            ("device", [
                ("a start as a timestamp", notice(start=1772323200), "1772323200 is not of type 'string', 'null'"),
                ("a start with slashes", notice(start="2026/03/01"), "'2026/03/01' does not match"),
                ("a start in 1999", notice(start="1999-12-31"), "'1999-12-31' does not match"),
                ("an end in 2101", notice(end="2101-01-01"), "'2101-01-01' does not match"),
                ("an end at 24:00", notice(end="2026-03-01T24:00"), "does not match"),
                ("an end at second 60", notice(end="2026-03-01T23:59:60"), "does not match"),
                ("a start with its zone's name", notice(start="2026-03-01T08:00+08:00[Asia/Shanghai]"), "does not match"),
                ("a start in full-width digits", notice(start="２０２６-03-01"), "does not match"),
                ("an urgent item without an end", notice(kind="urgent"), "'end' is a required property"),
                ("priority 0", notice(priority=0), "0 is less than the minimum of 1"),
                ("priority 10", notice(priority=10), "10 is greater than the maximum of 9"),
                ("priority as text", notice(priority="5"), "'5' is not of type 'integer'"),
                ("priority with a decimal point", notice(priority=5.0), "5.0 is not of type 'integer'"),
                ("priority true", notice(priority=True), "True is not of type 'integer'"),
                ("item version 0", notice(version=0), "0 is less than the minimum of 1"),
                ("item version with a decimal point", notice(version=2.0), "2.0 is not of type 'integer'"),
                ("a schedule as one span", notice(schedule="08:00-12:00"), "'08:00-12:00' is not of type 'array'"),
                ("a schedule null", notice(schedule=None), "None is not of type 'array'"),
                ("a span without its leading zero", notice(schedule=["8:00-12:00"]), "'8:00-12:00' does not match"),
                ("a span with an en dash", notice(schedule=["08:00–12:00"]), "does not match"),
                ("a span to 24:00", notice(schedule=["17:00-24:00"]), "'17:00-24:00' does not match"),
                ("a span with seconds", notice(schedule=["08:00:00-12:00:00"]), "does not match"),
            ]),
        ]
        for name, item, message in cases
    ],
]  # fmt: skip


@pytest.mark.parametrize(("topic", "doc", "message"), [c[1:] for c in BAD_INBOUND], ids=[c[0] for c in BAD_INBOUND])
def test_bad_message_to_the_device_is_refused(topic, doc, message):
    with pytest.raises(ValidationError) as caught:
        validate_message(topic, json.dumps(doc).encode())
    assert message in caught.value.message


# The device's own check of the desired states whose data the schemas describe field by field
# (the roster's documents against the test config's windows), and what it raises to refuse.
DEVICE_CHECKS = {
    "calendar": (validate_calendar, CalendarInvalid),
    "staff": (lambda data: validate_staff(data, WINDOWS), RosterRejected),
    "shifts": (lambda data: validate_shifts(data, WINDOWS), RosterRejected),
    "duty": (lambda data: validate_duty(data, WINDOWS), RosterRejected),
    "board": (lambda data: validate_board_state(data, board_font()), BoardRejected),
}


def _state(topic: str) -> str | None:
    """The name of a set/<name> topic's desired state, or None for another topic."""
    return topic.rsplit("/set/", 1)[1] if "/set/" in topic else None


@pytest.mark.parametrize(
    ("name", "data"),
    [pytest.param(_state(topic), doc["data"], id=f"{_state(topic)}-{i}") for i, (topic, doc, _) in enumerate(GOOD_INBOUND) if _state(topic) in DEVICE_CHECKS],
)
def test_a_desired_state_the_contract_accepts_the_device_accepts(name, data):
    check, _ = DEVICE_CHECKS[name]
    check(data)


@pytest.mark.parametrize(
    ("name", "data"),
    [pytest.param(_state(topic), doc["data"], id=label) for label, topic, doc, _ in BAD_INBOUND if _state(topic) in DEVICE_CHECKS],
)
def test_a_desired_state_the_contract_refuses_the_device_refuses(name, data):
    check, refused = DEVICE_CHECKS[name]
    with pytest.raises(refused):
        check(data)


def _shift(staff: str, window: str, start: str, end: str, **more) -> dict:
    return {"staff": staff, "window": window, "start": start, "end": end, **more}


# What the device refuses that a schema cannot say (its description says so instead): the
# contract lets these through, and the device refuses them naming the field.
BEYOND_THE_SCHEMA = [
    ("a card given to two people", "staff", {"staff": [{"id": "s-001", "name": "乌日娜", "cards": [URINA]}, {"id": "s-002", "name": "巴特尔", "cards": [URINA]}]},
     "data.staff[1].cards[0]", "is already data.staff[0]'s (乌日娜); a card belongs to one person"),
    ("one card twice in two cases", "staff", {"staff": [{"id": "s-002", "name": "巴特尔", "cards": ["3a5f01bc", "3A5F01BC"]}]}, "data.staff[0].cards[1]", "is listed twice for the same person"),
    ("a staff id used twice", "staff", {"staff": [{"id": "s-001", "name": "乌日娜"}, {"id": "s-001", "name": "巴特尔"}]}, "data.staff[1].id", "repeats data.staff[0].id"),
    ("a window the hall lacks", "staff", {"staff": [{"id": "s-001", "name": "乌日娜", "windows": ["w9"]}]}, "data.staff[0].windows[0]", "is not a window of this hall; windows: w1, w2"),
    ("a shift ending before it starts", "shifts", {"weekly": [_shift("s-001", "w1", "17:30", "08:30", days=["mon"])]}, "data.weekly[0].end", "is not after the start 17:30"),
    ("an overnight shift within one day", "shifts", {"weekly": [_shift("s-001", "w1", "08:30", "17:30", days=["mon"], overnight=True)]}, "data.weekly[0].end", "does not run past midnight"),
    ("one person's shifts overlapping", "shifts", {"weekly": [_shift("s-001", "w1", "08:30", "12:00", days=["mon"]), _shift("s-001", "w2", "11:00", "14:00", days=["mon"])]},
     "data.weekly[1]", "overlaps data.weekly[0] for s-001"),
    ("Sunday night into Monday morning", "shifts", {"weekly": [_shift("s-003", "w2", "22:00", "06:00", days=["sun"], overnight=True), _shift("s-003", "w1", "05:00", "09:00", days=["mon"])]},
     "data.weekly[1]", "overlaps data.weekly[0] for s-003"),
    ("a shift at a window the hall lacks", "shifts", {"weekly": [_shift("s-001", "w9", "08:30", "17:30", days=["mon"])]}, "data.weekly[0].window", "is not a window of this hall"),
    ("absent before late", "shifts", {"weekly": [], "rules": {"late_grace_min": 40}}, "data.rules.absent_after_min", "30 is less than late_grace_min (40)"),
    ("opening hours that overlap", "shifts", {"weekly": [], "opening_hours": ["08:30-12:00", "11:00-17:30"]}, "data.opening_hours", "overlap"),
    ("opening hours ending before they start", "shifts", {"weekly": [], "opening_hours": ["12:00-08:30"]}, "data.opening_hours", "ends before it starts"),
    ("an overnight duty into the next day's", "duty", {"days": {"2026-10-01": {"shifts": [_shift("s-003", "w1", "22:00", "06:00", overnight=True)]}, "2026-10-02": {"shifts": [_shift("s-003", "w1", "05:00", "09:00")]}}},
     "data.days.2026-10-02.shifts[0]", "overlaps data.days.2026-10-01.shifts[0] for s-003"),
    ("a duty shift ending before it starts", "duty", {"days": {"2026-10-01": {"shifts": [_shift("s-003", "w1", "12:00", "09:00")]}}}, "data.days.2026-10-01.shifts[0].end", "is not after the start"),
    ("a duty shift at a window the hall lacks", "duty", {"days": {"2026-10-01": {"shifts": [_shift("s-003", "w9", "09:00", "12:00")]}}}, "data.days.2026-10-01.shifts[0].window", "is not a window of this hall"),
    # The board's font: Unifont has the whole BMP but its private-use area, and next to nothing beyond.
    ("an emoji Unifont lacks", "board", {"items": [notice(text="扫码办事😀")]}, "data.items[0].text", "has no glyph for '😀' (U+1F600)"),
    ("a name character beyond the BMP", "board", {"items": [notice(text="欢迎𠮷先生")]}, "data.items[0].text", "has no glyph for '𠮷' (U+20BB7)"),
    ("a private-use character from a county font", "board", {"items": [notice(text="停水\ue000")]}, "data.items[0].text", "has no glyph for U+E000"),
    ("a combining mark that composes nothing", "board", {"items": [notice(text="停水\u0301")]}, "data.items[0].text", "contains combining marks"),
    ("an end before its start", "board", {"items": [notice(start="2026-12-01", end="2026-11-30T12:00")]}, "data.items[0].end", "is not after start"),
    ("an end at its start", "board", {"items": [notice(start="2026-12-01T08:00", end="2026-12-01T08:00+08:00")]}, "data.items[0].end", "is not after start"),
    ("30 February", "board", {"items": [notice(start="2027-02-30")]}, "data.items[0].start", "is not a date and time"),
    ("31 April at eight", "board", {"items": [notice(end="2027-04-31T08:00")]}, "data.items[0].end", "is not a date and time"),
    ("one id twice in a list", "board", {"items": [notice(), notice(text="明日下午停电")]}, "data.items[1].id", "repeats data.items[0].id"),
    ("schedule spans that overlap", "board", {"items": [notice(schedule=["08:00-12:00", "11:00-14:00"])]}, "data.items[0].schedule", "overlap"),
    ("a span that ends before it starts", "board", {"items": [notice(schedule=["17:30-08:30"])]}, "data.items[0].schedule", "ends before it starts"),
    ("a span of no time", "board", {"items": [notice(schedule=["08:00-08:00"])]}, "data.items[0].schedule", "ends before it starts"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "data", "field", "reason"), [c[1:] for c in BEYOND_THE_SCHEMA], ids=[c[0] for c in BEYOND_THE_SCHEMA])
def test_what_the_schema_cannot_say_the_device_refuses_naming_the_field(name, data, field, reason):
    payload = json.dumps({"version": 1, "data": data}, ensure_ascii=False).encode()
    assert validate_message(TOPICS.desired("device", name), payload) == f"desired-state.{name}"
    check, refused = DEVICE_CHECKS[name]
    with pytest.raises(refused) as caught:
        check(data)
    assert caught.value.field == field
    assert reason in caught.value.reason


# What the contract refuses although the device takes it: spellings of a time the device also
# reads (a compact date as an end would even mean the start of that day, not its end), text
# that is too long or invisible only until the device trims it.
STRICTER_THAN_THE_DEVICE = [
    ("a space for the T", notice(start="2026-12-01 08:00"), "does not match"),
    ("a date without dashes", notice(end="20261231"), "'20261231' does not match"),
    ("an offset without its colon", notice(start="2026-12-01T08:00+0800"), "does not match"),
    ("an hour alone", notice(start="2026-12-01T08"), "does not match"),
    ("an ISO week date", notice(start="2026-W49-2"), "does not match"),
    ("501 characters, 500 once two spaces are one", notice(text="通" * 250 + "  " + "通" * 249), "is too long"),
    ("a line separator at the end, which the device trims", notice(text="明日停水\u2028"), "should not be valid under"),
]  # fmt: skip


@pytest.mark.parametrize(("item", "message"), [c[1:] for c in STRICTER_THAN_THE_DEVICE], ids=[c[0] for c in STRICTER_THAN_THE_DEVICE])
def test_what_the_contract_refuses_although_the_device_takes_it(item, message):
    with pytest.raises(ValidationError) as caught:
        validate_message(TOPICS.desired("county", "board"), json.dumps({"version": 1, "data": {"items": [item]}}, ensure_ascii=False).encode())
    assert message in caught.value.message
    validate_board_state({"items": [item]}, board_font())


def test_an_urgent_item_whose_end_is_null_is_refused_by_the_contract_and_the_device():
    item = notice(kind="urgent", end=None)  # it would take over the board for good
    with pytest.raises(ValidationError, match="None is not of type 'string'"):
        validate_message(TOPICS.desired("county", "board"), json.dumps({"version": 1, "data": {"items": [item]}}, ensure_ascii=False).encode())
    with pytest.raises(BoardRejected) as caught:
        validate_board_state({"items": [item]}, board_font())
    assert caught.value.field == "data.items[0].end" and "is required for an urgent item" in caught.value.reason


@pytest.mark.parametrize(
    ("payload", "message"),
    [(b"", "the payload is empty"), (b"{not json", "not UTF-8 JSON"), (b"\xff\xfe", "not UTF-8 JSON"), (b'{"store_id": "x", "seq": NaN}', "NaN is not JSON")],
)
def test_payload_that_is_not_json_is_refused(payload, message):
    with pytest.raises(ValidationError, match=message):
        validate_message(TOPICS.ack, payload)


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        ("hall/v2/xilinhot/baiyinxile/xlgl-baiyinxile-01/status", "not in the hall/v1"),
        (TOPICS.event("button.pressed"), "event type 'button.pressed' has no schema"),
        (TOPICS.base + "/evt/button", "is not a topic of the contract"),
        (TOPICS.desired("county", "notices"), "no desired state 'notices'"),
        (TOPICS.command("self-destruct"), "no action 'self-destruct'"),
        (TOPICS.base + "/state", "is not a topic of the contract"),
        ("hall/v1/xilinhot/baiyinxile/_township/status", "only set/<name> topics exist at township scope"),
        ("hall/v1/xilinhot/Baiyinxile/xlgl-baiyinxile-01/status", "must be ids"),
    ],
)
def test_topic_outside_the_contract_is_an_assertion_error(topic, message):
    with pytest.raises(AssertionError, match=re.escape(message)):
        validate_message(topic, b"{}")


# -- the documents agree with the code -------------------------------------------------------

ASYNCAPI = REPO / "docs" / "asyncapi.yaml"
MQTT_MD = REPO / "docs" / "mqtt.md"


def test_asyncapi_references_every_payload_schema_and_only_existing_ones():
    text = ASYNCAPI.read_text(encoding="utf-8")
    refs = set(re.findall(r"\$ref: '\.\./appliance/schemas/([^']+)\.json'", text))
    assert refs == set(PAYLOAD_SCHEMAS)
    assert all((SCHEMA_DIR / f"{r}.json").exists() for r in refs)


def test_asyncapi_has_a_channel_for_every_topic_the_device_uses():
    channels = set(re.findall(r"^  (hall/v1/\S+):\s*$", ASYNCAPI.read_text(encoding="utf-8"), re.M))
    t = Topics("{county}", "{township}", "{device}")
    expected = {t.event(e) for e in event_types()} | {t.status, t.ack, t.command("{name}")} | {t.desired(s, "{name}") for s in SCOPES}
    assert channels == expected


def worked_examples() -> list[tuple[str, str]]:
    """(topic, JSON text) of every worked example in docs/mqtt.md."""
    return re.findall(r"\*\*Topic\*\* `([^`]+)`\s*\n+```json\n(.*?)\n```", MQTT_MD.read_text(encoding="utf-8"), re.S)


def test_every_worked_example_in_mqtt_md_validates():
    used = {validate_message(topic, body.encode("utf-8")) for topic, body in worked_examples()}
    # The generic desired-state, command and envelope schemas are reached through the specific ones.
    assert used == set(PAYLOAD_SCHEMAS) - {"envelope", "desired-state", "command"}


def test_the_roster_in_mqtt_md_is_one_the_device_takes_whole(tmp_path):
    """The staff, shifts and duty examples pass the device's checks and agree with one another."""
    documents = {_state(topic): json.loads(body)["data"] for topic, body in worked_examples() if _state(topic) in ("staff", "shifts", "duty")}
    assert sorted(documents) == ["duty", "shifts", "staff"]
    store = Store(tmp_path / "hall.db", free_space_floor_mb=0, reserve_mb=0)
    try:
        roster = Roster(Recorder(store, DEVICE, FakeClock(), str(uuid.uuid4())), store, FakeClock(), HallCalendar(), WINDOWS)
        for name, data in documents.items():
            roster.apply_state(name, {"device": roster.validator(name)(data)})
        assert store.active_alarms() == []  # no roster_references: everyone named is in the registry
    finally:
        store.close()


def test_the_board_in_mqtt_md_is_one_the_device_takes():
    """The county's and the township's lists pass the device's checks, and the proof of play
    counts what they leave in force at its time, and the hall's item as the page changed it."""
    examples = [(topic, json.loads(body)) for topic, body in worked_examples()]
    lists = {schema_for_topic(topic)[1]["scope"]: doc["data"] for topic, doc in examples if _state(topic) == "board"}
    assert sorted(lists) == ["county", "township"]
    merged = merge_scopes({scope: validate_board_state(lists[scope], board_font()) for scope in SCOPES if scope in lists})
    [played] = [doc for topic, doc in examples if doc.get("type") == "board.played"]
    at = datetime.fromisoformat(played["time"])
    plays = played["data"]["plays"]
    assert {(p["item_id"], p["version"]) for p in plays if p["source"] == "county"} == {(i.id, i.version) for i in merged if i.in_force(at)}
    [changed] = [doc["data"] for topic, doc in examples if doc.get("type") == "board.hall_items"]
    item = validate_item(changed["item"], board_font(), source="hall")
    assert item.to_dict() == changed["item"] and item.in_force(at)
    assert (changed["item_id"], item.version) in {(p["item_id"], p["version"]) for p in plays if p["source"] == "hall"}

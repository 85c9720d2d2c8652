"""The MQTT contract: the schemas are sound, cover everything the code publishes, pass what the
real code produces and refuse what drifts from it. The contract itself is docs/mqtt.md."""

from __future__ import annotations

import ast
import copy
import json
import re
import time
import uuid
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator, ValidationError

from appliance.clock import FakeClock
from appliance.config import CLOCK_SOURCES, PIN_FACTORIES, DeviceConfig, load_config
from appliance.daemon import Daemon
from appliance.events import SCOPES, Recorder, Topics
from appliance.settings import SETTINGS
from appliance.store import STREAMS, Store
from conftest import write_config
from contract import SCHEMA_DIR, event_types, registry, schemas, validate_message
from services.calendar import CalendarInvalid, HallCalendar, validate_calendar
from services.levels import LEVELS
from services.ratings import BURST, REPEAT, UNSTAFFED, Ratings

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


def string_values(node: ast.AST) -> set[str]:
    """The string literals an expression can evaluate to: itself, or either branch of a condition.

    Not the constants inside it: in ``clear_alarm(args["code"])`` the code is not "code".
    """
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return string_values(node.body) | string_values(node.orelse)
    return set()


def literals_passed_to(names: set[str]) -> set[str]:
    """Every string literal passed as the first argument (or ``type=``/``code=``) of calls to ``names``.

    Reads the syntax tree, so a type chosen by a condition ("button.stuck" if … else
    "button.freed") is found as well.
    """
    found = set()
    for path in sorted(p for d in SOURCE_DIRS for p in (REPO / d).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if name not in names:
                continue
            args = node.args[:1] + [k.value for k in node.keywords if k.arg in ("type", "event_type", "code")]
            found |= {value for a in args for value in string_values(a)}
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
    online = schemas()["status"]["$defs"]["online"]["properties"]
    assert online["pin_factory"]["enum"] == [f for f in PIN_FACTORIES if f != "auto"]
    assert online["clock"]["properties"]["source"]["enum"] == list(CLOCK_SOURCES)


def test_settings_schema_matches_the_daemons_settings():
    props = schemas()["desired-state.settings"]["properties"]["data"]["properties"]
    assert {key: (p["minimum"], p["maximum"]) for key, p in props.items()} == {key: (lo, hi) for key, (lo, hi, _) in SETTINGS.items()}
    for key, (_, _, default) in SETTINGS.items():
        assert f"default {default}" in props[key]["description"]


# -- real payloads from the real code --------------------------------------------------------


@pytest.fixture
def recorder(tmp_path):
    store = Store(tmp_path / "hall.db", free_space_floor_mb=0, reserve_mb=0)
    yield Recorder(store, DEVICE, FakeClock(synced=False), str(uuid.uuid4()))
    store.close()


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
    recorder.telemetry("state.applied", {"name": "settings", "scope": "township", "version": 7}, droppable=False)
    recorder.telemetry("command.applied", {"name": "resync", "command_id": "7d2c", "result": {"unacked": 6}}, droppable=False)
    recorder.telemetry("command.rejected", {"topic": TOPICS.command("resync"), "kind": "action", "name": "resync", "field": "args", "reason": "takes no arguments, got full", "command_id": "r-2"}, droppable=False)


def outbox(store: Store) -> list[tuple[str, bytes]]:
    return [(row.topic, row.payload) for row in store.unacked_after(0, 1000)]


def test_every_event_recorded_through_the_recorder_validates_on_its_topic(recorder):
    record_one_of_each(recorder)
    used = [validate_message(topic, payload) for topic, payload in outbox(recorder.store)]
    assert sorted(used) == sorted(f"event.{t}" for t in event_types())


@pytest.fixture
def daemon(tmp_path):
    """An in-process daemon on mock GPIO with no broker, its clock not yet synced."""
    clock = FakeClock(synced=False)
    d = Daemon(load_config(write_config(tmp_path / "dev")), clock=clock, simulate=True)
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
    """Let go of a button, past the debounce time so the release is not taken for chatter."""
    time.sleep(d.buttons.contacts[(window, level)].debounce_s)
    d.buttons.pin(window, level).drive_high()
    d.buttons.tick()


def command(**args) -> bytes:
    """A one-off command's payload with a fresh command_id."""
    return json.dumps({"command_id": str(uuid.uuid4()), "args": args}, ensure_ascii=False).encode()


def drive_daemon(d: Daemon) -> None:
    """A few days in the hall, through the daemon's own code paths: ratings (one a repeat, one
    差评 before the clock syncs), a jammed button, an overdue follow-up the county closes,
    settings and the calendar pushed, and bad commands refused."""
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


def test_every_event_from_a_running_daemon_validates_on_its_topic(daemon):
    drive_daemon(daemon)
    used = [validate_message(topic, payload) for topic, payload in outbox(daemon.store)]
    assert set(used) == {f"event.{t}" for t in event_types()}
    assert used.count("event.command.rejected") == 6
    events = [json.loads(payload) for _, payload in outbox(daemon.store)]
    ratings = [e["data"] for e in events if e["type"] == "rating.recorded"]
    assert [(r["window"], r["level"], r["flags"]) for r in ratings] == [("w1", "satisfied", []), ("w1", "satisfied", ["repeat"]), ("w2", "dissatisfied", []), ("w1", "basically_satisfied", [])]
    results = [e["data"]["result"] for e in events if e["type"] == "command.applied" and e["data"]["name"] == "followup.close"]
    assert [r["state"] for r in results] == ["open", "closed"]
    rejected = [(e["data"]["name"], e["data"]["field"]) for e in events if e["type"] == "command.rejected"]
    assert ("followup.close", "args.followup_id") in rejected and ("calendar", "data.years.2027.holidays[0]") in rejected and ("alarm.clear", "args.code") in rejected


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
]


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
    "alarms": [], "applied": {"settings": {"county": 4}, "calendar": {"county": 1}}, "pin_factory": "lgpio", "simulated": False,
    "calendar": {"2026": "library", "2027": "county"}, "ratings_today": {"counted": 37, "satisfied": 35, "flagged": 2, "rate": 0.9459},
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
]


@pytest.mark.parametrize(("topic", "doc", "message"), [c[1:] for c in BAD_INBOUND], ids=[c[0] for c in BAD_INBOUND])
def test_bad_message_to_the_device_is_refused(topic, doc, message):
    with pytest.raises(ValidationError) as caught:
        validate_message(topic, json.dumps(doc).encode())
    assert message in caught.value.message


@pytest.mark.parametrize(("topic", "payload"), [(topic, payload) for topic, payload, schema in GOOD_INBOUND if schema == "desired-state.calendar"])
def test_a_calendar_the_contract_accepts_the_device_accepts(topic, payload):
    validate_calendar(payload["data"])


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(doc["data"], id=name)
        for name, topic, doc, _ in BAD_INBOUND
        if "/set/calendar" in topic
    ],
)
def test_a_calendar_the_contract_refuses_the_device_refuses(data):
    with pytest.raises(CalendarInvalid):
        validate_calendar(data)


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
        (TOPICS.desired("county", "board"), "no desired state 'board'"),
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


def test_every_worked_example_in_mqtt_md_validates():
    text = MQTT_MD.read_text(encoding="utf-8")
    examples = re.findall(r"\*\*Topic\*\* `([^`]+)`\s*\n+```json\n(.*?)\n```", text, re.S)
    used = {validate_message(topic, body.encode("utf-8")) for topic, body in examples}
    # The generic desired-state, command and envelope schemas are reached through the specific ones.
    assert used == set(PAYLOAD_SCHEMAS) - {"envelope", "desired-state", "command"}

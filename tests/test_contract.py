"""The MQTT contract: the schemas are sound, cover everything the code publishes, pass what the
real code produces and refuse what drifts from it. The contract itself is docs/mqtt.md."""

from __future__ import annotations

import ast
import copy
import json
import re
import uuid
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator, ValidationError

from appliance.clock import FakeClock
from appliance.config import CLOCK_SOURCES, PIN_FACTORIES, DeviceConfig, load_config
from appliance.daemon import SETTINGS, Daemon
from appliance.events import SCOPES, Recorder, Topics
from appliance.store import STREAMS, Store
from conftest import write_config
from contract import SCHEMA_DIR, event_types, registry, schemas, validate_message
from services.levels import LEVELS

REPO = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("appliance", "services", "drivers")
# Calls that record an event (first argument: its type) or raise/clear an alarm (its code).
RECORDING_CALLS = {"record", "telemetry", "EventSpec"}
ALARM_CALLS = {"raise_alarm", "clear_alarm"}

DEVICE = DeviceConfig(id="xlgl-baiyinxile-01", hall="白音锡勒苏木政务服务中心", township="baiyinxile", county="xilinhot")
TOPICS = Topics.for_device(DEVICE)
STORE_ID = "5b0f6a4e-2d3c-4f7a-9b1e-8c6d2a4f0e13"
PAYLOAD_SCHEMAS = sorted(set(schemas()) - {"common"})


def literals_passed_to(names: set[str]) -> set[str]:
    """Every string literal in the first argument (or ``type=``/``code=``) of calls to ``names``.

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
            found |= {c.value for a in args for c in ast.walk(a) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
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
    data = schemas()["event.button.pressed"]["properties"]["data"]["properties"]
    assert data["level"]["enum"] == [level.code for level in LEVELS]
    assert data["level_label"]["enum"] == [level.label for level in LEVELS]
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
    """One event of every type, with data shaped as the daemon and the command router make it."""
    clock = recorder.clock
    recorder.record("button.pressed", {"window": "w1", "window_name": "综合受理窗口", "level": "very_dissatisfied", "level_label": "非常不满意"})
    recorder.raise_alarm("clock_unsynced", "the clock is not synchronised yet; time-of-day verdicts stay provisional")
    clock.advance(41.25)
    clock.synced = True
    recorder.telemetry("clock.synced", {"boot_id": recorder.boot_id, "mono_ns": clock.monotonic_ns(), "time": clock.now().isoformat(timespec="milliseconds")}, droppable=False)
    recorder.clear_alarm("clock_unsynced")
    recorder.telemetry("device.health", {"uptime_s": 41, "outbox_depth": 4, "free_mb": 5120, "alarms": [], "uplink": "connected"})
    recorder.telemetry("state.applied", {"name": "settings", "scope": "township", "version": 7}, droppable=False)
    recorder.telemetry("command.applied", {"name": "resync", "command_id": "7d2c", "result": {"unacked": 6}}, droppable=False)
    recorder.telemetry("command.rejected", {"topic": TOPICS.command("resync"), "kind": "action", "name": "resync", "field": "command_id", "reason": "must be 1 to 128 characters", "command_id": ""}, droppable=False)


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


def drive_daemon(d: Daemon) -> None:
    """What a morning in the hall does to the daemon: through the daemon's own code paths."""
    t = d.recorder.topics
    d.buttons.press("w1", "satisfied")
    d.buttons.press("w2", "dissatisfied")
    d.watch_clock()  # first look: unsynced → alarm.raised
    d.clock.advance(95.5)
    d.clock.synced = True
    d.watch_clock()  # → clock.synced, alarm.cleared
    d.recorder.telemetry("device.health", d.health())
    d.router.handle("set", "county", "settings", b'{"version": 2, "data": {"health_interval": 600}}', t.desired("county", "settings"))
    d.router.handle("set", "device", "settings", b'{"version": 1, "data": {"status_interval": 5}}', t.desired("device", "settings"))
    d.router.handle("cmd", "device", "resync", json.dumps({"command_id": str(uuid.uuid4())}).encode(), t.command("resync"))
    d.router.handle("cmd", "device", "self-destruct", b'{"command_id": "x1"}', t.command("self-destruct"))
    d.router.handle("cmd", "device", "resync", b'{"args": {}}', t.command("resync"))


def test_every_event_from_a_running_daemon_validates_on_its_topic(daemon):
    drive_daemon(daemon)
    used = [validate_message(topic, payload) for topic, payload in outbox(daemon.store)]
    assert set(used) == {f"event.{t}" for t in event_types()}
    assert used.count("event.command.rejected") == 3


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


@pytest.mark.parametrize(
    ("topic", "payload", "schema"),
    [
        (TOPICS.ack, {"store_id": STORE_ID, "seq": 1520, "telemetry_seq": 9031}, "ack"),
        (TOPICS.ack, {"store_id": STORE_ID, "seq": 0}, "ack"),
        (TOPICS.desired("county", "settings"), {"version": 4, "data": {"health_interval": 900}}, "desired-state.settings"),
        (TOPICS.desired("township", "settings"), {"version": 1, "data": {"status_interval": 30, "health_interval": 60}}, "desired-state.settings"),
        (TOPICS.desired("device", "settings"), {"version": 9, "data": {}}, "desired-state.settings"),
        (TOPICS.command("resync"), {"command_id": "0b8e2f4c-1f7e-4c0a-9d51-3b6f9e2a7c10"}, "command.resync"),
        (TOPICS.command("resync"), {"command_id": "r-1", "args": {}}, "command.resync"),
    ],
)
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

BAD_EVENTS = [
    ("missing seq", "button.pressed", ("seq",), DELETE, "'seq' is a required property"),
    ("seq 0", "button.pressed", ("seq",), 0, "0 is less than the minimum of 1"),
    ("seq as text", "button.pressed", ("seq",), "1", "'1' is not of type 'integer'"),
    ("seq with a decimal point", "alarm.raised", ("seq",), 1.0, "1.0 is not of type 'integer'"),
    ("unknown stream", "device.health", ("stream",), "people", "'people' is not one of ['person', 'telemetry']"),
    ("a press in the telemetry stream", "button.pressed", ("stream",), "telemetry", "'person' was expected"),
    ("time without an offset", "button.pressed", ("time",), "2026-11-25T09:00:00.000", "does not match"),
    ("time in UTC", "button.pressed", ("time",), "2026-11-25T01:00:00.000Z", "does not match"),
    ("time to the second only", "state.applied", ("time",), "2026-11-25T09:00:41+08:00", "does not match"),
    ("extra field in button.pressed data", "button.pressed", ("data", "staff"), "张三", "Additional properties are not allowed ('staff' was unexpected)"),
    ("extra envelope field", "alarm.cleared", ("received_at",), "x", "Additional properties are not allowed ('received_at' was unexpected)"),
    ("label of another level", "button.pressed", ("data", "level_label"), "非常满意", "'非常不满意' was expected"),
    ("level not on the scale", "button.pressed", ("data", "level"), "ok", "'ok' is not one of"),
    ("store_id not a UUID", "button.pressed", ("store_id",), "store-1", "'store-1' is not a 'uuid'"),
    ("clock_synced as text", "clock.synced", ("clock_synced",), "true", "'true' is not of type 'boolean'"),
    ("negative mono_ns", "clock.synced", ("mono_ns",), -5, "-5 is less than the minimum of 0"),
    ("anchor without its boot", "clock.synced", ("data", "boot_id"), DELETE, "'boot_id' is a required property"),
    ("envelope version 2", "alarm.raised", ("v",), 2, "1 was expected"),
    ("device id not an id", "alarm.raised", ("device_id",), "Hall 01", "does not match"),
    ("health with an unknown uplink state", "device.health", ("data", "uplink"), "online", "'online' is not one of"),
    ("resync result without unacked", "command.applied", ("data", "result"), {}, "'unacked' is a required property"),
    ("state.applied version 0", "state.applied", ("data", "version"), 0, "0 is less than the minimum of 1"),
    ("rejected action with a scope", "command.rejected", ("data", "scope"), "device", "should not be valid"),
    ("rejection without a reason", "command.rejected", ("data", "reason"), DELETE, "'reason' is a required property"),
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
    topic, envelope = good_events["button.pressed"]
    doc = dict(envelope, **{key: value})
    with pytest.raises(ValidationError, match=f"is '{value}' but the topic says"):
        validate_message(topic, json.dumps(doc).encode())


BIRTH = {
    "v": 1, "online": True, "connect_count": 12, "device_id": DEVICE.id, "store_id": STORE_ID, "boot_id": "0f2c5a1e-7b3d-4e6f-8a9b-1c2d3e4f5a6b",
    "time": "2026-11-25T09:03:00+08:00", "clock_synced": True, "version": "0.1.0",
    "device": {"id": DEVICE.id, "hall": DEVICE.hall, "township": DEVICE.township, "county": DEVICE.county},
    "uplink": {"state": "connected", "broker": "mqtt.county.example:8883", "connected_since": "2026-11-25T09:02:58+08:00", "last_publish_ok": None,
               "last_error": None, "connect_count": 12, "inflight": 0, "refused_publishes": 0, "ignored_acks": 0, "acks": {"person": 1520}},
    "outbox": {"depth": 0, "cap": 200000, "oldest": None, "refused": 0, "last_refusal": None, "dropped_telemetry": 0},
    "clock": {"synced": True, "source": "system", "now": "2026-11-25T09:03:00+08:00"},
    "alarms": [], "applied": {"settings": {"county": 4}}, "pin_factory": "lgpio", "simulated": False,
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
]


@pytest.mark.parametrize(("topic", "doc", "message"), [c[1:] for c in BAD_INBOUND], ids=[c[0] for c in BAD_INBOUND])
def test_bad_message_to_the_device_is_refused(topic, doc, message):
    with pytest.raises(ValidationError) as caught:
        validate_message(topic, json.dumps(doc).encode())
    assert message in caught.value.message


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
        (TOPICS.event("rating.recorded"), "event type 'rating.recorded' has no schema"),
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

"""The uplink against a real Mosquitto: order, outages, acks, ACL refusals, status, commands."""

from __future__ import annotations

import json
import time
import uuid

import paho.mqtt.client as mqtt
import pytest

from appliance.config import load_config
from appliance.daemon import Daemon
from appliance.events import Topics
from appliance.broker import PrivateBroker
from conftest import Subscriber, write_config
from contract import validate_message


@pytest.fixture
def start_daemon(tmp_path):
    """Start an in-process daemon (mock GPIO) from a config file; stopped at the end."""
    daemons: list[Daemon] = []

    def start(config_path) -> Daemon:
        d = Daemon(load_config(config_path), simulate=True)
        d.start()
        daemons.append(d)
        return d

    yield start
    for d in daemons:
        d.stop()


def publish(broker: PrivateBroker, topic: str, payload: bytes | str, *, retain: bool = False, username: str | None = None) -> None:
    """Publish one QoS 1 message and wait for the broker's PUBACK."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
    if username:
        c.username_pw_set(username)
    c.connect(broker.host, broker.port)
    c.loop_start()
    info = c.publish(topic, payload, qos=1, retain=retain)
    info.wait_for_publish(10)
    c.loop_stop()
    c.disconnect()


def wait_until(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(f"{what} not reached in {timeout} s")


def topics_of(d: Daemon) -> Topics:
    return d.recorder.topics


def test_events_arrive_in_seq_order_and_match_the_contract(tmp_path, broker, subscriber, start_daemon):
    d = start_daemon(write_config(tmp_path / "dev", broker=broker))
    for i in range(30):
        d.buttons.press("w1" if i % 2 else "w2", "satisfied")
    events = subscriber.wait_events(30)
    assert [e["seq"] for e in events] == list(range(1, 31))
    assert {e["store_id"] for e in events} == {d.store.store_id}
    # Everything the device published — events, alarms, status — validates against its schema.
    msgs = subscriber.wait_for(lambda m: any(x.topic.endswith("/status") for x in m))
    used = {validate_message(m.topic, m.payload) for m in msgs}
    assert any("rating.recorded" in name for name in used)
    assert any("status" in name for name in used)
    assert events[0]["data"]["window"] == "w2" and events[0]["data"]["level_label"] == "满意"
    wait_until(lambda: d.store.depth == 0, what="outbox drained")


def test_events_recorded_while_the_broker_is_down_all_arrive_when_it_returns(tmp_path, broker, subscriber, start_daemon):
    d = start_daemon(write_config(tmp_path / "dev", broker=broker))
    d.buttons.press("w1", "satisfied")
    wait_until(lambda: d.store.depth == 0, what="first event delivered")
    broker.stop()
    wait_until(lambda: d.uplink.info.state != "connected", what="uplink notices the outage")
    for _ in range(50):
        d.buttons.press("w1", "satisfied")
    assert d.store.depth == 50
    assert d.status()["outbox"]["oldest"]["type"] == "rating.recorded"
    time.sleep(1.0)  # a while offline, reconnect attempts failing
    broker.start()
    events = subscriber.wait_seqs(range(1, 52), timeout=30)
    assert [e["seq"] for e in events] == list(range(1, 52))
    wait_until(lambda: d.store.depth == 0, what="backlog drained")


def test_aggregator_ack_prunes_only_for_its_own_store_id(tmp_path, broker, subscriber, start_daemon):
    d = start_daemon(write_config(tmp_path / "dev", broker=broker, aggregator_ack=True))
    for _ in range(5):
        d.buttons.press("w1", "satisfied")
    subscriber.wait_events(5)
    # PUBACK alone is not enough when the deployment has an aggregator ack.
    wait_until(lambda: d.store.rows("SELECT COUNT(*) FROM outbox WHERE type = 'rating.recorded' AND state = 'published'")[0][0] == 5, what="published")
    assert d.store.depth >= 5

    publish(broker, topics_of(d).ack, json.dumps({"store_id": str(uuid.uuid4()), "seq": 5}), retain=True)
    wait_until(lambda: d.uplink.info.ignored_acks == 1, what="the foreign ack seen and ignored")
    assert d.store.rows("SELECT COUNT(*) FROM outbox WHERE stream = 'person' AND state = 'acked'")[0][0] == 0

    publish(broker, topics_of(d).ack, json.dumps({"store_id": d.store.store_id, "seq": 3}), retain=True)
    wait_until(lambda: d.store.rows("SELECT COUNT(*) FROM outbox WHERE stream = 'person' AND state = 'acked'")[0][0] == 3, what="ack applied")
    assert [r.seq for r in d.store.unacked_after(0, 100) if r.stream == "person"] == [4, 5]


def test_after_a_reconnect_unacknowledged_events_are_sent_again(tmp_path, broker, subscriber, start_daemon):
    d = start_daemon(write_config(tmp_path / "dev", broker=broker, aggregator_ack=True))
    for _ in range(3):
        d.buttons.press("w1", "satisfied")
    subscriber.wait_events(3)
    publish(broker, topics_of(d).ack, json.dumps({"store_id": d.store.store_id, "seq": 1}), retain=True)
    wait_until(lambda: d.store.depth <= 2 + d.store.rows("SELECT COUNT(*) FROM outbox WHERE stream='telemetry' AND state != 'acked'")[0][0])
    before = len(subscriber.events("rating.recorded"))
    broker.stop()
    broker.start()
    subscriber.wait_events(before + 2)
    time.sleep(0.5)
    again = subscriber.events("rating.recorded")[before:]
    # Seq 1 was acknowledged by the aggregator; 2 and 3 were not, so they went again
    # (the broker, restarting, may also hand the subscriber a copy it still held).
    assert {e["seq"] for e in again} == {2, 3}


ACL = """\
acl_file {acl}
"""


def test_a_publish_refused_by_the_acl_stays_pending_and_is_reported(tmp_path, start_daemon):
    acl = tmp_path / "acl"
    # The device may publish alarms and status, but not button events (MQTT v5 tells us).
    acl.write_text(
        "pattern write hall/v1/+/+/%u/evt/alarm/#\n"
        "pattern write hall/v1/+/+/%u/evt/command/#\n"
        "pattern write hall/v1/+/+/%u/evt/clock/#\n"
        "pattern write hall/v1/+/+/%u/status\n"
        "pattern read hall/v1/+/+/%u/#\n"
        "pattern read hall/v1/+/_township/set/#\n"
        "pattern read hall/v1/+/_county/_county/set/#\n"
        "topic read hall/v1/#\n"
    )
    b = PrivateBroker(tmp_path / "broker", extra_conf=ACL.format(acl=acl)).start()
    sub = Subscriber(b)
    try:
        d = start_daemon(write_config(tmp_path / "dev", broker=b, broker_extra='username = "hall-01"'))
        d.buttons.press("w1", "satisfied")
        alarm = sub.wait_for(lambda msgs: any("/evt/alarm/raised" in m.topic for m in msgs))
        raised = [json.loads(m.payload) for m in alarm if "/evt/alarm/raised" in m.topic]
        assert raised[0]["data"]["code"] == "publish_refused"
        assert "Not authorized" in raised[0]["data"]["detail"]
        assert not sub.events("rating.recorded")
        row = d.store.rows("SELECT state, refused FROM outbox WHERE type = 'rating.recorded'")
        assert row == [("pending", "Not authorized")]
        status = d.status()
        assert status["outbox"]["refused"] == 1 and status["outbox"]["last_refusal"] == "Not authorized"
        assert status["uplink"]["refused_publishes"] == 1
        assert "publish_refused" in [a["code"] for a in status["alarms"]]
    finally:
        sub.close()
        b.close()


def test_retained_status_says_online_with_the_birth_details(tmp_path, broker, subscriber, start_daemon):
    d = start_daemon(write_config(tmp_path / "dev", broker=broker))
    msgs = subscriber.wait_for(lambda m: any(x.topic == topics_of(d).status for x in m))
    birth = json.loads(next(m for m in msgs if m.topic == topics_of(d).status).payload)
    assert birth["online"] is True and birth["connect_count"] >= 1
    assert birth["version"] and birth["store_id"] == d.store.store_id
    assert "depth" in birth["outbox"] and "synced" in birth["clock"]
    # A late subscriber sees it too: it is retained.
    late = Subscriber(broker, topic=topics_of(d).status, client_id="late")
    try:
        m = late.wait_for(lambda m: len(m) >= 1)[0]
        assert m.retain and json.loads(m.payload)["online"] is True
    finally:
        late.close()


def test_a_clean_stop_publishes_offline(tmp_path, broker, subscriber, start_daemon):
    d = start_daemon(write_config(tmp_path / "dev", broker=broker))
    subscriber.wait_for(lambda m: any(x.topic.endswith("/status") for x in m))
    d.buttons.press("w1", "satisfied")
    d.stop()
    msgs = subscriber.wait_for(lambda m: any(x.topic.endswith("/status") and not json.loads(x.payload)["online"] for x in m))
    last = json.loads([m for m in msgs if m.topic.endswith("/status")][-1].payload)
    assert last == {**last, "online": False, "reason": "shutdown"}
    assert subscriber.events("rating.recorded"), "the press was delivered before leaving"


def _command_events(sub: Subscriber, types=("command.applied", "command.rejected", "state.applied")) -> list[dict]:
    return [e for e in sub.events() if e["type"] in types]


def test_a_one_off_command_delivered_twice_is_applied_once(tmp_path, broker, subscriber, start_daemon):
    d = start_daemon(write_config(tmp_path / "dev", broker=broker))
    wait_until(lambda: d.uplink.info.state == "connected" and d.uplink._ready, what="connected")
    command = json.dumps({"command_id": "c-0001", "args": {}})
    publish(broker, topics_of(d).command("resync"), command)
    publish(broker, topics_of(d).command("resync"), command)
    subscriber.wait_for(lambda m: len(_command_events(subscriber)) >= 1)
    time.sleep(0.5)
    applied = _command_events(subscriber)
    assert [(e["type"], e["data"]["command_id"]) for e in applied] == [("command.applied", "c-0001")]
    assert d.store.command_seen("c-0001") == "applied"


def test_one_off_commands_sent_while_offline_arrive_on_reconnect(tmp_path, broker, subscriber, start_daemon):
    cfg = write_config(tmp_path / "dev", broker=broker)
    d = start_daemon(cfg)
    wait_until(lambda: d.uplink.info.state == "connected" and d.uplink._ready, what="connected")
    d.stop()
    # The persistent session keeps the command at the broker while the device is away.
    publish(broker, topics_of(d).command("resync"), json.dumps({"command_id": "while-away"}))
    start_daemon(cfg)
    subscriber.wait_for(lambda m: any(e["data"].get("command_id") == "while-away" for e in _command_events(subscriber)))


def test_desired_state_applies_by_version_and_scope(tmp_path, broker, subscriber, start_daemon):
    d = start_daemon(write_config(tmp_path / "dev", broker=broker))
    t = topics_of(d)
    publish(broker, t.desired("county", "settings"), json.dumps({"version": 3, "data": {"status_interval": 120, "health_interval": 600}}), retain=True)
    publish(broker, t.desired("device", "settings"), json.dumps({"version": 1, "data": {"status_interval": 30}}), retain=True)
    subscriber.wait_for(lambda m: len(_command_events(subscriber, ("state.applied",))) >= 2)
    wait_until(lambda: d.settings["status_interval"] == 30 and d.settings["health_interval"] == 600, what="settings merged")
    assert d.store.applied_versions() == {"settings": {"county": 3, "device": 1}}
    # A stale version is not applied again; the retained one redelivered on reconnect is a no-op.
    publish(broker, t.desired("county", "settings"), json.dumps({"version": 2, "data": {"health_interval": 10}}), retain=True)
    time.sleep(0.5)
    assert d.settings["health_interval"] == 600
    assert len(_command_events(subscriber, ("state.applied",))) == 2


@pytest.mark.parametrize(
    ("kind", "name", "payload", "field", "reason"),
    [
        ("cmd", "resync", b"{not json", "payload", "is not UTF-8 JSON"),
        ("cmd", "resync", b"\xff\xfe", "payload", "is not UTF-8 JSON"),
        ("cmd", "resync", b"[1, 2]", "payload", "must be a JSON object"),
        ("cmd", "resync", b'{"args": {}}', "command_id", "is required"),
        ("cmd", "resync", b'{"command_id": 5}', "command_id", "must be str"),
        ("cmd", "self-destruct", b'{"command_id": "x1"}', "topic", "is not an action this device knows"),
        ("cmd", "resync", b'{"command_id": "big", "pad": "' + b"x" * 70_000 + b'"}', "payload", "over the limit of 65536"),
        ("set", "settings", b'{"data": {}}', "version", "is required"),
        ("set", "settings", b'{"version": "7", "data": {}}', "version", "must be int"),
        ("set", "settings", b'{"version": 1, "data": {"status_interval": 1}}', "data.status_interval", "must be a whole number from 10 to 3600"),
        ("set", "settings", b'{"version": 1, "data": {"colour": "red"}}', "data.colour", "is not a setting"),
        ("set", "fireworks", b'{"version": 1, "data": {}}', "topic", "is not a kind of desired state"),
        # Half a UTF-16 pair: no UTF-8 event can carry it, so echoed in the rejection it once
        # broke every session the broker redelivered it to.
        ("cmd", "resync", b'{"command_id": "\\ud800x"}', "payload", "contains a lone UTF-16 surrogate escape"),
        ("cmd", "resync", b'{"command_id": ["\\udfff"]}', "payload", "contains a lone UTF-16 surrogate escape"),
        ("set", "settings", b'{"version": "\\ud800"}', "payload", "contains a lone UTF-16 surrogate escape"),
        ("set", "settings", b'{"version": 18446744073709551616, "data": {}}', "version", "must be from 1 to 9223372036854775807"),
        ("cmd", "resync", b'{"command_id": "deep", "args": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", "payload", "is nested too deeply"),
    ],
)
def test_bad_commands_are_rejected_with_a_reason_and_the_daemon_keeps_running(tmp_path, broker, subscriber, start_daemon, kind, name, payload, field, reason):
    d = start_daemon(write_config(tmp_path / "dev", broker=broker, broker_extra="max_command_bytes = 65536"))
    wait_until(lambda: d.uplink.info.state == "connected" and d.uplink._ready, what="connected")
    t = topics_of(d)
    topic = t.command(name) if kind == "cmd" else t.desired("device", name)
    publish(broker, topic, payload)
    rejected = subscriber.wait_for(lambda m: any(e["type"] == "command.rejected" for e in subscriber.events()))
    event = next(e for e in subscriber.events() if e["type"] == "command.rejected")
    assert event["data"]["field"] == field
    assert reason in event["data"]["reason"]
    assert event["data"]["topic"] == topic
    validate_message(t.event("command.rejected"), json.dumps(event).encode())
    # Still alive and still recording and publishing.
    assert d.uplink.is_alive() and d.healthy()
    d.buttons.press("w1", "satisfied")
    subscriber.wait_events(1)


def test_a_simulated_swipe_checks_in_and_the_next_rating_at_that_window_names_the_person(tmp_path, broker, subscriber, start_daemon):
    """Issue 6 end to end: the county's staff list over MQTT, a badge swipe, a press."""
    config = write_config(tmp_path / "dev", broker=broker).read_text().replace("[control]", "[badge]\nenabled = true\ndriver = \"simulated\"\n\n[control]")
    (tmp_path / "dev" / "appliance.toml").write_text(config)
    d = start_daemon(tmp_path / "dev" / "appliance.toml")
    t = topics_of(d)
    staff = {"version": 1, "data": {"staff": [{"id": "s-001", "name": "乌日娜", "cards": ["0012345678"], "windows": ["w1"]}]}}
    publish(broker, t.desired("county", "staff"), json.dumps(staff, ensure_ascii=False), retain=True)
    subscriber.wait_for(lambda m: any(e["type"] == "state.applied" and e["data"]["name"] == "staff" for e in subscriber.events()))

    swipe = d.control.handlers["badge"]({"card": "0012345678"})
    assert swipe[0]["result"]["outcome"] == "checked_in" and swipe[0]["result"]["staff_id"] == "s-001"
    checked_in = subscriber.wait_for(lambda m: subscriber.events("attendance.checked_in"))
    event = subscriber.events("attendance.checked_in")[0]
    assert event["data"]["staff_id"] == "s-001" and event["data"]["window"] == "w1" and event["stream"] == "person"
    assert checked_in

    d.buttons.press("w1", "satisfied")
    d.buttons.press("w2", "satisfied")
    ratings = {e["data"]["window"]: e["data"] for e in subscriber.wait_events(2)}
    assert ratings["w1"]["staff_id"] == "s-001" and ratings["w1"]["flags"] == []
    # The roster knows nobody is at w2: the rating there says so.
    assert ratings["w2"]["staff_id"] is None and ratings["w2"]["flags"] == ["unstaffed"]
    # Everything the device published on the way, the check-in included, is in the contract.
    used = {validate_message(m.topic, m.payload) for m in subscriber.wait_for(lambda m: True) if "/evt/" in m.topic}
    assert {"event.state.applied", "event.attendance.checked_in", "event.rating.recorded"} <= used


def board_config(tmp_path, broker) -> str:
    path = write_config(tmp_path / "dev", broker=broker)
    path.write_text(path.read_text().replace("[control]", '[display]\nenabled = true\ndriver = "emulator"\nwidth = 128\nheight = 16\n\n[control]'))
    return path


def test_a_county_board_notice_reaches_the_board_and_a_bad_one_changes_nothing(tmp_path, broker, subscriber):
    """Issue 5 end to end: desired state over a real Mosquitto changes what the emulator shows."""
    from appliance.clock import HALL_TZ, FakeClock
    from datetime import datetime

    clock = FakeClock(datetime(2026, 11, 25, 10, 0, tzinfo=HALL_TZ))  # a Wednesday morning: the hall is open
    d = Daemon(load_config(board_config(tmp_path, broker)), clock=clock, simulate=True)
    d.start()
    try:
        t = topics_of(d)
        assert d.board.status()["state"] == "empty"
        notice = {"version": 1, "data": {"items": [{"id": "policy-1", "kind": "policy", "text": "惠农补贴申领截止12月31日"}]}}
        publish(broker, t.desired("county", "board"), json.dumps(notice, ensure_ascii=False), retain=True)
        subscriber.wait_for(lambda m: any(e["type"] == "state.applied" and e["data"]["name"] == "board" for e in subscriber.events()))
        wait_until(lambda: d.board.status()["item"] and d.board.status()["item"]["id"] == "policy-1", what="the notice on the board")
        frame = d.control.handlers["frame"]({})
        assert frame["status"]["item"]["id"] == "policy-1"
        lit = d.display.frames[-1].getbbox() if d.display.frames else None
        assert lit is not None, "the emulator shows lit pixels"

        bad = {"version": 2, "data": {"items": [{"id": "x", "kind": "policy", "text": ""}]}}
        publish(broker, t.desired("county", "board"), json.dumps(bad), retain=True)
        rejected = subscriber.wait_for(lambda m: any(e["type"] == "command.rejected" for e in subscriber.events()))
        event = next(e for e in subscriber.events() if e["type"] == "command.rejected")
        assert event["data"]["field"] == "data.items[0].text"
        assert d.board.status()["item"]["id"] == "policy-1", "the board keeps what it had"
        assert rejected

        d.buttons.press("w1", "satisfied")
        wait_until(lambda: d.board.status()["state"] == "thanks", what="the thank-you after a rating")
    finally:
        d.stop()


def test_the_uplink_outlives_a_store_that_cannot_mark_what_the_broker_accepted(tmp_path, broker, subscriber, start_daemon):
    import sqlite3

    d = start_daemon(write_config(tmp_path / "dev", broker=broker))
    wait_until(lambda: d.uplink.info.state == "connected" and d.uplink._ready, what="connected")
    real_mark, real_poll = d.store.mark_published, d.uplink._poll

    def disk_full(ids, final):
        raise sqlite3.OperationalError("database or disk is full")

    def lost_after_the_puback(client, sock, timeout):
        # The broker's PUBACK and the end of the connection arrive in the same read: the
        # accepted rows are marked while the session is torn down.
        ok = real_poll(client, sock, timeout)
        return ok and not d.uplink._published

    d.store.mark_published, d.uplink._poll = disk_full, lost_after_the_puback
    d.buttons.press("w1", "satisfied")
    wait_until(lambda: d.uplink.info.state in ("waiting", "connecting"), what="the session ended")
    assert d.uplink.is_alive() and d.healthy()
    d.store.mark_published, d.uplink._poll = real_mark, real_poll
    wait_until(lambda: d.store.depth == 0 or d.uplink.info.state == "connected", what="connected again")
    d.buttons.press("w1", "very_satisfied")
    subscriber.wait_for(lambda m: any(e["data"]["level"] == "very_satisfied" for e in subscriber.events("rating.recorded")))
    assert "satisfied" in [e["data"]["level"] for e in subscriber.events("rating.recorded")]  # once, or again after the reconnect


def test_a_command_the_store_cannot_take_is_not_acknowledged_and_comes_again(tmp_path, broker, subscriber, start_daemon):
    from appliance.errors import StoreError

    d = start_daemon(write_config(tmp_path / "dev", broker=broker))
    wait_until(lambda: d.uplink.info.state == "connected" and d.uplink._ready, what="connected")
    real = d.store.append_many
    failed = []

    def locked_once(items):
        if items[0].event_type == "command.applied" and not failed:
            failed.append(items[0].event_type)
            raise StoreError("could not record command.applied: database is locked")
        return real(items)

    d.store.append_many = locked_once
    publish(broker, topics_of(d).command("resync"), json.dumps({"command_id": "c-once"}))
    subscriber.wait_for(lambda m: any(e["data"].get("command_id") == "c-once" for e in _command_events(subscriber, ("command.applied",))), timeout=30)
    assert failed == ["command.applied"] and d.store.command_seen("c-once") == "applied"
    assert d.uplink.is_alive() and d.healthy()


def test_a_command_the_store_never_takes_is_given_up_after_three_tries_and_the_uplink_goes_on(tmp_path, broker, subscriber, start_daemon):
    from appliance.commands import MAX_DEFERRALS
    from appliance.errors import StoreFullError

    d = start_daemon(write_config(tmp_path / "dev", broker=broker))  # reconnects within 0.5 s (conftest)
    wait_until(lambda: d.uplink.info.state == "connected" and d.uplink._ready, what="connected")
    real = d.store.append_many
    tries = []

    def full_for_commands(items):
        if items[0].event_type == "command.applied":
            tries.append(1)
            raise StoreFullError("no room to record command.applied")
        return real(items)

    d.store.append_many = full_for_commands
    publish(broker, topics_of(d).command("resync"), json.dumps({"command_id": "c-never"}))
    d.buttons.press("w1", "satisfied")  # meanwhile: must still reach the county
    subscriber.wait_events(1, timeout=30)
    rejected = subscriber.wait_for(lambda m: any(e["data"].get("command_id") == "c-never" for e in _command_events(subscriber, ("command.rejected",))), timeout=30)
    assert rejected and len(tries) == MAX_DEFERRALS + 1
    [event] = [e for e in _command_events(subscriber, ("command.rejected",)) if e["data"].get("command_id") == "c-never"]
    assert "the device could not record it (no room to record command.applied); nothing was applied: send it again later" == event["data"]["reason"]
    assert d.uplink.is_alive() and d.healthy()
    # Room again: the same command_id, sent again as the rejection says, is applied.
    d.store.append_many = real
    publish(broker, topics_of(d).command("resync"), json.dumps({"command_id": "c-never"}))
    subscriber.wait_for(lambda m: any(e["data"].get("command_id") == "c-never" for e in _command_events(subscriber, ("command.applied",))))


def test_a_retained_state_the_store_never_takes_does_not_keep_the_uplink_reconnecting(tmp_path, broker, subscriber, start_daemon):
    from appliance.commands import MAX_DEFERRALS
    from appliance.errors import StoreFullError

    d = start_daemon(write_config(tmp_path / "dev", broker=broker))
    wait_until(lambda: d.uplink.info.state == "connected" and d.uplink._ready, what="connected")
    real = d.store.append_many

    def full_for_states(items):
        if items[0].event_type == "state.applied":
            raise StoreFullError("no room to record state.applied")
        return real(items)

    d.store.append_many = full_for_states
    before = d.uplink.info.connect_count
    publish(broker, topics_of(d).desired("county", "settings"), json.dumps({"version": 3, "data": {"health_interval": 600}}), retain=True)
    subscriber.wait_for(lambda m: any(e["data"].get("name") == "settings" for e in _command_events(subscriber, ("command.rejected",))), timeout=30)
    settled = d.uplink.info.connect_count
    assert settled - before <= MAX_DEFERRALS + 1
    d.buttons.press("w1", "satisfied")
    subscriber.wait_events(1)
    time.sleep(2)
    assert d.uplink.info.connect_count == settled  # no storm of reconnects once given up
    assert len([e for e in _command_events(subscriber, ("command.rejected",)) if e["data"].get("name") == "settings"]) == 1
    d.store.append_many = real

"""The complaint box in a running daemon: sealed on the page's side, published, opened by the
county, and its status set by the county over a real Mosquitto and read back by the citizen."""

from __future__ import annotations

import base64
import json
import uuid

import paho.mqtt.client as mqtt
from nacl.public import PrivateKey

from appliance.clock import SystemClock, boot_id
from appliance.config import load_config
from appliance.events import Recorder, Topics
from appliance.store import Store
from provisioning.complaints import open_sealed
from services.complaints import PUBLIC_KEY_TAG, Complaints, Sealer, format_key_file, lookup_receipt

from conftest import write_config
from contract import validate_message

TEXT = "收费窗口多收了五十元，没有开票。marker-d41e"


def publish(broker, topic: str, payload: dict) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"county-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic, json.dumps(payload, ensure_ascii=False), qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_a_complaint_goes_out_sealed_and_the_countys_status_comes_back_to_the_receipt(tmp_path, broker, subscriber, daemon_process):
    county = PrivateKey.generate()
    key_file = tmp_path / "complaints.pub"
    key_file.write_text(format_key_file(PUBLIC_KEY_TAG, bytes(county.public_key), "test supervisor"))
    config_path = write_config(tmp_path / "hall", broker=broker)
    with open(config_path, "a") as f:
        f.write(f'\n[complaints]\npublic_key = "{key_file}"\n')
    daemon = daemon_process(config_path).start()
    config = load_config(config_path)

    # The page's side: its own connection to the card, as `hall-appliance web` has.
    store = Store(config.store.path, reserve_mb=0, recover=False)
    try:
        page = Complaints(Recorder(store, config.device, SystemClock(), boot_id()), store, SystemClock(), Sealer.from_file(key_file))
        receipt = page.submit("fees", TEXT, contact="13800000000")

        [event] = subscriber.wait_events(1, "complaint.received")
        assert event["data"]["receipt"] == receipt.code
        assert TEXT.encode() not in json.dumps(event, ensure_ascii=False).encode()
        opened = open_sealed(bytes(county), base64.b64decode(event["data"]["ciphertext"]))
        assert opened["text"] == TEXT and opened["contact"] == "13800000000"

        topic = Topics.for_device(config.device).command("complaint.status")
        command = {"command_id": str(uuid.uuid4()), "args": {"receipt": receipt.code, "status": "answered", "reply": "已退还多收费用。", "by": "县纪委监委"}}
        publish(broker, topic, command)
        publish(broker, topic, command)  # the same command again: applied once
        publish(broker, topic, {"command_id": str(uuid.uuid4()), "args": {"receipt": "AAAA-AAAA-AAAA", "status": "answered"}})

        [changed] = subscriber.wait_events(1, "complaint.status_changed")
        assert (changed["data"]["receipt"], changed["data"]["status"], changed["data"]["reply"], changed["data"]["set_by"]) == (receipt.code, "answered", "已退还多收费用。", "县纪委监委")
        [rejected] = subscriber.wait_events(1, "command.rejected")
        assert rejected["data"]["name"] == "complaint.status" and rejected["data"]["field"] == "args.receipt"
        applied = [e for e in subscriber.events("command.applied") if e["data"]["name"] == "complaint.status"]
        assert len(applied) == 1 and applied[0]["data"]["result"]["status"] == "answered"

        status = lookup_receipt(store, receipt.code.lower().replace("-", " "))
        assert (status.status, status.reply) == ("answered", "已退还多收费用。")
    finally:
        store.close()
    assert daemon.terminate() == 0
    # Nothing in the card, the daemon's log or anything published holds the plaintext.
    for path in [config.store.path, *config.store.path.parent.glob("hall.db-*"), tmp_path / "hall" / "daemon.log"]:
        assert TEXT.encode() not in path.read_bytes(), path
    assert not any(TEXT.encode() in m.payload for m in subscriber.messages)
    for m in subscriber.messages:  # everything published keeps the contract
        validate_message(m.topic, m.payload)
    validate_message(topic, json.dumps(command, ensure_ascii=False).encode())


def test_without_a_readable_key_the_box_is_closed_with_an_alarm_and_the_daemon_runs(tmp_path, broker, daemon_process):
    config_path = write_config(tmp_path / "hall", broker=broker)
    with open(config_path, "a") as f:
        f.write(f'\n[complaints]\npublic_key = "{tmp_path / "missing.pub"}"\n')
    daemon = daemon_process(config_path).start()
    status = daemon.control().call("status")
    [alarm] = [a for a in status["alarms"] if a["code"] == "complaint_key"]
    assert "missing.pub" in alarm["detail"] and "closed" in alarm["detail"]
    assert daemon.terminate() == 0


def test_the_board_scrolls_the_forms_address_among_the_hall_items(tmp_path):
    from appliance.daemon import Daemon
    from appliance.clock import FakeClock
    from services.board import COMPLAINT_ID

    config_path = write_config(tmp_path / "hall")
    with open(config_path, "a") as f:
        f.write('\n[display]\nenabled = true\ndriver = "emulator"\nwidth = 128\nheight = 16\n')
        f.write('\n[complaints]\naddress = "https://hall-01.local:8080/ts"\n')
    d = Daemon(load_config(config_path), clock=FakeClock(), simulate=True)
    d.start()
    try:
        [item] = [i for i in d.board.playlist.items() if i.id == COMPLAINT_ID]
        assert "https://hall-01.local:8080/ts" in item.text
        assert d.complaints.sealer is None  # no key configured: the box is closed, and says so
    finally:
        d.stop()


def test_the_simulator_seals_to_a_throwaway_key_it_keeps_beside_its_store(tmp_path, capsys):
    from appliance.cli import _simulator_complaint_key

    config = load_config(write_config(tmp_path / "sim"))
    assert config.complaints.public_key is None
    first = _simulator_complaint_key(config)
    private = config.store.path.parent / "simulator-supervisor.key"
    assert first.complaints.public_key == config.store.path.parent / "simulator-supervisor.pub"
    assert oct(private.stat().st_mode & 0o777) == "0o600"
    assert f"hall-provision complaints open --key {private}" in capsys.readouterr().out
    # The next start keeps the same key, so what was sealed before still opens.
    before = first.complaints.public_key.read_bytes()
    assert _simulator_complaint_key(config).complaints.public_key.read_bytes() == before
    Sealer.from_file(first.complaints.public_key)
    # A configured key is never replaced.
    assert _simulator_complaint_key(first) is first

"""``hall-provision complaints``: the supervisor's keys, and opening complaints from a capture file or the broker."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from appliance.broker import free_port
from appliance.clock import FakeClock
from appliance.config import DeviceConfig
from appliance.events import Recorder
from appliance.store import Store
from provisioning.cli import main as provision
from provisioning.complaints import load_private_key
from services.complaints import Complaints, Sealer, show_fingerprint

REPO = Path(__file__).resolve().parent.parent
DEVICE = DeviceConfig(id="hall-01", hall="白音锡勒苏木政务服务中心", township="baiyinxile", county="xilinhot")
TOPIC = "hall/v1/xilinhot/baiyinxile/hall-01/evt/complaint/received"
FIRST = "窗口工作人员中午提前一小时离岗，群众在门口等了很久。"
SECOND = "办理草原补奖时要求交“材料费”五十元。\n没有收据。"


@pytest.fixture
def keys(tmp_path):
    """A key pair made by keygen, as county IT would."""
    private, public = tmp_path / "county" / "supervisor.key", tmp_path / "county" / "supervisor.pub"
    private.parent.mkdir()
    assert provision(["complaints", "keygen", "--private-out", str(private), "--public-out", str(public)]) == 0
    return private, public


class Appliance:
    """The real service on a real store, sealing to the public key keygen wrote."""

    def __init__(self, directory: Path, public: Path) -> None:
        self.store = Store(directory / "hall.db", reserve_mb=0, free_space_floor_mb=0)
        self.recorder = Recorder(self.store, DEVICE, FakeClock(), "boot-1")
        self.complaints = Complaints(self.recorder, self.store, self.recorder.clock, Sealer.from_file(public), {"w1": "综合受理窗口"})

    def payloads(self, event_type: str | None = None) -> list[bytes]:
        """What the uplink publishes, in order: the outbox payloads."""
        sql = "SELECT payload FROM outbox" + (" WHERE type = ?" if event_type else "") + " ORDER BY id"
        return [p for (p,) in self.store.rows(sql, (event_type,) if event_type else ())]


@pytest.fixture
def appliance(tmp_path, keys):
    a = Appliance(tmp_path, keys[1])
    yield a
    a.store.close()


def capture(path: Path, payloads: list[bytes]) -> Path:
    """A capture file as `mosquitto_sub -t FILTER > file` writes it: each payload and a newline."""
    path.write_bytes(b"".join(p + b"\n" for p in payloads))
    return path


def tamper(payload: bytes, at: int = 60) -> bytes:
    doc = json.loads(payload)
    sealed = bytearray(base64.b64decode(doc["data"]["ciphertext"]))
    sealed[at] ^= 0x01
    doc["data"]["ciphertext"] = base64.b64encode(bytes(sealed)).decode()
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


# -- keygen -------------------------------------------------------------------------------------------


def test_keygen_writes_a_private_key_only_its_owner_can_read_and_prints_the_fingerprint(tmp_path, capsys):
    private, public = tmp_path / "s.key", tmp_path / "s.pub"
    old = os.umask(0)  # even with nothing masked the private key is 0600
    try:
        assert provision(["complaints", "keygen", "--private-out", str(private), "--public-out", str(public)]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    out = capsys.readouterr().out
    kid = Sealer.from_file(public).key_id
    assert f"fingerprint: {show_fingerprint(kid)}" in out
    assert load_private_key(private).key_id == kid
    assert base64.b64decode(public.read_text().split()[-1]) != base64.b64decode(private.read_text().split()[-1])


@pytest.mark.parametrize("existing", ["private", "public"])
def test_keygen_never_overwrites_a_key(tmp_path, capsys, existing):
    private, public = tmp_path / "s.key", tmp_path / "s.pub"
    target = private if existing == "private" else public
    target.write_text("the key complaints were sealed to\n")
    assert provision(["complaints", "keygen", "--private-out", str(private), "--public-out", str(public)]) == 2
    err = capsys.readouterr().err
    assert f"{target} exists; keygen never overwrites a key" in err
    assert target.read_text() == "the key complaints were sealed to\n"
    assert not (public if existing == "private" else private).exists()  # nothing half made


def test_keygen_needs_an_existing_directory(tmp_path, capsys):
    assert provision(["complaints", "keygen", "--private-out", str(tmp_path / "no" / "s.key"), "--public-out", str(tmp_path / "s.pub")]) == 2
    assert "is not a directory; create it first" in capsys.readouterr().err


# -- open, from a capture file ----------------------------------------------------------------------------


def test_open_prints_what_the_real_service_sealed_from_a_capture_file(tmp_path, keys, appliance, capsys):
    first = appliance.complaints.submit("discipline", FIRST, window="w1", staff="工号 017")
    appliance.recorder.telemetry("device.health", {"uptime_s": 1})  # another event in the capture: passed over
    second = appliance.complaints.submit("fees", SECOND, contact="13800000000", transcribed_by="s-007")
    payloads = appliance.payloads()
    cap = capture(tmp_path / "complaints.capture", payloads + payloads[:1])  # a resend after a reconnect

    assert provision(["complaints", "open", "--key", str(keys[0]), "--file", str(cap)]) == 0
    out, err = capsys.readouterr()
    assert f"complaint {first.code}  [discipline 工作纪律]  received 2026-11-25T09:00:00.000+08:00" in out
    assert f"complaint {second.code}  [fees 违规收费]" in out
    assert "    窗口工作人员中午提前一小时离岗，群众在门口等了很久。\n" in out
    assert "    办理草原补奖时要求交“材料费”五十元。\n    没有收据。\n" in out
    assert "  about:   window w1 · staff 工号 017\n" in out
    assert "  contact: none given (anonymous)\n" in out and "  contact: 13800000000\n" in out
    assert "  via:     public form\n" in out and "  via:     transcribed by staff s-007\n" in out
    assert "  hall:    白音锡勒苏木政务服务中心 (device hall-01, township baiyinxile, county xilinhot, seq 1)" in out
    assert out.count(f"complaint {first.code}") == 1
    assert "2 opened, 1 repeats skipped, 1 other events passed over" in err


def test_open_as_json_gives_one_object_per_complaint(tmp_path, keys, appliance, capsys):
    receipt = appliance.complaints.submit("other", FIRST, contact="微信 abc")
    cap = capture(tmp_path / "c.capture", appliance.payloads())
    assert provision(["complaints", "open", "--key", str(keys[0]), "--file", str(cap), "--json"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    doc = json.loads(line)
    assert {k: doc[k] for k in ("receipt", "category", "channel", "text", "contact", "device_id", "seq")} == {
        "receipt": receipt.code, "category": "other", "channel": "form", "text": FIRST, "contact": "微信 abc", "device_id": "hall-01", "seq": 1,
    }


def test_a_tampered_payload_is_reported_clearly_and_the_rest_still_opens(tmp_path, keys, appliance, capsys):
    first = appliance.complaints.submit("attitude", FIRST)
    second = appliance.complaints.submit("attitude", SECOND)
    good, bad = appliance.payloads("complaint.received")
    cap = capture(tmp_path / "c.capture", [tamper(bad), good, b"this line is not JSON"])

    assert provision(["complaints", "open", "--key", str(keys[0]), "--file", str(cap)]) == 1
    out, err = capsys.readouterr()
    event_id = json.loads(bad)["event_id"]
    assert f"!! line 1: complaint {second.code} (event {event_id}) does not open with this key: it was altered or damaged on the way, or sealed to another key\n" in out
    assert "!! line 3: event is not a JSON payload (capture with mosquitto_sub without -v, one payload per line)\n" in out
    assert f"complaint {first.code}" in out and FIRST in out and SECOND not in out
    assert "Traceback" not in out + err
    assert "1 opened, 2 could not be opened" in err


def test_a_resend_after_a_damaged_copy_still_opens(tmp_path, keys, appliance, capsys):
    appliance.complaints.submit("attitude", FIRST)
    [payload] = appliance.payloads()
    cap = capture(tmp_path / "c.capture", [tamper(payload, at=5), payload])
    assert provision(["complaints", "open", "--key", str(keys[0]), "--file", str(cap)]) == 1
    assert FIRST in capsys.readouterr().out


def test_a_complaint_sealed_to_another_key_names_that_key(tmp_path, keys, appliance, capsys):
    other = tmp_path / "other"
    other.mkdir()
    provision(["complaints", "keygen", "--private-out", str(other / "k"), "--public-out", str(other / "k.pub")])
    capsys.readouterr()
    elsewhere = Appliance(other, other / "k.pub")
    elsewhere.complaints.submit("other", FIRST)
    cap = capture(tmp_path / "c.capture", elsewhere.payloads())
    elsewhere.store.close()

    assert provision(["complaints", "open", "--key", str(keys[0]), "--file", str(cap)]) == 1
    out = capsys.readouterr().out
    assert f"was sealed to key {show_fingerprint(Sealer.from_file(other / 'k.pub').key_id)}, and no key given opens it" in out
    # With both keys (after a key change) it opens.
    assert provision(["complaints", "open", "--key", str(keys[0]), "--key", str(other / "k"), "--file", str(cap)]) == 0
    assert FIRST in capsys.readouterr().out


def test_a_ciphertext_moved_to_another_receipt_is_flagged(tmp_path, keys, appliance, capsys):
    appliance.complaints.submit("attitude", FIRST)
    second = appliance.complaints.submit("bribery", SECOND)
    a, b = (json.loads(p) for p in appliance.payloads())
    b["data"]["ciphertext"] = a["data"]["ciphertext"]
    cap = capture(tmp_path / "c.capture", [json.dumps(b, ensure_ascii=False).encode()])
    assert provision(["complaints", "open", "--key", str(keys[0]), "--file", str(cap)]) == 1
    out = capsys.readouterr().out
    assert f"WARNING: the sealed text belongs to receipt {a['data']['receipt']}, not {second.code}: the ciphertext was moved from another complaint" in out


def test_a_capture_made_with_mosquitto_sub_v_is_read_too(tmp_path, keys, appliance, capsys):
    appliance.complaints.submit("attitude", FIRST)
    cap = capture(tmp_path / "c.capture", [TOPIC.encode() + b" " + p for p in appliance.payloads()])
    assert provision(["complaints", "open", "--key", str(keys[0]), "--file", str(cap)]) == 0
    assert FIRST in capsys.readouterr().out


@pytest.mark.parametrize(
    "key, message",
    [
        ("public", "is the public key; opening complaints needs the private key keygen wrote with it"),
        ("missing", "cannot read the private key (No such file or directory)"),
    ],
)
def test_a_wrong_key_file_is_a_clear_message(tmp_path, keys, capsys, key, message):
    path = keys[1] if key == "public" else tmp_path / "absent.key"
    assert provision(["complaints", "open", "--key", str(path), "--file", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_private_key_others_can_read_is_warned_about(tmp_path, keys, appliance, capsys):
    os.chmod(keys[0], 0o644)
    cap = capture(tmp_path / "c.capture", [])
    assert provision(["complaints", "open", "--key", str(keys[0]), "--file", str(cap)]) == 0
    assert f"warning: {keys[0]} can be read by other users (mode 0644); chmod 600 {keys[0]}" in capsys.readouterr().err


def test_a_missing_capture_file_is_a_clear_message(tmp_path, keys, capsys):
    assert provision(["complaints", "open", "--key", str(keys[0]), "--file", str(tmp_path / "none.capture")]) == 2
    assert "none.capture: cannot read the capture file (No such file or directory)" in capsys.readouterr().err


# -- open, from the broker ---------------------------------------------------------------------------


def publish(broker, topic: str, payload: bytes, *, retain: bool = False) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"hall-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
    c.connect(broker.host, broker.port)
    c.loop_start()
    c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
    c.loop_stop()
    c.disconnect()


def test_open_reads_a_retained_complaint_from_the_broker(broker, keys, appliance, capsys):
    receipt = appliance.complaints.submit("favoritism", SECOND, contact="13800000000")
    [payload] = appliance.payloads()
    publish(broker, TOPIC, payload, retain=True)

    rc = provision(["complaints", "open", "--key", str(keys[0]), "--broker", f"{broker.host}:{broker.port}", "--count", "1", "--idle", "20"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert f"complaint {receipt.code}  [favoritism 优亲厚友]" in out and "    没有收据。" in out
    assert f"listening on {broker.host}:{broker.port} for hall/v1/+/+/+/evt/complaint/received" in err


def test_open_prints_a_complaint_published_while_it_listens(broker, keys, appliance):
    receipt = appliance.complaints.submit("bribery", FIRST)
    [payload] = appliance.payloads()
    proc = subprocess.Popen(
        [sys.executable, "-m", "provisioning.cli", "complaints", "open", "--key", str(keys[0]), "--broker", f"{broker.host}:{broker.port}",
         "--topic", "hall/v1/xilinhot/#", "--count", "1", "--idle", "30"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        listening = threading.Event()
        lines: list[bytes] = []

        def read_err() -> None:
            for line in proc.stderr:
                lines.append(line)
                if b"listening on" in line:
                    listening.set()

        threading.Thread(target=read_err, daemon=True).start()
        assert listening.wait(20), b"".join(lines)
        publish(broker, TOPIC.replace("complaint/received", "rating/recorded"), b'{"type":"rating.recorded"}')
        publish(broker, TOPIC, payload)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, b"".join(lines)
    assert f"complaint {receipt.code}  [bribery 吃拿卡要]".encode() in out and FIRST.encode() in out


def test_open_says_so_when_the_broker_cannot_be_reached(keys, capsys):
    assert provision(["complaints", "open", "--key", str(keys[0]), "--broker", f"127.0.0.1:{free_port()}", "--idle", "2"]) == 2
    err = capsys.readouterr().err
    assert "cannot connect to 127.0.0.1:" in err and "Traceback" not in err


@pytest.mark.parametrize("value", ["host:port", ":1883", "host:70000"])
def test_a_bad_broker_address_is_a_clear_message(keys, capsys, value):
    assert provision(["complaints", "open", "--key", str(keys[0]), "--broker", value]) == 2
    assert f"--broker {value!r}: give HOST:PORT" in capsys.readouterr().err

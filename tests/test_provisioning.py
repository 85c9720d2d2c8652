"""County provisioning against a real Mosquitto running the generated files.

One county workspace and one broker for the module: the broker runs the mosquitto.conf that
``hall-provision`` wrote, with only the listener port and the file paths pointed at the test's
directory. Devices are enrolled from their bundles into temporary /etc directories, and the
real daemon runs on one of them.
"""

from __future__ import annotations

import getpass
import hashlib
import importlib.util
import io
import json
import os
import re
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from appliance.accounts import Accounts
from appliance.broker import free_port, mosquitto_binary
from appliance.config import load_config
from appliance import enroll as enroll_module
from appliance.enroll import EnrollError, enroll, read_bundle, systemd_runner_for
from appliance.store import Store
from conftest import REPO
from provisioning.cli import main as provision
from provisioning.complaints import keygen
from provisioning.mosquitto import BrokerLayout, check_password, password_hash, render_mosquitto_conf
from provisioning.workspace import Workspace

COUNTY = "xilinhot"
# The county's standard kit, for a test machine: mock pins, no board, the store and the
# control socket beside the installed config (relative paths are taken from its directory).
TEMPLATE = """\
[store]
path = "hall.db"
free_space_floor_mb = 0
reserve_mb = 0

[control]
socket = "control.sock"

[gpio]
pin_factory = "mock"

[ratings]
debounce_ms = 2

[[windows]]
id = "w1"
name = "综合受理窗口"
buttons = [17, 27, 22]

[display]
enabled = false
"""
SERIAL_A = "10000000abcdef01"
INVENTORY = f"""\
device,township,hall,address,serial
hall-a,baiyinxile,白音锡勒苏木政务服务中心,127.0.0.1,{SERIAL_A}
hall-b,baiyinxile,白音锡勒苏木第二服务站,,
hall-c,haoritu,浩日图苏木政务服务中心,,
hall-d,baiyinxile,将被吊销的设备,,
"""

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")


def hall_provision(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "provisioning.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=60)


def hall_appliance(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=60)


@dataclass
class County:
    """The county's workspace and its broker, running the generated configuration."""

    ws: Workspace
    port: int
    proc: subprocess.Popen
    log: Path

    def bundle(self, device: str) -> Path:
        return self.ws.bundle_path(device)

    def password(self, account: str) -> str:
        if account.startswith("svc_"):
            return self.ws.service_password_path(account).read_text().strip()
        return read_bundle(self.bundle(account)).text("broker-password").strip()

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ws.ca_cert_path))

    def reload(self) -> None:
        """What `systemctl reload mosquitto` does: SIGHUP, and Mosquitto rereads passwords and ACL."""
        size = self.log.stat().st_size
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "Reloading config" not in self.log.read_text()[size:]:
            assert time.monotonic() < deadline, "mosquitto did not reload"
            time.sleep(0.02)
        time.sleep(0.1)


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    root = tmp_path_factory.mktemp("county")
    port = free_port()
    assert provision(["init", str(root / "ws"), "--county", COUNTY, "--broker-host", "127.0.0.1", "--broker-port", str(port), "--ntp-server", "ntp.xilinhot.example"]) == 0
    ws = Workspace(root / "ws")
    (ws.root / "device-template.toml").write_text(TEMPLATE)
    keygen(root / "supervisor.key", ws.root / "complaints.pub")
    (root / "inventory.csv").write_text(INVENTORY)
    assert provision(["import", str(root / "inventory.csv"), "-w", str(ws.root)]) == 0
    assert provision(["bundle", "--all", "-w", str(ws.root)]) == 0
    assert provision(["broker-files", "-w", str(ws.root)]) == 0
    mq = root / "mosquitto"
    mq.mkdir()
    # The generated configuration, with only the port, the paths and the user for this machine.
    layout = BrokerLayout(port=port, files_dir=ws.broker_dir, persistence_dir=mq, bind_address="127.0.0.1", log_file=mq / "mosquitto.log", run_as=getpass.getuser())
    (mq / "mosquitto.conf").write_text(render_mosquitto_conf(COUNTY, layout, "test"))
    proc = subprocess.Popen([mosquitto_binary(), "-c", str(mq / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 10
    while True:
        assert proc.poll() is None, proc.stderr.read().decode() + (mq / "mosquitto.log").read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "mosquitto did not listen"
            time.sleep(0.02)
    yield County(ws, port, proc, mq / "mosquitto.log")
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stderr.close()


class Client:
    """A raw MQTT v5 client with one account's credentials that records what the broker answers."""

    def __init__(self, county: County, username: str | None, password: str | None = None, *, client_id: str | None = None, topics: tuple[str, ...] = ()) -> None:
        self.cond = threading.Condition()
        self.connack: list = []
        self.pubacks: dict[int, object] = {}
        self.subacks: list = []
        self.messages: list[mqtt.MQTTMessage] = []
        self.disconnected = threading.Event()
        self.topics = topics
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"test-{username}-{os.urandom(3).hex()}", protocol=mqtt.MQTTv5)
        if username is not None:
            self.client.username_pw_set(username, password if password is not None else county.password(username))
        self.client.tls_set_context(county.tls())
        self.client.on_connect = self._on_connect
        self.client.on_publish = lambda c, u, mid, rc, p: self._note(lambda: self.pubacks.__setitem__(mid, rc))
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._note(lambda: self.subacks.append(rcs))
        self.client.on_message = lambda c, u, m: self._note(lambda: self.messages.append(m))
        self.client.on_disconnect = lambda c, u, f, rc, p: (self.disconnected.set(), self._note(lambda: self.connack or self.connack.append(rc)))
        self.client.connect("127.0.0.1", county.port, clean_start=True)
        self.client.loop_start()
        self.wait(lambda: self.connack)
        if self.ok and topics:
            self.client.subscribe([(t, mqtt.SubscribeOptions(qos=1)) for t in topics])
            self.wait(lambda: self.subacks)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._note(lambda: self.connack.append(reason_code))

    def _note(self, change) -> None:
        with self.cond:
            change()
            self.cond.notify_all()

    def wait(self, predicate, timeout: float = 10.0):
        with self.cond:
            assert self.cond.wait_for(predicate, timeout), "no answer from the broker"
            return predicate()

    @property
    def ok(self) -> bool:
        return bool(self.connack) and not self.connack[0].is_failure

    def publish(self, topic: str, payload: bytes = b"{}", retain: bool = False):
        """Publish at QoS 1 and return the PUBACK's reason code."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        return self.wait(lambda: self.pubacks.get(info.mid))

    def received(self, topic: str) -> list[mqtt.MQTTMessage]:
        with self.cond:
            return [m for m in self.messages if m.topic == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def topic(device: str, rest: str, township: str = "baiyinxile") -> str:
    return f"hall/v1/{COUNTY}/{township}/{device}/{rest}"


def enrol(county: County, device: str, etc: Path, *extra: str) -> subprocess.CompletedProcess:
    serial = etc.parent / "serial-number"
    if not serial.exists():
        serial.write_bytes(SERIAL_A.encode() + b"\x00")  # as /proc/device-tree gives it
    return hall_appliance("enroll", str(county.bundle(device)), "--etc", str(etc), "--serial-file", str(serial), *extra)


# -- the whole path: bundle → enroll → the real daemon → the aggregator ----------------------------


def test_enrolled_device_connects_over_tls_and_its_events_reach_the_aggregator(county, tmp_path, daemon_process):
    aggregator = Client(county, "svc_aggregator", topics=(f"hall/v1/{COUNTY}/+/+/evt/#",))
    try:
        r = enrol(county, "hall-a", tmp_path / "etc")
        assert r.returncode == 0, r.stderr
        assert "enrolled hall-a (白音锡勒苏木政务服务中心)" in r.stdout
        config = tmp_path / "etc" / "appliance.toml"
        checked = hall_appliance("check-config", str(config))
        assert checked.returncode == 0, checked.stderr
        loaded = load_config(config)
        assert loaded.broker.tls is not None and loaded.broker.port == county.port and loaded.broker.username == "hall-a"
        assert loaded.clock.ntp_server == "ntp.xilinhot.example" and loaded.complaints.public_key == tmp_path / "etc" / "complaints.pub"
        daemon = daemon_process(config).start()
        result = daemon.control().call("press", window="w1", level="satisfied")
        aggregator.wait(lambda: any(json.loads(m.payload).get("seq") == result["seq"] and json.loads(m.payload)["type"] == "rating.recorded" for m in aggregator.messages), timeout=20)
        event = next(json.loads(m.payload) for m in aggregator.messages if m.topic == topic("hall-a", "evt/rating/recorded"))
        assert event["device_id"] == "hall-a" and event["county"] == COUNTY
        assert daemon.control().call("status")["uplink"]["state"] == "connected"
    finally:
        aggregator.close()


def test_a_device_cannot_publish_or_read_as_another_device(county):
    a = Client(county, "hall-a", topics=(topic("hall-b", "cmd/#"),))
    b = Client(county, "hall-b", topics=(topic("hall-b", "cmd/#"),))
    aggregator = Client(county, "svc_aggregator")
    try:
        assert a.ok and b.ok
        # Its own events: accepted. Another device's: "Not authorized" on the MQTT v5 PUBACK.
        assert not a.publish(topic("hall-a", "evt/provision/probe")).is_failure
        refused = a.publish(topic("hall-b", "evt/rating/recorded"))
        assert refused.is_failure and str(refused) == "Not authorized"
        assert str(a.publish(topic("hall-b", "status"), retain=True)) == "Not authorized"
        assert str(a.publish(topic("hall-a", "cmd/resync"))) == "Not authorized"  # commands come from the county
        # Its own id under another township: refused too (it would show on that township's dashboards).
        assert str(a.publish(topic("hall-a", "evt/rating/recorded", township="other-township"))) == "Not authorized"
        assert str(a.publish(topic("hall-a", "status", township="other-township"), retain=True)) == "Not authorized"
        # Mosquitto 2.0 grants the subscription to hall-b's commands but never delivers them to hall-a.
        assert not aggregator.publish(topic("hall-b", "cmd/resync"), b'{"command_id": "c-1"}').is_failure
        b.wait(lambda: b.received(topic("hall-b", "cmd/resync")))
        time.sleep(0.3)
        assert a.received(topic("hall-b", "cmd/resync")) == []
    finally:
        for c in (a, b, aggregator):
            c.close()


def test_a_county_notice_from_the_publisher_reaches_every_device_and_a_township_notice_only_its_own(county):
    county_board = f"hall/v1/{COUNTY}/_county/_county/set/board"
    township_board = f"hall/v1/{COUNTY}/baiyinxile/_township/set/board"
    watch = (county_board, f"hall/v1/{COUNTY}/+/_township/set/board")
    a, b, c = (Client(county, d, topics=watch) for d in ("hall-a", "hall-b", "hall-c"))
    publisher = Client(county, "svc_publisher")
    aggregator = Client(county, "svc_aggregator")
    try:
        notice = json.dumps({"version": 1, "data": {"items": []}}, ensure_ascii=False).encode()
        assert not publisher.publish(county_board, notice, retain=True).is_failure
        assert not publisher.publish(township_board, notice, retain=True).is_failure
        for device in (a, b, c):
            device.wait(lambda d=device: d.received(county_board))
        for device in (a, b):
            device.wait(lambda d=device: d.received(township_board))
        time.sleep(0.3)
        assert c.received(township_board) == [], "hall-c is in another township"
        # County-wide content is the publisher's alone.
        assert str(aggregator.publish(county_board, notice, retain=True)) == "Not authorized"
        assert str(a.publish(county_board, notice, retain=True)) == "Not authorized"
    finally:
        for client in (a, b, c, publisher, aggregator):
            client.close()


def test_complaint_status_is_the_supervisors_alone(county):
    supervisor = Client(county, "svc_supervisor")
    aggregator = Client(county, "svc_aggregator")
    try:
        command = topic("hall-b", "cmd/complaint.status")
        assert not supervisor.publish(command, b'{"command_id": "s-1"}').is_failure
        assert str(aggregator.publish(command, b'{"command_id": "s-2"}')) == "Not authorized"
        assert not aggregator.publish(topic("hall-b", "cmd/resync"), b'{"command_id": "r-1"}').is_failure
        assert str(supervisor.publish(topic("hall-b", "cmd/resync"))) == "Not authorized"
        dashboard = Client(county, "svc_dashboard")
        try:
            assert str(dashboard.publish(topic("hall-b", "ack"))) == "Not authorized"
        finally:
            dashboard.close()
    finally:
        supervisor.close()
        aggregator.close()


def test_unauthenticated_and_wrong_password_clients_are_refused(county):
    anonymous = Client(county, None)
    wrong = Client(county, "hall-a", "not-the-password")
    try:
        assert not anonymous.ok and str(anonymous.connack[0]) == "Not authorized"
        assert not wrong.ok
    finally:
        anonymous.close()
        wrong.close()


def test_verify_passes_for_a_good_bundle(county):
    r = hall_provision("verify", str(county.bundle("hall-b")), "--broker", f"127.0.0.1:{county.port}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert [line.split()[:2] for line in r.stdout.splitlines()[:5]] == [["PASS", "bundle:"], ["PASS", "tls:"], ["PASS", "login:"], ["PASS", "publish:"], ["PASS", "acl:"]]
    assert "Not authorized" in r.stdout and "verify: 5 of 5 checks passed" in r.stdout


def test_a_revoked_device_is_refused_after_broker_files_and_a_reload_and_verify_fails(county):
    connected = Client(county, "hall-d")
    assert connected.ok
    try:
        r = hall_provision("revoke", "hall-d", "-w", str(county.ws.root))
        assert r.returncode == 0, r.stderr
        assert "systemctl reload mosquitto" in r.stdout
        assert "hall-d:" not in (county.ws.broker_dir / "passwords").read_text()
        assert "user hall-d" not in (county.ws.broker_dir / "acl").read_text()
        county.reload()
        # The reload drops the connection of an account that no longer authenticates ...
        assert connected.disconnected.wait(5)
    finally:
        connected.close()
    # ... and it cannot come back.
    again = Client(county, "hall-d", county.password("hall-d"))
    try:
        assert not again.ok
    finally:
        again.close()
    r = hall_provision("verify", str(county.bundle("hall-d")), "--broker", f"127.0.0.1:{county.port}")
    assert r.returncode == 1
    assert "FAIL  login: the broker refused hall-d" in r.stdout
    # Other devices are untouched by the reload.
    b = Client(county, "hall-b")
    try:
        assert b.ok
    finally:
        b.close()
    assert hall_provision("bundle", "hall-d", "-w", str(county.ws.root)).returncode == 2


def test_the_config_page_serves_https_with_the_bundles_certificate(county, tmp_path):
    etc = tmp_path / "etc"
    assert enrol(county, "hall-a", etc).returncode == 0
    one_time = read_bundle(county.bundle("hall-a")).text("initial-password").strip()
    config = etc / "appliance.toml"
    proc = subprocess.Popen([sys.executable, "-m", "appliance.cli", "web", "--config", str(config), "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        url, lines = None, []
        deadline = time.monotonic() + 20
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if m := re.search(r"the config page is at (https://127\.0\.0\.1:(\d+)/)", line):
                url, port = m.group(1), int(m.group(2))
        assert url, "".join(lines)
        # A browser that trusts the county CA accepts the page at the hall's fixed address ...
        with urllib.request.urlopen(url + "login", context=county.tls(), timeout=10) as response:
            assert response.status == 200
        # ... and under the device's mDNS name.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, county.tls().wrap_socket(raw, server_hostname="hall-a.local") as tls:
            names = [v for k, v in tls.getpeercert()["subjectAltName"]]
        assert names == ["hall-a.local", "127.0.0.1"]
        # One that does not trust it refuses.
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(url + "login", context=ssl.create_default_context(), timeout=10)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    # The one-time password of the county IT account works, and must be changed at first sign-in.
    store = Store(load_config(config).store.path, reserve_mb=0, recover=False)
    try:
        account = Accounts(store).verify("county-it", one_time)
        assert account is not None and account.is_county_it and account.must_change
    finally:
        store.close()


# -- enrolment refusals and file permissions -------------------------------------------------------


def test_enroll_installs_secrets_readable_only_by_their_service_and_the_config_last(county, tmp_path):
    etc = tmp_path / "etc"
    assert enrol(county, "hall-a", etc).returncode == 0
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in etc.iterdir() if p.is_file() and not p.name.startswith("hall.db")}
    assert modes == {"appliance.toml": 0o644, "bundle-manifest.json": 0o644, "ca.crt": 0o644, "broker-password": 0o600, "web.crt": 0o644, "web.key": 0o600, "complaints.pub": 0o644}
    assert not (etc / "initial-password").exists(), "the one-time password lives only in the store (hashed)"
    assert (etc / "broker-password").read_text().strip() == county.password("hall-a")


def test_enroll_refuses_a_bundle_for_another_device(county, tmp_path):
    etc = tmp_path / "etc"
    assert enrol(county, "hall-a", etc).returncode == 0
    before = (etc / "appliance.toml").read_text()
    r = enrol(county, "hall-b", etc)
    assert r.returncode == 1
    assert "this device is enrolled as hall-a" in r.stderr and "the bundle is for hall-b" in r.stderr and "--force" in r.stderr
    assert (etc / "appliance.toml").read_text() == before
    assert "hall-b" not in (etc / "broker-password").read_text() and (etc / "broker-password").read_text().strip() == county.password("hall-a")
    # The bundle names hall-a's Pi; on another Pi it is refused too.
    other = tmp_path / "other"
    other.mkdir()
    (other / "serial-number").write_bytes(b"10000000ffffffff\x00")
    r = enrol(county, "hall-a", other / "etc")
    assert r.returncode == 1 and "serial 10000000abcdef01" in r.stderr and "this Pi's serial is 10000000ffffffff" in r.stderr
    assert not (other / "etc" / "appliance.toml").exists()
    # Re-enrolling as another id is possible when county IT says so.
    r = enrol(county, "hall-b", etc, "--force")
    assert r.returncode == 0, r.stderr
    assert "replaced the enrolment of hall-a" in r.stdout and load_config(etc / "appliance.toml").device.id == "hall-b"


def test_enroll_refuses_a_damaged_bundle_naming_the_file(county, tmp_path):
    good = county.bundle("hall-b").read_bytes()
    truncated = tmp_path / "hall-bundle-truncated.tar.gz"
    truncated.write_bytes(good[: len(good) * 2 // 3])
    r = hall_appliance("enroll", str(truncated), "--etc", str(tmp_path / "etc"))
    assert r.returncode == 1 and str(truncated) in r.stderr and ("truncated" in r.stderr or "damaged" in r.stderr), r.stderr
    # A file changed after the bundle was made: its hash no longer matches the manifest.
    changed = tmp_path / "hall-bundle-changed.tar.gz"
    with tarfile.open(county.bundle("hall-b"), "r:gz") as src, tarfile.open(changed, "w:gz") as dst:
        for member in src:
            data = src.extractfile(member).read()
            if member.name == "appliance.toml":
                data = data.replace(b'port = 8080', b'port = 8081')
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    r = hall_appliance("enroll", str(changed), "--etc", str(tmp_path / "etc"))
    assert r.returncode == 1
    assert "appliance.toml does not match its sha256 in manifest.json" in r.stderr
    assert not (tmp_path / "etc" / "appliance.toml").exists()
    r = hall_provision("verify", str(changed))
    assert r.returncode == 1 and r.stdout.startswith("FAIL  bundle:")


def test_first_boot_enrols_the_bundle_on_the_boot_partition_and_deletes_it(county, tmp_path):
    boot = tmp_path / "boot"
    boot.mkdir()
    r = hall_appliance("enroll", "--from-boot", "--boot-dir", str(boot), "--etc", str(tmp_path / "etc"))
    assert r.returncode == 0 and "nothing to do" in r.stdout
    assert not (tmp_path / "etc").exists()
    (boot / "hall-bundle-hall-c.tar.gz").write_bytes(county.bundle("hall-c").read_bytes())
    r = hall_appliance("enroll", "--from-boot", "--boot-dir", str(boot), "--etc", str(tmp_path / "etc"))
    assert r.returncode == 0, r.stderr
    assert "enrolled hall-c" in r.stdout and "removed" in r.stdout
    assert list(boot.iterdir()) == []
    assert load_config(tmp_path / "etc" / "appliance.toml").device.id == "hall-c"


# -- the county side, without a broker -------------------------------------------------------------


# -- enrolment: the restart hint, the store's directory, the county's NTP server ---------------------

NTP_SERVER = "ntp.xilinhot.example"  # what the county fixture's `init --ntp-server` put in every bundle


def install_module():
    """systemd/install.py, imported by path (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("hall_install", REPO / "systemd" / "install.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


def rebundle(src: Path, dest: Path, change_toml) -> Path:
    """A copy of the bundle ``src`` whose appliance.toml is ``change_toml(text)``, its manifest hash updated
    (a bundle's manifest guards against damage, not forgery: what county IT could build)."""
    with tarfile.open(src, "r:gz") as tin:
        files = {m.name: tin.extractfile(m).read() for m in tin}
    files["appliance.toml"] = change_toml(files["appliance.toml"].decode("utf-8")).encode("utf-8")
    manifest = json.loads(files["manifest.json"])
    manifest["files"]["appliance.toml"]["sha256"] = hashlib.sha256(files["appliance.toml"]).hexdigest()
    if "size" in manifest["files"]["appliance.toml"]:
        manifest["files"]["appliance.toml"]["size"] = len(files["appliance.toml"])
    files["manifest.json"] = json.dumps(manifest).encode("utf-8")
    with tarfile.open(dest, "w:gz") as tout:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))
    return dest


class RecordingRunner:
    """Stands in for systemctl: records each command and answers with ``code``."""

    def __init__(self, code: int = 0) -> None:
        self.code = code
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> int:
        self.calls.append(list(argv))
        return self.code


def test_enroll_says_to_restart_the_page_unit_by_its_real_name(county, tmp_path):
    r = hall_appliance("enroll", str(county.bundle("hall-b")), "--etc", str(tmp_path / "etc"))
    assert r.returncode == 0, r.stderr
    assert "systemctl restart hall-appliance hall-web\n" in r.stdout
    assert "hall-appliance-web" not in r.stdout
    for unit in ("hall-appliance", "hall-web"):
        assert (REPO / "systemd" / f"{unit}.service").exists()


def test_enroll_writes_the_installers_ntp_dropin_and_restarts_timesyncd_once(county, tmp_path):
    timesyncd = tmp_path / "timesyncd.conf.d"
    runner = RecordingRunner()
    result = enroll(county.bundle("hall-b"), tmp_path / "etc", None, timesyncd_dir=timesyncd, runner=runner)
    dropin = timesyncd / "hall.conf"
    # Byte for byte what systemd/install.py writes, so running it after enrolment changes nothing.
    assert dropin.read_text() == install_module().timesyncd_dropin(NTP_SERVER)
    assert dropin.read_text().splitlines()[-2:] == ["[Time]", f"NTP={NTP_SERVER}"]
    assert stat.S_IMODE(dropin.stat().st_mode) == 0o644
    assert runner.calls == [["systemctl", "restart", "systemd-timesyncd.service"]]
    assert result.ntp_restart == "restarted" and f"  NTP: wrote {dropin}; ran `systemctl restart systemd-timesyncd.service`" in result.lines()
    # Enrolled again (a rotated password): the drop-in already says it, nothing is restarted.
    again = enroll(county.bundle("hall-b"), tmp_path / "etc", None, timesyncd_dir=timesyncd, runner=runner)
    assert again.ntp_restart == "unchanged" and len(runner.calls) == 1


def test_a_failed_timesyncd_restart_is_a_warning_not_a_failed_enrolment(county, tmp_path):
    result = enroll(county.bundle("hall-b"), tmp_path / "etc", None, timesyncd_dir=tmp_path / "t", runner=RecordingRunner(code=5))
    assert (tmp_path / "etc" / "appliance.toml").exists()
    assert any("systemctl restart systemd-timesyncd.service` failed (exit 5); run it by hand" in w for w in result.warnings)


def test_off_the_device_enroll_only_says_to_restart_timesyncd_and_writes_beside_its_etc(county, tmp_path):
    # The tests run as root: the real systemctl is still never used for a directory that is not
    # this machine's /etc/systemd/timesyncd.conf.d.
    assert systemd_runner_for(tmp_path / "systemd" / "timesyncd.conf.d") is None
    r = hall_appliance("enroll", str(county.bundle("hall-c")), "--etc", str(tmp_path / "etc" / "hall-appliance"))
    assert r.returncode == 0, r.stderr
    dropin = tmp_path / "etc" / "systemd" / "timesyncd.conf.d" / "hall.conf"
    assert f"NTP={NTP_SERVER}" in dropin.read_text()
    assert f"NTP: wrote {dropin}; restart systemd-timesyncd to use it: systemctl restart systemd-timesyncd.service" in r.stdout


def test_enroll_and_the_installer_agree_on_the_ntp_dropin():
    install = install_module()
    for server in (NTP_SERVER, "10.1.2.3", "[fd00::123]"):
        assert enroll_module.timesyncd_dropin(server) == install.timesyncd_dropin(server)
    assert enroll_module.NTP_SERVER.pattern == install._NTP_SERVER.pattern
    assert Path(enroll_module.DEFAULT_TIMESYNCD_DIR) / enroll_module.TIMESYNCD_DROPIN == install.TIMESYNCD_DROPIN
    assert enroll_module.timesyncd_dir_beside(enroll_module.DEFAULT_ETC) == install.TIMESYNCD_DROPIN.parent
    # The restart the installer plans is the one enroll runs.
    plan = subprocess.run([sys.executable, str(REPO / "systemd" / "install.py"), "--dry-run", "--json", "--root", "/nonexistent-root", "--no-apt", "--ntp-server", NTP_SERVER], capture_output=True, text=True, timeout=60)
    restart = [s["argv"] for s in json.loads(plan.stdout)["steps"] if s["argv"] and "systemd-timesyncd.service" in s["argv"]]
    assert restart == [enroll_module.RESTART_TIMESYNCD]


def test_a_bundle_whose_ntp_server_could_add_a_line_to_the_dropin_is_refused_before_anything_is_written(county, tmp_path):
    bad = rebundle(county.bundle("hall-b"), tmp_path / "hall-bundle-bad.tar.gz", lambda t: t.replace(f'ntp_server = "{NTP_SERVER}"', 'ntp_server = "ntp.example\\nFallbackNTP=evil.example"'))
    with pytest.raises(EnrollError, match=r"ntp_server .* is not a host name or address, nothing was installed"):
        enroll(bad, tmp_path / "etc", None, timesyncd_dir=tmp_path / "t", runner=RecordingRunner())
    assert not (tmp_path / "etc").exists() and not (tmp_path / "t").exists()


def test_enroll_makes_a_missing_store_directory_setgid_like_the_daemons_state_directory(county, tmp_path):
    state = tmp_path / "var" / "lib" / "hall-appliance"
    bundle = rebundle(county.bundle("hall-b"), tmp_path / "hall-bundle-b.tar.gz", lambda t: t.replace('path = "hall.db"', f'path = "{state / "hall.db"}"'))
    result = enroll(bundle, tmp_path / "etc", None, timesyncd_dir=tmp_path / "t", runner=RecordingRunner())
    assert stat.S_IMODE(state.stat().st_mode) == 0o2770 == enroll_module.STORE_DIR_MODE
    assert (state / "hall.db").exists() and result.made_store_dir == state
    assert f"  made the store's directory {state} (mode 2770)" in result.lines()
    # The unit's value, so the daemon's StateDirectory= finds what it would have made.
    unit = (REPO / "systemd" / "hall-appliance.service").read_text()
    assert re.search(r"^StateDirectoryMode=2770$", unit, re.M)
    # An existing directory (the installer's) is left as it is.
    os.chmod(state, 0o2750)
    assert enroll(bundle, tmp_path / "etc", None, timesyncd_dir=tmp_path / "t", runner=RecordingRunner()).made_store_dir is None
    assert stat.S_IMODE(state.stat().st_mode) == 0o2750


BAD_INVENTORY = """\
device,township,hall,county,address,serial
good-01,baiyinxile,白音锡勒苏木政务服务中心,,,
Bad_Device,baiyinxile,某服务中心,,,
good-02,,某服务中心,,,
good-03,baiyinxile,   ,,,
good-01,baiyinxile,重复的设备,,,
hall-a,baiyinxile,已有的设备,,,
good-04,baiyinxile,某服务中心,abaga,,
good-05,baiyinxile,某服务中心,,10.0.0.300,
good-06,baiyinxile,某服务中心,,,not-a-serial
"""


def test_every_bad_inventory_row_is_reported_with_its_line_and_nothing_is_imported(county, tmp_path, capsys):
    before = county.ws.inventory_path.read_bytes()
    path = tmp_path / "inventory.csv"
    path.write_text(BAD_INVENTORY)
    assert provision(["import", str(path), "-w", str(county.ws.root)]) == 2
    err = capsys.readouterr().err
    assert "8 problems, nothing imported" in err
    for expected in (
        "line 3: device = 'Bad_Device': is not a valid id. Fix: use 1 to 63 lower-case letters",
        "line 4: township = '': is not a valid id",
        "line 5: hall = '': must not be empty",
        "line 6: device = 'good-01': repeats line 2",
        "line 7: device = 'hall-a': is already in the inventory (白音锡勒苏木政务服务中心",
        "line 8: county = 'abaga': is not this workspace's county (xilinhot)",
        "line 9: address = '10.0.0.300': is not an IP address",
        "line 10: serial = 'not-a-serial': is not a Raspberry Pi serial number",
    ):
        assert expected in err, err
    assert county.ws.inventory_path.read_bytes() == before


def test_a_csv_with_an_unknown_column_is_refused_with_a_suggestion(county, tmp_path, capsys):
    path = tmp_path / "inventory.csv"
    path.write_text("device,townsip,hall\nnew-01,baiyinxile,某服务中心\n")
    assert provision(["import", str(path), "-w", str(county.ws.root)]) == 2
    err = capsys.readouterr().err
    assert "line 1: column 2 = 'townsip': is not a column of the inventory. Fix: did you mean 'township'?" in err
    assert "line 1: township = '(missing)': is a required column" in err


def test_init_refuses_to_overwrite_a_workspace_and_keeps_the_ca_key_private(county, capsys):
    assert stat.S_IMODE(county.ws.ca_key_path.stat().st_mode) == 0o600
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (county.ws.root / "services").iterdir())
    assert stat.S_IMODE(county.bundle("hall-a").stat().st_mode) == 0o600
    assert stat.S_IMODE(county.ws.sheet_path("hall-a").stat().st_mode) == 0o600
    key = county.ws.ca_key_path.read_bytes()
    assert provision(["init", str(county.ws.root), "--county", COUNTY, "--broker-host", "mqtt.example"]) == 2
    assert "already holds a county workspace; init never overwrites one" in capsys.readouterr().err
    assert county.ws.ca_key_path.read_bytes() == key


def test_rebundling_rotates_the_broker_password(county, tmp_path):
    old = county.password("hall-c")
    out = tmp_path / "hall-bundle-hall-c.tar.gz"
    assert provision(["bundle", "hall-c", "--out", str(out), "-w", str(county.ws.root)]) == 0
    new = read_bundle(out).text("broker-password").strip()
    line = next(l for l in (county.ws.broker_dir / "passwords").read_text().splitlines() if l.startswith("hall-c:"))
    hashed = line.split(":", 1)[1]
    assert new != old and check_password(new, hashed) and not check_password(old, hashed)
    assert new not in (county.ws.broker_dir / "passwords").read_text() and new not in county.ws.inventory_path.read_text()
    assert "password     " in county.ws.sheet_path("hall-c").read_text()
    # The new bundle works once the broker has reloaded; the old one no longer does.
    county.ws.bundle_path("hall-c").write_bytes(out.read_bytes())
    county.reload()
    with_new, with_old = Client(county, "hall-c", new), Client(county, "hall-c", old)
    try:
        assert with_new.ok and not with_old.ok
    finally:
        with_new.close()
        with_old.close()


def test_our_password_hash_is_mosquitto_passwds_format(tmp_path):
    hashed = password_hash("a-device-password", salt=b"0123456789ab")
    assert re.fullmatch(r"\$7\$101\$[A-Za-z0-9+/=]{16}\$[A-Za-z0-9+/=]{88}", hashed)
    assert check_password("a-device-password", hashed) and not check_password("another", hashed)
    tool = "/usr/bin/mosquitto_passwd"
    if os.access(tool, os.X_OK):
        subprocess.run([tool, "-c", "-b", str(tmp_path / "pw"), "someone", "their-password"], check=True, capture_output=True)
        theirs = (tmp_path / "pw").read_text().strip().split(":", 1)[1]
        assert check_password("their-password", theirs)


def test_enroll_never_follows_a_link_planted_beside_the_store(tmp_path, monkeypatch):
    """The store's directory is the services' to write: root must not chown what a link there points at."""
    from appliance import enroll

    key = tmp_path / "etc" / "release.pub"
    key.parent.mkdir()
    key.write_text("the county's release key\n")
    key.chmod(0o644)
    store = tmp_path / "state" / "hall.db"
    store.parent.mkdir()
    store.write_bytes(b"")
    (tmp_path / "state" / "hall.db-wal").symlink_to(key)
    monkeypatch.setattr(enroll, "_owner", lambda user: (4242, 4242))
    enroll._give_store_to_daemon(store)
    assert (key.stat().st_uid, oct(key.stat().st_mode & 0o777)) == (os.getuid(), "0o644")
    assert (store.stat().st_uid, oct(store.stat().st_mode & 0o777)) == (4242, "0o660")

"""``hall-provision verify``: does a bundle work against the running broker, and only as itself?

Each check prints PASS or FAIL and why; the exit status is 0 only if every check passed.
The probe is published on ``…/<device>/evt/provision/probe`` (not retained): consumers
ignore that type (docs/mqtt.md). The refused probe goes to the level ``_verify``, which no
device id can be, so a broker that wrongly accepted it would still reach no hall.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import tomllib
import uuid
from dataclasses import dataclass
from typing import Callable

from appliance.enroll import Bundle, EnrollError, read_bundle

from .complaints import parse_host_port

PROBE_TYPE = "provision/probe"
OTHER_DEVICE = "_verify"
NOT_AUTHORIZED = 135
TIMEOUT_S = 10.0
# Every check, in the order they run; verify passes only when all of them ran and passed.
CHECKS = ("bundle", "tls", "login", "publish", "acl")


@dataclass(frozen=True)
class Check:
    """One check's outcome."""

    name: str
    passed: bool
    detail: str

    def __str__(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name}: {self.detail}"


def verify(bundle_path: str, broker: str | None = None, *, report: Callable[[Check], None] = print, timeout: float = TIMEOUT_S) -> list[Check]:
    """Run the checks in order, stopping at the first whose failure makes the rest meaningless."""
    checks: list[Check] = []

    def done(check: Check) -> bool:
        checks.append(check)
        report(check)
        return check.passed

    try:
        bundle = read_bundle(bundle_path)
    except EnrollError as exc:
        done(Check("bundle", False, str(exc)))
        return checks
    try:
        config = tomllib.loads(bundle.text("appliance.toml"))
        device = {k: str(config["device"][k]) for k in ("id", "hall", "township", "county")}
        host, port = str(config["broker"]["host"]), int(config["broker"].get("port", 8883))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        done(Check("bundle", False, f"{bundle_path}: its appliance.toml lacks [device] or [broker] ({type(exc).__name__}: {exc}); build the bundle again with hall-provision bundle"))
        return checks
    if not done(Check("bundle", True, f"{bundle.device_id} ({device['hall']}), {len(bundle.files)} files, every sha256 matches its manifest")):
        return checks
    if broker:
        host, port = parse_host_port(broker, tls=True)
    context = ssl.create_default_context(cadata=bundle.text("ca.crt"))
    if not done(_tls(host, port, context, timeout)):
        return checks
    _mqtt_checks(bundle, device, host, port, context, timeout, done)
    return checks


def _tls(host: str, port: int, context: ssl.SSLContext, timeout: float) -> Check:
    name = "tls"
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                version = tls.version()
    except ssl.SSLCertVerificationError as exc:
        return Check(name, False, f"{host}:{port} presents a certificate the bundle's CA does not accept for {host} ({exc.verify_message}); install the workspace's broker/server.crt on the broker, or give --broker with the name in it")
    except (OSError, ssl.SSLError) as exc:
        return Check(name, False, f"cannot reach {host}:{port} over TLS ({exc}); check the broker is running, the port and the network")
    return Check(name, True, f"{host}:{port} presents a certificate for {host} signed by the county CA ({version})")


def _mqtt_checks(bundle: Bundle, device: dict, host: str, port: int, context: ssl.SSLContext, timeout: float, done: Callable[[Check], bool]) -> None:
    import paho.mqtt.client as mqtt

    base = f"hall/v1/{device['county']}/{device['township']}"
    own = f"{base}/{bundle.device_id}/evt/{PROBE_TYPE}"
    other = f"{base}/{OTHER_DEVICE}/evt/{PROBE_TYPE}"
    # Not the device's own client id: that would take over the real device's session.
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{bundle.device_id}-verify-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
    client.username_pw_set(bundle.device_id, bundle.text("broker-password").strip())
    client.tls_set_context(context)
    state = threading.Condition()
    connack: list = []
    pubacks: dict[int, object] = {}

    def on_connect(c, userdata, flags, reason_code, properties) -> None:
        with state:
            connack.append(reason_code)
            state.notify_all()

    def on_disconnect(c, userdata, flags, reason_code, properties) -> None:
        with state:
            if not connack:
                connack.append(reason_code)
            state.notify_all()

    def on_publish(c, userdata, mid, reason_code, properties) -> None:
        with state:
            pubacks[mid] = reason_code
            state.notify_all()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_publish = on_publish
    try:
        client.connect(host, port, keepalive=30, clean_start=True)
    except (OSError, ssl.SSLError) as exc:
        done(Check("login", False, f"cannot connect to {host}:{port} ({exc})"))
        return
    client.loop_start()
    try:
        with state:
            state.wait_for(lambda: connack, timeout)
        if not connack:
            done(Check("login", False, f"no answer from {host}:{port} within {timeout:g} s"))
            return
        rc = connack[0]
        if rc.is_failure:
            done(Check("login", False, f"the broker refused {bundle.device_id}: {rc}; the device may be revoked, or the broker files not installed and reloaded since this bundle was built (hall-provision broker-files)"))
            return
        done(Check("login", True, f"the broker accepted {bundle.device_id} with the bundle's password (MQTT v5)"))

        def publish(topic: str) -> object | None:
            payload = json.dumps({"probe": "hall-provision verify", "device_id": bundle.device_id}).encode()
            info = client.publish(topic, payload, qos=1)
            with state:
                state.wait_for(lambda: info.mid in pubacks, timeout)
                return pubacks.get(info.mid)

        rc = publish(own)
        if rc is None:
            done(Check("publish", False, f"no PUBACK for {own} within {timeout:g} s"))
        else:
            done(Check("publish", not rc.is_failure, f"{own} → {rc}" + ("" if not rc.is_failure else "; the ACL does not let the device publish its own events (hall-provision broker-files, then reload)")))
        rc = publish(other)
        if rc is None:
            done(Check("acl", False, f"no PUBACK for {other} within {timeout:g} s"))
        else:
            refused = rc.value == NOT_AUTHORIZED
            done(Check("acl", refused, f"{other} → {rc}" + ("" if refused else "; the broker lets this device publish as another: install the generated acl and reload")))
    finally:
        client.disconnect()
        client.loop_stop()

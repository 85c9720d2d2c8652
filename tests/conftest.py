"""Shared fixtures: a private Mosquitto per test, a recording subscriber, config files, daemons."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
import pytest

from appliance.broker import PrivateBroker

REPO = Path(__file__).resolve().parent.parent

BASE_CONFIG = """\
[device]
id = "{device_id}"
hall = "测试政务服务中心"
township = "test-township"
county = "test-county"

[broker]
host = "{host}"
port = {port}
aggregator_ack = {aggregator_ack}
will_delay = {will_delay}
reconnect_min = 0.1
reconnect_max = 0.5
{broker_extra}

[store]
path = "{store}"
free_space_floor_mb = 0
reserve_mb = 0
{store_extra}

[gpio]
pin_factory = "mock"

[ratings]
# Simulated presses hold the contact for the debounce time; keep tests quick.
debounce_ms = 2

[[windows]]
id = "w1"
name = "综合受理窗口"
buttons = {{ very_satisfied = 5, satisfied = 6, basically_satisfied = 13, dissatisfied = 19, very_dissatisfied = 26 }}

[[windows]]
id = "w2"
name = "社保医保窗口"
buttons = {{ satisfied = 17, basically_satisfied = 27, dissatisfied = 22 }}

[control]
socket = "{socket}"

[clock]
source = "{clock}"
check_interval = 0.2
"""


class LibraryUpTo2026:
    """chinesecalendar as its 1.11 release knows it (2004 to 2026), whatever release is installed.

    Many tests need a year the library does not know (2027: the weekday rule, the alarm, the
    county's calendar supplying it). The appliance takes any newer release (setup.py), which
    will know 2027 one day; the tests must not change meaning when it does.
    """

    def __init__(self, real) -> None:
        self.real = real

    def _known(self, day) -> None:
        if day.year > 2026:
            raise NotImplementedError(f"no data for {day.year} in the library as the tests take it")

    def is_workday(self, day):
        self._known(day)
        return self.real.is_workday(day)

    def get_holiday_detail(self, day):
        self._known(day)
        return self.real.get_holiday_detail(day)


@pytest.fixture(autouse=True)
def library_knows_up_to_2026(monkeypatch):
    """Every test in this process sees the library as LibraryUpTo2026 (subprocesses see the real one)."""
    import services.calendar as calendar

    if calendar._library is not None:
        monkeypatch.setattr(calendar, "_library", LibraryUpTo2026(calendar._library))


def write_config(directory: Path, *, broker: PrivateBroker | None = None, device_id: str = "hall-01", aggregator_ack: bool = False, will_delay: int = 0, clock: str = "assume_synced", broker_extra: str = "", store_extra: str = "", name: str = "appliance.toml") -> Path:
    """A complete config for a test appliance in ``directory``; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(
        BASE_CONFIG.format(
            device_id=device_id,
            host=broker.host if broker else "",
            port=broker.port if broker else 1883,
            aggregator_ack="true" if aggregator_ack else "false",
            will_delay=will_delay,
            broker_extra=broker_extra,
            store=directory / "hall.db",
            store_extra=store_extra,
            socket=directory / "control.sock",
            clock=clock,
        )
    )
    return path


@pytest.fixture
def broker(tmp_path):
    """A Mosquitto of our own on a free loopback port."""
    b = PrivateBroker(tmp_path / "broker")
    b.start()
    yield b
    b.close()


class Subscriber:
    """A real MQTT v5 client that records every message it receives.

    Its session is persistent and it reconnects by itself, so messages published while the
    broker restarts reach it, as they would reach the county aggregator.
    """

    def __init__(self, broker: PrivateBroker, topic: str = "hall/v1/#", client_id: str = "test-sub") -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.lock = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect(broker.host, broker.port, clean_start=False, properties=props)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise TimeoutError("subscriber could not subscribe")

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.messages.append(message)
            self.lock.notify_all()

    def wait_for(self, predicate: Callable[[list], bool], timeout: float = 15.0) -> list:
        """Wait until ``predicate(messages)`` holds; return the messages."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while not predicate(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"condition not met; got {len(self.messages)} messages: {[m.topic for m in self.messages[-10:]]}")
                self.lock.wait(remaining)
            return list(self.messages)

    def events(self, event_type: str | None = None) -> list[dict]:
        """Decoded event payloads (from …/evt/… topics), optionally of one type."""
        with self.lock:
            docs = [json.loads(m.payload) for m in self.messages if "/evt/" in m.topic]
        return [d for d in docs if event_type is None or d["type"] == event_type]

    def wait_events(self, count: int, event_type: str = "rating.recorded", timeout: float = 15.0) -> list[dict]:
        self.wait_for(lambda msgs: len([1 for m in msgs if "/evt/" in m.topic and json.loads(m.payload)["type"] == event_type]) >= count, timeout)
        return self.events(event_type)

    def wait_seqs(self, seqs: range, event_type: str = "rating.recorded", timeout: float = 15.0) -> list[dict]:
        """Wait until an event of every seq in ``seqs`` has arrived; return one per seq, in order.

        Delivery is at least once: across a broker restart the broker may hand a persisted
        message to this subscriber again, or the device may send one again whose PUBACK it
        never saw. A copy must be the same event (same ``event_id``), never a new one.
        """
        wanted = set(seqs)
        self.wait_for(lambda msgs: wanted <= {json.loads(m.payload)["seq"] for m in msgs if "/evt/" in m.topic and json.loads(m.payload)["type"] == event_type}, timeout)
        by_seq: dict[int, dict] = {}
        for e in self.events(event_type):
            first = by_seq.setdefault(e["seq"], e)
            assert first["event_id"] == e["event_id"], f"seq {e['seq']} arrived as two different events"
        return [by_seq[s] for s in sorted(by_seq)]

    def close(self) -> None:
        self.client.disconnect()  # first, so the loop thread wakes and ends at once
        self.client.loop_stop()


@pytest.fixture
def subscriber(broker):
    s = Subscriber(broker)
    yield s
    s.close()


class DaemonProcess:
    """``hall-appliance run`` in a child process, as systemd would run it."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, wait_ready: bool = True, timeout: float = 15.0) -> "DaemonProcess":
        socket_path = self.config.parent / "control.sock"
        if socket_path.exists():
            socket_path.unlink()
        log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "appliance.cli", "run", "--config", str(self.config)], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        log.close()
        if wait_ready:
            from appliance.control import ControlClient
            from appliance.errors import ControlError

            deadline = time.monotonic() + timeout
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
                try:
                    ControlClient(socket_path, timeout=2).call("status")
                    break
                except ControlError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"daemon not ready:\n{self.log_path.read_text()}")
                    time.sleep(0.05)
        return self

    def control(self):
        from appliance.control import ControlClient

        return ControlClient(self.config.parent / "control.sock")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout)
        return self.proc.returncode if self.proc else 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture
def daemon_process(tmp_path):
    """Factory for daemon child processes; every one is killed at the end of the test."""
    started: list[DaemonProcess] = []

    def make(config: Path) -> DaemonProcess:
        d = DaemonProcess(config, config.parent / "daemon.log")
        started.append(d)
        return d

    yield make
    for d in started:
        d.kill()

"""The appliance's performance table: each figure beside a bare baseline measured in the same run.

``make bench`` runs this as ``.venv/bin/python bench/bench.py``; ``--quick`` is a smoke run with
fewer samples and repetitions. Every figure is the median of the repetitions, with min and max,
and sits beside its baseline (the same work done with bare SQLite / paho / an interpreter that
only imports the daemon's third-party packages), the ratio, the target and PASS/FAIL. The
results also go to ``bench/results/latest.json``.

Everything runs on this machine against private Mosquitto brokers on free loopback ports
(``appliance.broker.PrivateBroker``); every process and directory the run makes is removed at
the end, whatever happens.

The figures (from the project's issue):

1. press → subscriber latency, p50 and p99: ``daemon.buttons.press`` on a mock pin of an
   in-process daemon (gpiozero callback → debounce → ``Daemon.on_press`` → ratings → store and
   outbox → uplink → Mosquitto) until a separate paho subscriber thread has the event;
   baseline: a bare ``synchronous=FULL`` WAL insert followed by a bare paho QoS 1 publish, at
   the same rate. Target p99 ≤ 2× baseline.
2. draining a backlog after an outage, events/s: a daemon started on a copy of a store holding
   the backlog, until a subscriber (its own process) has every event; baseline: bare paho QoS 1
   with the same in-flight window and payload size. Target ≥ 0.6× baseline.
3. durable recording, events/s: ``Recorder.record`` of the event a press records, in a loop;
   baseline: bare ``synchronous=FULL`` WAL inserts of the same payload size. Target ≥ 1,000/s.
4. resident memory of a ``hall-appliance simulate`` process (the daemon, and the config page
   it serves from a thread) after presses through its control socket; baseline: an
   interpreter importing exactly the third-party modules that process has loaded.
   Target ≤ 1.3× baseline and ≤ 60 MiB.
5. start to READY=1 of ``hall-appliance run`` on a NOTIFY_SOCKET we bind; baseline: the same
   interpreter importing the same third-party modules, then sending READY=1. Target ≤ 1 s.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import logging
import math
import os
import platform
import queue
import re
import select
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/bench.py` puts bench/, not the checkout, on the path
    sys.path.insert(0, str(REPO))

import paho.mqtt  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402

from appliance.broker import PrivateBroker, free_port, mosquitto_binary  # noqa: E402
from appliance.clock import SystemClock, boot_id  # noqa: E402
from appliance.config import DeviceConfig, load_config  # noqa: E402
from appliance.control import ControlClient  # noqa: E402
from appliance.daemon import Daemon  # noqa: E402
from appliance.events import Recorder, Topics  # noqa: E402
from appliance.store import PERSON, Store  # noqa: E402
from services.levels import BY_CODE  # noqa: E402
from services.sink import EventSpec  # noqa: E402

RESULTS = REPO / "bench" / "results" / "latest.json"
PYTHON = sys.executable
# Our own top-level packages: whatever else a running daemon has loaded is third-party or stdlib.
OWN_PACKAGES = {"appliance", "services", "drivers", "provisioning", "bench", "tests"}
# Both the envelope (json.dumps with compact separators) and the bare payloads carry "seq":N;
# a regex finds it without paying for a JSON parse in the subscriber.
SEQ_RE = re.compile(rb'"seq":(\d+)')
# A large hall: four windows, each with five buttons and an indicator LED (BCM 2–25). Several
# buttons, because a simulated press holds its button down and then up for the debounce time
# (drivers/buttons.py): presses at a fixed rate have to go round buttons, never two at once on
# one button (its debouncer would rightly merge them).
WINDOW_NAMES = ("综合受理窗口", "社保医保窗口", "不动产登记窗口", "税务窗口")
WINDOWS = tuple(
    (f"w{k + 1}", name, tuple((level, 2 + 6 * k + j) for j, level in enumerate(BY_CODE)), 7 + 6 * k) for k, name in enumerate(WINDOW_NAMES)
)


@dataclass(frozen=True)
class Params:
    """Fixed parameters of one run; printed in the header and written to the JSON."""

    reps: int
    latency_samples: int
    latency_warmup: int
    rate_per_s: float
    backlog_events: int
    record_events: int
    memory_events: int
    memory_clients: int  # control-socket clients at once, each at its own window
    inflight: int
    timeout_s: float


FULL = Params(reps=5, latency_samples=300, latency_warmup=30, rate_per_s=50.0, backlog_events=50_000, record_events=5_000, memory_events=10_000, memory_clients=1, inflight=20, timeout_s=180.0)
QUICK = Params(reps=3, latency_samples=50, latency_warmup=10, rate_per_s=50.0, backlog_events=2_000, record_events=1_000, memory_events=300, memory_clients=1, inflight=20, timeout_s=60.0)

CONFIG = """\
[device]
id = "{device_id}"
hall = "基准测试政务服务中心"
township = "bench-township"
county = "bench-county"

[broker]
host = "{host}"
port = {port}
inflight = {inflight}
aggregator_ack = false
will_delay = 0
reconnect_min = 0.1
reconnect_max = 1.0

[store]
path = "{store}"
free_space_floor_mb = 0
reserve_mb = 0

[gpio]
pin_factory = "mock"

{windows}
[control]
socket = "{socket}"

[web]
# `simulate` serves the config page from its own process: loopback only, on a free port.
host = "127.0.0.1"
port = {web_port}

[clock]
source = "assume_synced"
"""
# Figure 4 presses through the control socket, and each simulated press holds its button down
# and then up for the debounce time: at the default 50 ms, 10,000 presses take over 1,000 s.
# A 1 ms debounce (the path is the same; only the simulated finger is quicker) brings a
# repetition to about a minute (the press handler slows as the ratings table grows). One
# client, one press at a time, as people press: each request is served by a thread of its
# own, and concurrent ones add malloc arenas to the figure (`--memory-clients 2` shows how
# much; it also takes about half the time).
MEMORY_RATINGS = "\n[ratings]\ndebounce_ms = 1\n"
DEVICE = DeviceConfig("bench-hall-01", "基准测试政务服务中心", "bench-township", "bench-county")


# -- small tools ------------------------------------------------------------------------------


class BenchError(RuntimeError):
    """A measurement could not be taken (lost events, a child that never answered)."""


def write_config(directory: Path, *, broker: PrivateBroker | None, inflight: int, device_id: str = DEVICE.id, store: Path | None = None, extra: str = "") -> Path:
    """A complete appliance config in ``directory``; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "appliance.toml"
    path.write_text(
        CONFIG.format(
            device_id=device_id,
            host=broker.host if broker else "",
            port=broker.port if broker else 1883,
            inflight=inflight,
            store=store or directory / "hall.db",
            socket=directory / "control.sock",
            web_port=free_port(),
            windows=windows_toml(),
        )
        + extra,
        encoding="utf-8",
    )
    return path


def windows_toml() -> str:
    out = []
    for window_id, name, buttons, indicator in WINDOWS:
        pins = ", ".join(f"{level} = {pin}" for level, pin in buttons)
        out.append(f'[[windows]]\nid = "{window_id}"\nname = "{name}"\nbuttons = {{ {pins} }}\nindicator_pin = {indicator}\n')
    return "\n".join(out)


def all_buttons() -> list[tuple[str, str]]:
    return [(window_id, level) for window_id, _, buttons, _ in WINDOWS for level, _ in buttons]


def fair_buttons() -> list[tuple[str, str]]:
    """Buttons of the three satisfied levels, windows taking turns.

    A 差评 also opens a follow-up, work the bare path has no match for. Taking turns keeps
    two presses at one window as far apart as the rate allows.
    """
    fair = [(w, level) for w, level in all_buttons() if not BY_CODE[level].is_poor]
    levels = [code for code in BY_CODE if not BY_CODE[code].is_poor]
    return sorted(fair, key=lambda b: (levels.index(b[1]), b[0]))


# Where children keep their compiled modules (set by run()). A device runs from an installed
# tree with its .pyc files, so children must not compile the checkout on every start, even
# where PYTHONDONTWRITEBYTECODE is set; a prefix keeps the .pyc files out of the checkout.
PYCACHE: Path | None = None


def child_env() -> dict:
    """The environment for children: never the notify socket or watchdog of whoever runs us."""
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "PYTHONDONTWRITEBYTECODE")}
    env["PYTHONUNBUFFERED"] = "1"
    if PYCACHE:
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    """The next line a child prints, or BenchError after ``timeout`` or at its exit."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BenchError(f"child {proc.args!r} said nothing within {timeout:.0f} s")
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if ready:
            line = proc.stdout.readline()
            if not line:
                raise BenchError(f"child {proc.args!r} exited with {proc.wait()} before answering")
            return line.decode().strip()


def stop_process(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM one child we started, then SIGKILL it if it lingers."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr, proc.stdin):
        if stream:
            stream.close()


def vm_kib(pid: int, key: str) -> int:
    """A VmRSS/VmHWM-style line of /proc/PID/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise BenchError(f"/proc/{pid}/status has no {key}")


def pace(count: int, rate: float, action: Callable[[int], None]) -> None:
    """Call ``action(i)`` at ``rate`` per second on a fixed schedule (late calls do not bunch up)."""
    period_ns = 1e9 / rate
    start = time.monotonic_ns() + 20_000_000
    for i in range(count):
        target = start + int(i * period_ns)
        delay = target - time.monotonic_ns()
        if delay > 0:
            time.sleep(delay / 1e9)
        action(i)


def bare_payload(seq: int, size: int) -> bytes:
    """A JSON payload carrying ``seq``, padded to exactly ``size`` bytes like a real event."""
    head = f'{{"v":1,"seq":{seq},"pad":"'
    return (head + "x" * (size - len(head) - 2) + '"}').encode()


def bare_topic(length: int, kind: str) -> str:
    """A topic of the same length as the appliance's, so both put the same bytes on the wire."""
    prefix = f"bench/bare/{kind}/"
    return prefix + "x" * max(1, length - len(prefix))


def bare_db(path: Path) -> sqlite3.Connection:
    """A bare WAL database with synchronous=FULL and one table of payloads."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL, payload BLOB NOT NULL)")
    return conn


def connect_client(broker: PrivateBroker, client_id: str, *, inflight: int | None = None, subscribe: str | None = None, on_message=None) -> mqtt.Client:
    """A paho MQTT v5 client on its own loop_start() thread, connected (and subscribed at QoS 1)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if inflight:
        client.max_inflight_messages_set(inflight)
    ready = threading.Event()
    if subscribe:
        client.on_connect = lambda c, u, f, rc, p: c.subscribe(subscribe, qos=1)
        client.on_subscribe = lambda *a: ready.set()
    else:
        client.on_connect = lambda *a: ready.set()
    if on_message:
        client.on_message = on_message
    client.connect(broker.host, broker.port)
    client.loop_start()
    if not ready.wait(10):
        client.loop_stop()
        raise BenchError(f"{client_id} could not connect to {broker.host}:{broker.port}")
    return client


def close_client(client: mqtt.Client | None) -> None:
    if client is not None:
        client.disconnect()
        client.loop_stop()


class Arrivals:
    """A subscriber thread's receipt times (time.monotonic_ns) by seq, first arrival only."""

    def __init__(self) -> None:
        self.at: dict[int, int] = {}
        self.duplicates = 0
        self.cond = threading.Condition()

    def on_message(self, client, userdata, message) -> None:
        now = time.monotonic_ns()
        m = SEQ_RE.search(message.payload)
        if not m:
            return
        seq = int(m.group(1))
        with self.cond:
            if seq in self.at:
                self.duplicates += 1
            else:
                self.at[seq] = now
                self.cond.notify_all()

    def wait_for(self, seqs: list[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                missing = [s for s in seqs if s not in self.at]
                if not missing:
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BenchError(f"{len(missing)} of {len(seqs)} events never reached the subscriber (first missing seq {missing[0]})")
                self.cond.wait(min(remaining, 0.5))


class LogTally(logging.Handler):
    """Counts what in-process daemons log at WARNING and above, instead of scattering it over the table."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: dict[tuple[str, str, str], dict] = {}

    def emit(self, record: logging.LogRecord) -> None:
        key = (record.name, record.levelname, str(record.msg))
        entry = self.seen.setdefault(key, {"logger": record.name, "level": record.levelname, "count": 0, "first": ""})
        entry["count"] += 1
        if not entry["first"]:
            first = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                first += f": {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
            entry["first"] = first

    def summary(self) -> list[dict]:
        return sorted(self.seen.values(), key=lambda e: -e["count"])


class Workspace:
    """The run's temporary directory, brokers and child processes, all removed by ``close()``."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="hall-bench-"))
        self.brokers: list[PrivateBroker] = []
        self.children: list[subprocess.Popen] = []
        self._n = 0

    def dir(self, name: str) -> Path:
        self._n += 1
        d = self.root / f"{self._n:03d}-{name}"
        d.mkdir(parents=True)
        return d

    def broker(self) -> PrivateBroker:
        b = PrivateBroker(self.dir("broker"))
        self.brokers.append(b)
        return b.start()

    def release(self, broker: PrivateBroker) -> None:
        broker.close()
        self.brokers.remove(broker)

    def spawn(self, args: list[str], **kw) -> subprocess.Popen:
        kw.setdefault("env", child_env())
        proc = subprocess.Popen(args, cwd=REPO, **kw)
        self.children.append(proc)
        return proc

    def end(self, proc: subprocess.Popen | None) -> None:
        stop_process(proc)
        if proc in self.children:
            self.children.remove(proc)

    def close(self) -> None:
        for proc in list(self.children):
            self.end(proc)
        for b in list(self.brokers):
            self.release(b)
        shutil.rmtree(self.root, ignore_errors=True)


# -- results ----------------------------------------------------------------------------------


@dataclass
class Series:
    """One quantity measured once per repetition."""

    unit: str
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def summary(self) -> dict:
        return {"unit": self.unit, "median": self.median, "min": min(self.values), "max": max(self.values), "values": self.values}


@dataclass
class Figure:
    """One row of the table: the appliance beside its baseline, with its target."""

    key: str
    title: str
    appliance: Series
    baseline: Series
    target: str
    check: Callable[[float, float], bool] | None  # (appliance median, ratio) → passed; None: informative
    notes: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.appliance.median / self.baseline.median if self.baseline.median else float("inf")

    @property
    def passed(self) -> bool | None:
        return None if self.check is None else bool(self.check(self.appliance.median, self.ratio))

    def to_json(self) -> dict:
        return {
            "title": self.title,
            "appliance": self.appliance.summary(),
            "baseline": self.baseline.summary(),
            "ratio": self.ratio,
            "target": self.target,
            "result": {True: "PASS", False: "FAIL", None: "info"}[self.passed],
            "notes": self.notes,
        }


def fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def series_cell(s: Series) -> str:
    return f"{fmt(s.median)} [{fmt(min(s.values))}–{fmt(max(s.values))}]"


def table(figures: list[Figure]) -> str:
    rows = [("figure", "unit", "appliance median [min–max]", "baseline median [min–max]", "ratio", "target", "result")]
    for f in figures:
        result = {True: "PASS", False: "FAIL", None: "info"}[f.passed]
        rows.append((f.title, f.appliance.unit, series_cell(f.appliance), series_cell(f.baseline), f"{f.ratio:.2f}×", f.target, result))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    line = "-+-".join("-" * w for w in widths)
    out = [" | ".join(c.ljust(w) for c, w in zip(rows[0], widths)), line]
    out += [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows[1:]]
    return "\n".join(out)


# -- the event everything is measured with ------------------------------------------------------


@dataclass(frozen=True)
class PressSample:
    """What one press records, taken from a real daemon so the bench follows the code."""

    event_type: str  # of the press's event in the person stream ('button.pressed')
    data: dict  # its ``data``, recorded again as is by figures 2 and 3
    payload_bytes: int
    topic_chars: int
    person_events: int  # events one satisfied press records in the person stream


def sample_press(ws: Workspace) -> PressSample:
    """Press one button of an in-process daemon with no broker and read what it recorded."""
    directory = ws.dir("sample")
    daemon = Daemon(load_config(write_config(directory, broker=None, inflight=20)), simulate=True)
    try:
        daemon.start()
        window_id, level = fair_buttons()[0]
        daemon.buttons.press(window_id, level)
        rows = [r for r in daemon.store.unacked_after(0, 100) if r.stream == PERSON]
    finally:
        daemon.stop()
    if not rows:
        raise BenchError("a press recorded nothing in the person stream")
    first = rows[0]
    return PressSample(first.type, json.loads(first.payload)["data"], len(first.payload), len(first.topic), len(rows))


class PressClock:
    """Ties each recorded press event's seq to the moment its press began.

    A store listener runs in the thread that committed the event; under gpiozero's mock pins
    that is the thread that drove the pin, so a thread-local says which press it belongs to,
    whichever button, and however many events the press records.
    """

    def __init__(self, event_type: str) -> None:
        self.event_type = event_type
        self.local = threading.local()
        self.began: dict[int, tuple[int, int]] = {}  # seq → (press index, monotonic ns)
        self.lock = threading.Lock()

    def listener(self, recorded) -> None:
        index = getattr(self.local, "index", None)
        if index is not None and recorded.stream == PERSON and recorded.envelope.get("type") == self.event_type:
            with self.lock:
                self.began[recorded.seq] = (index, self.local.began)

    def press(self, buttons, index: int, window_id: str, level: str) -> None:
        self.local.index, self.local.began = index, time.monotonic_ns()
        try:
            buttons.press(window_id, level)  # mock pin low/high → gpiozero → debounce → on_press
        finally:
            self.local.index = None


class ButtonHands:
    """One thread per button, each pressing its own button when told (a press takes a while)."""

    def __init__(self, press: Callable[[int, str, str], None], buttons: list[tuple[str, str]]) -> None:
        self.errors: list[str] = []
        self.queues = [queue.SimpleQueue() for _ in buttons]
        self.threads = [threading.Thread(target=self._work, args=(q, b), name=f"hand-{b[0]}-{b[1]}", daemon=True) for q, b in zip(self.queues, buttons)]
        self.press = press
        for t in self.threads:
            t.start()

    def _work(self, q: queue.SimpleQueue, button: tuple[str, str]) -> None:
        while (index := q.get()) is not None:
            try:
                self.press(index, *button)
            except Exception as exc:  # noqa: BLE001 - reported by finish()
                self.errors.append(f"press {index} on {button}: {type(exc).__name__}: {exc}")

    def __call__(self, index: int) -> None:
        self.queues[index % len(self.queues)].put(index)

    def stop(self) -> None:
        """Let every hand finish its last press and leave (twice is harmless)."""
        for q in self.queues:
            q.put(None)
        for t in self.threads:
            t.join(30)

    def finish(self) -> None:
        self.stop()
        if self.errors:
            raise BenchError(self.errors[0])


# -- 1. press → subscriber latency ---------------------------------------------------------------


def latency_appliance(ws: Workspace, p: Params, rep: int, sample: PressSample) -> list[float]:
    """Latencies (ms) of paced presses on an in-process daemon, press to subscriber receipt."""
    broker = ws.broker()
    sub = daemon = hands = None
    try:
        directory = ws.dir(f"latency-appliance-{rep}")
        config = load_config(write_config(directory, broker=broker, inflight=p.inflight))
        arrivals = Arrivals()
        topic = Topics.for_device(config.device).event(sample.event_type)
        sub = connect_client(broker, "bench-sub", subscribe=topic, on_message=arrivals.on_message)
        daemon = Daemon(config, simulate=True)
        daemon.start()
        deadline = time.monotonic() + 10
        while daemon.uplink.info.state != "connected":
            if time.monotonic() > deadline:
                raise BenchError(f"the daemon's uplink did not connect: {daemon.uplink.info}")
            time.sleep(0.01)
        clock = PressClock(sample.event_type)
        daemon.store.add_listener(clock.listener)
        hands = ButtonHands(lambda i, w, lv: clock.press(daemon.buttons, i, w, lv), fair_buttons())
        total = p.latency_warmup + p.latency_samples
        pace(total, p.rate_per_s, hands)
        hands.finish()
        if len(clock.began) != total:
            raise BenchError(f"{total} presses recorded {len(clock.began)} press events")
        arrivals.wait_for(sorted(clock.began), 30)
        return [(arrivals.at[seq] - began) / 1e6 for seq, (index, began) in clock.began.items() if index >= p.latency_warmup]
    finally:
        if hands:
            hands.stop()
        if daemon:
            daemon.stop()
        close_client(sub)
        ws.release(broker)


def latency_baseline(ws: Workspace, p: Params, rep: int, sample: PressSample) -> list[float]:
    """Latencies (ms) of a bare FULL WAL insert + bare paho QoS 1 publish, to subscriber receipt."""
    broker = ws.broker()
    sub = pub = conn = None
    try:
        directory = ws.dir(f"latency-baseline-{rep}")
        conn = bare_db(directory / "bare.db")
        arrivals = Arrivals()
        topic = bare_topic(sample.topic_chars, "latency")
        sub = connect_client(broker, "bench-sub", subscribe=topic, on_message=arrivals.on_message)
        pub = connect_client(broker, "bench-bare-pub", inflight=p.inflight)
        total = p.latency_warmup + p.latency_samples
        payloads = [bare_payload(i + 1, sample.payload_bytes) for i in range(total)]
        pressed_at = [0] * total

        def press(i: int) -> None:
            pressed_at[i] = time.monotonic_ns()
            conn.execute("INSERT INTO events (seq, payload) VALUES (?, ?)", (i + 1, payloads[i]))
            pub.publish(topic, payloads[i], qos=1)

        pace(total, p.rate_per_s, press)
        seqs = list(range(1, total + 1))
        arrivals.wait_for(seqs, 30)
        return [(arrivals.at[seqs[i]] - pressed_at[i]) / 1e6 for i in range(p.latency_warmup, total)]
    finally:
        close_client(pub)
        close_client(sub)
        if conn:
            conn.close()
        ws.release(broker)


def bench_latency(ws: Workspace, p: Params, sample: PressSample) -> list[Figure]:
    p50a, p99a, p50b, p99b = (Series("ms") for _ in range(4))
    worst = Series("ms")
    for rep in range(p.reps):
        # Alternate which side goes first, so a drift in the machine favours neither.
        order = ("appliance", "baseline") if rep % 2 == 0 else ("baseline", "appliance")
        for side in order:
            if side == "appliance":
                lat = sorted(latency_appliance(ws, p, rep, sample))
                p50a.values.append(percentile(lat, 50))
                p99a.values.append(percentile(lat, 99))
                worst.values.append(lat[-1])
            else:
                lat = sorted(latency_baseline(ws, p, rep, sample))
                p50b.values.append(percentile(lat, 50))
                p99b.values.append(percentile(lat, 99))
        print(f"  latency rep {rep + 1}/{p.reps}: appliance p50 {p50a.values[-1]:.2f} p99 {p99a.values[-1]:.2f} ms; bare p50 {p50b.values[-1]:.2f} p99 {p99b.values[-1]:.2f} ms", flush=True)
    return [
        Figure("latency_p50", "1. press→subscriber p50", p50a, p50b, "(info)", None),
        Figure("latency_p99", "1. press→subscriber p99", p99a, p99b, "≤ 2× bare", lambda v, r: r <= 2.0, {"appliance_max_ms": worst.values}),
    ]


# -- 2. draining a backlog -------------------------------------------------------------------------


# The subscriber of figure 2, run as `python -c` with HOST PORT TOPIC COUNT TIMEOUT: it says
# SUBSCRIBED, then DONE first_ns last_ns distinct duplicates once COUNT distinct seqs arrived
# (or at TIMEOUT). Only paho: the appliance's imports would slow every start for nothing.
DRAIN_SUBSCRIBER = """\
import re, sys, threading, time
import paho.mqtt.client as mqtt
host, port, topic, count, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
seq_re = re.compile(rb'"seq":(\\d+)')
seen, done, stamps, dup = set(), threading.Event(), [0, 0], [0]

def on_message(client, userdata, message):
    m = seq_re.search(message.payload)
    if not m:
        return
    seq = int(m.group(1))
    if seq in seen:
        dup[0] += 1
        return
    seen.add(seq)
    if len(seen) == 1:
        stamps[0] = time.monotonic_ns()
    if len(seen) >= count:
        stamps[1] = time.monotonic_ns()
        done.set()

client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-drain-sub", protocol=mqtt.MQTTv5)
subscribed = threading.Event()
client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
client.on_subscribe = lambda *a: subscribed.set()
client.on_message = on_message
client.connect(host, port)
client.loop_start()
if not subscribed.wait(10):
    print("FAILED could not subscribe", flush=True)
    sys.exit(1)
print("SUBSCRIBED", flush=True)
done.wait(timeout)
print(f"DONE {stamps[0]} {stamps[1]} {len(seen)} {dup[0]}", flush=True)
client.disconnect()
client.loop_stop()
"""


def start_drain_subscriber(ws: Workspace, broker: PrivateBroker, topic: str, count: int, timeout: float) -> subprocess.Popen:
    # Its own process, as the county aggregator would be: in ours it would take the GIL from
    # the uplink (or the bare publisher) it is measuring.
    proc = ws.spawn([PYTHON, "-c", DRAIN_SUBSCRIBER, broker.host, str(broker.port), topic, str(count), str(timeout)], stdout=subprocess.PIPE)
    line = read_line(proc, 15)
    if line != "SUBSCRIBED":
        raise BenchError(f"drain subscriber: {line}")
    return proc


def finish_drain(ws: Workspace, proc: subprocess.Popen, count: int, t0: int, timeout: float, poll: Callable[[], None] | None = None) -> float:
    """Seconds from ``t0`` until the subscriber child had ``count`` distinct events."""
    deadline = time.monotonic() + timeout + 10
    while True:
        if poll:
            poll()
        ready, _, _ = select.select([proc.stdout], [], [], 0.005)
        if ready:
            break
        if time.monotonic() > deadline:
            raise BenchError("the drain subscriber never reported")
    line = read_line(proc, 5)
    ws.end(proc)
    parts = line.split()
    if parts[0] != "DONE" or int(parts[3]) < count:
        raise BenchError(f"drain: the subscriber got {parts[3] if len(parts) > 3 else '?'} of {count} events ({line})")
    return (int(parts[2]) - t0) / 1e9


def build_backlog(ws: Workspace, p: Params, sample: PressSample) -> Path:
    """Record the backlog once, with no broker, and close the store (checkpointing the WAL).

    The events are recorded 500 to a transaction: the rows are the same as one at a time,
    and the run is shorter by the time of 50,000 commits.
    """
    directory = ws.dir("backlog")
    store = Store(directory / "hall.db", free_space_floor_mb=0, reserve_mb=0)
    try:
        recorder = Recorder(store, DEVICE, SystemClock("assume_synced"), boot_id())
        left = p.backlog_events
        while left:
            batch = min(left, 500)
            recorder.record_together([EventSpec(sample.event_type, sample.data) for _ in range(batch)])
            left -= batch
        if store.depth != p.backlog_events:
            raise BenchError(f"backlog: outbox depth {store.depth}, expected {p.backlog_events}")
    finally:
        store.close()
    return directory / "hall.db"


def drain_appliance(ws: Workspace, p: Params, rep: int, backlog: Path, sample: PressSample) -> tuple[float, float]:
    """(seconds to the subscriber's last event, seconds to outbox depth 0) for one daemon start."""
    broker = ws.broker()
    daemon = None
    try:
        directory = ws.dir(f"drain-appliance-{rep}")
        for suffix in ("", "-wal"):
            src = Path(str(backlog) + suffix)
            if src.exists():
                shutil.copyfile(src, directory / (backlog.name + suffix))
        config = load_config(write_config(directory, broker=broker, inflight=p.inflight))
        topic = Topics.for_device(config.device).event(sample.event_type)
        proc = start_drain_subscriber(ws, broker, topic, p.backlog_events, p.timeout_s)
        empty_at = [0]
        t0 = time.monotonic_ns()
        daemon = Daemon(config, simulate=True)
        daemon.start()

        def watch_depth() -> None:
            if not empty_at[0] and daemon.store.depth == 0:
                empty_at[0] = time.monotonic_ns()

        seconds = finish_drain(ws, proc, p.backlog_events, t0, p.timeout_s, watch_depth)
        end = time.monotonic() + 10
        while not empty_at[0] and time.monotonic() < end:
            watch_depth()
            time.sleep(0.005)
        return seconds, (empty_at[0] - t0) / 1e9 if empty_at[0] else float("nan")
    finally:
        if daemon:
            daemon.stop()
        ws.release(broker)


def drain_baseline(ws: Workspace, p: Params, rep: int, sample: PressSample) -> float:
    """Seconds for bare paho QoS 1 (same window, same payload size) to deliver the backlog."""
    broker = ws.broker()
    pub = None
    try:
        topic = bare_topic(sample.topic_chars, "drain")
        payloads = [bare_payload(i + 1, sample.payload_bytes) for i in range(p.backlog_events)]
        proc = start_drain_subscriber(ws, broker, topic, p.backlog_events, p.timeout_s)
        t0 = time.monotonic_ns()
        pub = connect_client(broker, "bench-bare-pub", inflight=p.inflight)
        for payload in payloads:
            pub.publish(topic, payload, qos=1)  # paho sends `inflight` at a time, queues the rest
        return finish_drain(ws, proc, p.backlog_events, t0, p.timeout_s)
    finally:
        close_client(pub)
        ws.release(broker)


def bench_drain(ws: Workspace, p: Params, sample: PressSample) -> Figure:
    t = time.monotonic()
    backlog = build_backlog(ws, p, sample)
    print(f"  drain: recorded the {p.backlog_events:,}-event backlog in {time.monotonic() - t:.1f} s ({backlog.stat().st_size >> 20} MiB)", flush=True)
    a, b = Series("events/s"), Series("events/s")
    to_empty = []
    for rep in range(p.reps):
        order = ("appliance", "baseline") if rep % 2 == 0 else ("baseline", "appliance")
        for side in order:
            if side == "appliance":
                seconds, empty = drain_appliance(ws, p, rep, backlog, sample)
                a.values.append(p.backlog_events / seconds)
                to_empty.append(empty)
            else:
                b.values.append(p.backlog_events / drain_baseline(ws, p, rep, sample))
        print(f"  drain rep {rep + 1}/{p.reps}: appliance {a.values[-1]:,.0f}/s (outbox empty at {to_empty[-1]:.2f} s); bare {b.values[-1]:,.0f}/s", flush=True)
    return Figure("drain", f"2. drain {p.backlog_events:,} backlog", a, b, "≥ 0.6× bare", lambda v, r: r >= 0.6, {"outbox_empty_s": to_empty})


# -- 3. durable recording ----------------------------------------------------------------------------


def record_appliance(ws: Workspace, p: Params, rep: int, sample: PressSample) -> float:
    store = Store(ws.dir(f"record-appliance-{rep}") / "hall.db", free_space_floor_mb=0, reserve_mb=0)
    try:
        recorder = Recorder(store, DEVICE, SystemClock("assume_synced"), boot_id())
        t0 = time.perf_counter()
        for _ in range(p.record_events):
            recorder.record(sample.event_type, sample.data)
        return p.record_events / (time.perf_counter() - t0)
    finally:
        store.close()


def record_baseline(ws: Workspace, p: Params, rep: int, sample: PressSample) -> float:
    conn = bare_db(ws.dir(f"record-baseline-{rep}") / "bare.db")
    try:
        payloads = [bare_payload(i + 1, sample.payload_bytes) for i in range(p.record_events)]
        t0 = time.perf_counter()
        for i, payload in enumerate(payloads):
            conn.execute("INSERT INTO events (seq, payload) VALUES (?, ?)", (i + 1, payload))  # one commit each
        return p.record_events / (time.perf_counter() - t0)
    finally:
        conn.close()


def bench_record(ws: Workspace, p: Params, sample: PressSample) -> Figure:
    a, b = Series("events/s"), Series("events/s")
    for rep in range(p.reps):
        order = ("appliance", "baseline") if rep % 2 == 0 else ("baseline", "appliance")
        for side in order:
            if side == "appliance":
                a.values.append(record_appliance(ws, p, rep, sample))
            else:
                b.values.append(record_baseline(ws, p, rep, sample))
        print(f"  record rep {rep + 1}/{p.reps}: appliance {a.values[-1]:,.0f}/s; bare {b.values[-1]:,.0f}/s", flush=True)
    return Figure("record", "3. durable recording (FULL)", a, b, "≥ 1,000/s", lambda v, r: v >= 1000)


# -- the daemon's third-party imports ---------------------------------------------------------------

# Runs `hall-appliance run` in this child through its real entry point; once the control socket
# answers a press, lists sys.modules and ends the daemon with SIGTERM as systemd would.
MODULES_PROBE = """\
import json, os, signal, sys, threading, runpy
command, config, out = sys.argv[1], sys.argv[2], sys.argv[3]

def probe():
    from appliance.control import ControlClient
    from appliance.errors import ControlError
    import time
    sock = os.path.join(os.path.dirname(config), "control.sock")
    for _ in range(400):
        try:
            ControlClient(sock, timeout=2).call("press", window="w1", level="satisfied")
            break
        except ControlError:
            time.sleep(0.025)
    time.sleep(0.5)
    with open(out, "w") as f:
        json.dump({name: getattr(m, "__file__", None) for name, m in list(sys.modules.items())}, f)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=probe, daemon=True).start()
sys.argv = ["hall-appliance", command, "--config", config]
runpy.run_module("appliance.cli", run_name="__main__")
"""


def third_party_modules(ws: Workspace, broker: PrivateBroker, commands: tuple[str, ...]) -> dict[str, list[str]]:
    """For each ``hall-appliance COMMAND``: the non-stdlib modules it loads beyond a bare interpreter's."""
    outs, procs = {}, []
    try:
        for command in commands:  # side by side: nothing is timed here
            directory = ws.dir(f"modules-{command}")
            config = write_config(directory, broker=broker, inflight=20, device_id=f"bench-probe-{command}")
            outs[command] = directory / "modules.json"
            procs.append(ws.spawn([PYTHON, "-c", MODULES_PROBE, command, str(config), str(outs[command])], stdout=subprocess.DEVNULL))
        for proc in procs:
            proc.wait(30)
    finally:
        for proc in procs:
            ws.end(proc)
    bare = subprocess.run([PYTHON, "-c", "import sys, json; print(json.dumps(sorted(sys.modules)))"], capture_output=True, check=True, env=child_env(), cwd=REPO)
    bare_mods = set(json.loads(bare.stdout))
    result = {}
    for command, out in outs.items():
        if not out.exists():
            raise BenchError(f"could not list the modules of hall-appliance {command}")
        result[command] = _third_party(json.loads(out.read_text()), bare_mods)
    return result


def _third_party(daemon_mods: dict[str, str | None], bare_mods: set[str]) -> list[str]:
    stdlib = Path(sysconfig.get_path("stdlib")).resolve()

    def third_party(name: str, file: str | None) -> bool:
        top = name.split(".")[0]
        if name in bare_mods or name.startswith("__") or top in OWN_PACKAGES or top in sys.stdlib_module_names:
            return False
        # Stdlib modules missing from stdlib_module_names (_sysconfigdata_…) live in its directory.
        return not (file and Path(file).resolve().is_relative_to(stdlib) and "site-packages" not in Path(file).parts)

    def importable(name: str) -> bool:
        # cffi registers aliases such as `_sodium` (PyNaCl's `nacl._sodium`) that no import
        # statement can reach; importing their real module brings them in anyway.
        try:
            return importlib.machinery.PathFinder.find_spec(name.split(".")[0]) is not None
        except (ImportError, ValueError):
            return False

    return sorted(name for name, file in daemon_mods.items() if third_party(name, file) and importable(name))


def import_program(modules: list[str], then: str) -> str:
    """A bare interpreter's program: import exactly ``modules``, then ``then``."""
    lines = [f"import {m}" for m in modules]
    return "\n".join(lines + [then])


BARE_READY = """\
import os, socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(os.environ["NOTIFY_SOCKET"])
s.sendall(b"READY=1")
"""
BARE_WAIT = "import sys\nprint('ready', flush=True)\nsys.stdin.readline()\n"


# -- 4. resident memory ------------------------------------------------------------------------------


def press_many(socket_path: Path, count: int, buttons: list[tuple[str, str]]) -> int:
    """``count`` presses through the control socket, one client thread per button.

    Returns how many connects found the socket's backlog full (and were retried).
    """
    errors: list[str] = []
    backlog_full = [0]

    def work(k: int) -> None:
        window_id, level = buttons[k]
        client = ControlClient(socket_path)
        try:
            for _ in range(count // len(buttons) + (1 if k < count % len(buttons) else 0)):
                for attempt in range(200):
                    try:
                        client.call("press", window=window_id, level=level)
                        break
                    except BlockingIOError:
                        # The control socket's listen backlog (16) is full: ControlClient
                        # lets EAGAIN from connect() through. Nothing was sent; try again.
                        backlog_full[0] += 1
                        time.sleep(0.002)
                else:
                    raise BenchError("the control socket stayed full")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(buttons))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise BenchError(f"control presses failed: {errors[0]}")
    return backlog_full[0]


def memory_buttons(p: Params) -> list[tuple[str, str]]:
    """One button per control-socket client, each at its own window."""
    return fair_buttons()[: min(p.memory_clients, len(WINDOWS))]


def count_events(db: Path, event_type: str) -> int:
    """Events of ``event_type`` in a store a daemon is running on (read-only, beside it)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT COUNT(*) FROM outbox WHERE type = ?", (event_type,)).fetchone()[0]
    finally:
        conn.close()


def wait_control(path: Path, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    from appliance.errors import ControlError

    while True:
        if proc.poll() is not None:
            raise BenchError(f"the simulator exited with {proc.returncode}")
        try:
            ControlClient(path, timeout=2).call("status")
            return
        except ControlError:
            if time.monotonic() > deadline:
                raise BenchError("the simulator's control socket never answered") from None
            time.sleep(0.05)


def settled_rss(pid: int, quiet_s: float = 0.3, limit_s: float = 10.0) -> float:
    """VmRSS (MiB) once it has not changed for ``quiet_s`` (the page may still be starting)."""
    end = time.monotonic() + limit_s
    last, since = vm_kib(pid, "VmRSS"), time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.05)
        now = vm_kib(pid, "VmRSS")
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return last / 1024


def memory_appliance(ws: Workspace, p: Params, rep: int, broker: PrivateBroker, sample: PressSample) -> dict:
    """VmRSS (MiB) of a `simulate` process after the presses, with what helps read it."""
    directory = ws.dir(f"memory-appliance-{rep}")
    config = write_config(directory, broker=broker, inflight=p.inflight, device_id=f"bench-mem-{rep:02d}", extra=MEMORY_RATINGS)
    proc = ws.spawn([PYTHON, "-m", "appliance.cli", "simulate", "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        socket_path = directory / "control.sock"
        wait_control(socket_path, proc)
        idle = settled_rss(proc.pid)
        t0 = time.perf_counter()
        retried = press_many(socket_path, p.memory_events, memory_buttons(p))
        rate = p.memory_events / (time.perf_counter() - t0)
        recorded = count_events(directory / "hall.db", sample.event_type)
        if recorded != p.memory_events:
            raise BenchError(f"{p.memory_events} presses through the control socket recorded {recorded} {sample.event_type} events")
        # Let the uplink send what it holds, so the figure is the steady state after the burst.
        deadline = time.monotonic() + 30
        while ControlClient(socket_path).call("status")["outbox"]["depth"] > 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        return {
            "rss": settled_rss(proc.pid),
            "hwm": vm_kib(proc.pid, "VmHWM") / 1024,
            "idle": idle,
            "rate": rate,
            "backlog_full_retries": retried,
        }
    finally:
        ws.end(proc)


def memory_baseline(ws: Workspace, modules: list[str]) -> float:
    proc = ws.spawn([PYTHON, "-c", import_program(modules, BARE_WAIT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        if read_line(proc, 20) != "ready":
            raise BenchError("the bare interpreter did not start")
        time.sleep(0.2)
        return vm_kib(proc.pid, "VmRSS") / 1024
    finally:
        ws.end(proc)


def bench_memory(ws: Workspace, p: Params, broker: PrivateBroker, modules: list[str], sample: PressSample) -> Figure:
    a, b = Series("MiB"), Series("MiB")
    runs: list[dict] = []
    for rep in range(p.reps):
        order = ("appliance", "baseline") if rep % 2 == 0 else ("baseline", "appliance")
        for side in order:
            if side == "appliance":
                run = memory_appliance(ws, p, rep, broker, sample)
                a.values.append(run["rss"])
                runs.append(run)
            else:
                b.values.append(memory_baseline(ws, modules))
        r = runs[-1]
        print(f"  memory rep {rep + 1}/{p.reps}: simulator {r['rss']:.1f} MiB (idle before the presses {r['idle']:.1f}, peak {r['hwm']:.1f}, {r['rate']:,.0f} presses/s); bare {b.values[-1]:.1f} MiB", flush=True)
    return Figure(
        "memory",
        f"4. RSS after {p.memory_events:,} presses",
        a,
        b,
        "≤ 1.3× bare, ≤ 60 MiB",
        lambda v, r: r <= 1.3 and v <= 60,
        {k: [r[k] for r in runs] for k in ("idle", "hwm", "rate", "backlog_full_retries")},
    )


# -- 5. start to READY --------------------------------------------------------------------------------


def time_to_ready(ws: Workspace, args: list[str], directory: Path) -> float:
    """Seconds from spawning ``args`` until READY=1 arrives on a NOTIFY_SOCKET we bind."""
    path = directory / "notify.sock"
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    proc = None
    try:
        sock.bind(str(path))
        sock.settimeout(0.1)
        env = child_env()
        env["NOTIFY_SOCKET"] = str(path)
        t0 = time.monotonic()
        proc = ws.spawn(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = t0 + 20
        while time.monotonic() < deadline:
            try:
                message = sock.recv(4096)
            except TimeoutError:
                if proc.poll() is not None:
                    raise BenchError(f"{args} exited with {proc.returncode} before READY=1") from None
                continue
            if b"READY=1" in message.split(b"\n"):
                return time.monotonic() - t0
        raise BenchError(f"{args} never sent READY=1")
    finally:
        ws.end(proc)
        sock.close()
        path.unlink(missing_ok=True)


def bench_ready(ws: Workspace, p: Params, broker: PrivateBroker, modules: list[str]) -> Figure:
    directory = ws.dir("ready")
    config = write_config(directory, broker=broker, inflight=p.inflight, device_id="bench-ready")
    daemon_args = [PYTHON, "-m", "appliance.cli", "run", "--config", str(config)]
    bare_args = [PYTHON, "-c", import_program(modules, BARE_READY)]
    # One discarded start of each: the store is created, and both find their files in the page
    # cache, as a restarted service does (the figure is a restart, not the first boot).
    time_to_ready(ws, daemon_args, directory)
    time_to_ready(ws, bare_args, directory)
    a, b = Series("s"), Series("s")
    for rep in range(p.reps):
        order = ("appliance", "baseline") if rep % 2 == 0 else ("baseline", "appliance")
        for side in order:
            if side == "appliance":
                a.values.append(time_to_ready(ws, daemon_args, directory))
            else:
                b.values.append(time_to_ready(ws, bare_args, directory))
        print(f"  ready rep {rep + 1}/{p.reps}: daemon {a.values[-1]:.3f} s; bare {b.values[-1]:.3f} s", flush=True)
    return Figure("ready", "5. start → READY=1", a, b, "≤ 1 s", lambda v, r: v <= 1.0)


# -- the run ------------------------------------------------------------------------------------------


def header(p: Params, quick: bool, sample: PressSample, broker_lines: list[str], modules: dict[str, list[str]], root: Path) -> dict:
    return {
        "mode": "quick" if quick else "full",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "repetitions": p.reps,
        "latency": {"samples_per_rep": p.latency_samples, "warmup_presses_discarded": p.latency_warmup, "rate_per_s": p.rate_per_s, "percentile": "nearest rank"},
        "backlog_events": p.backlog_events,
        "record_events_per_rep": p.record_events,
        "memory": {"presses": p.memory_events, "control_clients": p.memory_clients, "buttons": [f"{w}/{lv}" for w, lv in memory_buttons(p)], "config": MEMORY_RATINGS.strip().splitlines()},
        "press_event": {"type": sample.event_type, "payload_bytes": sample.payload_bytes, "topic_chars": sample.topic_chars, "person_events_per_press": sample.person_events},
        "windows": {w: {"buttons": {level: pin for level, pin in buttons}, "indicator_pin": led} for w, _, buttons, led in WINDOWS},
        "latency_buttons": len(fair_buttons()),
        "inflight_window": p.inflight,
        "broker": {"mosquitto": subprocess.run([mosquitto_binary(), "-h"], capture_output=True, text=True).stdout.splitlines()[0], "config": broker_lines},
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "paho_mqtt": paho.mqtt.__version__,
        "gpiozero": _dist_version("gpiozero"),
        "children": "python with PYTHONPYCACHEPREFIX in the run's temp dir (compiled once, like an installed tree), PYTHONDONTWRITEBYTECODE unset",
        "cpus": os.cpu_count(),
        "cpu": _cpu_model(),
        "platform": platform.platform(),
        "work_dir_fs": _filesystem(root),
        "third_party_modules": modules,
    }


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    try:
        return version(name)
    except Exception:  # noqa: BLE001
        return "?"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _filesystem(path: Path) -> str:
    best = ("", "?")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mount, fstype = line.split()[:3]
            if str(path).startswith(mount) and len(mount) > len(best[0]):
                best = (mount, f"{fstype} on {mount} ({dev})")
    except OSError:
        pass
    return best[1]


def print_header(h: dict) -> None:
    lat, ev = h["latency"], h["press_event"]
    print(f"Hall appliance benchmark ({h['mode']}) — {h['date']}")
    print(f"  Python {h['python']}, SQLite {h['sqlite']}, paho-mqtt {h['paho_mqtt']}, gpiozero {h['gpiozero']}, {h['broker']['mosquitto']}")
    print(f"  {h['cpus']} CPUs ({h['cpu']}), {h['platform']}; stores on {h['work_dir_fs']}")
    print(f"  child processes: {h['children']}")
    print(f"  every figure: median [min–max] of {h['repetitions']} repetitions, appliance and baseline alternating in one run")
    print(f"  config: {len(h['windows'])} windows × (5 buttons + indicator LED) on BCM 2–25, mock pins, aggregator_ack = false, clock assume_synced, in-flight window {h['inflight_window']}")
    print(f"  press event: {ev['type']}, payload {ev['payload_bytes']} bytes, topic {ev['topic_chars']} chars (bare payloads and topics have the same sizes); QoS 1 both ways")
    print(f"  1: {lat['samples_per_rep']} presses per rep at {lat['rate_per_s']:g}/s round {h['latency_buttons']} satisfied-level buttons, after {lat['warmup_presses_discarded']} warm-up presses (discarded); p99 by nearest rank")
    print(f"  2: backlog of {h['backlog_events']:,} events, subscriber in its own process; 3: {h['record_events_per_rep']:,} events per rep; 4: {h['memory']['presses']:,} presses through the control socket by {h['memory']['control_clients']} client(s), one press at a time each, on {', '.join(h['memory']['buttons'])}, with [ratings] debounce_ms = 1")
    print("  broker config (a fresh private Mosquitto for each run of 1 and 2, one shared by 4 and 5):")
    for line in h["broker"]["config"]:
        print(f"    {line}")
    for command, mods in h["third_party_modules"].items():
        figure = {"simulate": 4, "run": 5}[command]
        packages: dict[str, int] = {}
        for m in mods:
            packages[m.split(".")[0]] = packages.get(m.split(".")[0], 0) + 1
        listed = ", ".join(f"{name} ({n})" for name, n in packages.items())
        print(f"  bare interpreter of {figure} imports exactly the {len(mods)} third-party modules `hall-appliance {command}` loads: {listed}")
    print()


def run(args: argparse.Namespace) -> int:
    p = QUICK if args.quick else FULL
    if args.reps:
        p = Params(**{**asdict(p), "reps": args.reps})
    if args.memory_clients:
        p = Params(**{**asdict(p), "memory_clients": args.memory_clients})
    only = set(args.only.split(",")) if args.only else {"latency", "drain", "record", "memory", "ready"}
    if mosquitto_binary() is None:
        print("bench: mosquitto is not installed (sudo apt-get install mosquitto)", file=sys.stderr)
        return 1
    # In-process daemons must not talk to a systemd that may be running us.
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        os.environ.pop(key, None)
    started = time.monotonic()
    tally = LogTally()
    logging.getLogger().addHandler(tally)
    ws = Workspace()
    global PYCACHE
    PYCACHE = ws.root / "pycache"
    figures: list[Figure] = []
    timings: dict[str, float] = {}
    try:
        sample = sample_press(ws)
        shared = ws.broker()
        broker_lines = [ln.replace(str(shared.port), "<free port>").replace(str(shared.dir), "<temp dir>") for ln in shared.conf_path.read_text().splitlines() if ln.strip()]
        modules = third_party_modules(ws, shared, ("simulate", "run"))
        h = header(p, args.quick, sample, broker_lines, modules, ws.root)
        print_header(h)
        steps: list[tuple[str, Callable[[], list[Figure]]]] = [
            ("latency", lambda: bench_latency(ws, p, sample)),
            ("drain", lambda: [bench_drain(ws, p, sample)]),
            ("record", lambda: [bench_record(ws, p, sample)]),
            ("memory", lambda: [bench_memory(ws, p, shared, modules["simulate"], sample)]),
            ("ready", lambda: [bench_ready(ws, p, shared, modules["run"])]),
        ]
        for name, step in steps:
            if name in only:
                t = time.monotonic()
                figures += step()
                timings[name] = round(time.monotonic() - t, 1)
                print(f"  ({name}: {timings[name]:.0f} s)", flush=True)
    finally:
        ws.close()
    elapsed = time.monotonic() - started
    print()
    print(table(figures))
    print(f"\nwall time {elapsed:.0f} s")
    if tally.seen:
        print("logged by the in-process daemons (WARNING and above):")
        for e in tally.summary():
            print(f"  {e['count']:>5} × {e['level']} {e['logger']}: {e['first']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"header": h, "figures": {f.key: f.to_json() for f in figures}, "wall_time_s": elapsed, "seconds_per_figure": timings, "daemon_log": tally.summary()}, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"results: {RESULTS.relative_to(REPO)}")
    return 0 if all(f.passed is not False for f in figures) else 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The hall appliance's performance table (see the module docstring). Exit status 3 when a figure misses its target.")
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer samples and repetitions (under a minute)")
    parser.add_argument("--reps", type=int, help="repetitions per figure (default 5, 3 with --quick)")
    parser.add_argument("--only", help="comma-separated subset: latency,drain,record,memory,ready")
    parser.add_argument("--memory-clients", type=int, choices=range(1, len(WINDOWS) + 1), metavar="N", help="figure 4: press through N control-socket clients at once, each at its own window (default 1; more finish sooner, and add the malloc arenas of concurrent threads to the figure)")
    args = parser.parse_args(argv)
    # SIGTERM ends the run through the finally blocks, so no broker or child is left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

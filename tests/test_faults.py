"""Faults on the real daemon process: SIGKILL mid-stream, a damaged card, the Will, systemd."""

from __future__ import annotations

import json
import os
import random
import socket
import sqlite3
import threading
import time

import pytest

from appliance.errors import ControlError
from conftest import DaemonProcess, write_config


def stream_presses(daemon: DaemonProcess, stop: threading.Event, acknowledged: list[int]) -> None:
    """Press buttons through the control socket until told to stop or the daemon dies.

    A seq is added only once the daemon answered: by then the press is committed, so
    it is what a person would have been told was recorded.
    """
    control = daemon.control()
    levels = ["satisfied", "dissatisfied", "very_satisfied"]
    i = 0
    while not stop.is_set():
        try:
            result = control.call("press", window="w1", level=levels[i % 3])
        except (ControlError, OSError, json.JSONDecodeError):
            return
        acknowledged.append(result["seq"])
        i += 1


def person_seqs_in_store(db) -> list[int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [r[0] for r in conn.execute("SELECT seq FROM outbox WHERE stream = 'person' ORDER BY seq")]
    finally:
        conn.close()


def kill_at_random_moments(tmp_path, broker, subscriber, daemon_process, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    config = write_config(tmp_path / "dev", broker=broker)
    acknowledged: list[int] = []
    for _ in range(rounds):
        d = daemon_process(config).start()
        stop = threading.Event()
        presser = threading.Thread(target=stream_presses, args=(d, stop, acknowledged))
        presser.start()
        time.sleep(rng.uniform(0.02, 0.4))
        d.kill()
        stop.set()
        presser.join(10)

    # Back up once more: everything recorded before any kill must now arrive.
    d = daemon_process(config).start()
    recorded = person_seqs_in_store(tmp_path / "dev" / "hall.db")
    assert recorded == list(range(1, len(recorded) + 1)), "seq has a gap: something was lost"
    assert set(acknowledged) <= set(recorded), "a press the daemon acknowledged is not in the store"
    assert len(acknowledged) >= rounds, "the test did not stream enough presses to mean anything"
    # Ratings and the follow-ups poor ones open share the person stream.
    person = lambda: [e for e in subscriber.events() if e["stream"] == "person"]  # noqa: E731
    subscriber.wait_for(lambda m: set(recorded) <= {e["seq"] for e in person()}, timeout=60)
    events = person()
    store_ids = {e["store_id"] for e in events}
    assert len(store_ids) == 1
    received = [e["seq"] for e in events]
    lost = set(recorded) - set(received)
    duplicates = len(received) - len(set(received))
    # Duplicates are allowed (at-least-once, consumers de-duplicate by event_id); losses are not.
    by_id = {}
    for e in events:
        by_id.setdefault(e["event_id"], e["seq"])
    assert len(by_id) == len(set(received)), "one seq was published under two event_ids"
    print(f"\n{rounds} kills: {len(recorded)} recorded, {len(acknowledged)} acknowledged, {duplicates} duplicates, {len(lost)} lost")
    assert not lost, f"lost seqs: {sorted(lost)[:20]}"
    d.terminate()


def test_sigkill_at_random_moments_loses_nothing(tmp_path, broker, subscriber, daemon_process):
    kill_at_random_moments(tmp_path, broker, subscriber, daemon_process, rounds=20, seed=20261125)


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_long_run(tmp_path, broker, subscriber, daemon_process):
    kill_at_random_moments(tmp_path, broker, subscriber, daemon_process, rounds=200, seed=int(time.time()))


def test_the_will_says_offline_after_sigkill(tmp_path, broker, subscriber, daemon_process):
    config = write_config(tmp_path / "dev", broker=broker, will_delay=0)
    d = daemon_process(config).start()
    status_topic = "hall/v1/test-county/test-township/hall-01/status"
    msgs = subscriber.wait_for(lambda m: any(x.topic == status_topic for x in m))
    birth = json.loads([m for m in msgs if m.topic == status_topic][0].payload)
    assert birth["online"] is True
    d.kill()
    msgs = subscriber.wait_for(lambda m: any(x.topic == status_topic and not json.loads(x.payload)["online"] for x in m))
    death = json.loads([m for m in msgs if m.topic == status_topic][-1].payload)
    assert death["online"] is False and death["reason"] == "connection lost"
    # The Will carries the connection's counter, so a late Will loses against a newer birth.
    assert death["connect_count"] == birth["connect_count"]
    d2 = daemon_process(config).start()
    msgs = subscriber.wait_for(lambda m: json.loads([x for x in m if x.topic == status_topic][-1].payload)["online"])
    rebirth = json.loads([m for m in msgs if m.topic == status_topic][-1].payload)
    assert rebirth["connect_count"] > death["connect_count"]
    assert d2.terminate() == 0


def test_a_damaged_database_at_start_is_kept_aside_and_the_daemon_comes_up(tmp_path, broker, subscriber, daemon_process):
    config = write_config(tmp_path / "dev", broker=broker)
    db = tmp_path / "dev" / "hall.db"
    db.write_bytes(b"SQLite format 3\0" + os.urandom(8192))
    d = daemon_process(config).start()
    status = d.control().call("status")
    assert "store_damaged" in [a["code"] for a in status["alarms"]]
    kept = list((tmp_path / "dev").glob("hall.db.damaged-*"))
    assert len(kept) == 1 and kept[0].read_bytes().startswith(b"SQLite format 3\0")
    alarm = subscriber.wait_for(lambda m: any("/evt/alarm/raised" in x.topic and json.loads(x.payload)["data"]["code"] == "store_damaged" for x in m))
    assert alarm
    # And it records and publishes as usual on the fresh store.
    d.control().call("press", window="w2", level="dissatisfied")
    assert subscriber.wait_events(1)[0]["seq"] == 1
    assert d.terminate() == 0


def test_systemd_hears_ready_and_watchdog_pings(tmp_path):
    config = write_config(tmp_path / "dev")
    notify_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.settimeout(15)
    env = {"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"}
    d = DaemonProcess(config, tmp_path / "daemon.log")
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        d.start(wait_ready=False)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        messages = []
        while not any("WATCHDOG=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        assert messages[0].startswith("READY=1")
        # READY comes only once the control socket answers (drivers and store are up).
        assert d.control().call("status")["device"]["id"] == "hall-01"
        assert d.terminate() == 0
        while "STOPPING=1" not in messages[-1]:
            messages.append(sock.recv(4096).decode())
    finally:
        d.kill()
        sock.close()


def test_sigterm_exits_cleanly_with_nothing_pending_lost(tmp_path, broker, subscriber, daemon_process):
    config = write_config(tmp_path / "dev", broker=broker)
    d = daemon_process(config).start()
    for _ in range(20):
        d.control().call("press", window="w1", level="satisfied")
    assert d.terminate() == 0
    # Whatever did not leave before the stop leaves after the next start.
    daemon_process(config).start()
    assert sorted({e["seq"] for e in subscriber.wait_events(20)}) == list(range(1, 21))

"""The store: one transaction per event, gap-free seq, the cap, damage, a full disk."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from appliance import store as store_module
from appliance.clock import FakeClock
from appliance.config import DeviceConfig
from appliance.errors import StoreFullError
from appliance.events import Recorder
from appliance.store import CHECKPOINT_AFTER_ROWS, PERSON, TELEMETRY, WAL_BACKSTOP_FRAMES, Checkpointer, Store

DEVICE = DeviceConfig(id="hall-01", hall="测试政务服务中心", township="test-township", county="test-county")


def make_recorder(path: Path, **kwargs) -> Recorder:
    kwargs.setdefault("free_space_floor_mb", 0)
    kwargs.setdefault("reserve_mb", 0)
    return Recorder(Store(path, **kwargs), DEVICE, FakeClock(), "boot-1")


def test_new_store_gets_a_store_id_that_survives_reopening(tmp_path):
    store = Store(tmp_path / "hall.db", reserve_mb=0)
    store_id = store.store_id
    uuid.UUID(store_id)
    store.close()
    assert Store(tmp_path / "hall.db", reserve_mb=0).store_id == store_id


def test_store_is_wal_with_full_synchronous_for_what_people_do(tmp_path):
    store = Store(tmp_path / "hall.db", reserve_mb=0)
    assert store.rows("PRAGMA journal_mode") == [("wal",)]
    assert store.rows("PRAGMA synchronous") == [(2,)]  # FULL
    assert store.rows("PRAGMA user_version")[0][0] >= 1


def rows_in_the_database_file(path: Path, sql: str) -> int:
    """A count read from the database file alone, ignoring the WAL (what a checkpoint copied)."""
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return conn.execute(sql).fetchone()[0]
    except sqlite3.OperationalError as exc:  # before the first checkpoint even the tables are in the WAL
        if "no such table" not in str(exc):
            raise
        return 0
    finally:
        conn.close()


def test_event_ids_are_unique_version_7_uuids_in_the_order_they_are_made(monkeypatch):
    from services.sink import new_event_id

    ids = [new_event_id() for _ in range(20000)]
    assert len(set(ids)) == len(ids)
    parsed = [uuid.UUID(i) for i in ids]
    assert {(u.version, u.variant) for u in parsed} == {(7, uuid.RFC_4122)}
    assert all(str(u) == i for u, i in zip(parsed, ids))  # canonical lower case, as the contract says
    # All 74 random bits are random: the 12 after the version and the 62 after the variant.
    assert len({u.int >> 64 & 0xFFF for u in parsed}) > 3500
    assert len({u.int & (1 << 62) - 1 for u in parsed}) == len(ids)
    assert 0.45 < sum(bin(u.int & (1 << 62) - 1).count("1") for u in parsed) / (62 * len(ids)) < 0.55
    # Ids made in later milliseconds sort after earlier ones, as text too: the index takes them at its end.
    now = [1_795_000_000_000_000_000]
    monkeypatch.setattr(time, "time_ns", lambda: now[0])
    stamped = []
    for _ in range(50):
        now[0] += 1_000_000
        stamped.append(new_event_id())
    assert stamped == sorted(stamped)
    assert int(stamped[0].replace("-", "")[:12], 16) == 1_795_000_000_001


def test_recording_leaves_the_checkpoint_to_the_checkpointer(tmp_path):
    path = tmp_path / "hall.db"
    rec = make_recorder(path)
    store = rec.store
    assert store.rows("PRAGMA wal_autocheckpoint") == [(WAL_BACKSTOP_FRAMES,)]
    assert store.checkpoint() is not None  # the migrations' pages: the file now has every table
    # Well past SQLite's default of 1,000 frames, which would have checkpointed inside a commit.
    recorded = [rec.record("rating.recorded", {"n": i}) for i in range(300)]
    store.mark_published([r.id for r in recorded], final=True)
    store.apply_ack(PERSON, 300)
    count = "SELECT COUNT(*) FROM outbox"
    assert rows_in_the_database_file(path, count) == 0  # all of it is still in the WAL
    # Fewer rows written than asked for: nothing is copied.
    assert store.checkpoint(after_rows=10_000) is None
    assert rows_in_the_database_file(path, count) == 0
    frames, copied = store.checkpoint(after_rows=CHECKPOINT_AFTER_ROWS)
    assert frames > 1000 and copied == frames
    assert rows_in_the_database_file(path, count) == 300
    # A quiet hall: a few presses later the checkpointer still leaves the WAL alone.
    for i in range(10):
        rec.record("rating.recorded", {"n": i})
    assert store.checkpoint(after_rows=CHECKPOINT_AFTER_ROWS) is None
    assert rows_in_the_database_file(path, count) == 300


def test_presses_and_the_checkpoint_never_wait_for_each_other(tmp_path):
    rec = make_recorder(tmp_path / "hall.db")
    store = rec.store
    rec.record("rating.recorded", {"window": "w1"})
    done = threading.Event()

    def press():
        rec.record("rating.recorded", {"window": "w1"})
        done.set()

    # The checkpoint holds the bookkeeping connection's lock alone while it copies...
    with store._bk_lock:
        threading.Thread(target=press, daemon=True).start()
        assert done.wait(5), "the press waited for the checkpoint"
    # ...and never needs the recording connection's lock, held during every press's commit.
    result = []
    with store._lock:
        worker = threading.Thread(target=lambda: result.append(store.checkpoint()), daemon=True)
        worker.start()
        worker.join(5)
        assert result and result[0][1] > 0, "the checkpoint waited for the press"


def test_the_checkpointer_thread_copies_the_wal_back(tmp_path):
    path = tmp_path / "hall.db"
    rec = make_recorder(path)
    checkpointer = Checkpointer(rec.store, interval_s=0.02, after_rows=20)
    checkpointer.start()
    try:
        for i in range(10):  # three rows each with their counter: past 20
            rec.record("rating.recorded", {"n": i})
        deadline = time.monotonic() + 10
        while rows_in_the_database_file(path, "SELECT COUNT(*) FROM outbox") < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        checkpointer.stop()
    assert rows_in_the_database_file(path, "SELECT COUNT(*) FROM outbox") == 10
    assert not checkpointer.is_alive()


def test_a_failing_checkpoint_is_said_once_and_the_thread_keeps_trying(tmp_path, caplog):
    rec = make_recorder(tmp_path / "hall.db")
    attempts = []

    def full_disk(**kwargs):
        attempts.append(kwargs)
        if len(attempts) <= 3:
            raise sqlite3.OperationalError("database or disk is full")
        return None

    rec.store.checkpoint = full_disk
    checkpointer = Checkpointer(rec.store, interval_s=0.01)
    with caplog.at_level("INFO", logger="appliance.store"):
        checkpointer.start()
        deadline = time.monotonic() + 10
        while len(attempts) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        checkpointer.stop()
    assert len(attempts) >= 5 and not checkpointer.is_alive()
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "checkpoint failed" in m]) == 1
    assert "database or disk is full" in messages[0]
    assert "WAL checkpoint works again" in messages


def test_person_and_telemetry_streams_number_without_gaps(tmp_path):
    rec = make_recorder(tmp_path / "hall.db")
    people = [rec.record("button.pressed", {"i": i}).seq for i in range(5)]
    telemetry = [rec.telemetry("device.health", {"i": i}).seq for i in range(3)]
    people.append(rec.record("button.pressed", {"i": 5}).seq)
    assert people == [1, 2, 3, 4, 5, 6]
    assert telemetry == [1, 2, 3]


def test_a_failed_domain_write_records_nothing_and_leaves_no_gap(tmp_path):
    rec = make_recorder(tmp_path / "hall.db")
    rec.record("button.pressed", {})

    def broken_domain(conn, envelope):
        conn.execute("CREATE TABLE IF NOT EXISTS half_written (seq INTEGER)")
        conn.execute("INSERT INTO half_written VALUES (?)", (envelope["seq"],))
        raise RuntimeError("domain failed half-way")

    with pytest.raises(RuntimeError):
        rec.record("button.pressed", {}, domain=broken_domain)
    # Neither the domain row nor the outbox row nor the seq survived the failure.
    assert rec.store.rows("SELECT name FROM sqlite_master WHERE name = 'half_written'") == []
    assert rec.record("button.pressed", {}).seq == 2
    assert [r[0] for r in rec.store.rows("SELECT seq FROM outbox ORDER BY id")] == [1, 2]


def test_domain_rows_commit_with_the_outbox_row(tmp_path):
    rec = make_recorder(tmp_path / "hall.db")
    rec.store.rows("CREATE TABLE domain_rows (event_id TEXT, level TEXT)")

    def domain(conn, envelope):
        conn.execute("INSERT INTO domain_rows VALUES (?, ?)", (envelope["event_id"], "satisfied"))

    recorded = rec.record("button.pressed", {"level": "satisfied"}, domain=domain)
    assert rec.store.rows("SELECT event_id FROM domain_rows") == [(recorded.envelope["event_id"],)]


def test_envelope_carries_identity_time_and_clock_state(tmp_path):
    rec = make_recorder(tmp_path / "hall.db")
    rec.clock.synced = False
    env = json.loads(rec.record("button.pressed", {"window": "w1"}).payload)
    assert env["device_id"] == "hall-01" and env["county"] == "test-county" and env["township"] == "test-township"
    assert env["store_id"] == rec.store.store_id and env["boot_id"] == "boot-1"
    assert env["time"].endswith("+08:00")
    assert env["clock_synced"] is False
    assert env["stream"] == PERSON and env["seq"] == 1 and env["data"] == {"window": "w1"}


def test_at_the_cap_telemetry_is_dropped_but_what_people_do_is_kept(tmp_path):
    rec = make_recorder(tmp_path / "hall.db", outbox_cap=3)
    for _ in range(3):
        rec.record("button.pressed", {})
    assert rec.telemetry("device.health", {}) is None
    assert rec.store.dropped_telemetry == 1
    assert rec.record("button.pressed", {}).seq == 4
    # Alarms are telemetry that must not be dropped either.
    rec.raise_alarm("outbox_full", "test")
    assert [a.code for a in rec.store.active_alarms()] == ["outbox_full"]
    types = [r[0] for r in rec.store.rows("SELECT type FROM outbox ORDER BY id")]
    assert types.count("button.pressed") == 4 and "alarm.raised" in types and "device.health" not in types


def test_below_the_free_space_floor_telemetry_pauses(tmp_path):
    free = {"bytes": 10 << 20}
    store = Store(tmp_path / "hall.db", free_space_floor_mb=50, reserve_mb=0, free_bytes=lambda p: free["bytes"])
    rec = Recorder(store, DEVICE, FakeClock(), "boot-1")
    assert store.check_space() is False
    assert rec.telemetry("device.health", {}) is None
    assert rec.record("button.pressed", {}) is not None
    free["bytes"] = 100 << 20
    assert store.check_space() is True
    assert rec.telemetry("device.health", {}) is not None


def test_published_then_acked_then_pruned_after_retention(tmp_path):
    rec = make_recorder(tmp_path / "hall.db", retention_days=1)
    ids = [rec.record("button.pressed", {}).id for _ in range(3)]
    store = rec.store
    store.mark_published(ids[:2], final=False)
    assert store.depth == 3  # published is not acknowledged
    assert store.apply_ack(PERSON, 2) == 2
    assert store.depth == 1
    assert [r.seq for r in store.unacked_after(0, 10)] == [3]
    import time as _time

    assert store.prune(now=_time.time()) == 0  # within retention
    assert store.prune(now=_time.time() + 2 * 86400) == 2
    assert [r[0] for r in store.rows("SELECT seq FROM outbox")] == [3]


def test_without_aggregator_ack_puback_is_final(tmp_path):
    rec = make_recorder(tmp_path / "hall.db")
    ids = [rec.record("button.pressed", {}).id for _ in range(2)]
    rec.store.mark_published(ids, final=True)
    assert rec.store.depth == 0
    assert rec.store.rows("SELECT DISTINCT state FROM outbox") == [("acked",)]


def test_an_ack_only_covers_its_own_stream(tmp_path):
    rec = make_recorder(tmp_path / "hall.db")
    rec.record("button.pressed", {})
    rec.telemetry("device.health", {})
    assert rec.store.apply_ack(TELEMETRY, 5) == 1
    assert [(r.stream, r.seq) for r in rec.store.unacked_after(0, 10)] == [(PERSON, 1)]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_bytes(b"this is not a database at all" * 100), id="garbage"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[:4096] + b"\0" * 100), id="truncated"),
        pytest.param(lambda p: _corrupt_pages(p), id="corrupt-pages"),
    ],
)
def test_a_damaged_store_is_moved_aside_and_a_fresh_one_started(tmp_path, damage):
    path = tmp_path / "hall.db"
    rec = make_recorder(path)
    for i in range(200):
        rec.record("button.pressed", {"text": "x" * 200, "i": i})
    old_id = rec.store.store_id
    rec.store.close()
    # Fold the WAL into the main file so the damage hits the data.
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    damage(path)

    store = Store(path, reserve_mb=0)
    assert store.recovered_from is not None and store.recovered_from.exists()
    assert store.recovered_from.name.startswith("hall.db.damaged-")
    assert store.store_id != old_id
    assert store.last_seq(PERSON) == 0
    # Opening again finds a healthy store: no loop of moving files aside.
    store.close()
    again = Store(path, reserve_mb=0)
    assert again.recovered_from is None


def test_a_store_that_is_only_locked_or_cannot_migrate_is_never_set_aside(tmp_path, monkeypatch):
    from appliance.errors import StoreError

    path = tmp_path / "hall.db"
    rec = make_recorder(path)
    rec.record("button.pressed", {})
    store_id = rec.store.store_id
    rec.store.close()
    # Another process holds the file for longer than the busy timeout.
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE meta SET value = value WHERE key = 'store_id'")
    with pytest.raises(StoreError, match="cannot be opened now .*database is locked.*nothing was changed"):
        Store(path, reserve_mb=0)
    holder.execute("ROLLBACK")
    holder.close()
    # A release whose migration fails on this store (a bug, not damage).
    monkeypatch.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS + ("CREATE TABLE meta (key TEXT)",))
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", len(store_module.MIGRATIONS))
    with pytest.raises(StoreError, match="cannot be opened now .*table meta already exists"):
        Store(path, reserve_mb=0)
    monkeypatch.undo()
    assert not list(tmp_path.glob("hall.db.damaged-*"))
    store = Store(path, reserve_mb=0)
    assert store.recovered_from is None and store.store_id == store_id and store.depth == 1


def _corrupt_pages(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for offset in range(4096 * 2, len(data), 4096):
        data[offset : offset + 64] = os.urandom(64)
    path.write_bytes(bytes(data))


@pytest.fixture
def tiny_disk(tmp_path):
    """A 3 MB tmpfs, so the store really fills its file system (needs root)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_releases_the_reserve_then_fails_clearly_and_loses_nothing(tiny_disk):
    store = Store(tiny_disk / "hall.db", reserve_mb=1, free_space_floor_mb=0)
    assert store.reserve_path.exists()
    rec = Recorder(store, DEVICE, FakeClock(), "boot-1")
    recorded = []
    with pytest.raises(StoreFullError, match="no room to record button.pressed"):
        for i in range(100_000):
            recorded.append(rec.record("button.pressed", {"text": "满意" * 100, "i": i}).seq)
    assert not store.reserve_path.exists(), "the reserve was given up before failing"
    # Everything acknowledged to a person before the disk filled is still there, in order.
    seqs = [r[0] for r in store.rows("SELECT seq FROM outbox WHERE stream = 'person' ORDER BY seq")]
    assert seqs == recorded == list(range(1, len(recorded) + 1))
    assert store.rows("PRAGMA quick_check") == [("ok",)]
    store.close()


def test_an_older_schema_is_migrated_forward_keeping_its_rows(tmp_path):
    from appliance.store import MIGRATIONS, SCHEMA_VERSION

    path = tmp_path / "hall.db"
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[0].split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('store_id', 'old-store')")
    conn.executemany("INSERT INTO counters VALUES (?, ?)", [("person", 7), ("telemetry", 0), ("connect", 3)])
    conn.execute("INSERT INTO outbox (stream, seq, event_id, type, topic, payload, created_at) VALUES ('person', 7, 'e7', 'x', 't', x'7b7d', 'now')")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()

    store = Store(path, reserve_mb=0)
    assert store.recovered_from is None
    assert store.store_id == "old-store"
    assert store.rows("PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert store.last_seq(PERSON) == 7 and store.depth == 1
    assert store.rows("SELECT COUNT(*) FROM ratings") == [(0,)]


def test_a_store_from_newer_software_is_refused_not_moved_aside(tmp_path):
    from appliance.errors import StoreError

    path = tmp_path / "hall.db"
    Store(path, reserve_mb=0).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 999")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="has schema 999, newer than this software"):
        Store(path, reserve_mb=0)
    assert path.exists() and not list(tmp_path.glob("hall.db.damaged-*"))


def test_applied_state_comes_widest_scope_first_whatever_the_order_it_was_saved_in(tmp_path):
    store = Store(tmp_path / "hall.db", reserve_mb=0)
    with store.transaction() as conn:
        for scope in ("device", "hall", "township", "county"):
            Store.save_state(conn, "calendar", scope, 1, {"from": scope}, "now")
    assert list(store.applied_state("calendar")) == ["county", "township", "device", "hall"]


def test_an_alarm_is_active_only_with_the_event_that_says_so(tmp_path, monkeypatch):
    from appliance.errors import StoreError

    rec = make_recorder(tmp_path / "hall.db")
    real = rec.store.append_many

    def fails(items):
        raise StoreError("could not record alarm.raised: disk I/O error")

    monkeypatch.setattr(rec.store, "append_many", fails)
    rec.raise_alarm("board_error", "the LED board cannot be driven")  # logged, never raised
    assert rec.store.active_alarms() == []  # not active without its event: the next try sends it
    monkeypatch.setattr(rec.store, "append_many", real)
    rec.raise_alarm("board_error", "the LED board cannot be driven")
    rec.raise_alarm("board_error", "the LED board cannot be driven (module 2)")  # the same alarm, saying more
    assert [(a.code, a.detail) for a in rec.store.active_alarms()] == [("board_error", "the LED board cannot be driven (module 2)")]
    monkeypatch.setattr(rec.store, "append_many", fails)
    rec.clear_alarm("board_error")
    assert [a.code for a in rec.store.active_alarms()] == ["board_error"]  # still active: its end was not told
    monkeypatch.setattr(rec.store, "append_many", real)
    rec.clear_alarm("board_error")
    rec.clear_alarm("board_error")
    types = [t for (t,) in rec.store.rows("SELECT type FROM outbox WHERE type LIKE 'alarm.%' ORDER BY id")]
    assert types == ["alarm.raised", "alarm.cleared"] and rec.store.active_alarms() == []


@pytest.mark.parametrize(
    ("kind", "code", "damage"),
    [
        (sqlite3.DatabaseError, sqlite3.SQLITE_CORRUPT, True),
        (sqlite3.DatabaseError, sqlite3.SQLITE_NOTADB, True),
        (sqlite3.OperationalError, sqlite3.SQLITE_IOERR_READ, True),  # bad blocks: a fresh file lands elsewhere
        (sqlite3.DatabaseError, None, True),  # our own: quick_check, a missing store_id
        (sqlite3.OperationalError, sqlite3.SQLITE_BUSY, False),
        (sqlite3.OperationalError, sqlite3.SQLITE_READONLY, False),
        (sqlite3.OperationalError, sqlite3.SQLITE_CANTOPEN, False),
        (sqlite3.OperationalError, sqlite3.SQLITE_ERROR, False),  # a migration's statement failed
    ],
)
def test_only_a_damaged_file_is_damage(kind, code, damage):
    exc = kind("as SQLite says it")
    if code is not None:
        exc.sqlite_errorcode = code
    assert store_module.is_damage(exc) is damage

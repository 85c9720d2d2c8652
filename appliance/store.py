"""The store: one SQLite database that is the appliance's spine.

A domain change and its outbox row are written in one transaction, so what a person did is
either recorded and queued for the county, or not recorded at all. Each stream numbers its
events without gaps: ``person`` for what people did (ratings, check-ins, complaints), and
``telemetry`` for what the device says about itself. paho's queue lives in memory only; the
outbox here is what survives a power cut.

Outbox rows move ``pending`` → ``published`` (the broker's PUBACK carried success) →
``acked`` (the aggregator's acknowledgement covers the seq, or PUBACK where the deployment
has no aggregator ack). Acked rows are pruned after the retention period.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .errors import StoreError, StoreFullError

log = logging.getLogger(__name__)

PERSON = "person"
TELEMETRY = "telemetry"
STREAMS = (PERSON, TELEMETRY)
# Checkpoints (copying the WAL back into the database file: two fsyncs and the pages) are
# the Checkpointer thread's work, never a person's. The recording connection checkpoints by
# itself only as a backstop, once the WAL has grown this many frames (16 MiB) because nothing
# else did (a process without the daemon's checkpointer, such as the page alone).
WAL_BACKSTOP_FRAMES = 4000
# The checkpointer looks this often and copies the WAL back once this many rows were written
# since it last did: about a hundred presses with their delivery marks, some 1,000 WAL frames
# (SQLite's own default). Not more often: after a complete checkpoint the next commit starts
# the WAL over and pays for one more fsync (its header), and in a quiet hall that commit would
# be nearly every press.
CHECKPOINT_INTERVAL_S = 2.0
CHECKPOINT_AFTER_ROWS = 500

# Each entry migrates the schema from version i to i+1; never edit a shipped entry, append.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        stream TEXT NOT NULL CHECK (stream IN ('person', 'telemetry')),
        seq INTEGER NOT NULL,
        event_id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        created_at TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'published', 'acked')),
        published_at REAL,
        acked_at REAL,
        refused TEXT,
        UNIQUE (stream, seq)
    );
    CREATE INDEX outbox_unacked ON outbox (id) WHERE state != 'acked';
    CREATE INDEX outbox_acked ON outbox (acked_at) WHERE state = 'acked';
    CREATE TABLE alarms (
        code TEXT PRIMARY KEY,
        detail TEXT NOT NULL,
        raised_at TEXT NOT NULL,
        active INTEGER NOT NULL
    );
    CREATE TABLE commands_seen (
        command_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        received_at REAL NOT NULL,
        outcome TEXT NOT NULL
    );
    CREATE TABLE desired_state (
        name TEXT NOT NULL,
        scope TEXT NOT NULL,
        version INTEGER NOT NULL,
        data TEXT NOT NULL,
        applied_at TEXT NOT NULL,
        PRIMARY KEY (name, scope)
    );
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        changed_at TEXT NOT NULL,
        changed_by TEXT NOT NULL
    );
    """,
    # 2: the config page's accounts and its audit log.
    """
    CREATE TABLE users (
        username TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('director', 'county_it')),
        password_hash TEXT NOT NULL,
        must_change INTEGER NOT NULL DEFAULT 0,
        language TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        username TEXT NOT NULL,
        action TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    """,
    # 3: ratings at the windows and the follow-ups poor ratings open.
    """
    CREATE TABLE ratings (
        event_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        window TEXT NOT NULL,
        level TEXT NOT NULL,
        score INTEGER NOT NULL,
        staff_id TEXT,
        flags TEXT NOT NULL,
        at TEXT NOT NULL,
        day TEXT NOT NULL,
        clock_synced INTEGER NOT NULL,
        boot_id TEXT NOT NULL,
        mono_ns INTEGER NOT NULL
    );
    CREATE INDEX ratings_day ON ratings (day, window);
    CREATE TABLE followups (
        id TEXT PRIMARY KEY,
        rating_event_id TEXT NOT NULL REFERENCES ratings (event_id),
        window TEXT NOT NULL,
        level TEXT NOT NULL,
        staff_id TEXT,
        opened_at TEXT NOT NULL,
        boot_id TEXT NOT NULL,
        mono_ns INTEGER,
        callback_due TEXT NOT NULL,
        rectify_due TEXT NOT NULL,
        provisional INTEGER NOT NULL,
        state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'closed')),
        called_back_at TEXT,
        closed_at TEXT,
        closed_by TEXT,
        outcome TEXT,
        note TEXT,
        overdue_notified TEXT
    );
    CREATE INDEX followups_open ON followups (state, callback_due);
    """,
    # 4: duty roster and badge check-in (services/roster.py, docs/roster.md).
    """
    CREATE TABLE attendance (
        id TEXT PRIMARY KEY,
        staff_id TEXT NOT NULL,
        card TEXT NOT NULL,
        window TEXT,
        shift_key TEXT,
        shift_day TEXT,
        in_at TEXT NOT NULL,
        in_boot TEXT NOT NULL,
        in_mono INTEGER NOT NULL,
        in_verdict TEXT NOT NULL,
        out_event_id TEXT,
        out_at TEXT,
        out_boot TEXT,
        out_mono INTEGER,
        out_verdict TEXT,
        open INTEGER NOT NULL DEFAULT 1,
        closed_reason TEXT CHECK (closed_reason IN ('checked_out', 'missed_checkout')),
        closed_at TEXT,
        duplicates INTEGER NOT NULL DEFAULT 0,
        corrected INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX attendance_staff ON attendance (staff_id, in_at);
    CREATE INDEX attendance_open ON attendance (open) WHERE open = 1;
    CREATE INDEX attendance_pending ON attendance (in_verdict, out_verdict);
    CREATE TABLE attendance_verdicts (
        event_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('late', 'early_leave', 'absent')),
        staff_id TEXT NOT NULL,
        window TEXT,
        shift_key TEXT NOT NULL,
        shift_day TEXT NOT NULL,
        minutes INTEGER,
        decided_at TEXT NOT NULL,
        voided_by TEXT,
        UNIQUE (kind, shift_key)
    );
    CREATE INDEX attendance_verdicts_day ON attendance_verdicts (shift_day);
    CREATE TABLE leaves (
        id TEXT PRIMARY KEY,
        staff_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        start_at TEXT NOT NULL,
        end_at TEXT NOT NULL,
        ended_at TEXT,
        note TEXT NOT NULL,
        recorded_by TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        ended_by TEXT
    );
    CREATE INDEX leaves_staff ON leaves (staff_id, start_at);
    CREATE TABLE unknown_swipes (
        event_id TEXT PRIMARY KEY,
        card TEXT NOT NULL,
        reason TEXT NOT NULL CHECK (reason IN ('unknown', 'inactive')),
        staff_id TEXT,
        at TEXT NOT NULL,
        day TEXT NOT NULL,
        boot_id TEXT NOT NULL,
        mono_ns INTEGER NOT NULL,
        clock_synced INTEGER NOT NULL
    );
    CREATE INDEX unknown_swipes_card ON unknown_swipes (card, at);
    CREATE TABLE local_cards (
        card TEXT PRIMARY KEY,
        staff_id TEXT NOT NULL,
        recorded_by TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        event_id TEXT NOT NULL
    );
    CREATE TABLE window_gaps (
        id TEXT PRIMARY KEY,
        window TEXT NOT NULL,
        since TEXT NOT NULL,
        until TEXT,
        ended_by TEXT
    );
    CREATE INDEX window_gaps_open ON window_gaps (window) WHERE until IS NULL;
    CREATE TABLE attendance_days (
        day TEXT PRIMARY KEY,
        summarized_at TEXT NOT NULL,
        event_id TEXT NOT NULL
    );
    CREATE TABLE roster_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 5: sealed complaints (services/complaints.py, docs/complaints.md). Only ciphertext is
    # kept: the text, the contact and whom it is about are sealed to the county supervisor.
    # Nothing on the device deletes a complaint, and they are never pruned.
    """
    CREATE TABLE complaints (
        receipt TEXT PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        seq INTEGER NOT NULL,
        category TEXT NOT NULL,
        channel TEXT NOT NULL CHECK (channel IN ('form', 'transcribed')),
        transcribed_by TEXT,
        key_id TEXT NOT NULL,
        sealed BLOB NOT NULL,
        received_at TEXT NOT NULL,
        clock_synced INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'received' CHECK (status IN ('received', 'in_progress', 'answered')),
        reply TEXT,
        status_at TEXT,
        CHECK ((channel = 'transcribed') = (transcribed_by IS NOT NULL))
    );
    CREATE INDEX complaints_received ON complaints (received_at);
    CREATE TABLE complaint_status (
        id INTEGER PRIMARY KEY,
        receipt TEXT NOT NULL REFERENCES complaints (receipt),
        status TEXT NOT NULL,
        reply TEXT,
        set_by TEXT,
        at TEXT NOT NULL,
        event_id TEXT
    );
    CREATE INDEX complaint_status_unannounced ON complaint_status (id) WHERE event_id IS NULL;
    """,
    # 6: a press looks up the latest rating at its window; keep that off a full scan.
    """
    CREATE INDEX ratings_window ON ratings (window, seq);
    """,
    # 7: a press no longer looks anything up (services/ratings.py keeps its recent presses in
    # memory), and every press paid a page of this index in its commit.
    """
    DROP INDEX ratings_window;
    """,
    # 8: what a follow-up's deadlines are counted from, and how many working days each, so a
    # new hall calendar can count them again (services/ratings.py, Ratings.reschedule). NULL in
    # a follow-up opened before: counted from opened_at with the configured days.
    """
    ALTER TABLE followups ADD COLUMN counted_from TEXT;
    ALTER TABLE followups ADD COLUMN callback_days INTEGER;
    ALTER TABLE followups ADD COLUMN rectify_days INTEGER;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class OutboxRow:
    """One queued event as the uplink sends it."""

    id: int
    stream: str
    seq: int
    event_id: str
    type: str
    topic: str
    payload: bytes
    state: str


@dataclass(frozen=True)
class Recorded:
    """An event that is durably in the store."""

    id: int
    stream: str
    seq: int
    envelope: dict
    topic: str
    payload: bytes


@dataclass(frozen=True)
class Pending:
    """An event about to be recorded: ``build(seq)`` makes the envelope, ``domain`` writes rows."""

    stream: str
    event_type: str
    topic: str
    build: Callable[[int], dict]
    domain: Callable[[sqlite3.Connection, dict], None] | None = None


@dataclass(frozen=True)
class Alarm:
    """A condition county IT should see, active until cleared."""

    code: str
    detail: str
    raised_at: str


def _is_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc)


def is_damage(exc: sqlite3.Error) -> bool:
    """Whether opening failed because the file itself is damaged (then it is set aside).

    Damage is SQLite's CORRUPT and NOTADB, an I/O error reading it (bad blocks on the card:
    a fresh file lands elsewhere and the hall keeps working), and our own checks (quick_check,
    a missing store_id), which carry no SQLite code. A store that is locked, read-only or that
    a migration cannot change is not damaged: setting it aside would abandon its unsent
    events, so opening fails and is tried again at the next start.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return not isinstance(exc, sqlite3.OperationalError)
    return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_IOERR)


class Store:
    """The SQLite store; safe to share between the daemon's threads and to open from two processes."""

    def __init__(
        self,
        path: str | Path,
        *,
        outbox_cap: int = 200_000,
        retention_days: float = 30.0,
        free_space_floor_mb: int = 200,
        reserve_mb: int = 32,
        free_bytes: Callable[[Path], int] | None = None,
        recover: bool = True,
    ) -> None:
        self.path = Path(path)
        self.outbox_cap = outbox_cap
        self.retention_s = retention_days * 86400
        self.floor_bytes = free_space_floor_mb << 20
        self.reserve_bytes = reserve_mb << 20
        self.reserve_path = self.path.with_name(self.path.name + ".reserve")
        self._free_bytes = free_bytes or (lambda p: shutil.disk_usage(p).free)
        self._lock = threading.RLock()
        # The bookkeeping connection's own lock: its checkpoints run under this one alone, so
        # a press is never queued behind one. Order: _bk_lock before _lock, never the reverse.
        self._bk_lock = threading.Lock()
        self._checkpointed_at = 0  # rows written by both connections at the last checkpoint
        self._listeners: list[Callable[[Recorded], None]] = []
        self.recovered_from: Path | None = None
        # Only the daemon moves a damaged file aside; another process (the web page) that
        # finds it damaged reports the error instead of racing the daemon.
        self.recover = recover
        self.dropped_telemetry = 0
        self.below_floor = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = self._open_checked()
        # Delivery bookkeeping (published, acked) goes through a second connection with
        # synchronous=NORMAL: losing the last few marks in a power cut only means a resend,
        # which consumers de-duplicate, and it spares the card an fsync per PUBACK.
        self._bk = self._connect("NORMAL", autocheckpoint=0)
        self.store_id: str = self._meta("store_id")
        self._depth = self._count_unacked()
        if recover:
            self._ensure_reserve()

    # -- opening ------------------------------------------------------------------------

    def _connect(self, synchronous: str = "FULL", autocheckpoint: int = WAL_BACKSTOP_FRAMES) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE) so a seq is
        # allocated and used under one write lock.
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on the card before we tell anyone it happened.
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        # 512 KiB of page cache per connection instead of SQLite's 2 MB: a status query that
        # walks the outbox would otherwise fill 2 MB on each of the daemon's and the page's
        # connections, on a Pi Zero 2 with 512 MB for everything. Reads the cache misses
        # come from the kernel's page cache, not the card.
        conn.execute("PRAGMA cache_size = -512")
        conn.execute(f"PRAGMA wal_autocheckpoint = {int(autocheckpoint)}")
        return conn

    def _open_checked(self) -> sqlite3.Connection:
        conn = None
        try:
            conn = self._connect()
            result = conn.execute("PRAGMA quick_check").fetchone()
            if result is None or result[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {result[0] if result else 'no answer'}")
            self._migrate(conn)
            return conn
        except sqlite3.DatabaseError as exc:
            if _is_full(exc):
                raise StoreFullError(f"{self.path}: no room to open the store ({exc})") from exc
            if conn is not None:
                conn.close()
            if not is_damage(exc):
                raise StoreError(f"{self.path} cannot be opened now ({exc}); nothing was changed, and the next start tries again") from exc
            if not self.recover:
                raise StoreError(f"{self.path} cannot be used ({exc}); the daemon repairs it when it starts") from exc
            self.recovered_from = self._move_aside(str(exc))
            conn = self._connect()
            self._migrate(conn)
            return conn

    def _move_aside(self, reason: str) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{n}")
            n += 1
        log.error("store %s is damaged (%s); keeping it as %s and starting a fresh store", self.path, reason, target)
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, Path(str(target) + suffix))
        return target

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema {version}, newer than this software's {SCHEMA_VERSION}; run the newer release or restore a backup")
        if version == SCHEMA_VERSION:
            if conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone() is None:
                raise sqlite3.DatabaseError("store_id missing")
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            for i in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[i].split(";"):
                    if statement.strip():
                        conn.execute(statement)
            if version == 0:
                conn.execute("INSERT INTO meta VALUES ('store_id', ?)", (str(uuid.uuid4()),))
                conn.execute("INSERT INTO meta VALUES ('created_at', ?)", (time.strftime("%Y-%m-%dT%H:%M:%S%z"),))
                conn.executemany("INSERT INTO counters VALUES (?, 0)", [(s,) for s in STREAMS] + [("connect",)])
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _meta(self, key: str) -> str:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0]

    def close(self) -> None:
        """Close the database; the store is unusable afterwards."""
        with self._bk_lock, self._lock:
            self._bk.close()
            self._conn.close()

    # -- recording ----------------------------------------------------------------------

    def add_listener(self, fn: Callable[[Recorded], None]) -> None:
        """Call ``fn`` after every committed event (the uplink uses it to wake up)."""
        self._listeners.append(fn)

    def append(
        self,
        stream: str,
        event_type: str,
        topic: str,
        build: Callable[[int], dict],
        *,
        droppable: bool = False,
        domain: Callable[[sqlite3.Connection, dict], None] | None = None,
    ) -> Recorded | None:
        """Record one event: ``build(seq)`` makes its envelope, ``domain`` writes its domain rows.

        Both happen in one transaction. Returns None only for a droppable telemetry event
        refused at the outbox cap or below the free-space floor; what a person did is never
        refused, and a full disk raises StoreFullError after releasing the reserve.
        """
        if droppable and (self._depth >= self.outbox_cap or self.below_floor):
            self.dropped_telemetry += 1
            return None
        return self.append_many([Pending(stream, event_type, topic, build, domain)])[0]

    def append_many(self, items: list["Pending"]) -> list[Recorded]:
        """Record several events in one transaction (a rating and the follow-up it opens)."""
        for item in items:
            if item.stream not in STREAMS:
                raise ValueError(f"unknown stream {item.stream!r}")
        names = ", ".join(item.event_type for item in items)
        with self._lock:
            for attempt in (1, 2):
                try:
                    recorded = self._append_once(items)
                    break
                except sqlite3.OperationalError as exc:
                    if not _is_full(exc):
                        raise StoreError(f"could not record {names}: {exc}") from exc
                    if attempt == 2 or not self.release_reserve():
                        raise StoreFullError(f"no room to record {names} in {self.path}: {exc}") from exc
            self._depth += len(recorded)
        for r in recorded:
            for fn in self._listeners:
                fn(r)
        return recorded

    def _append_once(self, items: list["Pending"]) -> list[Recorded]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        out = []
        try:
            for item in items:
                seq = conn.execute("UPDATE counters SET value = value + 1 WHERE name = ? RETURNING value", (item.stream,)).fetchone()[0]
                envelope = item.build(seq)
                if item.domain is not None:
                    item.domain(conn, envelope)
                payload = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
                cur = conn.execute(
                    "INSERT INTO outbox (stream, seq, event_id, type, topic, payload, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (item.stream, seq, envelope["event_id"], item.event_type, item.topic, payload, envelope["time"]),
                )
                out.append(Recorded(cur.lastrowid, item.stream, seq, envelope, item.topic, payload))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return out

    # -- the outbox, for the uplink -----------------------------------------------------

    def unacked_after(self, after_id: int, limit: int) -> list[OutboxRow]:
        """Rows not yet acknowledged, in recording order, after ``after_id``."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, stream, seq, event_id, type, topic, payload, state FROM outbox"
                " WHERE state != 'acked' AND id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [OutboxRow(*r) for r in rows]

    def mark_published(self, row_ids: list[int], *, final: bool) -> None:
        """The broker accepted these rows; ``final`` when no aggregator ack is expected."""
        if not row_ids:
            return
        now = time.time()
        params = [(now, now, i) for i in row_ids] if final else [(now, i) for i in row_ids]
        with self._bk_lock, self._lock:
            self._bk.execute("BEGIN")
            try:
                if final:
                    before = self._bk.total_changes
                    self._bk.executemany(
                        "UPDATE outbox SET state = 'acked', published_at = ?, acked_at = ?, refused = NULL WHERE id = ? AND state != 'acked'",
                        params,
                    )
                    self._depth -= self._bk.total_changes - before
                else:
                    self._bk.executemany(
                        "UPDATE outbox SET state = 'published', published_at = ?, refused = NULL WHERE id = ? AND state = 'pending'",
                        params,
                    )
                self._bk.execute("COMMIT")
            except BaseException:
                self._bk.execute("ROLLBACK")
                raise

    def mark_refused(self, row_id: int, reason: str) -> None:
        """The broker refused the row (e.g. by ACL); it stays pending."""
        with self._bk_lock, self._lock:
            self._bk.execute("UPDATE outbox SET refused = ? WHERE id = ?", (reason, row_id))

    def apply_ack(self, stream: str, upto_seq: int) -> int:
        """Mark every row of ``stream`` up to ``upto_seq`` acknowledged; returns how many changed."""
        with self._bk_lock, self._lock:
            n = self._bk.execute(
                "UPDATE outbox SET state = 'acked', acked_at = ? WHERE stream = ? AND seq <= ? AND state != 'acked'",
                (time.time(), stream, upto_seq),
            ).rowcount
            self._depth -= n
        return n

    def last_seq(self, stream: str) -> int:
        """The highest seq allocated in ``stream``."""
        with self._lock:
            return self._conn.execute("SELECT value FROM counters WHERE name = ?", (stream,)).fetchone()[0]

    def _count_unacked(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM outbox WHERE state != 'acked'").fetchone()[0]

    @property
    def depth(self) -> int:
        """Events recorded and not yet acknowledged."""
        return self._depth

    def outbox_summary(self) -> dict:
        """Depth, the oldest pending event and refused rows, as the status message shows them."""
        with self._lock:
            self._depth = self._count_unacked()
            oldest = self._conn.execute(
                "SELECT event_id, type, created_at FROM outbox WHERE state != 'acked' ORDER BY id LIMIT 1"
            ).fetchone()
            refused = self._conn.execute(
                "SELECT COUNT(*), (SELECT refused FROM outbox WHERE state != 'acked' AND refused IS NOT NULL ORDER BY id DESC LIMIT 1)"
                " FROM outbox WHERE state != 'acked' AND refused IS NOT NULL"
            ).fetchone()
        return {
            "depth": self._depth,
            "cap": self.outbox_cap,
            "oldest": {"event_id": oldest[0], "type": oldest[1], "time": oldest[2]} if oldest else None,
            "refused": refused[0],
            "last_refusal": refused[1],
            "dropped_telemetry": self.dropped_telemetry,
        }

    def recent_events(self, limit: int = 20) -> list[dict]:
        """The latest events, newest first, with their outbox state."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT payload, state, refused FROM outbox ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        out = []
        for payload, state, refused in rows:
            env = json.loads(payload)
            env["outbox_state"] = state
            if refused:
                env["refused"] = refused
            out.append(env)
        return out

    # -- housekeeping -------------------------------------------------------------------

    def next_connect_count(self) -> int:
        """Count one more connection attempt; birth and Will carry it so a late Will loses."""
        with self._lock:
            return self._conn.execute("UPDATE counters SET value = value + 1 WHERE name = 'connect' RETURNING value").fetchone()[0]

    def prune(self, now: float | None = None) -> int:
        """Delete acknowledged rows older than the retention period; returns how many."""
        cutoff = (now or time.time()) - self.retention_s
        with self._lock:
            n = self._conn.execute("DELETE FROM outbox WHERE state = 'acked' AND acked_at < ?", (cutoff,)).rowcount
            self._conn.execute("DELETE FROM commands_seen WHERE received_at < ?", (cutoff - 30 * 86400,))
        return n

    def checkpoint(self, *, after_rows: int = 0) -> tuple[int, int] | None:
        """Copy what the WAL holds into the database file; returns (frames in the WAL, copied).

        Only once ``after_rows`` rows were written through this store since the last time
        (None when fewer were). PASSIVE: it neither waits for nor blocks a writer, and it runs
        on the bookkeeping connection under that connection's lock alone, so a press is never
        queued behind it (they still share the card). With nothing new in the WAL it writes
        nothing.
        """
        with self._bk_lock:
            # Reading the recording connection's counter needs no _lock: SQLite serialises it.
            written = self._conn.total_changes + self._bk.total_changes
            if written - self._checkpointed_at < after_rows:
                return None
            _busy, frames, copied = self._bk.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self._checkpointed_at = written
        return frames, copied

    def free_bytes(self) -> int:
        """Free space on the store's file system."""
        return self._free_bytes(self.path.parent)

    def check_space(self) -> bool:
        """Update ``below_floor`` from the free space; True while above the floor."""
        try:
            free = self.free_bytes()
        except OSError:
            return not self.below_floor
        self.below_floor = free < self.floor_bytes
        if not self.below_floor:
            self._ensure_reserve()
        return not self.below_floor

    def _ensure_reserve(self) -> None:
        # A file of reserve_mb kept on the card: when SQLite finds the disk full, deleting it
        # gives what people do room while the alarm brings someone to clear space.
        if self.reserve_bytes <= 0 or self.reserve_path.exists():
            return
        try:
            if self.free_bytes() < self.floor_bytes + self.reserve_bytes:
                return
            fd = os.open(self.reserve_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.reserve_bytes)
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("could not keep a %d MB reserve beside the store: %s", self.reserve_bytes >> 20, exc)
            self.reserve_path.unlink(missing_ok=True)

    def release_reserve(self) -> bool:
        """Give the reserve's room back to the file system; False if there was none."""
        try:
            self.reserve_path.unlink()
        except FileNotFoundError:
            return False
        log.error("disk full: released the %d MB reserve so what people do can still be recorded", self.reserve_bytes >> 20)
        return True

    # -- alarms ---------------------------------------------------------------------------

    def alarm_detail(self, code: str) -> str | None:
        """The detail of an alarm in force, or None when it is not."""
        with self._lock:
            row = self._conn.execute("SELECT detail FROM alarms WHERE code = ? AND active = 1", (code,)).fetchone()
        return row[0] if row else None

    def update_alarm_detail(self, code: str, detail: str) -> None:
        """An alarm still in force says more (a second button jammed); no event."""
        with self._lock:
            self._conn.execute("UPDATE alarms SET detail = ? WHERE code = ? AND active = 1", (detail, code))

    @staticmethod
    def activate_alarm(conn: sqlite3.Connection, code: str, detail: str, raised_at: datetime) -> bool:
        """Inside the transaction of its alarm.raised: mark it active; False if it already was."""
        row = conn.execute("SELECT active FROM alarms WHERE code = ?", (code,)).fetchone()
        if row and row[0]:
            return False
        conn.execute(
            "INSERT INTO alarms VALUES (?, ?, ?, 1) ON CONFLICT (code) DO UPDATE SET detail = excluded.detail, raised_at = excluded.raised_at, active = 1",
            (code, detail, raised_at.isoformat(timespec="seconds")),
        )
        return True

    @staticmethod
    def deactivate_alarm(conn: sqlite3.Connection, code: str) -> bool:
        """Inside the transaction of its alarm.cleared: mark it inactive; False if it was not active."""
        return conn.execute("UPDATE alarms SET active = 0 WHERE code = ? AND active = 1", (code,)).rowcount > 0

    def active_alarms(self) -> list[Alarm]:
        """Alarms in force, oldest first."""
        with self._lock:
            rows = self._conn.execute("SELECT code, detail, raised_at FROM alarms WHERE active = 1 ORDER BY raised_at").fetchall()
        return [Alarm(*r) for r in rows]

    # -- commands -------------------------------------------------------------------------

    def command_seen(self, command_id: str) -> str | None:
        """The outcome of a one-off command already handled, or None."""
        with self._lock:
            row = self._conn.execute("SELECT outcome FROM commands_seen WHERE command_id = ?", (command_id,)).fetchone()
        return row[0] if row else None

    def remember_command(self, conn: sqlite3.Connection, command_id: str, name: str, outcome: str) -> None:
        """Inside a recording transaction: note a one-off command as handled."""
        conn.execute("INSERT OR IGNORE INTO commands_seen VALUES (?, ?, ?, ?)", (command_id, name, time.time(), outcome))

    def applied_state(self, name: str) -> dict[str, tuple[int, Any]]:
        """The desired state applied for ``name``: scope → (version, data), widest scope first.

        The order matters: merges let a narrower scope override a wider one.
        """
        with self._lock:
            rows = self._conn.execute(
                "SELECT scope, version, data FROM desired_state WHERE name = ?"
                " ORDER BY CASE scope WHEN 'county' THEN 0 WHEN 'township' THEN 1 WHEN 'device' THEN 2 ELSE 3 END, scope",
                (name,),
            ).fetchall()
        return {scope: (version, json.loads(data)) for scope, version, data in rows}

    def applied_versions(self) -> dict[str, dict[str, int]]:
        """Every desired-state version applied: name → scope → version."""
        with self._lock:
            rows = self._conn.execute("SELECT name, scope, version FROM desired_state ORDER BY name, scope").fetchall()
        out: dict[str, dict[str, int]] = {}
        for name, scope, version in rows:
            out.setdefault(name, {})[scope] = version
        return out

    @staticmethod
    def save_state(conn: sqlite3.Connection, name: str, scope: str, version: int, data: Any, applied_at: str) -> None:
        """Inside a recording transaction: keep the desired state just applied."""
        conn.execute(
            "INSERT INTO desired_state VALUES (?, ?, ?, ?, ?) ON CONFLICT (name, scope) DO UPDATE SET"
            " version = excluded.version, data = excluded.data, applied_at = excluded.applied_at",
            (name, scope, version, json.dumps(data, ensure_ascii=False), applied_at),
        )

    def local_settings(self) -> dict[str, Any]:
        """Settings changed on the config page: key → value."""
        with self._lock:
            rows = self._conn.execute("SELECT key, value FROM settings").fetchall()
        return {key: json.loads(value) for key, value in rows}

    def rows(self, sql: str, params: Iterable = ()) -> list[tuple]:
        """Run a read-only query (for services and tests that read their own tables)."""
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    def write_many(self, sql: str, params: Iterable[tuple]) -> None:
        """Run one statement over many parameter rows in one transaction (domain corrections)."""
        with self.transaction() as conn:
            conn.executemany(sql, list(params))

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction for rows that are not events (the page's accounts, audit, settings).

        What runs inside commits together (synchronous=FULL), or none of it does; events
        still go through ``append``.
        """
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):
                    if _is_full(exc):
                        raise StoreFullError(f"no room to write to {self.path}: {exc}") from exc
                    raise StoreError(f"could not write to {self.path}: {exc}") from exc
                raise


class Checkpointer(threading.Thread):
    """Copies the WAL back into the database file off every person's path (see Store.checkpoint)."""

    def __init__(self, store: Store, interval_s: float | None = None, after_rows: int | None = None) -> None:
        super().__init__(name="checkpoint", daemon=True)
        self.store = store
        self.interval_s = CHECKPOINT_INTERVAL_S if interval_s is None else interval_s
        self.after_rows = CHECKPOINT_AFTER_ROWS if after_rows is None else after_rows
        self._halt = threading.Event()

    def run(self) -> None:
        failing = False
        while not self._halt.wait(self.interval_s):
            try:
                self.store.checkpoint(after_rows=self.after_rows)
            except Exception as exc:  # noqa: BLE001 - a busy or full disk; the next turn tries again
                # Nothing is lost meanwhile (the WAL holds it); said once, not every turn.
                if not failing:
                    log.warning("WAL checkpoint failed, retrying every %g s: %s", self.interval_s, exc)
                failing = True
            else:
                if failing:
                    log.info("WAL checkpoint works again")
                failing = False

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(10)

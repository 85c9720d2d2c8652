"""What services need from the core, as protocols: a clock, an event sink, readable rows.

Services never import ``appliance``; the core implements these (``appliance.events.Recorder``,
``appliance.store.Store``, ``appliance.clock``) and tests pass fakes or the real thing.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Protocol

PERSON = "person"
TELEMETRY = "telemetry"

Domain = Callable[[sqlite3.Connection, dict], None]


def new_event_id() -> str:
    """A new event_id: a time-ordered UUID (version 7, RFC 9562), as unique as any other.

    Each event's id is a key of the outbox's event_id index, and a rating's of the ratings
    table's. Ids that grow with time go in at the right edge of those indexes, on the page the
    last press wrote and SQLite still has in cache, instead of on a random page that must be
    read first and that fills and splits at random (bench/edge_bench.py: about 7 % off a
    press's p99). Only the order matters here; the milliseconds in it are the wall clock's,
    right or not, and consumers treat the id as opaque.
    """
    ms = time.time_ns() // 1_000_000 & (1 << 48) - 1
    rand = int.from_bytes(os.urandom(10), "big")
    return str(uuid.UUID(int=ms << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64 | 0b10 << 62 | rand & (1 << 62) - 1))


@dataclass(frozen=True)
class EventSpec:
    """One event to record; several recorded together commit together.

    ``event_id`` may be chosen up front so one event can name another (a follow-up names
    the rating that opened it).
    """

    type: str
    data: dict
    stream: str = PERSON
    domain: Domain | None = None
    event_id: str | None = None


class Clock(Protocol):
    def now(self) -> datetime: ...
    def monotonic_ns(self) -> int: ...
    def is_synced(self) -> bool: ...


class Rows(Protocol):
    """Read access to the store, and corrections that are not events."""

    def rows(self, sql: str, params: Iterable = ()) -> list[tuple]: ...

    def write_many(self, sql: str, params: Iterable[tuple]) -> None: ...


class EventSink(Protocol):
    """Records events durably; returns what was recorded (with ``envelope`` and ``seq``)."""

    boot_id: str

    def record_together(self, events: list[EventSpec]) -> list[Any]: ...

    def raise_alarm(self, code: str, detail: str) -> None: ...

    def clear_alarm(self, code: str) -> None: ...

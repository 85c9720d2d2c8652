"""What services need from the core, as protocols: a clock, an event sink, readable rows.

Services never import ``appliance``; the core implements these (``appliance.events.Recorder``,
``appliance.store.Store``, ``appliance.clock``) and tests pass fakes or the real thing.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Protocol

PERSON = "person"
TELEMETRY = "telemetry"

Domain = Callable[[sqlite3.Connection, dict], None]


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

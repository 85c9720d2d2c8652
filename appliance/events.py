"""Events: the envelope every message carries, the topic tree, and the recorder services use.

The topic tree is versioned and hierarchical so a dashboard subscribes to a county or a
township with one wildcard, and the device segment equals the MQTT username so one pattern
ACL (``hall/v1/+/+/%u/evt/#``) confines every device to its own topics. ``docs/mqtt.md``
is the contract; keep it in step with this file.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from typing import Callable, Protocol

from .clock import Clock
from .config import DeviceConfig
from services.sink import EventSpec, new_event_id

from .errors import StoreError
from .store import PERSON, TELEMETRY, Pending, Recorded, Store

log = logging.getLogger(__name__)

ROOT = "hall/v1"
# Scopes of desired state, widest first; a narrower scope overrides or adds to a wider one.
SCOPES = ("county", "township", "device")


@dataclass(frozen=True)
class Topics:
    """Every topic one device publishes or subscribes to."""

    county: str
    township: str
    device: str

    @classmethod
    def for_device(cls, device: DeviceConfig) -> "Topics":
        return cls(device.county, device.township, device.id)

    @property
    def base(self) -> str:
        return f"{ROOT}/{self.county}/{self.township}/{self.device}"

    def event(self, event_type: str) -> str:
        """Where an event of ``event_type`` ('rating.recorded') is published: …/evt/rating/recorded."""
        return f"{self.base}/evt/{event_type.replace('.', '/')}"

    @property
    def status(self) -> str:
        """Retained birth/death message."""
        return f"{self.base}/status"

    @property
    def ack(self) -> str:
        """Retained acknowledgement the aggregator writes for this device."""
        return f"{self.base}/ack"

    def desired(self, scope: str, name: str = "+") -> str:
        """Retained desired state ``name`` at ``scope``."""
        if scope == "device":
            return f"{self.base}/set/{name}"
        if scope == "township":
            return f"{ROOT}/{self.county}/{self.township}/_township/set/{name}"
        if scope == "county":
            return f"{ROOT}/{self.county}/_county/_county/set/{name}"
        raise ValueError(f"unknown scope {scope!r}")

    def command(self, name: str = "+") -> str:
        """One-off action ``name`` for this device (not retained)."""
        return f"{self.base}/cmd/{name}"

    def classify(self, topic: str) -> tuple[str, str, str] | None:
        """('ack'|'set'|'cmd', scope, name) for a topic this device subscribes to, else None."""
        if topic == self.ack:
            return ("ack", "device", "ack")
        for scope in SCOPES:
            prefix = self.desired(scope, "")
            if topic.startswith(prefix) and "/" not in topic[len(prefix):] and topic[len(prefix):]:
                return ("set", scope, topic[len(prefix):])
        prefix = self.command("")
        if topic.startswith(prefix) and "/" not in topic[len(prefix):] and topic[len(prefix):]:
            return ("cmd", "device", topic[len(prefix):])
        return None


class EventSink(Protocol):
    """What services record events through."""

    def record(
        self,
        event_type: str,
        data: dict,
        *,
        stream: str = PERSON,
        droppable: bool = False,
        domain: Callable[[sqlite3.Connection, dict], None] | None = None,
    ) -> Recorded | None: ...


class _Unchanged(Exception):
    """An alarm was already in the state asked for: the event's transaction is rolled back."""


class Recorder:
    """Builds the envelope and records each event with its domain rows in one transaction."""

    def __init__(self, store: Store, device: DeviceConfig, clock: Clock, boot_id: str) -> None:
        self.store = store
        self.device = device
        self.topics = Topics.for_device(device)
        self.clock = clock
        self.boot_id = boot_id

    def envelope(self, event_type: str, stream: str, seq: int, data: dict, event_id: str | None = None) -> dict:
        """The envelope for one event; see docs/mqtt.md for every field."""
        return {
            "v": 1,
            "event_id": event_id or new_event_id(),
            "type": event_type,
            "stream": stream,
            "seq": seq,
            "store_id": self.store.store_id,
            "device_id": self.device.id,
            "hall": self.device.hall,
            "township": self.device.township,
            "county": self.device.county,
            "boot_id": self.boot_id,
            "mono_ns": self.clock.monotonic_ns(),
            "time": self.clock.now().isoformat(timespec="milliseconds"),
            "clock_synced": self.clock.is_synced(),
            "data": data,
        }

    def record(
        self,
        event_type: str,
        data: dict,
        *,
        stream: str = PERSON,
        droppable: bool = False,
        domain: Callable[[sqlite3.Connection, dict], None] | None = None,
    ) -> Recorded | None:
        """Record an event durably; what a person did goes in ``person``, the rest in ``telemetry``."""
        return self.store.append(
            stream,
            event_type,
            self.topics.event(event_type),
            lambda seq: self.envelope(event_type, stream, seq, data),
            droppable=droppable,
            domain=domain,
        )

    def record_together(self, events: list[EventSpec]) -> list[Recorded]:
        """Record several events in one transaction: all of them or none."""
        return self.store.append_many(
            [
                Pending(
                    e.stream,
                    e.type,
                    self.topics.event(e.type),
                    (lambda seq, e=e: self.envelope(e.type, e.stream, seq, e.data, e.event_id)),
                    e.domain,
                )
                for e in events
            ]
        )

    def telemetry(self, event_type: str, data: dict, *, droppable: bool = True, domain=None) -> Recorded | None:
        """Record a device event; droppable ones give way at the outbox cap."""
        return self.record(event_type, data, stream=TELEMETRY, droppable=droppable, domain=domain)

    def raise_alarm(self, code: str, detail: str) -> None:
        """Raise an alarm once: kept active in the store and published as ``alarm.raised``.

        The alarm row and its event are one transaction: an alarm is never active without the
        event that tells the county (a failed write, a kill in between). Never raises: an
        alarm about a full disk must not become a second failure.
        """
        log.warning("alarm %s: %s", code, detail)
        try:
            current = self.store.alarm_detail(code)
            if current is not None:
                if current != detail:
                    self.store.update_alarm_detail(code, detail)  # the same alarm, saying more
                return
            now = self.clock.now()

            def activate(conn: sqlite3.Connection, envelope: dict) -> None:
                if not Store.activate_alarm(conn, code, detail, now):
                    raise _Unchanged  # raised meanwhile by another thread: no second event

            self.telemetry("alarm.raised", {"code": code, "detail": detail}, droppable=False, domain=activate)
        except _Unchanged:
            pass
        except (StoreError, sqlite3.Error) as exc:
            log.error("could not record alarm %s: %s", code, exc)

    def clear_alarm(self, code: str) -> None:
        """Clear an alarm that is active, publishing ``alarm.cleared`` in the same transaction."""
        try:
            if self.store.alarm_detail(code) is None:
                return

            def deactivate(conn: sqlite3.Connection, envelope: dict) -> None:
                if not Store.deactivate_alarm(conn, code):
                    raise _Unchanged

            self.telemetry("alarm.cleared", {"code": code}, droppable=False, domain=deactivate)
            log.info("alarm %s cleared", code)
        except _Unchanged:
            pass
        except (StoreError, sqlite3.Error) as exc:
            log.error("could not record the end of alarm %s: %s", code, exc)

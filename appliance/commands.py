"""Commands from the county: retained desired state and one-off actions, each to its handler.

Desired state (board content, roster, calendar, settings) is retained and versioned at three
scopes; a handler sees every scope's latest data and applies the merge. One-off actions
(close a follow-up, set a complaint's status, resync) arrive on the persistent session and
are applied once per ``command_id``. Whatever arrives, the answer is an event —
``state.applied``, ``command.applied`` or ``command.rejected`` — and never a crash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from dataclasses import dataclass
from typing import Any, Callable

from .errors import CommandDeferred, CommandRejected, StoreError
from .events import SCOPES, Recorder

log = logging.getLogger(__name__)

# A validator turns the payload's ``data`` into what apply() takes, or raises CommandRejected.
Validate = Callable[[Any], Any]
# apply() runs inside the transaction that records the result event; after() once committed.
ApplyState = Callable[[sqlite3.Connection, dict[str, Any]], None]
ApplyAction = Callable[[sqlite3.Connection, Any], dict]
After = Callable[[Any], None]


@dataclass(frozen=True)
class StateHandler:
    """Applies one kind of desired state; ``apply`` gets scope → validated data, widest first."""

    validate: Validate
    apply: ApplyState
    after: After | None = None


@dataclass(frozen=True)
class ActionHandler:
    """Applies one kind of one-off action."""

    validate: Validate
    apply: ApplyAction
    after: After | None = None


def require(obj: Any, key: str, kind: type | tuple[type, ...], *, path: str = "", fix: str = "") -> Any:
    """Read ``obj[key]`` of ``kind`` or raise CommandRejected naming the field."""
    name = f"{path}.{key}" if path else key
    if not isinstance(obj, dict) or key not in obj:
        raise CommandRejected(f"is required{'; ' + fix if fix else ''}", name)
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise CommandRejected(f"must be {' or '.join(k.__name__ for k in kinds)}, got {json.dumps(value, ensure_ascii=False)[:80]}{'; ' + fix if fix else ''}", name)
    return value


# A version is stored as SQLite's 64-bit integer.
MAX_VERSION = (1 << 63) - 1
# How many times a message the store could not take is left unacknowledged (to come again
# after a reconnect) before it is acknowledged unapplied, with one command.rejected if that
# can be recorded; later copies (a retained state comes on every connect) are acknowledged at
# once while the store still fails, and applied as soon as it works.
MAX_DEFERRALS = 3


def _message_key(topic: str, payload: bytes) -> str:
    """The same MQTT message, however often it comes (CommandRouter's deferral count)."""
    return hashlib.sha256(topic.encode() + b"\0" + payload).hexdigest()


class CommandRouter:
    """The registry of handlers; ``handle()`` takes one MQTT message and raises only
    CommandDeferred (the store failed: nothing applied, the message must not be acknowledged)."""

    def __init__(self, recorder: Recorder, max_bytes: int = 1 << 20) -> None:
        self.recorder = recorder
        self.store = recorder.store
        self.max_bytes = max_bytes
        self.states: dict[str, StateHandler] = {}
        self.actions: dict[str, ActionHandler] = {}
        self._rejected: dict[tuple[str, str], int] = {}
        self._deferred: dict[str, int] = {}  # sha256 of topic and payload -> times deferred

    def register_state(self, name: str, handler: StateHandler) -> None:
        self.states[name] = handler

    def register_action(self, name: str, handler: ActionHandler) -> None:
        self.actions[name] = handler

    def handle(self, kind: str, scope: str, name: str, payload: bytes, topic: str) -> None:
        """Apply a message from a ``set`` (desired state) or ``cmd`` (one-off) topic."""
        context: dict[str, Any] = {"topic": topic, "kind": "state" if kind == "set" else "action", "name": name}
        if kind == "set":
            context["scope"] = scope
        try:
            if kind == "set":
                self._handle_state(scope, name, payload, context)
            else:
                self._handle_action(name, payload, context)
            if self._deferred:  # taken at last: forget its earlier tries
                self._deferred.pop(_message_key(topic, payload), None)
        except CommandRejected as exc:
            self._reject(context, exc)
        except StoreError as exc:
            # Nothing was applied. Unacknowledged, the message comes again after the uplink
            # reconnects (a one-off from the persistent session, state as the retained one),
            # a few times only: a store that stays broken must not keep the uplink from
            # sending everything else.
            key = _message_key(topic, payload)
            tries = self._deferred.get(key, 0) + 1
            if len(self._deferred) > 100:
                self._deferred.clear()
            self._deferred[key] = tries  # kept after giving up: a retained copy comes again at once
            if tries <= MAX_DEFERRALS:
                log.error("could not apply %s %s: %s; it is taken again after the reconnect (%d of %d)", context["kind"], name, exc, tries, MAX_DEFERRALS)
                raise CommandDeferred(f"{context['kind']} {name}: {exc}") from exc
            log.error("could not apply %s %s (%d tries): %s; acknowledged without applying it", context["kind"], name, tries, exc)
            if tries == MAX_DEFERRALS + 1:
                # Said once. Not remembered as handled: the same command_id may be sent again.
                self._reject(context, CommandRejected(f"the device could not record it ({exc}); nothing was applied: send it again later"), remember=False)
        except Exception as exc:  # noqa: BLE001 - a bad command must never stop the uplink
            log.exception("handler for %s %s failed", context["kind"], name)
            if kind == "set" and "version" in context:
                self._rejected[(name, scope)] = context["version"]  # reported once, as any refusal
            self._reject(context, CommandRejected(f"the device could not apply it ({type(exc).__name__}: {exc})"))

    def _parse(self, payload: bytes) -> dict:
        if len(payload) > self.max_bytes:
            raise CommandRejected(f"is {len(payload)} bytes, over the limit of {self.max_bytes}; split the content or raise broker.max_command_bytes", "payload")
        try:
            doc = json.loads(payload.decode("utf-8"))
            # JSON may spell half a UTF-16 pair ("\\ud800"), which no UTF-8 event can carry:
            # echoed in a rejection or stored, it would fail every time the message came again.
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CommandRejected(f"is not UTF-8 JSON ({exc}); send a JSON object", "payload") from None
        except UnicodeEncodeError:
            raise CommandRejected("contains a lone UTF-16 surrogate escape (\\ud800 to \\udfff without its pair); send the text as Unicode characters", "payload") from None
        except RecursionError:
            raise CommandRejected("is nested too deeply to read; send a flatter JSON object", "payload") from None
        if not isinstance(doc, dict):
            raise CommandRejected("must be a JSON object", "payload")
        return doc

    def _handle_state(self, scope: str, name: str, payload: bytes, context: dict) -> None:
        if not payload:
            # An empty retained message clears the topic at the broker; the device keeps what
            # it applied, so a mistaken clear never blanks 200 halls. Publish a new version to change it.
            log.info("desired state %s at %s scope cleared at the broker; keeping the applied version", name, scope)
            return
        handler = self.states.get(name)
        if handler is None:
            raise CommandRejected(f"'{name}' is not a kind of desired state this device knows; known: {', '.join(sorted(self.states)) or 'none'}", "topic")
        doc = self._parse(payload)
        version = require(doc, "version", int, fix="give a whole number that grows with every change")
        if not 1 <= version <= MAX_VERSION:
            raise CommandRejected(f"must be from 1 to {MAX_VERSION}, got {version}", "version")
        context["version"] = version
        applied = self.store.applied_state(name)
        if scope in applied and version <= applied[scope][0]:
            # A retained message comes again on every connect: same version, nothing to do.
            return
        if self._rejected.get((name, scope)) == version:
            # Rejected already; a retained bad version is not reported again on every reconnect.
            return
        try:
            data = handler.validate(doc.get("data"))
        except CommandRejected:
            self._rejected[(name, scope)] = version
            raise
        merged = {s: applied[s][1] for s in SCOPES if s in applied}
        merged[scope] = data
        merged = {s: merged[s] for s in SCOPES if s in merged}
        now = self.recorder.clock.now().isoformat(timespec="seconds")

        def domain(conn: sqlite3.Connection, envelope: dict) -> None:
            self.store.save_state(conn, name, scope, version, data, now)
            handler.apply(conn, merged)

        self.recorder.telemetry("state.applied", {"name": name, "scope": scope, "version": version}, droppable=False, domain=domain)
        if handler.after:
            handler.after(merged)

    def _handle_action(self, name: str, payload: bytes, context: dict) -> None:
        doc = self._parse(payload)
        command_id = require(doc, "command_id", str, fix="give each command a unique id, e.g. a UUID")
        if not 1 <= len(command_id) <= 128:
            raise CommandRejected(f"must be 1 to 128 characters, got {len(command_id)}", "command_id")
        # Only a well-formed id is echoed in the answer and remembered as handled.
        context["command_id"] = command_id
        if self.store.command_seen(command_id) is not None:
            log.info("command %s (%s) already handled; ignoring the repeat", command_id, name)
            return
        handler = self.actions.get(name)
        if handler is None:
            raise CommandRejected(f"'{name}' is not an action this device knows; known: {', '.join(sorted(self.actions)) or 'none'}", "topic")
        args = handler.validate(doc.get("args", {}))
        result: dict = {}

        def domain(conn: sqlite3.Connection, envelope: dict) -> None:
            result.update(handler.apply(conn, args) or {})
            envelope["data"]["result"] = result
            self.store.remember_command(conn, command_id, name, "applied")

        self.recorder.telemetry("command.applied", {"name": name, "command_id": command_id}, droppable=False, domain=domain)
        if handler.after:
            handler.after(args)

    def _reject(self, context: dict, exc: CommandRejected, *, remember: bool = True) -> None:
        log.warning("rejected %s %s: %s", context["kind"], context["name"], exc)
        data = dict(context, field=exc.field, reason=exc.reason)
        command_id = context.get("command_id") if remember else None

        def domain(conn: sqlite3.Connection, envelope: dict) -> None:
            if command_id:
                self.store.remember_command(conn, command_id, context["name"], "rejected")

        try:
            self.recorder.telemetry("command.rejected", data, droppable=False, domain=domain)
        except Exception as err:  # noqa: BLE001 - handle() never raises: the uplink depends on it
            log.error("could not record the rejection: %s", err)

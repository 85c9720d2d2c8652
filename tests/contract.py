"""The MQTT contract as code: which schema a topic's payload must match, and the check.

``validate_message(topic, payload)`` is what every test that sees a real MQTT message calls.
The schemas live in ``appliance/schemas`` and refer to one another by relative ``$ref``;
they resolve from a local ``referencing.Registry``, never over the network.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError
from referencing import Registry, Resource

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "appliance" / "schemas"

ROOT = ("hall", "v1")
_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class _WrittenWithAPoint(float):
    """A JSON number written with a decimal point or an exponent (5.0, 5e0)."""

    # The device reads integers with isinstance(value, int), so it refuses 5.0 where JSON
    # Schema would call it an integer; a number that says it is never whole keeps the
    # contract as strict as the device with the standard validator.
    def is_integer(self) -> bool:
        return False


@lru_cache(maxsize=1)
def schemas() -> dict[str, dict]:
    """Every schema in SCHEMA_DIR by name (the file name without ``.json``)."""
    return {p.name.removesuffix(".json"): json.loads(p.read_text(encoding="utf-8")) for p in sorted(SCHEMA_DIR.glob("*.json"))}


@lru_cache(maxsize=1)
def registry() -> Registry:
    """The schemas by their ``$id``, so ``$ref`` resolves locally."""
    return Registry().with_resources((doc["$id"], Resource.from_contents(doc)) for doc in schemas().values())


def validator(name: str) -> Draft202012Validator:
    """A validator for schema ``name`` (e.g. 'event.rating.recorded') that checks formats too."""
    return Draft202012Validator(schemas()[name], registry=registry(), format_checker=Draft202012Validator.FORMAT_CHECKER)


def event_types() -> set[str]:
    """Event types the contract knows: one ``event.<type>.json`` each."""
    return {name.removeprefix("event.") for name in schemas() if name.startswith("event.")}


def schema_for_topic(topic: str) -> tuple[str, dict[str, str]]:
    """The schema name for a topic and what the topic says (county, township, device, …).

    Raises AssertionError for a topic outside the tree or one with no schema.
    """
    levels = topic.split("/")
    assert tuple(levels[:2]) == ROOT and len(levels) >= 6, f"{topic!r} is not in the hall/v1/{{county}}/{{township}}/{{device}}/… topic tree"
    county, township, device, rest = levels[2], levels[3], levels[4], levels[5:]
    assert _ID.fullmatch(county), f"{topic!r}: county level {county!r} is not an id"
    where = {"county": county}
    if (township, device) == ("_county", "_county"):
        scope = "county"
    elif device == "_township":
        assert _ID.fullmatch(township), f"{topic!r}: township level {township!r} is not an id"
        scope, where["township"] = "township", township
    else:
        assert _ID.fullmatch(township) and _ID.fullmatch(device), f"{topic!r}: township and device levels must be ids (or _township / _county/_county for wider desired state)"
        scope, where["township"], where["device"] = "device", township, device
    known = schemas()
    if rest[:1] == ["set"] and len(rest) == 2 and rest[1]:
        name = f"desired-state.{rest[1]}"
        assert name in known, f"{topic!r}: no desired state {rest[1]!r} in the contract; known: {', '.join(n.split('.', 1)[1] for n in known if n.startswith('desired-state.'))}"
        return name, dict(where, scope=scope)
    assert scope == "device", f"{topic!r}: only set/<name> topics exist at {scope} scope"
    if rest == ["status"]:
        return "status", where
    if rest == ["ack"]:
        return "ack", where
    if rest[:1] == ["cmd"] and len(rest) == 2 and rest[1]:
        name = f"command.{rest[1]}"
        assert name in known, f"{topic!r}: no action {rest[1]!r} in the contract; known: {', '.join(n.split('.', 1)[1] for n in known if n.startswith('command.'))}"
        return name, where
    if rest[:1] == ["evt"] and len(rest) >= 3 and all(rest[1:]):
        event_type = ".".join(rest[1:])
        assert event_type in event_types(), f"{topic!r}: event type {event_type!r} has no schema; known: {', '.join(sorted(event_types()))}"
        return f"event.{event_type}", dict(where, type=event_type)
    raise AssertionError(f"{topic!r} is not a topic of the contract (evt/…, status, ack, set/<name>, cmd/<name>)")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decode(payload: bytes | str) -> Any:
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    if not payload:
        # An empty retained message clears the topic at the broker; it is not a message.
        raise ValidationError("the payload is empty (an empty retained message only clears the topic at the broker)")
    try:
        return json.loads(payload.decode("utf-8"), parse_float=_WrittenWithAPoint, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValidationError(f"the payload is not UTF-8 JSON: {exc}") from None


def validate_message(topic: str, payload: bytes) -> str:
    """Check one MQTT message against the contract; return the schema name used.

    The schema is chosen by the topic (…/evt/<a>/<b> → 'event.a.b', …/status, …/ack,
    …/set/<name> → 'desired-state.<name>', …/cmd/<name> → 'command.<name>'). Raises
    jsonschema.ValidationError when the payload breaks its schema or disagrees with the topic,
    AssertionError when the topic or event type is not in the contract at all.
    """
    name, where = schema_for_topic(topic)
    doc = _decode(payload)
    validator(name).validate(doc)
    mismatches = []
    if name.startswith("event."):
        said = {"type": doc["type"], "county": doc["county"], "township": doc["township"], "device": doc["device_id"]}
        mismatches = [f"{k} is {said[k]!r} but the topic says {where[k]!r}" for k in ("type", "county", "township", "device") if said[k] != where[k]]
    elif name == "status":
        said = {"device": doc["device_id"]}
        if doc["online"]:
            said.update(county=doc["device"]["county"], township=doc["device"]["township"])
            if doc["device"]["id"] != doc["device_id"]:
                mismatches.append(f"device.id is {doc['device']['id']!r} but device_id is {doc['device_id']!r}")
        mismatches += [f"{k} is {v!r} but the topic says {where[k]!r}" for k, v in said.items() if v != where[k]]
    if mismatches:
        raise ValidationError(f"{topic}: " + "; ".join(mismatches))
    return name


__all__ = ["SCHEMA_DIR", "event_types", "registry", "schema_for_topic", "schemas", "validate_message", "validator"]

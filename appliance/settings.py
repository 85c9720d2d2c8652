"""Run-time settings: what may change without editing the config file, and how the layers merge.

Three layers, the later winning: the defaults here, the county's ``settings`` desired state
(county, then township, then device scope), and changes made on the config page (the store's
``settings`` table: the latest word of someone at this device). The daemon and the page share
this module, so the page shows the values the daemon uses; the page must not import the
daemon, which imports the drivers.
"""

from __future__ import annotations

from typing import Any, Mapping

from .errors import CommandRejected
from .events import SCOPES

# Run-time settings the county may set as desired state ('settings'): name → (low, high, default).
SETTINGS = {
    "health_interval": (10, 86400, 300),
    "status_interval": (10, 3600, 60),
}

DEFAULT = "default"
LOCAL = "local"


def validate_settings(data: Any) -> dict:
    """Check a 'settings' desired state; every key must be known and in range."""
    if not isinstance(data, dict):
        raise CommandRejected("must be an object of setting = value", "data")
    for key, value in data.items():
        if key not in SETTINGS:
            raise CommandRejected(f"is not a setting; known: {', '.join(SETTINGS)}", f"data.{key}")
        lo, hi, _ = SETTINGS[key]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise CommandRejected(f"must be a whole number from {lo} to {hi}, got {value!r}", f"data.{key}")
    return data


def merge_settings(scopes: Mapping[str, dict], local: Mapping[str, Any]) -> tuple[dict, dict]:
    """The effective settings and where each came from ('default', a scope, or 'local').

    ``scopes`` maps scope → the county's data at that scope, in any order: they are applied
    widest first (county, township, device) whatever order the caller read them in.
    """
    merged = {k: v[2] for k, v in SETTINGS.items()}
    source = dict.fromkeys(SETTINGS, DEFAULT)
    for scope in SCOPES:
        for key, value in (scopes.get(scope) or {}).items():
            if key in SETTINGS:
                merged[key] = value
                source[key] = scope
    for key, value in local.items():
        if key in SETTINGS:
            merged[key] = value
            source[key] = LOCAL
    return merged, source

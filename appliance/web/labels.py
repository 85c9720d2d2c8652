"""What the page calls things, in the reader's language (codes stay English in events and JSON)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

# Simplified Chinese first: it is the default. Each name is written in its own language.
LANGUAGES = {"zh_Hans": "中文", "en": "English"}
DEFAULT_LANGUAGE = "zh_Hans"
HTML_LANG = {"zh_Hans": "zh-Hans", "en": "en"}

ROLE_NAMES = {"director": _l("hall director"), "county_it": _l("county IT")}

LEVEL_NAMES = {
    "very_satisfied": _l("Very satisfied"),
    "satisfied": _l("Satisfied"),
    "basically_satisfied": _l("Basically satisfied"),
    "dissatisfied": _l("Dissatisfied"),
    "very_dissatisfied": _l("Very dissatisfied"),
}

FLAG_NAMES = {
    "repeat": _l("repeat"),
    "burst": _l("burst"),
    "unstaffed": _l("unstaffed"),
}

UPLINK_STATES = {
    "starting": _l("starting"),
    "disabled": _l("off (no broker configured: recording and queueing only)"),
    "connecting": _l("connecting"),
    "connected": _l("connected"),
    "waiting": _l("waiting to reconnect"),
    "stopped": _l("stopped"),
}

OUTBOX_STATES = {
    "pending": _l("waiting to be sent"),
    "published": _l("sent, awaiting acknowledgement"),
    # Acknowledged by the aggregator, or by the broker where the deployment has no aggregator ack.
    "acked": _l("delivered"),
}

SETTING_NAMES = {
    "health_interval": _l("How often the device records its health (seconds)"),
    "status_interval": _l("How often the status message to the county is refreshed (seconds)"),
}

SETTING_SOURCES = {
    "default": _l("default"),
    "county": _l("county (all halls)"),
    "township": _l("township"),
    "device": _l("county, for this device"),
    "local": _l("this page"),
}

AUDIT_ACTIONS = {
    "signin": _l("signed in"),
    "signin.failed": _l("failed sign-in"),
    "signout": _l("signed out"),
    "password.changed": _l("changed own password"),
    "password.reset": _l("reset a password"),
    "account.created": _l("created an account"),
    "language.changed": _l("changed language"),
    "settings.changed": _l("changed a setting"),
    "settings.cleared": _l("returned a setting to the county's value"),
    "sim.press": _l("pressed a simulated button"),
    "sim.badge": _l("swiped a simulated badge"),
}

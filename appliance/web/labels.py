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

# What the last software update came to (appliance/update.py's update-state.json).
UPDATE_OUTCOMES = {
    "succeeded": _l("installed"),
    "rolled_back": _l("did not start: the previous software runs again"),
    "refused": _l("refused before anything changed"),
    "failed": _l("failed; the previous software runs"),
    "broken": _l("neither the new nor the previous software would start"),
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
    "roster.leave": _l("recorded leave"),
    "roster.leave_ended": _l("ended leave (销假)"),
    "roster.card_registered": _l("registered a card"),
    "board.added": _l("added a board item"),
    "board.changed": _l("changed a board item"),
    "board.ended": _l("ended a board item"),
    "board.withdrawn": _l("withdrew a board item (not yet begun)"),
    "complaint.transcribed": _l("transcribed a complaint (paper box or phone)"),
}

# The board's kinds of item (services/board.py KINDS) and an item's state at the moment.
BOARD_KINDS = {
    "policy": _l("policy notice (惠农政策)"),
    "job": _l("job posting (用工/致富信息)"),
    "publicity": _l("六公开 item"),
    "duty": _l("leader on duty"),
    "announcement": _l("announcement"),
    "urgent": _l("urgent notice (interrupts the board)"),
}

BOARD_STATES = {
    "in_force": _l("in the rotation"),
    "off_schedule": _l("outside its daily hours now"),
    "upcoming": _l("not begun yet"),
    "ended": _l("ended"),
}

# The roster's codes (services/roster.py) as the page shows them.
DAY_KINDS = {
    "workday": _l("working day"),
    "tiaoxiu": _l("weekend worked (调休)"),
    "weekend": _l("weekend"),
    "holiday": _l("public holiday"),
}

LEAVE_KIND_NAMES = {
    "personal": _l("personal leave"),
    "sick": _l("sick leave"),
    "annual": _l("annual leave"),
    "business": _l("away on official business"),
    "compensatory": _l("time off in lieu"),
    "other": _l("other leave"),
}

# A shift's state on the duty page and a check-in's verdicts in the attendance record.
ATTENDANCE_NAMES = {
    "on_time": _l("on time"),
    "late": _l("late"),
    "early_leave": _l("left early"),
    "absent": _l("absent"),
    "leave": _l("on leave"),
    "unscheduled": _l("no shift"),
    "returned": _l("back during the shift"),
    "pending": _l("waiting for the clock"),
    "unverified": _l("time unknown"),
    "no_record": _l("no record"),
    "missed_checkout": _l("no check-out"),
    "upcoming": _l("not started"),
    "waiting": _l("not checked in yet"),
    "checked_out": _l("checked out"),
}

CARD_REASONS = {
    "unknown": _l("not registered"),
    "inactive": _l("belongs to someone inactive in the registry"),
}

# The complaint box (services/complaints.py). The Chinese catalog gives each category and
# status exactly the service's own label (CATEGORIES, STATUSES): a test holds them together.
COMPLAINT_CATEGORIES = {
    "attitude": _l("Attitude"),
    "delay": _l("Delay"),
    "runaround": _l("Sent back and forth"),
    "discipline": _l("Work discipline"),
    "fees": _l("Improper fees"),
    "bribery": _l("Asking for favours"),
    "favoritism": _l("Favouritism"),
    "other": _l("Other"),
}

COMPLAINT_HINTS = {
    "attitude": _l("rude, cold, passing the buck"),
    "delay": _l("dragging on, not finished within the time limit"),
    "runaround": _l("not told all the papers at once, made to come back again and again"),
    "discipline": _l("away from the window, late or leaving early, private business in working hours"),
    "fees": _l("fees that should not be charged, extra charges"),
    "bribery": _l("asking for or taking money, gifts or favours"),
    "favoritism": _l("favouring relatives and friends with subsidies or 低保, rules bent"),
    "other": _l("none of the above"),
}

COMPLAINT_STATUSES = {
    "received": _l("Received"),
    "in_progress": _l("In progress"),
    "answered": _l("Answered"),
}

COMPLAINT_CHANNELS = {
    "form": _l("public form"),
    "transcribed": _l("typed in by staff"),
}

# Where a complaint the staff type in came from (the staff form's "source").
COMPLAINT_SOURCES = {
    "paper": _l("paper complaint box"),
    "phone": _l("telephone"),
}


# The roster's refusals the director can meet on the page, by RosterRejected.code; the
# values are the refusal's params (times shown to the minute).
ROSTER_REFUSALS = {
    "not_in_registry": _l("%(staff_id)s is not in the staff registry"),
    "inactive": _l("%(name)s (%(staff_id)s) is inactive in the staff registry"),
    "leave_ends_first": _l("the end %(end)s is not after the start %(start)s"),
    "leave_too_long": _l("leave of more than a year is recorded in parts"),
    "leave_clash": _l("%(name)s already has leave from %(start)s to %(end)s; end it (销假) or choose other dates"),
    "leave_ended": _l("this leave was already ended (销假) at %(at)s"),
    "leave_over": _l("the leave is already over: it ended at %(at)s"),
    "card_in_registry": _l("card %(card)s already belongs to %(name)s (%(staff_id)s) in the county's staff registry"),
    "card_registered_here": _l("card %(card)s was already registered on this device to %(name)s"),
}

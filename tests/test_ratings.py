"""Ratings at the windows: mock pins with a fake clock, the hall calendar, follow-ups, figures."""

from __future__ import annotations

import json
from datetime import date, datetime, time

import pytest
from gpiozero.pins.mock import MockFactory, MockPin

from appliance.clock import HALL_TZ, FakeClock
from appliance.config import DeviceConfig, WindowConfig
from appliance.events import Recorder
from appliance.store import Store
from drivers.buttons import ContactDebouncer, WindowButtons
from drivers.indicators import WindowIndicators
from services.calendar import CalendarInvalid, HallCalendar, validate_calendar
from services.ratings import FollowupRejected, RatingPolicy, Ratings

DEVICE = DeviceConfig(id="hall-01", hall="测试政务服务中心", township="test-township", county="test-county")
WINDOWS = (
    WindowConfig("w1", "综合受理窗口", (("very_satisfied", 5), ("satisfied", 6), ("basically_satisfied", 13), ("dissatisfied", 19), ("very_dissatisfied", 26)), 12),
    WindowConfig("w2", "社保医保窗口", (("satisfied", 17), ("basically_satisfied", 27), ("dissatisfied", 22)), None),
)


def at(y, mo, d, h=10, mi=0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=HALL_TZ)


class Hall:
    """A hall on mock pins: real store and recorder, the ratings service, the button driver."""

    def __init__(self, tmp_path, start: datetime = at(2026, 11, 25), synced: bool = True, on_duty=None, policy=RatingPolicy()):
        self.clock = FakeClock(start, synced=synced)
        self.factory = MockFactory()
        self.store = Store(tmp_path / "hall.db", reserve_mb=0, free_space_floor_mb=0)
        self.recorder = Recorder(self.store, DEVICE, self.clock, "boot-1")
        self.alarms: list[int] = []
        self.calendar = HallCalendar(on_unknown_year=self.alarms.append)
        self.indicators = WindowIndicators(WINDOWS, self.factory, on_s=0.01, off_s=0.01, blinks=1)
        self.ratings = Ratings(self.recorder, self.store, self.clock, self.calendar, {w.id: w.name for w in WINDOWS}, policy, on_duty=on_duty, on_feedback=lambda w, lv: self.indicators.blink(w))
        self.stuck: list[tuple] = []
        self.buttons = WindowButtons(WINDOWS, self.factory, self.ratings.press, on_stuck=lambda *a: self.stuck.append(a), clock=lambda: self.clock.monotonic_ns() / 1e9, debounce_s=0.05, stuck_after_s=20)

    def pin(self, window: str, level: str):
        return self.buttons.pin(window, level)

    def tap(self, window: str, level: str, hold: float = 0.2) -> None:
        """A finger on the button: down, held, up, with time passing on the fake clock."""
        pin = self.pin(window, level)
        pin.drive_low()
        self.clock.advance(hold)
        pin.drive_high()
        self.clock.advance(0.1)

    def ratings_rows(self):
        return self.store.rows("SELECT window, level, flags, staff_id FROM ratings ORDER BY seq")

    def events(self, event_type: str) -> list[dict]:
        return [json.loads(p) for (p,) in self.store.rows("SELECT payload FROM outbox WHERE type = ? ORDER BY id", (event_type,))]

    def close(self):
        self.buttons.close()
        self.indicators.close()
        self.factory.close()
        self.store.close()


@pytest.fixture
def hall(tmp_path):
    h = Hall(tmp_path)
    yield h
    h.close()


# -- the contact, through gpiozero's mock pins -----------------------------------------


def test_a_press_is_recorded_once_with_window_level_and_flags(hall):
    hall.tap("w1", "satisfied")
    assert hall.ratings_rows() == [("w1", "satisfied", "[]", None)]
    event = hall.events("rating.recorded")[0]
    assert event["data"] | {} == {"window": "w1", "window_name": "综合受理窗口", "level": "satisfied", "level_label": "满意", "score": 4, "staff_id": None, "flags": [], "followup_id": None}
    assert event["stream"] == "person" and event["seq"] == 1


def test_the_indicator_led_blinks_on_a_press(hall):
    led = hall.factory.pin(12)
    hall.tap("w1", "satisfied")
    import time as _time

    deadline = _time.monotonic() + 2
    while not any(s.state for s in led.states) and _time.monotonic() < deadline:
        _time.sleep(0.01)
    assert any(s.state for s in led.states), "the LED never lit"


def test_chatter_inside_the_debounce_time_is_one_press(hall):
    pin = hall.pin("w2", "dissatisfied")
    for _ in range(5):  # 10 edges within 25 ms: a bouncing contact
        pin.drive_low()
        hall.clock.advance(0.0025)
        pin.drive_high()
        hall.clock.advance(0.0025)
    pin.drive_low()
    hall.clock.advance(0.3)
    pin.drive_high()
    hall.clock.advance(0.1)
    hall.buttons.tick()
    assert len(hall.ratings_rows()) == 1


def test_a_quick_tap_shorter_than_the_debounce_still_counts_and_the_next_press_too(hall):
    pin = hall.pin("w1", "very_satisfied")
    pin.drive_low()
    hall.clock.advance(0.01)
    pin.drive_high()  # inside the debounce time: settled later
    hall.clock.advance(6)
    hall.tap("w1", "very_satisfied")
    assert [r[1] for r in hall.ratings_rows()] == ["very_satisfied", "very_satisfied"]


def test_a_second_press_within_5s_is_flagged_repeat_not_dropped(hall):
    hall.tap("w1", "satisfied")
    hall.clock.advance(2)
    hall.tap("w1", "very_satisfied")
    hall.clock.advance(6)
    hall.tap("w1", "satisfied")
    flags = [json.loads(r[2]) for r in hall.ratings_rows()]
    assert flags == [[], ["repeat"], []]


def test_presses_at_other_windows_are_not_repeats(hall):
    hall.tap("w1", "satisfied")
    hall.tap("w2", "satisfied")
    assert [json.loads(r[2]) for r in hall.ratings_rows()] == [[], []]


def test_more_than_the_burst_limit_in_a_minute_is_flagged_burst(hall):
    for _ in range(12):
        hall.tap("w2", "satisfied")
        hall.clock.advance(5.7)  # past the repeat interval, 12 presses within about 72 s
    flags = [json.loads(r[2]) for r in hall.ratings_rows()]
    assert ["burst"] in flags
    assert flags[:10] == [[]] * 10
    assert len(flags) == 12, "flagged presses are recorded, never dropped"


def test_a_press_held_for_seconds_is_one_press(hall):
    hall.tap("w1", "basically_satisfied", hold=4.0)
    hall.buttons.tick()
    assert len(hall.ratings_rows()) == 1
    assert hall.stuck == []


def test_a_jammed_button_is_reported_once_and_not_counted_as_presses(hall):
    pin = hall.pin("w2", "satisfied")
    pin.drive_low()
    for _ in range(60):
        hall.clock.advance(1)
        hall.buttons.tick()
    assert hall.stuck == [("w2", "satisfied", True)]
    assert len(hall.ratings_rows()) == 1  # the press that jammed it
    assert hall.buttons.stuck_buttons() == [("w2", "satisfied")]
    pin.drive_high()
    hall.clock.advance(1)
    hall.buttons.tick()
    assert hall.stuck == [("w2", "satisfied", True), ("w2", "satisfied", False)]
    assert hall.buttons.stuck_buttons() == []


def test_a_jammed_button_that_flickers_open_is_still_one_jam(hall):
    pin = hall.pin("w2", "satisfied")
    pin.drive_low()
    for _ in range(3):  # a jammed contact that opens for 10 ms every 25 s
        for _ in range(25):
            hall.clock.advance(1)
            hall.buttons.tick()
        pin.drive_high()
        hall.clock.advance(0.01)
        pin.drive_low()
        hall.clock.advance(0.1)
        hall.buttons.tick()
    assert hall.stuck == [("w2", "satisfied", True)]
    assert len(hall.ratings_rows()) == 1
    # Opened for good: freed once it has stayed open a second, and the next press counts.
    pin.drive_high()
    hall.clock.advance(0.5)
    hall.buttons.tick()
    assert hall.buttons.stuck_buttons() == [("w2", "satisfied")]
    hall.clock.advance(0.5)
    hall.buttons.tick()
    assert hall.stuck == [("w2", "satisfied", True), ("w2", "satisfied", False)]
    hall.tap("w2", "satisfied")
    assert len(hall.ratings_rows()) == 2


def jammed_at(t: float) -> tuple[ContactDebouncer, list[float]]:
    """A contact pressed at 0 and reported stuck at ``t``, with the clock to move it on."""
    now = [0.0]
    c = ContactDebouncer(lambda: now[0], debounce_s=0.05, stuck_after_s=20)
    assert c.edge(True) == ["press"]
    now[0] = t
    assert c.tick() == ["stuck"]
    return c, now


def test_a_jammed_button_released_and_pressed_again_between_ticks_is_freed_then_pressed():
    c, now = jammed_at(30.0)
    assert c.edge(False) == []
    now[0] = 35.0  # open for five seconds, nobody ticked
    assert c.edge(True) == ["unstuck", "press"]


def test_a_flicker_of_a_jammed_button_settled_without_a_tick_does_not_free_it():
    c, now = jammed_at(25.0)
    assert c.edge(False) == []
    now[0] = 25.01
    assert c.edge(True) == []  # closed again inside the lockout: waits to be settled
    now[0] = 26.1  # no tick meanwhile (a late main loop); it was closed all along
    assert c.edge(False) == []
    now[0] = 26.3
    assert c.edge(True) == []
    assert c.stuck


class JammedPin(MockPin):
    """A mock pin whose contact stays closed whatever pull is set (GPIO 17 jammed at power-on)."""

    def _set_pull(self, value):
        super()._set_pull(value)
        if self.info.name == "GPIO17":
            self.drive_low()


def test_a_button_already_closed_at_start_is_jammed_not_pressed(tmp_path):
    factory = MockFactory(pin_class=JammedPin)
    pressed, stuck = [], []
    buttons = WindowButtons(WINDOWS, factory, lambda *a: pressed.append(a), on_stuck=lambda *a: stuck.append(a), clock=lambda: 0.0)
    assert buttons.stuck_buttons() == [("w2", "satisfied")]
    assert pressed == []
    buttons.close()
    factory.close()


def test_debouncer_settles_a_level_seen_during_chatter():
    now = [0.0]
    c = ContactDebouncer(lambda: now[0], debounce_s=0.05)
    assert c.edge(True) == ["press"]
    now[0] = 0.01
    assert c.edge(False) == []  # chatter
    now[0] = 0.2
    assert c.tick() == ["release"]
    assert c.edge(True) == ["press"]


@pytest.mark.parametrize(
    ("edges", "meaning"),
    [
        # A release inside the first press's lockout, then a second press inside the lockout
        # that release's settling starts: the contact was open 50 ms, so that is a new press.
        ([(10.00, True), (10.03, False), (10.08, True), (10.25, False)], ["press", "release", "press", "release"]),
        ([(20.00, True), (20.10, False), (20.15, True), (20.40, False)], ["press", "release", "press", "release"]),  # 20.15 - 20.10 < 0.05 in floats
        # A held button whose contact opens for 10 ms: the same press continuing.
        ([(0.00, True), (5.00, False), (5.01, True), (9.00, False)], ["press", "release", "release"]),
    ],
)
def test_the_debouncer_counts_a_press_after_a_real_opening_and_not_after_a_flicker(edges, meaning):
    now = [0.0]
    c = ContactDebouncer(lambda: now[0], debounce_s=0.05)
    out = []
    for at, pressed in edges:
        now[0] = at
        out += c.edge(pressed)
    now[0] += 1
    out += c.tick()
    assert out == meaning


# -- who is on duty -----------------------------------------------------------------------


class Roster:
    def __init__(self, on_duty):
        self.on_duty = on_duty

    def staff_at(self, window_id, at):
        return self.on_duty.get(window_id)


def test_a_rating_names_the_staff_member_on_duty_and_flags_an_unstaffed_window(tmp_path):
    h = Hall(tmp_path, on_duty=Roster({"w1": "staff-007"}))
    try:
        h.tap("w1", "satisfied")
        h.tap("w2", "satisfied")
        assert [(r[0], r[3], json.loads(r[2])) for r in h.ratings_rows()] == [("w1", "staff-007", []), ("w2", None, ["unstaffed"])]
    finally:
        h.close()


def test_without_a_roster_nothing_is_flagged_unstaffed(hall):
    hall.tap("w2", "satisfied")
    assert json.loads(hall.ratings_rows()[0][2]) == []


# -- 差评 follow-ups on the hall calendar -----------------------------------------------------


@pytest.mark.parametrize(
    ("pressed", "callback_due", "rectify_due"),
    [
        # Wednesday: Thursday; 15 working days later is Wednesday 16 December.
        pytest.param(at(2026, 11, 25, 10), at(2026, 11, 26, 10), at(2026, 12, 16, 10), id="weekday"),
        # Friday afternoon: the weekend is skipped.
        pytest.param(at(2026, 11, 27, 16), at(2026, 11, 30, 16), at(2026, 12, 18, 16), id="across-a-weekend"),
        # 30 September 2026, before National Day (1–7 October off, Saturday 10 October worked).
        pytest.param(at(2026, 9, 30, 9), at(2026, 10, 8, 9), at(2026, 10, 27, 9), id="across-national-day-and-its-tiaoxiu-saturday"),
        # Pressed on Saturday 10 October, a 调休 working day: Monday counts as the next one.
        pytest.param(at(2026, 10, 10, 11), at(2026, 10, 12, 11), at(2026, 10, 30, 11), id="on-a-tiaoxiu-working-saturday"),
        # Friday 18 September: Sunday 20 September is a 调休 working day, so it counts.
        pytest.param(at(2026, 9, 18, 15), at(2026, 9, 20, 15), at(2026, 10, 15, 15), id="tiaoxiu-sunday-counts"),
    ],
)
def test_a_poor_rating_opens_a_followup_with_working_day_deadlines(tmp_path, pressed, callback_due, rectify_due):
    h = Hall(tmp_path, start=pressed)
    try:
        h.tap("w1", "dissatisfied")
        opened = h.events("followup.opened")
        assert len(opened) == 1
        f = opened[0]["data"]
        assert f["callback_due"] == callback_due.isoformat(timespec="seconds")
        assert f["rectify_due"] == rectify_due.isoformat(timespec="seconds")
        assert f["provisional"] is False
        rating = h.events("rating.recorded")[0]
        assert f["rating_event_id"] == rating["event_id"] and rating["data"]["followup_id"] == f["followup_id"]
        # The rating and its follow-up are consecutive in the person stream: one transaction.
        assert opened[0]["seq"] == rating["seq"] + 1
    finally:
        h.close()


def test_only_the_two_lowest_levels_open_followups(hall):
    for level in ("very_satisfied", "satisfied", "basically_satisfied", "dissatisfied", "very_dissatisfied"):
        hall.tap("w1", level)
        hall.clock.advance(10)
    assert [e["data"]["level"] for e in hall.events("followup.opened")] == ["dissatisfied", "very_dissatisfied"]


def test_a_year_the_library_does_not_know_uses_the_weekday_rule_with_an_alarm(tmp_path):
    # Thursday 31 December 2026: the next working day falls in 2027, which chinesecalendar 1.11 lacks.
    h = Hall(tmp_path, start=at(2026, 12, 31, 10))
    try:
        h.tap("w1", "very_dissatisfied")
        f = h.events("followup.opened")[0]["data"]
        assert f["callback_due"] == at(2027, 1, 1, 10).isoformat(timespec="seconds")  # a Friday by the weekday rule
        assert h.alarms == [2027]
        assert h.calendar.source(2027) == "weekday_rule"
    finally:
        h.close()


def test_the_countys_calendar_supplies_a_year_the_library_lacks(tmp_path):
    h = Hall(tmp_path, start=at(2026, 12, 31, 10))
    try:
        h.calendar.set_county_years(validate_calendar({"years": {"2027": {"holidays": ["2027-01-01"], "workdays": []}}}))
        h.tap("w1", "very_dissatisfied")
        f = h.events("followup.opened")[0]["data"]
        assert f["callback_due"] == at(2027, 1, 4, 10).isoformat(timespec="seconds")  # 1 January off, then the weekend
        assert h.alarms == []
        assert h.calendar.source(2027) == "county"
    finally:
        h.close()



NEXT_YEAR = {"years": {"2027": {"holidays": ["2027-01-01", "2027-02-05", "2027-02-08", "2027-02-09", "2027-02-10", "2027-02-11"], "workdays": ["2027-02-14"]}}}


@pytest.mark.parametrize(
    ("pressed", "callback_due"),
    [
        pytest.param(at(2026, 11, 26, 10, 12), at(2026, 11, 26, 17, 30), id="a-working-morning"),
        pytest.param(at(2026, 11, 26, 17, 45), at(2026, 11, 27, 17, 30), id="after-closing"),
        pytest.param(at(2026, 11, 28, 10), at(2026, 11, 30, 17, 30), id="on-a-saturday"),
        pytest.param(at(2026, 10, 2, 10), at(2026, 10, 8, 17, 30), id="in-national-day"),
    ],
)
def test_a_call_back_within_0_working_days_is_due_by_closing_time(tmp_path, pressed, callback_due):
    h = Hall(tmp_path, start=pressed)
    try:
        h.ratings.policy = RatingPolicy(callback_working_days=0, rectify_working_days=15)
        h.tap("w1", "dissatisfied")
        (opened,) = h.events("followup.opened")
        assert opened["data"]["callback_due"] == callback_due.isoformat(timespec="seconds")
        h.clock.advance(60)
        assert h.ratings.check_overdue() == 0  # not overdue the moment it opens
    finally:
        h.close()


@pytest.fixture
def december(tmp_path):
    """A synced hall on Thursday 17 December 2026, 10:12, with one 差评 at w1: its fifteen
    working days run to 7 January 2027, which the library does not know (weekday rule)."""
    h = Hall(tmp_path, start=at(2026, 12, 17, 10, 12))
    h.tap("w1", "dissatisfied")
    yield h
    h.close()


def test_the_countys_calendar_arriving_counts_open_deadlines_again(december):
    # Thursday 17 December: fifteen working days run into 2027, which nobody has supplied yet;
    # the follow-up's deadline counts 1 January as a working day.
    h = december
    h.clock.advance(60)
    h.tap("w2", "dissatisfied")  # a second one, closed before the calendar comes
    h.clock.advance(60)
    h.tap("w1", "satisfied")
    first, second = (e["data"] for e in h.events("followup.opened"))
    assert first["rectify_due"] == "2027-01-07T10:12:00+08:00"
    with h.store.transaction() as conn:
        h.ratings.apply_close(conn, h.ratings.validate_close({"followup_id": second["followup_id"], "outcome": "unfounded"}))
    h.clock.set_wall(at(2026, 12, 21, 10, 41))
    h.calendar.set_county_years(validate_calendar(NEXT_YEAR))
    assert h.ratings.reschedule() == 1
    (moved,) = h.events("followup.rescheduled")
    assert moved["stream"] == "telemetry"
    assert moved["data"] == {
        "followup_id": first["followup_id"],
        "callback_due": "2026-12-18T10:12:00+08:00",
        "rectify_due": "2027-01-08T10:12:00+08:00",
        "previous_callback_due": "2026-12-18T10:12:00+08:00",
        "previous_rectify_due": "2027-01-07T10:12:00+08:00",
    }
    assert [(f["followup_id"], f["rectify_due"]) for f in h.ratings.open_followups()] == [(first["followup_id"], "2027-01-08T10:12:00+08:00")]
    # Counted again on the same calendar, nothing moves and nothing more is sent.
    assert h.ratings.reschedule() == 0
    assert len(h.events("followup.rescheduled")) == 1
    # A correction that gives the day back moves it back: the count keeps its start and its days.
    h.calendar.set_county_years(validate_calendar({"years": {"2027": {"holidays": [], "workdays": []}}}))
    assert h.ratings.reschedule() == 1
    assert h.events("followup.rescheduled")[1]["data"]["rectify_due"] == "2027-01-07T10:12:00+08:00"


def test_a_reschedule_keeps_the_working_days_and_start_the_followup_was_counted_with(tmp_path):
    # Counted with 1 and 15 days from the sync (an earlier boot's unsynced press); the config
    # now says 2 and 10. The new calendar changes the count, not the rule it was opened under.
    h = Hall(tmp_path, start=at(2026, 12, 10, 18), synced=False)
    try:
        h.tap("w2", "dissatisfied")
        h.clock.set_wall(at(2026, 12, 17, 9, 0), synced=True)
        assert h.ratings.settle(h.clock.now(), h.clock.monotonic_ns(), "boot-2") == 1
        settled = h.events("followup.updated")[0]["data"]
        assert (settled["corrected"], settled["rectify_due"]) == (False, "2027-01-07T09:00:00+08:00")
        h.ratings.policy = RatingPolicy(callback_working_days=2, rectify_working_days=10)
        h.calendar.set_county_years(validate_calendar(NEXT_YEAR))
        assert h.ratings.reschedule() == 1
        moved = h.events("followup.rescheduled")[0]["data"]
        assert (moved["callback_due"], moved["rectify_due"]) == ("2026-12-18T09:00:00+08:00", "2027-01-08T09:00:00+08:00")
    finally:
        h.close()


def test_a_provisional_followup_is_left_to_settle_and_counts_on_the_calendar_of_that_moment(tmp_path):
    h = Hall(tmp_path, start=at(2026, 12, 17, 10, 12), synced=False)
    try:
        h.tap("w1", "dissatisfied")
        h.calendar.set_county_years(validate_calendar(NEXT_YEAR))
        assert h.ratings.reschedule() == 0
        assert h.events("followup.rescheduled") == []
        h.clock.synced = True
        assert h.ratings.settle(h.clock.now(), h.clock.monotonic_ns(), "boot-1") == 1
        assert h.events("followup.updated")[0]["data"]["rectify_due"] == "2027-01-08T10:12:00+08:00"
    finally:
        h.close()


def test_a_followup_opened_before_schema_8_is_rescheduled_from_opened_at_and_only_ever_later(december):
    h = december
    h.clock.advance(60)
    h.tap("w2", "dissatisfied")
    first, second = (e["data"]["followup_id"] for e in h.events("followup.opened"))
    # As the rows of an older release: nothing kept of the count; the second one had been
    # counted from a later sync, so its recorded deadline is later than opened_at gives.
    h.store.write_many("UPDATE followups SET counted_from = NULL, callback_days = NULL, rectify_days = NULL WHERE id = ?", [(first,), (second,)])
    h.store.write_many("UPDATE followups SET rectify_due = '2027-01-12T10:13:00+08:00' WHERE id = ?", [(second,)])
    h.calendar.set_county_years(validate_calendar(NEXT_YEAR))
    assert h.ratings.reschedule() == 1
    (moved,) = h.events("followup.rescheduled")
    assert (moved["data"]["followup_id"], moved["data"]["rectify_due"]) == (first, "2027-01-08T10:12:00+08:00")
    assert h.store.rows("SELECT rectify_due, counted_from FROM followups WHERE id = ?", (second,)) == [("2027-01-12T10:13:00+08:00", None)]
    assert h.ratings.reschedule() == 0  # as every maintenance round does
    # The holiday withdrawn: a row whose start is not known does not move back.
    h.calendar.set_county_years({})
    assert h.ratings.reschedule() == 0
    assert h.store.rows("SELECT rectify_due, counted_from FROM followups WHERE id = ?", (first,)) == [("2027-01-08T10:12:00+08:00", None)]
    # One opened under a wrong clock's year is not counted from it.
    h.store.write_many("UPDATE followups SET opened_at = '1999-12-30T10:12:00+08:00' WHERE id = ?", [(first,)])
    h.calendar.set_county_years(validate_calendar({"years": {"2027": {"holidays": ["2027-01-01", "2027-01-04"]}}}))
    assert h.ratings.reschedule() == 0
    # 2027 reported at the press and again when its calendar was withdrawn; 1999 never.
    assert h.alarms == [2027, 2027]


def test_the_years_in_use_run_from_where_each_open_followup_was_counted_to_its_later_deadline(tmp_path):
    h = Hall(tmp_path, start=at(2026, 12, 17, 10, 12))
    try:
        assert h.ratings.years_in_use(h.clock.now()) == set()
        h.tap("w1", "dissatisfied")  # rectify by 8 January 2027
        assert h.ratings.years_in_use(h.clock.now()) == {2026, 2027}
        # A row of an older release, opened under a wrong clock's year: nothing is counted from it.
        h.store.write_many("UPDATE followups SET counted_from = NULL, opened_at = '1999-12-30T10:12:00+08:00'", [()])
        assert h.ratings.years_in_use(h.clock.now()) == set()
        # Both deadlines passed: no longer in use.
        h.store.write_many("UPDATE followups SET counted_from = '2026-12-17T10:12:00+08:00'", [()])
        h.clock.advance(30 * 86400)
        assert h.ratings.years_in_use(h.clock.now()) == set()
    finally:
        h.close()


def test_a_followup_closed_while_it_is_counted_again_is_not_announced(december, monkeypatch):
    h = december
    (fid,) = (e["data"]["followup_id"] for e in h.events("followup.opened"))
    read = h.store.rows
    h.calendar.set_county_years(validate_calendar(NEXT_YEAR))

    def rows_then_close(sql, params=()):
        out = read(sql, params)
        if "FROM followups" in sql:
            monkeypatch.setattr(h.store, "rows", read)
            with h.store.transaction() as conn:  # the county's close lands in between
                h.ratings.apply_close(conn, h.ratings.validate_close({"followup_id": fid, "outcome": "rectified"}))
        return out

    monkeypatch.setattr(h.store, "rows", rows_then_close)
    assert h.ratings.reschedule() == 0
    assert h.events("followup.rescheduled") == []
    assert read("SELECT state, rectify_due FROM followups") == [("closed", "2027-01-07T10:12:00+08:00")]


def test_no_overdue_notice_names_deadlines_rescheduled_while_it_was_written(december, monkeypatch):
    h = december
    h.clock.advance(86400 + 60)  # Friday: the call-back is overdue
    read = h.store.rows

    def rows_then_reschedule(sql, params=()):
        out = read(sql, params)
        if "overdue_notified" in sql:
            monkeypatch.setattr(h.store, "rows", read)
            h.calendar.set_county_years(validate_calendar(NEXT_YEAR))
            assert h.ratings.reschedule() == 1
        return out

    monkeypatch.setattr(h.store, "rows", rows_then_reschedule)
    assert h.ratings.check_overdue() == 0
    assert h.events("followup.overdue") == []
    assert h.ratings.check_overdue() == 1  # the next round, with the deadlines as they are now
    assert h.events("followup.overdue")[0]["data"]["rectify_due"] == "2027-01-08T10:12:00+08:00"


def test_a_later_calendar_that_leaves_a_year_out_moves_nothing(december):
    h = december
    h.calendar.set_county_years(validate_calendar(NEXT_YEAR))
    assert h.ratings.reschedule() == 1
    # The county's next notice names 2028 alone: 2027 falls back to the weekday rule, which
    # is no knowledge. The deadline told on the county's 2027 stands.
    h.calendar.set_county_years(validate_calendar({"years": {"2028": {"holidays": ["2028-01-03"]}}}))
    assert h.ratings.reschedule() == 0
    assert [f["rectify_due"] for f in h.ratings.open_followups()] == ["2027-01-08T10:12:00+08:00"]


def test_each_deadline_is_judged_on_its_own_years(december):
    # 2027 is still unknown; the county gives 2026 a day off on Friday 18 December. The call-back
    # count stays in 2026 and moves; the rectification count runs into 2027 and stays as told.
    h = december
    h.calendar.set_county_years(validate_calendar({"years": {"2026": {"holidays": ["2026-12-18"]}}}))
    assert h.ratings.reschedule() == 1
    moved = h.events("followup.rescheduled")[0]["data"]
    assert (moved["callback_due"], moved["rectify_due"]) == ("2026-12-21T10:12:00+08:00", "2027-01-07T10:12:00+08:00")


def test_a_failed_write_leaves_the_count_to_the_next_round(december, monkeypatch):
    from appliance.errors import StoreError

    h = december
    h.calendar.set_county_years(validate_calendar(NEXT_YEAR))
    record = h.recorder.record_together

    def full(events):
        raise StoreError("disk I/O error")

    monkeypatch.setattr(h.recorder, "record_together", full)
    with pytest.raises(StoreError):
        h.ratings.reschedule_if_stale()
    monkeypatch.setattr(h.recorder, "record_together", record)
    assert h.ratings.reschedule_if_stale() == 1
    assert h.ratings.reschedule_if_stale() == 0


def test_a_deadline_passed_stands_and_none_moves_earlier_into_the_past(december):
    h = december
    h.calendar.set_county_years(validate_calendar(NEXT_YEAR))
    assert h.ratings.reschedule() == 1  # rectify 7 → 8 January
    # Saturday 19 December: the call-back deadline (Friday) has passed. Friday 18 December
    # declared a day off moves the rectification deadline, not the passed call-back one.
    h.clock.set_wall(at(2026, 12, 19, 9))
    h.calendar.set_county_years(validate_calendar({"years": {"2026": {"holidays": ["2026-12-18"]}, **NEXT_YEAR["years"]}}))
    assert h.ratings.reschedule() == 1
    moved = h.events("followup.rescheduled")[-1]["data"]
    assert (moved["callback_due"], moved["rectify_due"]) == ("2026-12-18T10:12:00+08:00", "2027-01-11T10:12:00+08:00")
    # 8 January, noon: taking both days off back would put the deadline at 7 January,
    # already past. It stays.
    h.clock.set_wall(at(2027, 1, 8, 12))
    h.calendar.set_county_years(validate_calendar({"years": {"2026": {}, "2027": {}}}))
    assert h.ratings.reschedule() == 0
    assert [f["rectify_due"] for f in h.ratings.open_followups()] == ["2027-01-11T10:12:00+08:00"]


def test_nothing_is_counted_again_while_the_clock_is_unsynchronised_and_maintenance_catches_up(december, monkeypatch):
    h = december
    assert h.ratings.reschedule_if_stale() == 0  # counted once on this calendar: nothing moved
    reads = []
    rows = h.store.rows
    monkeypatch.setattr(h.store, "rows", lambda sql, params=(): reads.append(sql) or rows(sql, params))
    assert h.ratings.reschedule_if_stale() == 0 and reads == []  # the same calendar: not even a read
    h.clock.synced = False  # a reboot before NTP
    h.calendar.set_county_years(validate_calendar(NEXT_YEAR))
    assert h.ratings.reschedule() == 0 and reads == []
    h.clock.synced = True
    assert h.ratings.reschedule_if_stale() == 1
    assert h.ratings.reschedule_if_stale() == 0
    assert len(h.events("followup.rescheduled")) == 1


def test_two_counts_at_once_announce_one_move(december, monkeypatch):
    h = december
    h.calendar.set_county_years(validate_calendar(NEXT_YEAR))
    read = h.store.rows

    def rows_then_count(sql, params=()):
        out = read(sql, params)
        if "FROM followups" in sql:
            monkeypatch.setattr(h.store, "rows", read)
            assert h.ratings.reschedule() == 1  # the maintenance round's count, from the other thread, lands first
        return out

    monkeypatch.setattr(h.store, "rows", rows_then_count)
    assert h.ratings.reschedule() == 0
    assert len(h.events("followup.rescheduled")) == 1


def test_a_count_waits_for_a_press_counting_on_the_old_calendar(tmp_path, monkeypatch):
    import threading

    h = Hall(tmp_path, start=at(2026, 12, 17, 10, 12))
    try:
        counted, go = threading.Event(), threading.Event()
        record = h.recorder.record_together

        def slow_record(events):
            counted.set()  # the deadlines are counted (on the weekday rule for 2027) ...
            go.wait(5)  # ... and the transaction has not committed yet
            return record(events)

        monkeypatch.setattr(h.recorder, "record_together", slow_record)
        press = threading.Thread(target=h.ratings.press, args=("w1", "dissatisfied"))
        press.start()
        assert counted.wait(5)
        h.calendar.set_county_years(validate_calendar(NEXT_YEAR))
        moved: list[int] = []
        count = threading.Thread(target=lambda: moved.append(h.ratings.reschedule()))
        count.start()
        count.join(0.3)
        assert count.is_alive()  # waiting for the press, not reading the follow-ups without it
        monkeypatch.setattr(h.recorder, "record_together", record)
        go.set()
        press.join(5)
        count.join(5)
        assert moved == [1]
        assert [f["rectify_due"] for f in h.ratings.open_followups()] == ["2027-01-08T10:12:00+08:00"]
    finally:
        h.close()


def test_a_followup_that_cannot_be_counted_is_logged_once_and_the_others_still_move(december, caplog):
    h = december
    h.clock.advance(60)
    h.tap("w2", "dissatisfied")
    bad, good = (e["data"]["followup_id"] for e in h.events("followup.opened"))
    h.store.write_many("UPDATE followups SET counted_from = 'yesterday' WHERE id = ?", [(bad,)])
    h.calendar.set_county_years(validate_calendar(NEXT_YEAR))
    assert h.ratings.reschedule() == 1
    assert [e["data"]["followup_id"] for e in h.events("followup.rescheduled")] == [good]
    h.calendar.set_county_years(validate_calendar({"years": {"2027": {}}}))
    h.ratings.reschedule()
    assert caplog.text.count(f"follow-up {bad} cannot be counted again") == 1

@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "data.years"),
        ({"years": {"27": {}}}, "data.years.27"),
        ({"years": {"2027": {"holidays": "2027-01-01"}}}, "data.years.2027.holidays"),
        ({"years": {"2027": {"holidays": ["2027-13-01"]}}}, "data.years.2027.holidays[0]"),
        ({"years": {"2027": {"holidays": ["2028-01-01"]}}}, "data.years.2027.holidays[0]"),
        ({"years": {"2027": {"holidays": ["2027-02-06"], "workdays": ["2027-02-06"]}}}, "data.years.2027"),
        ({"years": {"2027": {"holidays": [], "extra": []}}}, "data.years.2027"),
    ],
)
def test_a_malformed_county_calendar_is_rejected_naming_the_field(data, field):
    with pytest.raises(CalendarInvalid) as exc:
        validate_calendar(data)
    assert exc.value.field == field


def test_opening_hours_follow_the_calendar():
    cal = HallCalendar(((time(8, 30), time(12, 0)), (time(14, 30), time(17, 30))))
    assert cal.is_open(at(2026, 11, 25, 9))
    assert not cal.is_open(at(2026, 11, 25, 13))
    assert not cal.is_open(at(2026, 11, 28, 9))  # Saturday
    assert not cal.is_open(at(2026, 10, 1, 9))  # National Day
    assert cal.is_open(at(2026, 10, 10, 9))  # 调休 Saturday


def test_deadlines_before_the_clock_is_synced_are_provisional_and_settled_from_the_anchor(tmp_path):
    # After a power cut the Pi believes it is Friday evening; it is really Wednesday morning.
    h = Hall(tmp_path, start=at(2026, 11, 27, 18), synced=False)
    try:
        h.tap("w2", "dissatisfied")
        f = h.events("followup.opened")[0]["data"]
        assert f["provisional"] is True
        assert f["callback_due"] == at(2026, 11, 30, 18).isoformat(timespec="seconds")
        # NTP: 30 s after the press the true time is known.
        h.clock.advance(29.7)  # 30 s after the press, which the tap held for 0.3 s
        h.clock.set_wall(at(2026, 11, 25, 10, 0), synced=True)
        assert h.ratings.settle(h.clock.now(), h.clock.monotonic_ns(), "boot-1") == 1
        updated = h.events("followup.updated")[0]["data"]
        assert updated["corrected"] is True
        assert updated["opened_at"] == "2026-11-25T09:59:30+08:00"
        assert updated["callback_due"] == "2026-11-26T09:59:30+08:00"
        assert h.ratings.open_followups()[0]["provisional"] is False
    finally:
        h.close()


def test_a_followup_from_an_earlier_unsynced_boot_is_not_overdue_the_moment_the_clock_is_right(tmp_path):
    # The Pi believed it was Friday 20th; it was really Wednesday 25th, 08:30. Then a power blip.
    h = Hall(tmp_path, start=at(2026, 11, 20, 18), synced=False)
    try:
        h.tap("w2", "dissatisfied")
        # The next boot (another boot_id) learns the time at 09:00, half an hour after the press.
        h.clock.set_wall(at(2026, 11, 25, 9, 0), synced=True)
        assert h.ratings.settle(h.clock.now(), h.clock.monotonic_ns(), "boot-2") == 1
        updated = h.events("followup.updated")[0]["data"]
        assert (updated["corrected"], updated["opened_at"]) == (False, "2026-11-20T18:00:00+08:00")
        assert updated["callback_due"] == "2026-11-26T09:00:00+08:00"  # a working day from the sync
        assert h.ratings.check_overdue() == 0
    finally:
        h.close()


def test_overdue_followups_are_published_and_published_again_each_day(hall):
    hall.tap("w1", "very_dissatisfied")
    assert hall.ratings.check_overdue() == 0
    hall.clock.advance(86400 + 60)  # Thursday, past the call-back deadline
    assert hall.ratings.check_overdue() == 1
    assert hall.ratings.check_overdue() == 0  # once a day
    overdue = hall.events("followup.overdue")[0]["data"]
    assert overdue["missed"] == ["callback"]
    hall.clock.advance(86400)
    assert hall.ratings.check_overdue() == 1


def test_no_overdue_verdict_while_the_clock_is_unsynced(hall):
    hall.tap("w1", "very_dissatisfied")
    hall.clock.advance(3 * 86400)
    hall.clock.synced = False
    assert hall.ratings.check_overdue() == 0


def test_the_county_closes_a_followup(hall):
    hall.tap("w1", "very_dissatisfied")
    fid = hall.events("followup.opened")[0]["data"]["followup_id"]
    args = hall.ratings.validate_close({"followup_id": fid, "outcome": "rectified", "note": "已回访并整改", "closed_by": "county-supervisor"})
    with hall.store._lock:  # the command's transaction, as the router runs it
        conn = hall.store._conn
        conn.execute("BEGIN IMMEDIATE")
        hall.ratings.apply_close(conn, args)
        conn.execute("COMMIT")
    assert hall.ratings.open_followups() == []
    hall.clock.advance(30 * 86400)
    assert hall.ratings.check_overdue() == 0
    with pytest.raises(FollowupRejected, match="already closed"):
        hall.ratings.validate_close({"followup_id": fid})
    with pytest.raises(FollowupRejected, match="already closed"):
        hall.ratings.validate_close({"followup_id": fid, "outcome": "called_back"})


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({}, "args.followup_id"),
        ({"followup_id": "nope"}, "args.followup_id"),
        ({"followup_id": "x", "outcome": "forgotten"}, "args.outcome"),
        ({"followup_id": "x", "note": "x" * 1001}, "args.note"),
        ({"followup_id": "x", "outcom": "unfounded"}, "args.outcom"),
        ([], "args"),
    ],
)
def test_a_bad_close_command_names_the_field(hall, args, field):
    with pytest.raises(FollowupRejected) as exc:
        hall.ratings.validate_close(args)
    assert exc.value.field == field


# -- figures ------------------------------------------------------------------------------


def test_todays_figures_per_window_and_level_with_the_satisfaction_rate(hall):
    for i, level in enumerate(("very_satisfied", "satisfied", "satisfied", "dissatisfied")):
        if i:
            hall.clock.advance(6)
        hall.tap("w1", level)
    hall.tap("w1", "satisfied")  # a repeat: shown, not counted
    hall.clock.advance(6)
    hall.tap("w2", "basically_satisfied")
    figures = hall.ratings.figures()
    w1, w2 = figures["windows"]
    assert w1["levels"] == {"very_satisfied": 1, "satisfied": 2, "basically_satisfied": 0, "dissatisfied": 1, "very_dissatisfied": 0}
    assert (w1["counted"], w1["flagged"], w1["rate"]) == (4, 1, 0.75)
    assert (w2["counted"], w2["rate"]) == (1, 1.0)
    assert figures["total"] == {"counted": 5, "satisfied": 4, "flagged": 1, "rate": 0.8}
    assert hall.ratings.figures("2026-11-24")["total"]["counted"] == 0


def test_ratings_before_the_sync_are_filed_under_their_true_day(tmp_path):
    # The Pi thinks it is 23:59 on the 24th; it is really 10:00 on the 25th.
    h = Hall(tmp_path, start=at(2026, 11, 24, 23, 59), synced=False)
    try:
        h.tap("w1", "satisfied")
        assert h.ratings.figures("2026-11-24")["total"]["counted"] == 1
        h.clock.advance(60)
        h.clock.set_wall(at(2026, 11, 25, 10, 1), synced=True)
        h.ratings.settle(h.clock.now(), h.clock.monotonic_ns(), "boot-1")
        assert h.ratings.figures("2026-11-24")["total"]["counted"] == 0
        assert h.ratings.figures("2026-11-25")["total"]["counted"] == 1
    finally:
        h.close()


def test_a_provisional_followup_is_never_judged_overdue(tmp_path):
    h = Hall(tmp_path, synced=False)
    try:
        h.tap("w1", "very_dissatisfied")
        h.clock.advance(30 * 86400)
        h.clock.synced = True  # synced, but settle() has not run for this follow-up yet
        assert h.ratings.check_overdue() == 0
        h.ratings.settle(h.clock.now(), h.clock.monotonic_ns(), "boot-1")
        assert h.ratings.check_overdue() == 1
    finally:
        h.close()


def test_the_daemon_reports_a_button_jammed_at_power_on(tmp_path, monkeypatch):
    from appliance import daemon as daemon_module
    from appliance.config import load_config
    from conftest import write_config

    monkeypatch.setattr(daemon_module, "make_pin_factory", lambda name: (MockFactory(pin_class=JammedPin), "mock", []))
    d = daemon_module.Daemon(load_config(write_config(tmp_path / "dev")), clock=FakeClock(), simulate=True)
    d.start()
    try:
        assert [e["data"] for e in d.store.recent_events(10) if e["type"] == "button.stuck"] == [{"window": "w2", "level": "satisfied"}]
        assert "button_stuck" in [a.code for a in d.store.active_alarms()]
    finally:
        d.stop()


# -- the pin factory ----------------------------------------------------------------------


def fake_factory_modules(monkeypatch, lgpio_error: Exception | None = None, rpigpio_error: Exception | None = None) -> None:
    """gpiozero's lgpio and RPi.GPIO factory modules, replaced: each makes a MockFactory
    named after it, or raises as the real one does off the Pi (or under ProtectSystem=strict)."""
    import sys
    import types

    for module, cls, error in (("gpiozero.pins.lgpio", "LGPIOFactory", lgpio_error), ("gpiozero.pins.rpigpio", "RPiGPIOFactory", rpigpio_error)):

        def make(error=error, cls=cls):
            if error is not None:
                raise error
            return type(cls, (MockFactory,), {})()

        monkeypatch.setitem(sys.modules, module, types.SimpleNamespace(**{cls: make}))


def test_auto_prefers_lgpio_then_rpigpio(monkeypatch):
    from drivers.gpio import make_pin_factory

    fake_factory_modules(monkeypatch)
    factory, name, passed_over = make_pin_factory("auto")
    assert (type(factory).__name__, name, passed_over) == ("LGPIOFactory", "lgpio", [])
    factory.close()

    fake_factory_modules(monkeypatch, lgpio_error=OSError("can't create notification file"))
    factory, name, passed_over = make_pin_factory("auto")
    assert (type(factory).__name__, name) == ("RPiGPIOFactory", "rpigpio")
    assert passed_over == ["lgpio: can't create notification file"]
    factory.close()


def test_a_factory_named_outright_is_that_one_or_none(monkeypatch):
    from drivers.gpio import NoPinFactory, make_pin_factory

    fake_factory_modules(monkeypatch, lgpio_error=ImportError("No module named 'lgpio'"))
    factory, name, passed_over = make_pin_factory("rpigpio")
    assert (name, passed_over) == ("rpigpio", [])
    factory.close()
    with pytest.raises(NoPinFactory, match=r"lgpio: No module named 'lgpio'\)\. On a Pi install python3-lgpio"):
        make_pin_factory("lgpio")


def test_the_daemon_raises_the_pin_factory_alarm_when_auto_falls_back(tmp_path, monkeypatch):
    from appliance import daemon as daemon_module
    from appliance.config import load_config
    from conftest import write_config

    fake_factory_modules(monkeypatch, lgpio_error=OSError("can't create notification file"))
    config = write_config(tmp_path / "dev")
    config.write_text(config.read_text().replace('pin_factory = "mock"', 'pin_factory = "auto"'))
    d = daemon_module.Daemon(load_config(config), clock=FakeClock())
    d.start()
    try:
        assert d.pin_factory_name == "rpigpio" and d.status()["pin_factory"] == "rpigpio"
        # On a real factory the library's own bounce filter (5 ms) takes the worst chatter off
        # the CPU; our debouncer still decides.
        assert {b.pin.bounce for b in d.buttons.buttons.values()} == {0.005}
        alarms = {a.code: a.detail for a in d.store.active_alarms()}
        assert alarms["pin_factory"] == "gpio.pin_factory = 'auto' fell back to rpigpio: lgpio: can't create notification file"
    finally:
        d.stop()
    # lgpio works again at the next start: the alarm clears.
    fake_factory_modules(monkeypatch)
    d = daemon_module.Daemon(load_config(config), clock=FakeClock())
    d.start()
    try:
        assert d.pin_factory_name == "lgpio"
        assert {b.pin.bounce for b in d.buttons.buttons.values()} == {0.005}
        assert "pin_factory" not in [a.code for a in d.store.active_alarms()]
    finally:
        d.stop()

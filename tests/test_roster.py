"""The duty roster and check-in: real store, recorder and calendar, a fake clock, badges typed through the simulated reader."""

from __future__ import annotations

import json
from datetime import date, datetime

import pytest

from appliance.clock import HALL_TZ, FakeClock
from appliance.config import DeviceConfig
from appliance.events import Recorder
from appliance.store import Store
from drivers.badge import SimulatedBadgeReader
from services.calendar import HallCalendar, validate_calendar
from services.ratings import Ratings
from services.roster import AttendanceRules, Roster, RosterRejected, validate_duty, validate_rules, validate_shifts, validate_staff

DEVICE = DeviceConfig(id="hall-01", hall="测试政务服务中心", township="test-township", county="test-county")
WINDOWS = {"w1": "综合受理窗口", "w2": "社保医保窗口"}
WORKDAYS = ["mon", "tue", "wed", "thu", "fri"]

URINA, BATER, QIQIGE, ZHANG, LI = "0012345678", "0087654321", "0011112222", "0099990000", "0010101010"
STAFF = {
    "staff": [
        {"id": "s-001", "name": "乌日娜", "cards": [URINA], "windows": ["w1"]},
        {"id": "s-002", "name": "巴特尔", "cards": [BATER], "windows": ["w2"]},
        {"id": "s-003", "name": "其其格", "cards": [QIQIGE], "windows": ["w1", "w2"]},
        {"id": "s-009", "name": "张建国", "cards": [ZHANG], "leader": True},
        {"id": "s-010", "name": "李明", "cards": [LI], "windows": ["w2"], "active": False},
    ]
}
SHIFTS = {
    "weekly": [
        {"staff": "s-001", "window": "w1", "days": WORKDAYS, "start": "08:30", "end": "17:30"},
        {"staff": "s-002", "window": "w2", "days": WORKDAYS, "start": "08:30", "end": "12:00"},
        {"staff": "s-002", "window": "w2", "days": WORKDAYS, "start": "14:30", "end": "17:30"},
        # The night desk on Wednesdays: across midnight.
        {"staff": "s-003", "window": "w2", "days": ["wed"], "start": "22:00", "end": "06:00", "overnight": True},
    ],
    "leaders": {"mon": "s-009", "tue": "s-009", "wed": "s-009", "thu": "s-009", "fri": "s-009"},
}


def at(y, mo, d, h=8, mi=0, s=0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=HALL_TZ)


def wed(h, mi=0, s=0) -> datetime:
    """Wednesday 25 November 2026, an ordinary working day."""
    return at(2026, 11, 25, h, mi, s)


class Hall:
    """A hall's roster on a real store, with the simulated badge reader feeding it."""

    def __init__(self, tmp_path, start: datetime = wed(8, 0), synced: bool = True, boot: str = "boot-1", *, clock=None, staff=STAFF, shifts=SHIFTS, duty=None):
        self.tmp_path = tmp_path
        self.clock = clock or FakeClock(start, synced=synced)
        self.store = Store(tmp_path / "hall.db", reserve_mb=0, free_space_floor_mb=0)
        self.recorder = Recorder(self.store, DEVICE, self.clock, boot)
        self.calendar = HallCalendar()
        self.notices = []
        self.roster = Roster(self.recorder, self.store, self.clock, self.calendar, WINDOWS, on_notice=self.notices.append)
        for name, data in (("staff", staff), ("shifts", shifts), ("duty", duty)):
            if data is not None:
                self.apply(name, data)
        self.reader = SimulatedBadgeReader(self.roster.swipe, self.roster.bad_read, clock=lambda: self.clock.monotonic_ns() / 1e9)

    def apply(self, name: str, data: dict) -> None:
        """As the command router does: validate, keep the version, put it in force."""
        self.roster.apply_state(name, {"device": self.roster.validator(name)(data)})

    def swipe(self, card: str):
        """A card on the reader: typed as key events through the same assembler as hardware."""
        [read] = self.reader.swipe(card)
        return read.get("result")

    def at(self, when: datetime) -> int:
        """Move the clock to ``when`` and let the daemon's tick run once."""
        self.clock.advance((when - self.clock.now()).total_seconds())
        return self.roster.tick()

    def events(self, event_type: str) -> list[dict]:
        return [json.loads(p) for (p,) in self.store.rows("SELECT payload FROM outbox WHERE type = ? ORDER BY id", (event_type,))]

    def data(self, event_type: str) -> list[dict]:
        return [e["data"] for e in self.events(event_type)]

    def types(self) -> list[str]:
        return [t for (t,) in self.store.rows("SELECT type FROM outbox WHERE type LIKE 'attendance.%' ORDER BY id")]

    def alarms(self) -> dict[str, str]:
        return {a.code: a.detail for a in self.store.active_alarms()}

    def close(self):
        self.store.close()


@pytest.fixture
def hall(tmp_path):
    h = Hall(tmp_path)
    yield h
    h.close()


def shift(day: str, window: str, start: str, end: str, source: str = "weekly") -> dict:
    return {"day": day, "window": window, "start": start, "end": end, "source": source}


WED_W1 = shift("2026-11-25", "w1", "2026-11-25T08:30:00+08:00", "2026-11-25T17:30:00+08:00")


# -- check-in and check-out ------------------------------------------------------------------


def test_the_first_swipe_checks_in_on_time_and_the_next_checks_out(hall):
    hall.at(wed(8, 25))
    result = hall.swipe(URINA)
    assert (result.outcome, result.staff_id, result.window, result.verdict) == ("checked_in", "s-001", "w1", "on_time")
    hall.at(wed(17, 35))
    result = hall.swipe(URINA)
    assert (result.outcome, result.verdict, result.session_id) == ("checked_out", "on_time", hall.events("attendance.checked_in")[0]["event_id"])

    checked_in = hall.events("attendance.checked_in")[0]
    assert checked_in["stream"] == "person"
    assert checked_in["data"] == {"staff_id": "s-001", "name": "乌日娜", "window": "w1", "window_name": "综合受理窗口", "shift": WED_W1, "provisional": False}
    checked_out = hall.events("attendance.checked_out")[0]
    assert checked_out["stream"] == "person"
    assert checked_out["data"] == {
        "staff_id": "s-001", "name": "乌日娜", "window": "w1", "window_name": "综合受理窗口",
        "checked_in_event_id": checked_in["event_id"], "checked_in_at": "2026-11-25T08:25:00+08:00",
        "shift": WED_W1, "duplicates": 0, "provisional": False,
    }
    assert [n.text for n in hall.notices] == ["乌日娜 签到成功", "乌日娜 签退成功"]
    mine = [d for t in ("attendance.late", "attendance.early_leave", "attendance.absent") for d in hall.data(t) if d["staff_id"] == "s-001"]
    assert mine == []


def test_a_known_persons_card_number_is_not_published(hall):
    hall.swipe(URINA)
    hall.at(wed(17, 30))
    hall.swipe(URINA)
    assert URINA not in json.dumps(hall.events("attendance.checked_in") + hall.events("attendance.checked_out"))


@pytest.mark.parametrize(("arrives", "verdict", "minutes"), [((8, 35, 0), "on_time", None), ((8, 35, 1), "late", 6), ((8, 52), "late", 22)])
def test_a_check_in_past_the_grace_period_is_late(hall, arrives, verdict, minutes):
    hall.at(wed(*arrives))
    result = hall.swipe(URINA)
    assert (result.verdict, result.minutes) == (verdict, minutes)
    late = hall.events("attendance.late")
    if verdict == "on_time":
        assert late == []
        return
    assert late[0]["stream"] == "telemetry"
    assert late[0]["data"] == {
        "staff_id": "s-001", "name": "乌日娜", "window": "w1", "shift": WED_W1,
        "checked_in_at": wed(*arrives).isoformat(), "minutes_late": minutes, "late_grace_min": 5,
        "checked_in_event_id": result.event_id, "settled": False, "cancels": None,
    }
    # Recorded with the check-in, in one transaction.
    assert hall.types()[-2:] == ["attendance.checked_in", "attendance.late"]


def test_checking_out_within_the_grace_before_the_end_is_on_time(hall):
    hall.swipe(URINA)
    hall.at(wed(17, 25))
    assert hall.swipe(URINA).verdict == "on_time"
    assert hall.data("attendance.early_leave") == []


def test_checking_out_before_the_end_is_early_leave(hall):
    hall.at(wed(8, 20))
    hall.swipe(BATER)
    hall.at(wed(11, 0))
    result = hall.swipe(BATER)
    assert (result.verdict, result.minutes) == ("early_leave", 60)
    [early] = hall.events("attendance.early_leave")
    assert early["stream"] == "telemetry"
    assert early["data"] == {
        "staff_id": "s-002", "name": "巴特尔", "window": "w2",
        "shift": shift("2026-11-25", "w2", "2026-11-25T08:30:00+08:00", "2026-11-25T12:00:00+08:00"),
        "checked_out_at": "2026-11-25T11:00:00+08:00", "minutes_early": 60, "early_leave_grace_min": 5,
        "checked_out_event_id": result.event_id, "settled": False,
    }
    assert hall.types()[-2:] == ["attendance.checked_out", "attendance.early_leave"]


def test_a_check_out_is_judged_against_the_shift_it_leaves_not_the_one_checked_in_for(hall):
    # 巴特尔 works 08:30-12:00 and 14:30-17:30 and stays through lunch without swiping.
    hall.swipe(BATER)
    hall.at(wed(16, 0))
    result = hall.swipe(BATER)
    assert (result.verdict, result.minutes) == ("early_leave", 90)
    assert hall.data("attendance.early_leave")[0]["shift"]["start"] == "2026-11-25T14:30:00+08:00"


def test_a_duplicate_swipe_is_ignored_but_counted(hall):
    hall.at(wed(8, 20))
    hall.swipe(URINA)
    hall.at(wed(8, 20, 30))
    dup = hall.swipe(URINA)
    assert (dup.outcome, dup.duplicates) == ("duplicate", 1)
    hall.at(wed(8, 20, 59))
    assert hall.swipe(URINA).duplicates == 2
    assert hall.types() == ["attendance.checked_in"]
    assert [n.text for n in hall.notices] == ["乌日娜 签到成功", "乌日娜 已刷卡", "乌日娜 已刷卡"]
    # 60 s after the check-in the same card checks out, carrying the count.
    hall.at(wed(17, 40))
    hall.swipe(URINA)
    assert hall.data("attendance.checked_out")[0]["duplicates"] == 2
    assert hall.roster.summary("2026-11-25")["counts"]["duplicate_swipes"] == 2


def test_the_duplicate_interval_is_the_countys_rule(hall):
    hall.apply("shifts", SHIFTS | {"rules": {"duplicate_interval_s": 5}})
    hall.swipe(URINA)
    hall.at(wed(8, 0, 6))
    assert hall.swipe(URINA).outcome == "checked_out"


# -- unknown and inactive cards --------------------------------------------------------------


def test_an_unknown_card_is_reported_once_per_interval_and_shown_on_the_board(hall):
    result = hall.swipe("0055555555")
    assert result.outcome == "unknown_card"
    hall.at(wed(8, 0, 20))
    assert hall.swipe("0055555555").outcome == "duplicate"
    [event] = hall.events("attendance.unknown_card")
    assert event["stream"] == "person"
    assert event["data"] == {"card": "0055555555", "reason": "unknown", "staff_id": None, "name": None}
    assert [n.text for n in hall.notices] == ["此卡未登记", "此卡未登记"]
    assert hall.roster.unknown_duplicates == 1
    assert [(c["card"], c["swipes"]) for c in hall.roster.unknown_cards()] == [("0055555555", 1)]


def test_an_inactive_persons_card_is_refused(hall):
    result = hall.swipe(LI)
    assert (result.outcome, result.staff_id) == ("inactive_card", "s-010")
    assert hall.data("attendance.unknown_card") == [{"card": LI, "reason": "inactive", "staff_id": "s-010", "name": "李明"}]
    assert hall.notices[-1].text == "此卡已停用"
    assert hall.roster.staff_at("w2") is None


def test_the_director_registers_an_unknown_card_and_it_works_at_once(hall):
    hall.swipe("0055555555")
    data = hall.roster.register_card("0055555555", "s-003", "director")
    assert data == {"card": "0055555555", "staff_id": "s-003", "name": "其其格", "recorded_by": "director"}
    [event] = hall.events("attendance.card_registered")
    assert event["stream"] == "person" and event["data"] == data
    result = hall.swipe("0055555555")  # within the duplicate interval of the unknown swipe, and still taken
    assert (result.outcome, result.staff_id) == ("checked_in", "s-003")
    assert hall.roster.unknown_cards() == []


def test_a_card_registered_by_the_config_pages_own_roster_works_at_the_next_swipe(hall):
    # The page runs in another process: its Roster writes the store, the daemon's never hears of it.
    hall.swipe("0055555555")
    page = Roster(Recorder(hall.store, DEVICE, hall.clock, "boot-1"), hall.store, hall.clock, HallCalendar(), WINDOWS)
    page.apply_state("staff", {"device": page.validator("staff")(STAFF)})
    page.register_card("0055555555", "s-003", "director")
    hall.clock.advance(5)  # well within the duplicate interval of the unknown swipe
    result = hall.swipe("0055555555")
    assert (result.outcome, result.staff_id) == ("checked_in", "s-003")
    assert hall.notices[-1].text == "其其格 签到成功"
    hall.swipe("0044444444")
    assert hall.swipe("0044444444").outcome == "duplicate"  # an unknown card is still suppressed


@pytest.mark.parametrize(
    ("args", "field", "reason"),
    [
        (("00555", "s-003"), "card", "card 00555 was already registered on this device to s-003"),
        ((URINA, "s-003"), "card", "card 0012345678 already belongs to 乌日娜 (s-001) in the county's staff registry"),
        (("12-34", "s-003"), "card", '"12-34" is not a card number: 4 to 64 digits (0-9, or A-F for a hex reader)'),
        (("0077777777", "s-404"), "staff_id", '"s-404" is not in the staff registry'),
        (("0077777777", "s-010"), "staff_id", "李明 (s-010) is inactive in the staff registry"),
    ],
)
def test_registering_a_card_is_refused_with_the_reason(hall, args, field, reason):
    hall.roster.register_card("00555", "s-003", "director")
    with pytest.raises(RosterRejected) as exc:
        hall.roster.register_card(*args, "director")
    assert (exc.value.field, exc.value.reason) == (field, reason)


def test_garbage_from_the_reader_is_reported_rate_limited_and_shown(hall):
    reads = hall.reader.swipe("12AB34")
    assert reads[0]["bad_read"] == "letters"
    hall.reader.swipe("1" * 25)
    hall.reader.swipe("12CD")
    assert hall.data("attendance.bad_read") == [
        {"kind": "letters", "reason": "'12AB34' is not a card number: A, B typed where a card number has only digits 0-9 (a reader that types hex needs badge.card_format = \"hex\")", "suppressed": 0},
        {"kind": "too_long", "reason": "25 characters ('111111111111111111111') is longer than a card number (at most 20)", "suppressed": 0},
    ]
    assert [e["stream"] for e in hall.events("attendance.bad_read")] == ["telemetry", "telemetry"]
    assert [n.text for n in hall.notices] == ["读卡失败 请重新刷卡"] * 3
    hall.at(wed(8, 1, 1))
    hall.reader.swipe("12EF")
    assert hall.data("attendance.bad_read")[-1]["suppressed"] == 1
    assert hall.types().count("attendance.checked_in") == 0


# -- absence, leave, 销假 ---------------------------------------------------------------------


def test_nobody_checked_in_by_start_plus_grace_is_absent_at_that_moment(hall):
    hall.swipe(BATER)
    hall.at(wed(8, 59, 59))
    assert hall.data("attendance.absent") == []
    hall.at(wed(9, 0, 0))
    [absent] = hall.events("attendance.absent")
    assert absent["time"] == "2026-11-25T09:00:00.000+08:00"
    assert absent["stream"] == "telemetry"
    assert absent["data"] == {"staff_id": "s-001", "name": "乌日娜", "window": "w1", "window_name": "综合受理窗口", "shift": WED_W1, "due": "2026-11-25T09:00:00+08:00", "absent_after_min": 30}
    hall.at(wed(9, 5))
    assert len(hall.data("attendance.absent")) == 1, "one absence per shift"


def test_coming_back_within_a_shift_is_not_a_second_late(hall):
    hall.at(wed(8, 50))
    assert hall.swipe(URINA).verdict == "late"  # 20 minutes late
    hall.at(wed(10, 0))
    assert hall.swipe(URINA).outcome == "checked_out"  # an errand
    hall.at(wed(10, 40))
    back = hall.swipe(URINA)
    assert (back.outcome, back.verdict, back.minutes) == ("checked_in", "returned", None)
    [late] = hall.data("attendance.late")
    assert late["minutes_late"] == 20
    assert [v for (v,) in hall.store.rows("SELECT in_verdict FROM attendance ORDER BY in_at")] == ["late", "returned"]
    [entry] = [e for e in hall.roster.summary("2026-11-25")["shifts"] if e["staff_id"] == "s-001"]
    assert (entry["status"], entry["minutes_late"], entry["checked_in_at"]) == ("late", 20, "2026-11-25T08:50:00+08:00")


def test_someone_on_time_who_comes_back_after_the_grace_period_is_not_late(hall):
    hall.at(wed(8, 25))
    assert hall.swipe(URINA).verdict == "on_time"
    hall.at(wed(9, 0))
    hall.swipe(URINA)
    hall.at(wed(9, 30))
    assert hall.swipe(URINA).verdict == "returned"
    assert hall.data("attendance.late") == []
    [entry] = [e for e in hall.roster.summary("2026-11-25")["shifts"] if e["staff_id"] == "s-001"]
    assert entry["status"] == "on_time"


def test_coming_and_going_before_the_start_does_not_make_a_later_check_in_a_return(hall):
    hall.at(wed(8, 20))
    hall.swipe(URINA)
    hall.at(wed(8, 25))
    hall.swipe(URINA)  # gone again before 08:30
    hall.at(wed(9, 0))
    assert [a["staff_id"] for a in hall.data("attendance.absent")] == ["s-001", "s-002"]
    hall.at(wed(9, 10))
    result = hall.swipe(URINA)
    assert (result.verdict, result.minutes) == ("late", 40)
    [late] = hall.data("attendance.late")
    assert late["cancels"] == hall.events("attendance.absent")[0]["event_id"]
    [entry] = [e for e in hall.roster.summary("2026-11-25")["shifts"] if e["staff_id"] == "s-001"]
    assert (entry["status"], entry["minutes_late"]) == ("late", 40)


def test_an_early_arrival_back_from_an_errand_is_a_return(tmp_path):
    h = Hall(tmp_path, start=wed(5, 0))
    try:
        assert h.swipe(URINA).verdict == "unscheduled"  # there at 08:30 without a shift's check-in
        h.at(wed(10, 0))
        h.swipe(URINA)
        h.at(wed(10, 30))
        assert h.swipe(URINA).verdict == "returned"
        assert h.data("attendance.late") == [] and "s-001" not in [a["staff_id"] for a in h.data("attendance.absent")]
    finally:
        h.close()


def test_someone_in_since_the_morning_who_steps_out_in_the_afternoon_shift_returns(hall):
    hall.at(wed(8, 25))
    hall.swipe(BATER)  # in through lunch, into the 14:30 shift
    hall.at(wed(14, 40))
    hall.swipe(BATER)
    hall.at(wed(15, 10))
    assert hall.swipe(BATER).verdict == "returned"
    assert hall.data("attendance.late") == []


def test_a_missed_check_out_yesterday_does_not_make_todays_check_in_a_return(tmp_path):
    h = Hall(tmp_path, start=at(2026, 11, 24, 8, 25))
    try:
        h.swipe(URINA)  # Tuesday, never checked out
        h.at(wed(8, 50))  # closed as missed overnight; Wednesday, 20 minutes late
        assert [m["staff_id"] for m in h.data("attendance.missed_checkout")] == ["s-001"]
        assert (h.swipe(URINA).verdict, h.data("attendance.late")[-1]["minutes_late"]) == ("late", 20)
    finally:
        h.close()


def test_a_helper_without_a_shift_is_not_kept_checked_in_into_her_night_shift(tmp_path):
    h = Hall(tmp_path, start=wed(7, 0))
    try:
        assert h.swipe(QIQIGE).verdict == "unscheduled"  # helping out; her night shift is 22:00
        h.at(wed(19, 1))
        assert [m["staff_id"] for m in h.data("attendance.missed_checkout")] == ["s-003"]
        h.at(wed(21, 55))
        assert h.swipe(QIQIGE).outcome == "checked_in"
    finally:
        h.close()


def test_a_return_in_a_boot_with_a_wrong_clock_is_settled_as_a_return(tmp_path):
    first = Hall(tmp_path, start=wed(8, 25), boot="boot-1")
    first.swipe(URINA)  # on time, with a good clock
    first.close()
    clock = FakeClock(wed(6, 0), synced=False)  # a power cut; the next boot thinks it is 06:00 (really 10:00)
    h = Hall(tmp_path, clock=clock, boot="boot-2")
    try:
        clock.advance(10 * 60)
        h.swipe(URINA)  # really 10:10: out for an errand
        clock.advance(20 * 60)
        h.swipe(URINA)  # really 10:30: back
        clock.set_wall(wed(10, 31), synced=True)
        h.roster.tick()
        assert [v for (v,) in h.store.rows("SELECT in_verdict FROM attendance ORDER BY in_at")] == ["on_time", "returned"]
        assert h.data("attendance.late") == []
    finally:
        h.close()


def test_the_next_shift_of_the_day_is_judged_on_its_own(hall):
    hall.at(wed(8, 25))
    hall.swipe(BATER)
    hall.at(wed(12, 0))
    hall.swipe(BATER)
    hall.at(wed(14, 50))  # the afternoon shift began at 14:30
    result = hall.swipe(BATER)
    assert (result.verdict, result.minutes) == ("late", 20)


def test_a_return_held_while_unsynced_is_settled_as_a_return(tmp_path):
    clock = FakeClock(wed(6, 0), synced=False)  # really 08:50
    h = Hall(tmp_path, clock=clock)
    try:
        h.swipe(URINA)  # really 08:50: late
        h.at(wed(7, 0))
        h.swipe(URINA)  # really 09:50: out
        h.at(wed(7, 30))
        h.swipe(URINA)  # really 10:20: back
        clock.set_wall(wed(10, 20), synced=True)
        h.roster.tick()
        [late] = h.data("attendance.late")
        assert (late["checked_in_at"], late["minutes_late"], late["settled"]) == ("2026-11-25T08:50:00+08:00", 20, True)
        assert [v for (v,) in h.store.rows("SELECT in_verdict FROM attendance ORDER BY in_at")] == ["late", "returned"]
    finally:
        h.close()


def test_coming_after_the_absence_is_late_and_cancels_it(hall):
    hall.at(wed(9, 0))
    [absent_id] = [e["event_id"] for e in hall.events("attendance.absent") if e["data"]["staff_id"] == "s-001"]
    hall.at(wed(9, 10))
    hall.swipe(URINA)
    late = hall.data("attendance.late")[0]
    assert (late["minutes_late"], late["cancels"]) == (40, absent_id)
    hall.at(wed(18, 0))
    [entry] = [s for s in hall.roster.summary("2026-11-25")["shifts"] if s["staff_id"] == "s-001"]
    assert (entry["status"], entry["minutes_late"]) == ("late", 40)


def test_leave_recorded_beforehand_means_no_absence(hall):
    leave = hall.roster.record_leave("s-001", "2026-11-25", "2026-11-25", "sick", "director", "发烧")
    hall.at(wed(9, 30))
    assert [a for a in hall.data("attendance.absent") if a["staff_id"] == "s-001"] == []
    [event] = hall.events("attendance.leave")
    assert event["stream"] == "person"
    assert event["data"] == leave == {
        "leave_id": event["event_id"], "staff_id": "s-001", "name": "乌日娜", "kind": "sick", "kind_label": "病假",
        "start": "2026-11-25T00:00:00+08:00", "end": "2026-11-26T00:00:00+08:00", "note": "发烧", "recorded_by": "director", "cancels": [],
    }
    statuses = {s["staff_id"]: s["status"] for s in hall.roster.summary("2026-11-25")["shifts"]}
    assert statuses["s-001"] == "leave"


def test_leave_recorded_afterwards_cancels_the_absence(hall):
    hall.at(wed(9, 0))
    [absent_id] = [e["event_id"] for e in hall.events("attendance.absent") if e["data"]["staff_id"] == "s-001"]
    hall.at(wed(10, 0))
    leave = hall.roster.record_leave("s-001", "2026-11-25T08:00", "2026-11-25T18:00", "personal", "director")
    assert leave["cancels"] == [absent_id]
    hall.at(wed(18, 0))
    summary = hall.roster.summary("2026-11-25")
    assert {s["staff_id"]: s["status"] for s in summary["shifts"]}["s-001"] == "leave"
    assert summary["counts"]["absent"] == 2  # 巴特尔's two shifts; 乌日娜's absence was cancelled


def test_xiaojia_ends_leave_early_and_the_next_shift_is_judged_again(hall):
    leave = hall.roster.record_leave("s-001", "2026-11-25", "2026-11-27", "annual", "director")
    hall.at(wed(9, 30))
    assert [a for a in hall.data("attendance.absent") if a["staff_id"] == "s-001"] == []
    # Back on Thursday morning: 销假 at 08:00.
    hall.at(at(2026, 11, 26, 8, 0))
    ended = hall.roster.end_leave(leave["leave_id"], "director")
    assert ended == {"leave_id": leave["leave_id"], "staff_id": "s-001", "name": "乌日娜", "ended_at": "2026-11-26T08:00:00+08:00", "planned_end": "2026-11-28T00:00:00+08:00", "withdrawn": False, "recorded_by": "director"}
    assert hall.events("attendance.leave_ended")[0]["stream"] == "person"
    hall.at(at(2026, 11, 26, 9, 0))
    assert [a["shift"]["day"] for a in hall.data("attendance.absent") if a["staff_id"] == "s-001"] == ["2026-11-26"]
    assert hall.roster.leaves("s-001")[0]["ended_at"] == "2026-11-26T08:00:00+08:00"


@pytest.mark.parametrize(
    ("args", "field", "reason"),
    [
        (("s-404", "2026-11-25", "2026-11-25", "sick"), "staff_id", '"s-404" is not in the staff registry'),
        (("s-001", "2026-11-26", "2026-11-25", "sick"), "end", "2026-11-26T00:00:00+08:00 is not after the start 2026-11-26T00:00:00+08:00"),
        (("s-001", "25/11/2026", "2026-11-25", "sick"), "start", '"25/11/2026" is not a date (YYYY-MM-DD) or a date and time (YYYY-MM-DDTHH:MM)'),
        (("s-001", "2026-11-25", "2026-11-25", "holiday"), "kind", '"holiday" must be one of personal (事假), sick (病假), annual (年休假), business (公出), compensatory (调休假), other (其他)'),
        (("s-001", "2026-11-24", "2026-11-26", "sick"), "start", "乌日娜 already has leave from 2026-11-25T00:00:00+08:00 to 2026-11-26T00:00:00+08:00 ({leave_id}); end it (销假) or choose other dates"),
    ],
)
def test_bad_leave_is_refused_naming_the_field(hall, args, field, reason):
    first = hall.roster.record_leave("s-001", "2026-11-25", "2026-11-25", "sick", "director")
    with pytest.raises(RosterRejected) as exc:
        hall.roster.record_leave(*args, "director")
    assert (exc.value.field, exc.value.reason) == (field, reason.format(leave_id=first["leave_id"]))
    assert len(hall.events("attendance.leave")) == 1


def test_ending_leave_twice_or_after_it_is_over_is_refused(hall):
    leave = hall.roster.record_leave("s-001", "2026-11-20", "2026-11-21", "sick", "director")
    with pytest.raises(RosterRejected) as exc:
        hall.roster.end_leave(leave["leave_id"], "director")
    assert (exc.value.field, exc.value.reason) == ("at", "the leave is already over: it ended at 2026-11-22T00:00:00+08:00")
    leave = hall.roster.record_leave("s-001", "2026-11-26", "2026-11-26", "sick", "director")
    ended = hall.roster.end_leave(leave["leave_id"], "director")
    assert ended["withdrawn"] is True  # ended before it began: withdrawn
    with pytest.raises(RosterRejected) as exc:
        hall.roster.end_leave(leave["leave_id"], "director")
    assert (exc.value.field, exc.value.reason) == ("leave_id", "this leave was already ended (销假) at 2026-11-26T00:00:00+08:00")
    with pytest.raises(RosterRejected) as exc:
        hall.roster.end_leave("nope", "director")
    assert exc.value.field == "leave_id"
    with pytest.raises(RosterRejected) as exc:
        hall.roster.end_leave(leave["leave_id"], "")
    assert exc.value.field == "recorded_by"


# -- windows ---------------------------------------------------------------------------------


def test_a_window_left_unstaffed_is_reported_and_its_end_too(hall):
    hall.swipe(BATER)
    hall.at(wed(8, 34, 59))
    assert hall.data("attendance.window_unstaffed") == []
    hall.at(wed(8, 35))
    [gap] = hall.events("attendance.window_unstaffed")
    assert gap["data"] == {"window": "w1", "window_name": "综合受理窗口", "since": "2026-11-25T08:35:00+08:00", "expected": [{"staff_id": "s-001", "name": "乌日娜", "on_leave": False}]}
    hall.at(wed(8, 50))
    hall.swipe(URINA)
    hall.at(wed(8, 50, 5))
    assert hall.data("attendance.window_unstaffed_ended") == [
        {"window": "w1", "window_name": "综合受理窗口", "since": "2026-11-25T08:35:00+08:00", "until": "2026-11-25T08:50:05+08:00", "minutes": 16, "ended_by": "check_in", "staff_id": "s-001", "unstaffed_event_id": gap["event_id"]}
    ]
    # 巴特尔 leaves at 10:00: w2 is unstaffed until his morning shift ends.
    hall.at(wed(10, 0))
    hall.swipe(BATER)
    hall.at(wed(10, 0, 5))
    hall.at(wed(12, 0))
    w2 = [d for d in hall.data("attendance.window_unstaffed_ended") if d["window"] == "w2"]
    assert [(d["since"], d["ended_by"]) for d in w2] == [("2026-11-25T10:00:05+08:00", "schedule_end")]


def test_who_is_at_each_window_goes_with_every_rating(hall):
    ratings = Ratings(hall.recorder, hall.store, hall.clock, hall.calendar, WINDOWS, on_duty=hall.roster)
    ratings.press("w1", "satisfied")  # nobody checked in yet
    hall.swipe(URINA)
    hall.at(wed(8, 1))
    hall.swipe(QIQIGE)  # helps out, unscheduled: her first window is w1, but 乌日娜's shift is there
    hall.at(wed(8, 2))
    ratings.press("w1", "very_satisfied")
    ratings.press("w2", "satisfied")
    rows = hall.store.rows("SELECT window, staff_id, flags FROM ratings ORDER BY seq")
    assert rows == [("w1", None, '["unstaffed"]'), ("w1", "s-001", "[]"), ("w2", None, '["unstaffed"]')]
    assert hall.roster.known is True


def test_without_a_registry_the_roster_does_not_flag_ratings_unstaffed(tmp_path):
    h = Hall(tmp_path, staff=None, shifts=None)
    try:
        ratings = Ratings(h.recorder, h.store, h.clock, h.calendar, WINDOWS, on_duty=h.roster)
        ratings.press("w1", "satisfied")
        assert h.store.rows("SELECT flags FROM ratings") == [("[]",)]
    finally:
        h.close()


def test_a_forgotten_check_out_is_closed_after_the_shift_and_the_person_leaves_the_window(hall):
    hall.swipe(URINA)
    hall.at(wed(21, 30))
    assert hall.roster.staff_at("w1") == "s-001"
    hall.at(wed(21, 30, 5))
    assert hall.data("attendance.missed_checkout") == [
        {"staff_id": "s-001", "name": "乌日娜", "window": "w1", "checked_in_event_id": hall.events("attendance.checked_in")[0]["event_id"], "checked_in_at": "2026-11-25T08:00:00+08:00", "expected_end": "2026-11-25T17:30:00+08:00"}
    ]
    assert hall.roster.staff_at("w1") is None
    hall.at(at(2026, 11, 26, 8, 10))
    assert hall.swipe(URINA).outcome == "checked_in"  # a new day starts with a check-in


# -- the calendar: holiday duty, 调休, the leader -------------------------------------------------

DUTY = {
    "days": {
        # National Day (Thursday): only the duty roster.
        "2026-10-01": {"leader": "s-009", "shifts": [{"staff": "s-003", "window": "w1", "start": "09:00", "end": "12:00"}]},
        # Saturday 10 October, a 调休 working day: works Wednesday's shifts.
        "2026-10-10": {"as_weekday": "wed"},
        "2026-11-26": {"leader": "s-001"},
    }
}


def starts(h: Hall, day: str) -> list[tuple[str, str, str]]:
    return [(s.staff_id, s.window, s.start.strftime("%H:%M")) for s in h.roster.shifts_on(day)]


def test_a_public_holiday_has_only_its_duty_roster(tmp_path):
    h = Hall(tmp_path, start=at(2026, 10, 1, 8, 50), duty=DUTY)
    try:
        assert h.roster.day_kind(date(2026, 10, 1)) == "holiday"
        assert starts(h, "2026-10-01") == [("s-003", "w1", "09:00")]
        assert starts(h, "2026-10-02") == []  # Friday, a holiday with no duty: closed
        assert h.roster.leader_on(date(2026, 10, 1)) == "s-009"
        h.swipe(QIQIGE)
        h.at(at(2026, 10, 1, 9, 30))
        assert h.data("attendance.absent") == []  # 乌日娜's weekday shift does not apply
        result = h.roster.on_duty_today()
        assert result["text"] == "今日带班领导：张建国　综合受理窗口：其其格"
    finally:
        h.close()


def test_holiday_duty_on_a_tiaoxiu_weekend_follows_the_weekday_the_county_names(tmp_path):
    h = Hall(tmp_path, start=at(2026, 10, 10, 21, 50), duty=DUTY)
    try:
        assert h.roster.day_kind(date(2026, 10, 10)) == "tiaoxiu"
        assert starts(h, "2026-10-10") == [("s-001", "w1", "08:30"), ("s-002", "w2", "08:30"), ("s-002", "w2", "14:30"), ("s-003", "w2", "22:00")]
        assert h.roster.leader_on(date(2026, 10, 10)) == "s-009"  # Wednesday's leader
        # Sunday 20 September is a 调休 working day the county named no weekday for: Monday's shifts.
        assert starts(h, "2026-09-20") == [("s-001", "w1", "08:30"), ("s-002", "w2", "08:30"), ("s-002", "w2", "14:30")]
        assert h.swipe(QIQIGE).verdict == "on_time"  # the Wednesday night desk, on a Saturday
    finally:
        h.close()


def test_weekend_shifts_apply_on_ordinary_weekends_but_not_in_a_holiday(tmp_path):
    weekend = {"weekly": SHIFTS["weekly"] + [{"staff": "s-003", "window": "w1", "days": ["sat"], "start": "09:00", "end": "12:00"}]}
    h = Hall(tmp_path, shifts=weekend)
    try:
        assert h.roster.day_kind(date(2026, 11, 28)) == "weekend"
        assert starts(h, "2026-11-28") == [("s-003", "w1", "09:00")]  # 周末不打烊
        assert h.roster.day_kind(date(2026, 10, 3)) == "holiday"
        assert starts(h, "2026-10-03") == []  # a National Day Saturday
    finally:
        h.close()


def test_the_countys_calendar_decides_a_year_the_library_lacks(tmp_path):
    h = Hall(tmp_path)
    try:
        h.calendar.set_county_years(validate_calendar({"years": {"2027": {"holidays": ["2027-01-01", "2027-01-02"], "workdays": ["2027-01-09"]}}}))
        assert h.roster.day_kind(date(2027, 1, 1)) == "holiday"
        assert h.roster.day_kind(date(2027, 1, 2)) == "holiday"  # a Saturday inside the holiday
        assert h.roster.day_kind(date(2027, 1, 3)) == "weekend"
        assert h.roster.day_kind(date(2027, 1, 9)) == "tiaoxiu"
    finally:
        h.close()


def test_the_leader_on_duty_and_who_is_at_each_window_for_the_board(hall):
    hall.swipe(URINA)
    board = hall.roster.on_duty_today()
    assert board["leader"] == {"staff_id": "s-009", "name": "张建国", "present": False}
    assert board["windows"][0] == {
        "window": "w1", "name": "综合受理窗口",
        "scheduled": [{"staff_id": "s-001", "name": "乌日娜", "present": True, "start": "2026-11-25T08:30:00+08:00", "end": "2026-11-25T17:30:00+08:00"}],
        "present": [{"staff_id": "s-001", "name": "乌日娜", "present": True}],
    }
    assert board["text"] == "今日带班领导：张建国　综合受理窗口：乌日娜"
    assert (board["day_kind"], board["provisional"]) == ("workday", False)
    # The duty roster names another leader for Thursday.
    h2 = Hall(hall.tmp_path / "thu", start=at(2026, 11, 26, 9), duty=DUTY)
    try:
        assert h2.roster.on_duty_today()["leader"]["staff_id"] == "s-001"
    finally:
        h2.close()


# -- overnight -------------------------------------------------------------------------------


def test_an_overnight_shift_runs_across_midnight(hall):
    hall.at(wed(21, 50))
    result = hall.swipe(QIQIGE)
    assert (result.window, result.verdict) == ("w2", "on_time")
    hall.at(at(2026, 11, 26, 2, 0))
    assert hall.roster.staff_at("w2") == "s-003"
    hall.at(at(2026, 11, 26, 5, 0))
    out = hall.swipe(QIQIGE)
    assert (out.verdict, out.minutes) == ("early_leave", 60)
    assert hall.data("attendance.early_leave")[0]["shift"] == shift("2026-11-25", "w2", "2026-11-25T22:00:00+08:00", "2026-11-26T06:00:00+08:00")


def test_an_overnight_shift_nobody_came_to_is_an_absence_that_night(hall):
    hall.at(wed(22, 29))
    assert [a["staff_id"] for a in hall.data("attendance.absent") if a["shift"]["start"].endswith("22:00:00+08:00")] == []
    hall.at(wed(22, 30))
    assert [a for a in hall.data("attendance.absent") if a["staff_id"] == "s-003"][0]["due"] == "2026-11-25T22:30:00+08:00"
    # Wednesday's summary waits for the night shift to end.
    assert hall.data("attendance.summary") == []
    hall.at(at(2026, 11, 26, 6, 30))
    assert [s["day"] for s in hall.data("attendance.summary")] == ["2026-11-25"]


# -- the daily summary -----------------------------------------------------------------------


def test_a_daily_summary_is_published_once_after_closing(tmp_path):
    h = Hall(tmp_path, start=at(2026, 11, 24, 8, 0))  # Tuesday: no night shift
    try:
        h.at(at(2026, 11, 24, 8, 20))
        h.swipe(URINA)
        h.swipe("0055555555")
        h.at(at(2026, 11, 24, 8, 35))  # 巴特尔's window is unstaffed from here
        h.at(at(2026, 11, 24, 8, 40))
        h.swipe(BATER)
        h.at(at(2026, 11, 24, 8, 40, 5))
        h.at(at(2026, 11, 24, 17, 40))
        h.swipe(URINA)
        h.at(at(2026, 11, 24, 17, 59))
        assert h.data("attendance.summary") == []
        h.at(at(2026, 11, 24, 18, 0))  # closing (17:30) plus summary_delay_min
        h.at(at(2026, 11, 24, 18, 5))
        [summary] = h.events("attendance.summary")
        assert summary["stream"] == "telemetry"
        data = summary["data"]
        assert (data["day"], data["day_kind"], data["leader"]) == ("2026-11-24", "workday", {"staff_id": "s-009", "name": "张建国"})
        assert [(s["staff_id"], s["start"][11:16], s["status"], s["checked_in_at"], s["minutes_late"], s["early_leave"]) for s in data["shifts"]] == [
            ("s-001", "08:30", "on_time", "2026-11-24T08:20:00+08:00", None, False),
            ("s-002", "08:30", "late", "2026-11-24T08:40:00+08:00", 10, False),
            ("s-002", "14:30", "on_time", "2026-11-24T08:40:00+08:00", None, False),  # stayed through lunch
        ]
        assert data["counts"] == {
            "scheduled": 3, "on_time": 2, "late": 1, "absent": 0, "leave": 0, "no_record": 0, "unverified": 0,
            "early_leave": 0, "missed_checkout": 0, "duplicate_swipes": 0, "unknown_cards": 1,
        }
        assert data["windows_unstaffed"] == [{"window": "w2", "since": "2026-11-24T08:35:00+08:00", "until": "2026-11-24T08:40:05+08:00", "minutes": 6}]
        assert data["unscheduled"] == []
    finally:
        h.close()


def test_a_day_missed_while_the_device_was_off_is_summarised_when_it_is_back(tmp_path):
    first = Hall(tmp_path, start=at(2026, 11, 23, 7, 0))
    first.at(at(2026, 11, 23, 7, 1))  # the roster starts watching on Monday morning
    first.close()
    # The power is off from then until Wednesday 09:10.
    h = Hall(tmp_path, start=wed(9, 10), boot="boot-2")
    try:
        h.roster.tick()
        assert [s["day"] for s in h.data("attendance.summary")] == ["2026-11-23", "2026-11-24"]
        monday = h.data("attendance.summary")[0]
        assert {s["status"] for s in monday["shifts"]} == {"no_record"}
        # Nobody could swipe: nobody is called absent, Wednesday morning included.
        assert h.data("attendance.absent") == []
    finally:
        h.close()


# -- time without a clock ------------------------------------------------------------------------


def test_no_verdict_is_judged_while_the_clock_is_unsynced_even_when_it_runs_ahead(tmp_path):
    # The unsynchronised clock believes it is afternoon; it is really 07:00.
    h = Hall(tmp_path, start=wed(15, 0), synced=False)
    try:
        assert h.at(wed(16, 0)) == 0
        result = h.swipe(URINA)
        assert (result.outcome, result.verdict) == ("checked_in", "pending")
        assert h.data("attendance.checked_in")[0]["provisional"] is True
        assert h.types() == ["attendance.checked_in"]
        assert h.roster.staff_at("w1") == "s-001"  # ratings are still attributed
        assert h.roster.on_duty_today()["provisional"] is True
    finally:
        h.close()


def test_a_power_cut_that_restarts_the_clock_hours_behind_reaches_the_county_without_false_verdicts(tmp_path):
    # Morning, synced: 乌日娜 checks in on time.
    first = Hall(tmp_path, start=wed(8, 20))
    first.swipe(URINA)
    first.close()
    # Power cut at 08:40, power back at 10:05. No RTC: the Pi starts at its last saved time,
    # 07:05, three hours behind, and unsynchronised. 巴特尔 (08:30 shift) came at 09:00 while
    # the hall was dark and could not swipe.
    clock = FakeClock(wed(7, 5), synced=False)
    h = Hall(tmp_path, clock=clock, boot="boot-2")
    try:
        assert h.roster.staff_at("w1") == "s-001", "the morning's check-in survived the restart"
        assert h.at(wed(7, 10)) == 0  # really 10:10: held
        early = h.swipe(BATER)  # really 10:10
        assert early.verdict == "pending"
        h.at(wed(7, 25))
        # NTP answers at what is really 10:25.
        clock.set_wall(wed(10, 25), synced=True)
        assert h.roster.settle(clock.now(), clock.monotonic_ns(), "boot-2") == 1
        late = h.data("attendance.late")
        assert [(d["staff_id"], d["checked_in_at"], d["minutes_late"], d["settled"]) for d in late] == [("s-002", "2026-11-25T10:10:00+08:00", 100, True)]
        assert h.store.rows("SELECT in_at, in_verdict, corrected FROM attendance WHERE staff_id = 's-002'") == [("2026-11-25T10:10:00+08:00", "late", 1)]
        h.roster.tick()
        # Nobody is called absent for a deadline (09:00) that passed while the hall was dark.
        assert h.data("attendance.absent") == []
        # From now on, the device sees: 巴特尔's afternoon shift is judged as usual.
        h.swipe(BATER)  # out for lunch
        h.at(wed(15, 0))
        assert [(a["staff_id"], a["due"]) for a in h.data("attendance.absent")] == [("s-002", "2026-11-25T15:00:00+08:00")]
    finally:
        h.close()


def test_a_check_out_held_while_unsynced_is_judged_from_the_anchor(tmp_path):
    clock = FakeClock(wed(6, 0), synced=False)  # really 08:00
    h = Hall(tmp_path, clock=clock)
    try:
        h.swipe(URINA)  # really 08:00
        h.at(wed(9, 0))  # really 11:00: she leaves early
        assert h.swipe(URINA).verdict == "pending"
        h.at(wed(9, 30))
        clock.set_wall(wed(11, 30), synced=True)
        assert h.roster.settle(clock.now(), clock.monotonic_ns(), "boot-1") == 1
        [early] = h.data("attendance.early_leave")
        assert (early["checked_out_at"], early["minutes_early"], early["settled"]) == ("2026-11-25T11:00:00+08:00", 390, True)
        assert h.store.rows("SELECT in_at, in_verdict, out_at, out_verdict FROM attendance") == [
            ("2026-11-25T08:00:00+08:00", "on_time", "2026-11-25T11:00:00+08:00", "early_leave")
        ]
    finally:
        h.close()


def test_the_shift_guessed_from_a_wrong_clock_is_replaced_at_settle(tmp_path):
    clock = FakeClock(wed(9, 0), synced=False)  # really 20:00, after every shift of the day
    h = Hall(tmp_path, clock=clock)
    try:
        assert h.swipe(BATER).window == "w2"  # best guess: his morning shift
        assert h.store.rows("SELECT shift_key FROM attendance") == [("s-002|w2|2026-11-25T08:30+08:00",)]
        clock.advance(60)
        clock.set_wall(wed(20, 1), synced=True)
        h.roster.tick()
        assert h.store.rows("SELECT in_at, in_verdict, shift_key, window FROM attendance") == [("2026-11-25T20:00:00+08:00", "unscheduled", None, "w2")]
        assert h.data("attendance.late") == []
    finally:
        h.close()


def test_an_unscheduled_evening_check_in_never_runs_into_the_next_days_shift(tmp_path):
    h = Hall(tmp_path, start=at(2026, 11, 24, 18, 0))  # Tuesday evening
    try:
        h.at(at(2026, 11, 24, 18, 30))
        assert (h.swipe(URINA).outcome, h.roster.staff_at("w1")) == ("checked_in", "s-001")  # overtime, no shift
        h.at(wed(6, 31))  # 8 h, then the 240 minutes for a missed check-out
        [missed] = h.data("attendance.missed_checkout")
        assert (missed["checked_in_at"], missed["expected_end"]) == ("2026-11-24T18:30:00+08:00", "2026-11-25T02:30:00+08:00")
        h.at(wed(8, 25))
        assert h.swipe(URINA).outcome == "checked_in"  # a new check-in, not the check-out of last night
        h.at(wed(9, 1))
        assert [a["staff_id"] for a in h.data("attendance.absent")] == ["s-002"]  # not s-001: she came
    finally:
        h.close()


def test_an_early_arrival_without_a_shift_yet_stays_checked_in_through_that_days_shift(tmp_path):
    h = Hall(tmp_path, start=wed(5, 0))
    try:
        assert h.swipe(URINA).verdict == "unscheduled"  # 3.5 h before her 08:30 shift
        h.at(wed(17, 20))  # 12 h later: 8 h and the 240 minutes, but her shift runs to 17:30
        assert h.data("attendance.missed_checkout") == [] and h.roster.staff_at("w1") == "s-001"
        h.at(wed(17, 35))
        assert h.swipe(URINA).outcome == "checked_out"
    finally:
        h.close()


def test_a_check_in_timed_by_a_wrong_clock_is_not_closed_from_its_wrong_time(tmp_path):
    clock = FakeClock(at(2026, 11, 20, 18, 0), synced=False)  # the Pi's saved time; really Wed 08:00
    first = Hall(tmp_path, clock=clock, boot="boot-1")
    clock.advance(25 * 60)
    first.swipe(URINA)  # really Wed 08:25
    first.close()
    clock2 = FakeClock(wed(8, 45), synced=True)  # a power blip; the next boot has the time at once
    h = Hall(tmp_path, clock=clock2, boot="boot-2")
    try:
        h.roster.tick()
        assert h.data("attendance.missed_checkout") == [] and h.roster.staff_at("w1") == "s-001"
        h.at(wed(20, 46))  # 8 h and 240 minutes after this boot first knew the time
        [missed] = h.data("attendance.missed_checkout")
        assert missed["expected_end"] == "2026-11-25T16:45:00+08:00"
    finally:
        h.close()


def test_swipes_from_a_boot_that_never_synced_are_unverified_never_judged(tmp_path):
    clock = FakeClock(wed(7, 0), synced=False)  # really 09:30
    first = Hall(tmp_path, clock=clock, boot="boot-1")
    first.swipe(URINA)
    first.close()
    # Another power cut before NTP answered; the next boot syncs.
    clock2 = FakeClock(wed(11, 0), synced=True)
    h = Hall(tmp_path, clock=clock2, boot="boot-2")
    try:
        assert h.roster.settle(clock2.now(), clock2.monotonic_ns(), "boot-2") == 0
        assert h.store.rows("SELECT in_verdict, corrected FROM attendance") == [("unverified", 0)]
        h.roster.tick()
        assert h.data("attendance.late") == h.data("attendance.absent") == []
    finally:
        h.close()


def test_a_daemon_that_starts_with_a_good_clock_settles_what_an_earlier_boot_held(tmp_path):
    first = Hall(tmp_path, start=wed(7, 0), synced=False, boot="boot-1")
    first.swipe(URINA)
    first.close()
    h = Hall(tmp_path, start=wed(11, 0), boot="boot-2")
    try:
        h.roster.tick()  # no explicit settle(): the first synchronised tick does it
        assert h.store.rows("SELECT in_verdict FROM attendance") == [("unverified",)]
    finally:
        h.close()


def test_an_unknown_card_swiped_before_the_sync_is_counted_on_its_true_day(tmp_path):
    clock = FakeClock(at(2026, 11, 24, 23, 50), synced=False)  # really Wednesday 09:00
    h = Hall(tmp_path, clock=clock)
    try:
        h.swipe("0055555555")
        clock.advance(60)
        clock.set_wall(wed(9, 1), synced=True)
        h.roster.tick()
        assert h.store.rows("SELECT at, day FROM unknown_swipes") == [("2026-11-25T09:00:00+08:00", "2026-11-25")]
        assert h.roster.summary("2026-11-25")["counts"]["unknown_cards"] == 1
    finally:
        h.close()


def test_a_restart_keeps_duplicate_suppression_within_the_same_boot(tmp_path):
    first = Hall(tmp_path)
    first.swipe(URINA)
    first.close()
    h = Hall(tmp_path, clock=first.clock)
    try:
        h.clock.advance(10)
        assert h.swipe(URINA).outcome == "duplicate"
    finally:
        h.close()


# -- the county's documents --------------------------------------------------------------------


def test_the_countys_documents_are_normalised():
    staff = validate_staff({"staff": [{"id": "s-1", "name": " 乌日娜 ", "cards": ["00ab12cd"], "windows": ["w1", "w1"]}]}, WINDOWS)
    assert staff == {"staff": [{"id": "s-1", "name": "乌日娜", "cards": ["00AB12CD"], "windows": ["w1"], "leader": False, "active": True}]}
    shifts = validate_shifts({"weekly": [{"staff": "s-1", "window": "w1", "days": ["fri", "mon"], "start": "08:30", "end": "12:00"}], "rules": {"late_grace_min": 10}}, WINDOWS)
    assert shifts == {"weekly": [{"staff": "s-1", "window": "w1", "start": "08:30", "end": "12:00", "overnight": False, "days": ["mon", "fri"]}], "leaders": {}, "rules": {"late_grace_min": 10}}
    assert validate_rules({"late_grace_min": 10})[1] == AttendanceRules(late_grace_min=10)


GOOD_SHIFT = {"staff": "s-001", "window": "w1", "days": ["mon"], "start": "08:30", "end": "12:00"}


@pytest.mark.parametrize(
    ("validate", "data", "field", "reason"),
    [
        pytest.param(validate_staff, [], "data.staff", 'must be a list of staff members, e.g. {"staff": [{"id": "s-001", "name": "乌日娜", "cards": ["0012345678"], "windows": ["w1"]}]}', id="staff-malformed"),
        pytest.param(validate_staff, {"staff": [{"id": "s-1", "name": "甲", "cards": ["0012345678"]}, {"id": "s-2", "name": "乙", "cards": ["0012345678"]}]},
                     "data.staff[1].cards[0]", "card 0012345678 is already data.staff[0]'s (甲); a card belongs to one person", id="card-of-two-people"),
        pytest.param(validate_staff, {"staff": [{"id": "s-1", "name": "甲", "windows": ["w9"]}]}, "data.staff[0].windows[0]", '"w9" is not a window of this hall; windows: w1, w2', id="staff-unknown-window"),
        pytest.param(validate_staff, {"staff": [{"id": "s-1", "name": "甲", "cards": ["12AB!"]}]}, "data.staff[0].cards[0]",
                     '"12AB!" is not a card number: 4 to 64 digits as the reader types them (0-9, or A-F for a hex reader), leading zeros kept', id="bad-card"),
        pytest.param(validate_staff, {"staff": [{"id": "s-1", "name": "甲"}, {"id": "s-1", "name": "乙"}]}, "data.staff[1].id", "'s-1' repeats data.staff[0].id; give every person their own id", id="repeated-id"),
        pytest.param(validate_staff, {"staff": [{"name": "甲"}]}, "data.staff[0].id", 'is required: the person\'s staff id, e.g. "s-001"', id="missing-id"),
        pytest.param(validate_staff, {"staff": [{"id": "s 1", "name": "甲"}]}, "data.staff[0].id", "\"s 1\" is not a staff id: use 1 to 64 letters, digits, '-', '_' or '.'", id="bad-id"),
        pytest.param(validate_staff, {"staff": [{"id": "s-1", "name": "甲", "leader": "yes"}]}, "data.staff[0].leader", '"yes" must be true or false', id="bad-flag"),
        pytest.param(validate_staff, {"staff": [{"id": "s-1", "name": "甲", "card": "0012345678"}]}, "data.staff[0].card", "is not a known field; known: id, name, cards, windows, leader, active", id="unknown-field"),
        pytest.param(validate_shifts, {"weekly": [GOOD_SHIFT | {"end": "08:00"}]}, "data.weekly[0].end",
                     '08:00 is not after the start 08:30; a shift that runs past midnight needs "overnight": true', id="ends-before-it-starts"),
        pytest.param(validate_shifts, {"weekly": [GOOD_SHIFT | {"start": "22:00", "end": "23:00", "overnight": True}]}, "data.weekly[0].end",
                     '23:00 is not before the start 22:00, so the shift does not run past midnight; remove "overnight"', id="overnight-that-is-not"),
        pytest.param(validate_shifts, {"weekly": [GOOD_SHIFT, GOOD_SHIFT | {"window": "w2", "days": ["mon", "tue"], "start": "11:00", "end": "13:00"}]}, "data.weekly[1]",
                     "overlaps data.weekly[0] for s-001 (mon 08:30-12:00 and mon 11:00-13:00); one person cannot work two shifts at once", id="overlapping-shifts"),
        pytest.param(validate_shifts, {"weekly": [GOOD_SHIFT | {"days": ["sun"], "start": "22:00", "end": "06:00", "overnight": True}, GOOD_SHIFT | {"start": "05:00"}]}, "data.weekly[1]",
                     "overlaps data.weekly[0] for s-001 (sun 22:00-06:00 overnight and mon 05:00-12:00); one person cannot work two shifts at once", id="overlap-across-the-week-end"),
        pytest.param(validate_shifts, {"weekly": [GOOD_SHIFT | {"window": "w9"}]}, "data.weekly[0].window", '"w9" is not a window of this hall; windows: w1, w2', id="shift-unknown-window"),
        pytest.param(validate_shifts, {"weekly": [GOOD_SHIFT | {"start": "8:30"}]}, "data.weekly[0].start", '"8:30" is not a time written HH:MM (00:00 to 23:59)', id="bad-time"),
        pytest.param(validate_shifts, {"weekly": [GOOD_SHIFT | {"days": ["monday"]}]}, "data.weekly[0].days[0]", '"monday" is not a weekday; use mon, tue, wed, thu, fri, sat, sun', id="bad-weekday"),
        pytest.param(validate_shifts, {"weekly": [GOOD_SHIFT | {"days": []}]}, "data.weekly[0].days", "[] must be a list of weekdays: mon, tue, wed, thu, fri, sat, sun", id="no-days"),
        pytest.param(validate_shifts, {"weekly": "mon-fri"}, "data.weekly", 'must be a list of shifts, e.g. {"weekly": [{"staff": "s-001", "window": "w1", "days": ["mon", "tue"], "start": "08:30", "end": "17:30"}]}', id="shifts-malformed"),
        pytest.param(validate_shifts, {"weekly": [], "rules": {"late_grace_min": 500}}, "data.rules.late_grace_min", "500 must be a whole number of minutes from 0 to 240", id="rule-out-of-range"),
        pytest.param(validate_shifts, {"weekly": [], "rules": {"late_grace_min": 20, "absent_after_min": 10}}, "data.rules.absent_after_min",
                     "10 is less than late_grace_min (20): a person is late before they are absent", id="absent-before-late"),
        pytest.param(validate_shifts, {"weekly": [], "rules": {"grace": 5}}, "data.rules.grace",
                     "is not a known rule; rules: late_grace_min, absent_after_min, early_leave_grace_min, check_in_open_min, missed_checkout_after_min, duplicate_interval_s, summary_delay_min", id="unknown-rule"),
        pytest.param(validate_shifts, {"weekly": [], "leaders": {"monday": "s-001"}}, "data.leaders.monday", "is not a weekday; use mon, tue, wed, thu, fri, sat, sun", id="leader-bad-weekday"),
        pytest.param(validate_shifts, {"weekly": [], "opening_hours": ["08:30-12:00", "11:00-13:00"]}, "data.opening_hours", "08:30-12:00 and 11:00-13:00 overlap", id="opening-hours-overlap"),
        pytest.param(validate_duty, {"days": {"2026-13-01": {}}}, "data.days.2026-13-01", "is not a date written YYYY-MM-DD", id="duty-bad-date"),
        pytest.param(validate_duty, {"days": {"2026-10-01": {"shifts": [{"staff": "s-001", "window": "w1", "start": "22:00", "end": "08:00", "overnight": True}]},
                                              "2026-10-02": {"shifts": [{"staff": "s-001", "window": "w2", "start": "07:00", "end": "12:00"}]}}},
                     "data.days.2026-10-02.shifts[0]", "overlaps data.days.2026-10-01.shifts[0] for s-001 (2026-10-01 22:00-08:00 overnight and 2026-10-02 07:00-12:00); one person cannot work two shifts at once",
                     id="duty-overnight-overlap"),
        pytest.param(validate_duty, {"days": {"2026-10-10": {"as_weekday": "sat"}}}, "data.days.2026-10-10.as_weekday", '"sat" must be the weekday whose shifts the day works: mon, tue, wed, thu, fri', id="duty-bad-weekday"),
        pytest.param(validate_duty, {"days": {"2026-10-01": {"leader": "s-001", "duty": []}}}, "data.days.2026-10-01.duty", "is not a known field; known: leader, shifts, as_weekday", id="duty-unknown-field"),
        pytest.param(validate_duty, None, "data.days", 'must be an object of date → duty, e.g. {"days": {"2026-10-01": {"leader": "s-001", "shifts": [{"staff": "s-003", "window": "w1", "start": "09:00", "end": "12:00"}]}}}', id="duty-malformed"),
    ],
)
def test_a_bad_document_is_rejected_naming_the_exact_field(validate, data, field, reason):
    with pytest.raises(RosterRejected) as exc:
        validate(data, WINDOWS)
    assert (exc.value.field, exc.value.reason) == (field, reason)
    assert isinstance(exc.value, ValueError)


def test_every_problem_is_named_in_one_rejection():
    with pytest.raises(RosterRejected) as exc:
        validate_staff({"staff": [{"id": "s-1", "name": "", "windows": ["w9"]}]}, WINDOWS)
    assert exc.value.problems == [("data.staff[0].name", '"" must be the person\'s name, 1 to 50 characters'), ("data.staff[0].windows[0]", '"w9" is not a window of this hall; windows: w1, w2')]
    assert exc.value.reason == '"" must be the person\'s name, 1 to 50 characters (and 1 more: data.staff[0].windows[0]: "w9" is not a window of this hall; windows: w1, w2)'


def test_a_rejected_document_leaves_the_roster_in_force(hall):
    before = hall.roster.shifts_on("2026-11-25")
    with pytest.raises(RosterRejected):
        hall.apply("shifts", {"weekly": [GOOD_SHIFT | {"end": "08:00"}]})
    with pytest.raises(RosterRejected):
        hall.apply("staff", {"staff": [{"id": "s-1", "name": "甲", "cards": [URINA]}, {"id": "s-2", "name": "乙", "cards": [URINA]}]})
    assert hall.roster.shifts_on("2026-11-25") == before
    assert hall.swipe(URINA).staff_id == "s-001"


def test_a_stored_document_that_no_longer_fits_the_config_raises_an_alarm_and_keeps_the_roster(hall):
    # The config lost window w2 since the county sent the registry.
    hall.roster.windows = {"w1": "综合受理窗口"}
    hall.roster.apply_state("staff", {"device": STAFF})
    assert "roster_invalid" in hall.alarms()
    assert hall.roster.lookup(BATER).id == "s-002"


def test_the_narrowest_scope_wins(hall):
    township = {"staff": [{"id": "t-1", "name": "旗里派来的", "cards": ["0033333333"]}]}
    hall.roster.apply_state("staff", {"device": hall.roster.validate_staff(STAFF), "township": hall.roster.validate_staff(township)})
    assert hall.roster.lookup(URINA).id == "s-001" and hall.roster.lookup("0033333333") is None


def test_shifts_naming_someone_not_in_the_registry_raise_an_alarm_not_a_rejection(hall):
    hall.apply("shifts", {"weekly": SHIFTS["weekly"] + [{"staff": "s-404", "window": "w1", "days": ["mon"], "start": "08:30", "end": "12:00"}], "leaders": {"mon": "s-001"}})
    assert hall.alarms()["roster_references"] == "s-001 is named leader on duty but is not marked leader; s-404 (shifts (mon)) is not in the staff registry"
    hall.apply("shifts", SHIFTS)
    assert "roster_references" not in hall.alarms()


def test_the_countys_opening_hours_replace_the_configs_and_come_back_when_dropped(hall):
    hall.apply("shifts", SHIFTS | {"opening_hours": ["09:00-17:00"]})
    assert not hall.calendar.is_open(wed(8, 45))
    hall.apply("shifts", SHIFTS)
    assert hall.calendar.is_open(wed(8, 45))


def test_public_holidays_are_told_from_ordinary_weekends():
    cal = HallCalendar()
    assert cal.is_public_holiday(date(2026, 10, 3))  # National Day, a Saturday
    assert not cal.is_public_holiday(date(2026, 11, 28))  # an ordinary Saturday
    assert cal.is_public_holiday(date(2026, 10, 1))
    assert not cal.is_public_holiday(date(2026, 10, 10))  # 调休: worked
    assert not cal.is_public_holiday(date(2026, 11, 25))

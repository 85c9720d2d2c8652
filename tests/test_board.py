"""The board service: content checked at the door, strips drawn once, a playlist on a fake clock.

Frames are compared with reference images in tests/reference/ (made once with
UPDATE_REFERENCES=1 and looked at: the Chinese must be GNU Unifont's, crisp, one LED per pixel).
"""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from images import REFERENCE, assert_matches_reference
from PIL import Image

from appliance.clock import HALL_TZ, FakeClock
from services.board import (
    COMPLAINT_ID,
    MAX_TEXT,
    BoardRejected,
    BoardService,
    BoardSettings,
    BoardTooSmall,
    BrightnessSchedule,
    ContentItem,
    Font,
    FontMissing,
    Frame,
    Renderer,
    merge_scopes,
    parse_brightness,
    validate_board_state,
    validate_item,
    validate_items,
)
from services.calendar import HallCalendar, YearDays, parse_hours

WEDNESDAY_9AM = datetime(2026, 11, 25, 9, 0, tzinfo=HALL_TZ)
FPS = 30
# 50 characters, about 800 px: a notice that must scroll on a 128-px board.
LONG = "惠农补贴政策：今年玉米生产者补贴每亩一百二十元，请于十二月底前携带身份证和一卡通到综合受理窗口办理。"
SHORT = "招聘保洁员两名"  # 112 px: fits, so it is centred and held


@pytest.fixture(scope="module")
def font() -> Font:
    return Font()


class Hall:
    """A board service in a hall, on a fake clock, run frame by frame at 30 frames a second."""

    def __init__(self, font: Font, *, start: datetime = WEDNESDAY_9AM, hours: tuple[str, ...] = ("08:00-18:00",), size: tuple[int, int] = (128, 16), synced: bool = True, **settings) -> None:
        self.font = font
        self.clock = FakeClock(start, synced=synced)
        self.calendar = HallCalendar(parse_hours(list(hours)), use_library=False)
        self.calendar.set_county_years({2026: YearDays(frozenset({date(2026, 10, 1)}), frozenset({date(2026, 10, 10)}))})
        self.settings = BoardSettings(**settings)
        self.service = BoardService(font, *size, self.calendar, self.clock, self.settings)

    def post(self, *raw: dict, source: str = "hall") -> tuple[ContentItem, ...]:
        items = validate_items(list(raw), self.font, source=source)
        self.service.set_items(source, items)
        return items

    def run(self, seconds: float) -> list[Frame]:
        frames = []
        for _ in range(round(seconds * FPS)):
            frames.append(self.service.next_frame())
            self.clock.advance(1 / FPS)
        return frames

    def showings(self, seconds: float) -> list[str | None]:
        """What was on the board, in order, each run of frames once."""
        out: list[str | None] = []
        for frame in self.run(seconds):
            if not out or out[-1] != frame.showing:
                out.append(frame.showing)
        return out

    def at(self, when: datetime) -> None:
        self.clock.set_wall(when)


def item(item_id: str, text: str = SHORT, kind: str = "policy", **fields) -> dict:
    return {"id": item_id, "kind": kind, "text": text, **fields}


def iso(when: datetime) -> str:
    return when.isoformat()


# -- rendering ----------------------------------------------------------------------------------


def test_glyph_strip_matches_its_reference(font):
    text = "政务服务好差评 Hall 2026"
    strip = Image.new("1", (font.width(text), 16))
    font.draw(strip, text, 0)
    assert strip.size == (7 * 16 + 10 * 8, 16)  # full-width 16 px, half-width 8 px
    assert_matches_reference(strip, "glyph_strip.png")


def test_scrolled_frame_matches_its_reference(font):
    renderer = Renderer(font, 128, 16)
    strip = renderer.strip(LONG)
    assert strip.scrolls
    # 1 s on the first screen, then 32 px/s: 4.5 s in, the text has moved 112 px.
    assert renderer.offset(strip, 4.5) == 112
    assert_matches_reference(renderer.frame(strip, 112), "scrolled_frame.png")


def test_text_that_fits_is_centred_and_held(font):
    hall = Hall(font)
    hall.post(item("job", SHORT, "job"))
    frames = hall.run(5)
    assert {f.image.tobytes() for f in frames} == {frames[0].image.tobytes()}
    left, _, right, _ = frames[0].image.getbbox()
    assert left == (128 - 112) // 2 and right <= left + 112  # seven 16-px cells in the middle
    assert not any(f.changed for f in frames[1:])
    assert_matches_reference(frames[0].image, "held_frame.png")


def test_the_service_shows_the_reference_scrolled_frame_on_time(font):
    hall = Hall(font)
    hall.post(item("notice", LONG))
    hall.service.next_frame()  # the notice starts
    hall.clock.advance(4.5)
    with Image.open(REFERENCE / "scrolled_frame.png") as reference:
        assert hall.service.next_frame().image.tobytes() == reference.convert("1").tobytes()


@pytest.mark.parametrize(("text", "scrolls"), [("政务服务中心欢迎", False), ("政务服务中心欢迎!", True)], ids=["128px", "136px"])
def test_only_text_wider_than_the_board_scrolls(font, text, scrolls):
    assert Renderer(font, 128, 16).strip(text).scrolls is scrolls


def test_one_pass_ends_where_the_next_begins(font):
    renderer = Renderer(font, 128, 16, BoardSettings(gap_px=32, lead_s=1.0, speed_px_s=32))
    strip = renderer.strip(LONG)
    assert strip.travel == font.width(LONG) + 32
    assert strip.duration == pytest.approx(1.0 + strip.travel / 32)
    # After a whole travel the picture is the first screen again: a repeat follows seamlessly.
    assert renderer.frame(strip, strip.travel).tobytes() == renderer.frame(strip, 0).tobytes()


def test_scrolling_is_smooth_one_or_two_pixels_a_frame(font):
    hall = Hall(font, speed_px_s=32)
    hall.post(item("notice", LONG))
    strip = hall.service.renderer.strip(LONG)
    frames = hall.run(10)[FPS + 1 :]  # past the first screen's hold
    offsets = [next(o for o in range(strip.travel) if hall.service.renderer.frame(strip, o).tobytes() == f.image.tobytes()) for f in frames[:60]]
    assert {b - a for a, b in zip(offsets, offsets[1:])} <= {1, 2}


def test_frames_are_crops_never_drawn_again(font, monkeypatch):
    hall = Hall(font)
    hall.post(item("a", LONG), item("b", SHORT), item("c", LONG + "一"))
    hall.service.on_rating("w1")
    draws = []
    monkeypatch.setattr(Font, "draw", lambda self, *a, **k: draws.append(a))
    hall.run(120)
    assert draws == []


def test_a_taller_board_centres_the_line(font):
    renderer = Renderer(font, 64, 32)
    tape = renderer.strip("中文").tape
    assert tape.size == (64, 32) and tape.getbbox()[1] >= 8 and tape.getbbox()[3] <= 24


def test_a_board_of_one_row_is_too_small_for_chinese(font):
    with pytest.raises(BoardTooSmall, match="the board is 8 px high; Chinese at 16 px needs 16: add a second row of modules"):
        Renderer(font, 128, 8)


def test_a_missing_font_names_the_package(tmp_path):
    with pytest.raises(FontMissing, match="apt-get install fonts-unifont"):
        Font(tmp_path / "unifont.otf")


# -- accepting content --------------------------------------------------------------------------

KINDS = "policy, job, publicity, duty, announcement, urgent"


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        pytest.param(item("a", "   \n "), "text", "is empty; give the text to show", id="empty-text"),
        pytest.param({"id": "a", "kind": "policy"}, "text", "is required: the text to show", id="no-text"),
        pytest.param(
            item("a", start="2026-03-02T08:00+08:00", end="2026-03-01T08:00+08:00"),
            "end",
            "2026-03-01T08:00:00+08:00 is not after start 2026-03-02T08:00:00+08:00: an item must end after it starts",
            id="end-before-start",
        ),
        pytest.param(
            item("a", "政" * (MAX_TEXT + 1)),
            "text",
            "has 501 characters; the limit is 500 (that already scrolls for about four minutes): shorten it or split it into several items",
            id="too-long",
        ),
        pytest.param(item("a", kind="notice"), "kind", f"'notice' is not a kind; kinds are: {KINDS}", id="unknown-kind"),
        pytest.param(item("a", kind="polcy"), "kind", f"'polcy' is not a kind; kinds are: {KINDS} (did you mean 'policy'?)", id="misspelt-kind"),
        pytest.param(
            item("a", schedule=["8:00-12:00"]),
            "schedule",
            "[0] = '8:00-12:00' is not HH:MM-HH:MM; write spans as 'HH:MM-HH:MM', e.g. ['08:00-12:00', '14:30-17:00']",
            id="bad-schedule",
        ),
        pytest.param(
            item("a", schedule=["12:00-08:00"]),
            "schedule",
            "[0] = '12:00-08:00' ends before it starts; write spans as 'HH:MM-HH:MM', e.g. ['08:00-12:00', '14:30-17:00']",
            id="backwards-schedule",
        ),
        pytest.param(item("a", schedule="08:00-12:00"), "schedule", "must be a list of 'HH:MM-HH:MM' spans, e.g. ['08:00-12:00'], got '08:00-12:00'", id="schedule-not-a-list"),
        pytest.param(item("a", kind="urgent"), "end", "is required for an urgent item: it takes over the board until it ends", id="urgent-without-end"),
        pytest.param(item("a", priority=10), "priority", "must be a whole number from 1 (lowest) to 9 (highest), got 10", id="priority"),
        pytest.param(item("a", start="next monday"), "start", "'next monday' is not a date and time; write e.g. '2026-03-01T08:00+08:00' (or '2026-03-01')", id="bad-start"),
        pytest.param(item("a", strat="2026-03-01"), "strat", "is not a field of a board item; did you mean 'start'?", id="unknown-field"),
        pytest.param(item("bad id"), "id", "is required: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit, got 'bad id'", id="bad-id"),
        pytest.param(item("a", version=0), "version", "must be a whole number of 1 or more, got 0", id="version"),
        pytest.param(item("a", "开门\x07"), "text", "contains control or invisible characters U+0007; remove them", id="control-character"),
        pytest.param(item("a", "政务\u200b服务"), "text", "contains control or invisible characters U+200B; remove them", id="zero-width-space"),
        pytest.param(item("a", "q\u0301"), "text", "contains combining marks '́' (U+0301) that the board draws as separate boxes; use precomposed letters", id="combining-mark"),
        pytest.param(
            item("a", "ᠮᠣᠩᠭᠣᠯ"),
            "text",
            "contains traditional Mongolian script, which the board cannot show (it draws letters unjoined, left to right); put the Mongolian text on the printed notice",
            id="mongolian",
        ),
        pytest.param(["not", "an", "object"], "item", "must be an object with id, kind and text", id="not-an-object"),
    ],
)
def test_bad_items_are_rejected_naming_the_field(font, raw, field, reason):
    with pytest.raises(BoardRejected) as err:
        validate_item(raw, font)
    assert (err.value.field, err.value.reason) == (field, reason)
    assert str(err.value) == f"{field}: {reason}"


def test_missing_glyphs_are_listed_exactly_when_the_item_is_accepted(font):
    with pytest.raises(BoardRejected) as err:
        validate_item(item("a", "欢迎😀光临𠀀，再见😀"), font)
    assert err.value.field == "text"
    assert err.value.reason == "the board's font (GNU Unifont) has no glyph for '😀' (U+1F600), '𠀀' (U+20000); replace or remove them"


def test_every_problem_of_an_item_is_listed(font):
    with pytest.raises(BoardRejected) as err:
        validate_item({"id": "a", "kind": "news", "text": "", "priority": 0}, font)
    assert [f for f, _ in err.value.problems] == ["kind", "text", "priority"]


def test_text_is_normalised_when_accepted(font):
    accepted = validate_item(item("a", "  第一行\n\t第二行  cafe\u0301 "), font)
    assert accepted.text == "第一行 第二行 café"


def test_an_accepted_item_reads_back_as_itself(font):
    raw = item("policy-2026-31", LONG, start="2026-03-01T08:00:00+08:00", end="2026-03-31", priority=7, schedule=["08:00-12:00", "14:30-17:00"], version=3)
    accepted = validate_item(raw, font, source="county")
    assert accepted.end == datetime(2026, 4, 1, tzinfo=HALL_TZ)  # a date alone: to the end of that day
    assert accepted.schedule == ((time(8), time(12)), (time(14, 30), time(17)))
    assert validate_item(json.loads(json.dumps(accepted.to_dict())), font, source="county") == accepted


def test_a_time_without_offset_is_the_halls(font):
    accepted = validate_item(item("a", start="2026-03-01 08:00"), font)
    assert accepted.start == datetime(2026, 3, 1, 8, 0, tzinfo=HALL_TZ)


def test_the_county_state_names_the_item_and_field(font):
    data = {"items": [item("a"), item("b", ""), item("a")]}
    with pytest.raises(BoardRejected) as err:
        validate_board_state(data, font)
    assert err.value.problems == (
        ("data.items[1].text", "is empty; give the text to show"),
        ("data.items[2].id", "'a' repeats data.items[0].id; give every item its own id"),
    )


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        (["items"], "data", 'must be an object {"items": [...]}'),
        ({}, "data.items", "is required: the list of items (an empty list withdraws them all)"),
        ({"items": {}}, "data.items", "must be a list of items, got dict"),
        ({"items": [], "colour": "red"}, "data.colour", 'is not part of the board state; send {"items": [...]}'),
        ({"items": [item(f"i{n}") for n in range(101)]}, "data.items", "has 101 items; the limit is 100 (a rotation that long takes hours): withdraw expired ones or merge them"),
    ],
)
def test_a_malformed_county_state_is_rejected(font, data, field, reason):
    with pytest.raises(BoardRejected) as err:
        validate_board_state(data, font)
    assert (err.value.field, err.value.reason) == (field, reason)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(["id", "kind", "text", "start", "end", "priority", "schedule", "version", "x"]), children, max_size=8),
        max_leaves=20,
    )
)
def test_any_payload_is_accepted_or_rejected_never_crashes(font, payload):
    try:
        validate_board_state({"items": [payload]}, font)
    except BoardRejected as exc:
        assert exc.field.startswith("data.items")


def test_a_rejected_command_leaves_the_board_showing_what_it_had(font):
    hall = Hall(font)
    hall.post(item("job", SHORT, "job"), source="county")
    before = hall.run(1)[-1]
    with pytest.raises(BoardRejected):
        hall.service.set_items("county", validate_board_state({"items": [item("x", kind="bogus")]}, font))
    assert hall.run(1)[-1].image.tobytes() == before.image.tobytes()
    assert [i.id for i in hall.service.items("county")] == ["job"]


def test_narrower_scopes_replace_wider_ones_by_id(font):
    county = validate_items([item("a", "全旗通知"), item("b", "全旗招聘")], font, source="county")
    device = validate_items([item("a", "本镇通知")], font, source="county")
    merged = merge_scopes({"county": county, "township": (), "device": device})
    assert [(i.id, i.text) for i in merged] == [("a", "本镇通知"), ("b", "全旗招聘")]


# -- the playlist -------------------------------------------------------------------------------


def test_items_rotate_highest_priority_first(font):
    hall = Hall(font)
    hall.post(item("low", "低优先级", priority=2), item("high", "高优先级", priority=9), item("mid", "中优先级"))
    assert hall.showings(6 * 7 - 1) == ["hall:high", "hall:mid", "hall:low", "hall:high", "hall:mid", "hall:low", "hall:high"]


def test_county_and_hall_items_share_the_rotation(font):
    hall = Hall(font)
    hall.post(item("n1", "全旗通知", priority=6), source="county")
    hall.post(item("n1", "本厅通知"))
    assert hall.showings(12 - 1) == ["county:n1", "hall:n1"]


def test_an_expired_item_disappears_by_itself(font):
    hall = Hall(font)
    hall.post(item("short-lived", "今日停电检修", end=iso(WEDNESDAY_9AM + timedelta(seconds=20))), item("stays", SHORT))
    shown = hall.showings(60)
    assert shown == ["hall:short-lived", "hall:stays", "hall:short-lived", "hall:stays"]
    assert hall.showings(30) == ["hall:stays"]


def test_an_item_expiring_while_on_the_board_is_cut_within_a_second(font):
    hall = Hall(font)
    hall.post(item("notice", LONG, end=iso(WEDNESDAY_9AM + timedelta(seconds=5))))
    frames = hall.run(7)
    assert frames[5 * FPS - 1].showing == "hall:notice"
    assert all(f.showing is None and f.blank for f in frames[6 * FPS :])


def test_an_item_waits_for_its_start(font):
    hall = Hall(font)
    hall.post(item("later", "明日开始办理", start=iso(WEDNESDAY_9AM + timedelta(minutes=1))))
    assert hall.showings(59) == [None]
    assert hall.showings(3) == [None, "hall:later"]


def test_a_daily_schedule_limits_the_hours(font):
    hall = Hall(font, start=WEDNESDAY_9AM.replace(hour=11, minute=59, second=50))
    hall.post(item("a-morning", "上午办理社保", schedule=["08:00-12:00"]), item("b-always", SHORT))
    assert hall.showings(20) == ["hall:a-morning", "hall:b-always"]
    assert hall.showings(60) == ["hall:b-always"]
    hall.at(WEDNESDAY_9AM.replace(day=26, hour=8))
    assert "hall:a-morning" in hall.showings(13)


def test_an_urgent_item_interrupts_at_once_and_repeats_until_it_ends(font):
    hall = Hall(font)
    hall.post(item("notice", LONG))
    first_screen = hall.run(1)[0].image.tobytes()
    hall.run(9)  # the notice is part-way through
    end = WEDNESDAY_9AM + timedelta(seconds=41)  # 31 s from now
    hall.post(item("notice", LONG), item("storm", "暴雪预警今午闭厅", "urgent", end=iso(end)))
    frames = hall.run(30)
    assert {f.showing for f in frames} == {"hall:storm"}
    frames = hall.run(2)
    assert frames[-1].showing == "hall:notice"
    # The interrupted notice starts again from its beginning.
    assert next(f for f in frames if f.showing == "hall:notice").image.tobytes() == first_screen
    plays = {p["item_id"]: p["shows"] for p in hall.service.take_proof_of_play()}
    assert plays == {"storm": 5}  # a 6-s hold, five times in 30 s; the cut-short notice not at all


def test_several_urgent_items_take_turns(font):
    hall = Hall(font)
    end = iso(WEDNESDAY_9AM + timedelta(minutes=5))
    hall.post(item("normal", SHORT), item("u1", "停水通知", "urgent", end=end), item("u2", "停电通知", "urgent", end=end, priority=9))
    assert hall.showings(24 - 1) == ["hall:u2", "hall:u1", "hall:u2", "hall:u1"]


def test_the_thank_you_flashes_then_the_notice_resumes_at_the_same_pixel(font):
    plain, thanked = Hall(font), Hall(font)
    for hall in (plain, thanked):
        hall.post(item("notice", LONG))
        hall.run(5)  # mid-scroll
    expected = plain.run(3)
    thanked.service.on_rating("w1", "satisfied")
    frames = thanked.run(6)
    flashing = [f for f in frames if f.showing == "thanks"]
    assert 2.9 * FPS <= len(flashing) <= 3.1 * FPS
    assert frames[0].showing == "thanks"
    assert_matches_reference(flashing[0].image, "thanks_frame.png")
    resumed = frames[len(flashing) :]
    n = min(len(resumed), len(expected))
    assert n > 60
    assert [f.image.tobytes() for f in resumed[:n]] == [f.image.tobytes() for f in expected[:n]]


def test_another_rating_keeps_the_thank_you_up(font):
    hall = Hall(font)
    hall.post(item("job", SHORT, "job"))
    hall.service.on_rating("w1")
    hall.run(2)
    hall.service.on_rating("w2")
    assert {f.showing for f in hall.run(2.9)} == {"thanks"}
    assert hall.run(0.2)[-1].showing == "hall:job"


def test_a_thank_you_does_not_count_as_a_showing_nor_lose_one(font):
    hall = Hall(font)
    hall.post(item("job", SHORT, "job"))
    hall.run(3)
    hall.service.on_rating("w1")
    hall.run(3 + 3 + 0.5)  # the thank-you, then the rest of the 6-s hold
    assert [(p["item_id"], p["shows"]) for p in hall.service.take_proof_of_play()] == [("job", 1)]


def test_the_board_dims_at_night(font):
    hall = Hall(font, hours=("00:00-23:59",), brightness=parse_brightness({"07:00": 64, "19:00": 8}))
    hall.post(item("job", SHORT, "job"))
    for when, contrast in [((18, 59, 59), 64), ((19, 0, 0), 8), ((23, 30, 0), 8), ((0, 10, 0), 8), ((6, 59, 59), 8), ((7, 0, 0), 64)]:
        at = WEDNESDAY_9AM.replace(hour=when[0], minute=when[1], second=when[2])
        hall.at(at - timedelta(seconds=2))
        hall.clock.advance(2)  # past the board's next look at the clock
        assert hall.run(1 / FPS)[0].contrast == contrast, when


def test_the_board_is_blank_while_the_hall_is_closed(font):
    hall = Hall(font, start=WEDNESDAY_9AM.replace(hour=11, minute=59, second=50), hours=("08:30-12:00", "14:30-17:30"))
    hall.post(item("job", SHORT, "job"))
    frames = hall.run(20)
    assert frames[0].showing == "hall:job" and not frames[0].blank
    assert all(f.blank and f.showing is None for f in frames[11 * FPS :])  # lunch break from 12:00
    assert hall.service.status()["state"] == "closed"
    hall.at(WEDNESDAY_9AM.replace(hour=14, minute=30))
    assert hall.run(2)[-1].showing == "hall:job"


def test_a_holiday_is_closed_all_day_and_a_swapped_saturday_is_open(font):
    hall = Hall(font, start=datetime(2026, 10, 1, 10, 0, tzinfo=HALL_TZ))
    hall.post(item("job", SHORT, "job"))
    assert {f.blank for f in hall.run(5)} == {True}  # 国庆节, a Thursday
    hall.at(datetime(2026, 10, 10, 10, 0, tzinfo=HALL_TZ))  # a Saturday worked instead (调休)
    assert hall.run(2)[-1].showing == "hall:job"


def test_a_notice_cut_by_closing_time_starts_again_when_the_hall_opens(font):
    hall = Hall(font, start=WEDNESDAY_9AM.replace(hour=11, minute=59, second=50), hours=("08:30-12:00", "14:30-17:30"))
    hall.post(item("a", LONG), item("b", SHORT, priority=1))
    first_screen = hall.run(1)[0].image.tobytes()
    hall.run(15)
    hall.at(WEDNESDAY_9AM.replace(hour=14, minute=30))
    reopened = next(f for f in hall.run(2) if not f.blank)
    assert reopened.showing == "hall:a" and reopened.image.tobytes() == first_screen


def test_the_complaint_address_scrolls_among_the_items(font):
    hall = Hall(font)
    hall.service.set_complaint_address("hall.local/ts")
    hall.post(item("a", "通知一"), item("b", "通知二", priority=1))
    shown = hall.showings(60)
    assert shown[:3] == ["hall:a", f"hall:{COMPLAINT_ID}", "hall:b"]  # among equals, the hall's own goes before priority 1
    strip = hall.service.renderer.strip("投诉建议请访问 hall.local/ts")
    assert strip.scrolls
    hall.service.set_complaint_address(None)
    assert f"hall:{COMPLAINT_ID}" not in hall.showings(40)


def test_proof_of_play_counts_showings_per_item_per_day(font):
    hall = Hall(font, start=WEDNESDAY_9AM.replace(hour=23, minute=59, second=33), blank_when_closed=False)
    hall.post(item("job", SHORT, "job", version=4))
    hall.run(60)  # held 6 s: done at 23:59:39, :45, :51, :57, then 00:00:03 … 00:00:27
    assert hall.service.take_proof_of_play() == [
        {"day": "2026-11-25", "source": "hall", "item_id": "job", "version": 4, "kind": "job", "shows": 4, "provisional": False},
        {"day": "2026-11-26", "source": "hall", "item_id": "job", "version": 4, "kind": "job", "shows": 5, "provisional": False},
    ]
    assert hall.service.take_proof_of_play() == []


def test_proof_of_play_is_provisional_while_the_clock_is_not_synchronised(font):
    hall = Hall(font, synced=False)
    hall.post(item("job", SHORT, "job"))
    hall.run(7)
    assert [p["provisional"] for p in hall.service.take_proof_of_play()] == [True]


def test_an_item_changed_on_the_board_finishes_then_shows_its_new_text(font):
    hall = Hall(font)
    hall.post(item("job", "招聘一名", "job"))
    hall.run(2)
    hall.post(item("job", "招聘两名", "job", version=2))
    frames = hall.run(8)
    texts = [hall.service.renderer.strip(t).tape.tobytes() for t in ("招聘一名", "招聘两名")]
    assert frames[3 * FPS].image.tobytes() == texts[0]
    assert frames[-1].image.tobytes() == texts[1]
    assert [(p["version"], p["shows"]) for p in hall.service.take_proof_of_play()] == [(1, 1)]


def test_a_withdrawn_item_leaves_the_board_within_a_second(font):
    hall = Hall(font)
    hall.post(item("a", LONG), item("b", SHORT))
    hall.run(3)
    hall.post(item("b", SHORT))
    assert hall.run(1)[-1].showing == "hall:b"


def test_a_still_picture_is_reported_unchanged(font):
    hall = Hall(font)
    hall.post(item("job", SHORT, "job"))
    frames = hall.run(1)
    assert frames[0].changed and not any(f.changed for f in frames[1:])
    assert all(f.image is frames[0].image for f in frames)


def test_an_empty_board_is_blank(font):
    hall = Hall(font)
    frames = hall.run(1)
    assert all(f.blank and f.showing is None for f in frames)
    assert hall.service.status()["state"] == "empty"


def test_status_says_what_is_on(font):
    hall = Hall(font)
    hall.post(item("job", SHORT, "job", version=2))
    hall.run(1)
    assert hall.service.status() == {"state": "showing", "item": {"source": "hall", "id": "job", "kind": "job", "version": 2}, "contrast": 64, "in_force": 1, "items": 1}


def test_a_whole_pass_for_the_simulators_gif(font):
    hall = Hall(font)
    frames = hall.service.pass_frames(LONG, fps=FPS)
    strip = hall.service.renderer.strip(LONG)
    assert len(frames) == round(strip.duration * FPS)
    assert frames[0].tobytes() == strip.tape.crop((0, 0, 128, 16)).tobytes()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, 'must be a table of "HH:MM" = contrast (0–255), e.g. { "07:00" = 64, "19:00" = 8 }'),
        ({"7:00": 64}, "'7:00' is not a time written HH:MM"),
        ({"07:00": 300}, "07:00 = 300: the contrast must be a whole number from 0 to 255"),
    ],
)
def test_a_bad_brightness_schedule_is_refused(raw, message):
    with pytest.raises(ValueError) as err:
        parse_brightness(raw)
    assert str(err.value) == message


def test_brightness_before_the_first_step_carries_over_from_the_night():
    schedule = BrightnessSchedule(((time(19), 8), (time(7), 64)))
    assert [schedule.contrast_at(t) for t in (time(0), time(7), time(12), time(19), time(23, 59))] == [8, 64, 64, 8, 8]


def test_a_flashed_notice_shows_then_the_playlist_resumes_and_undrawable_text_is_refused():
    from appliance.clock import HALL_TZ, FakeClock
    from datetime import datetime
    from services.board import BoardService, Font, validate_item
    from services.calendar import HallCalendar

    font = Font()
    clock = FakeClock(datetime(2026, 11, 25, 10, 0, tzinfo=HALL_TZ))
    service = BoardService(font, 128, 16, HallCalendar(), clock)
    service.set_items("hall", [validate_item({"id": "a", "kind": "policy", "text": "惠农政策"}, font)])
    assert service.next_frame().showing is not None
    assert service.flash("乌日娜 已签到")
    clock.advance(0.1)
    flashed = service.next_frame()
    assert service.status()["state"] == "thanks"
    assert flashed.image.tobytes() == service.renderer.frame(service.renderer.strip("乌日娜 已签到"), 0).tobytes()
    clock.advance(service.settings.thanks_s + 0.1)
    service.next_frame()
    assert service.status()["state"] == "showing" and service.status()["item"]["id"] == "a"
    assert service.flash("😀") is False

"""The badge reader: key events assembled into card numbers, the evdev thread (grab, unplug, reconnect), the simulator.

No /dev/uinput in CI: the reader is driven with synthetic ``evdev.InputEvent`` sequences through
a fake device with a real file descriptor, so the reader's own ``select()`` loop runs as on a Pi.
"""

from __future__ import annotations

import errno
import os
import threading
import time
import tomllib
from collections import deque

import evdev
import pytest
from evdev import InputEvent, ecodes
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.config import BadgeConfig, parse_config
from appliance.errors import ConfigError
from drivers import badge
from drivers.badge import (
    BadRead,
    Card,
    CardAssembler,
    EvdevBadgeReader,
    NotSimulated,
    SimulatedBadgeReader,
    UntypeableCard,
    keystrokes,
    make_badge_reader,
)


class Mono:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def key(code: int, value: int = 1) -> InputEvent:
    return InputEvent(0, 0, ecodes.EV_KEY, code, value)


def typed(text: str) -> list[InputEvent]:
    """What a keyboard-emulating reader sends for ``text`` + Enter, as real evdev events."""
    return [InputEvent(0, 0, e.type, e.code, e.value) for e in keystrokes(text)]


def feed(assembler: CardAssembler, events) -> list:
    out = []
    for e in events:
        out.extend(assembler.feed(e))
    return out


# -- the key table is the kernel's ----------------------------------------------------------


def test_our_key_codes_are_the_kernels():
    assert (badge.EV_SYN, badge.EV_KEY, badge.EV_MSC) == (ecodes.EV_SYN, ecodes.EV_KEY, ecodes.EV_MSC)
    assert (badge.KEY_ENTER, badge.KEY_KPENTER) == (ecodes.KEY_ENTER, ecodes.KEY_KPENTER)
    assert (badge.KEY_LEFTSHIFT, badge.KEY_RIGHTSHIFT, badge.KEY_CAPSLOCK, badge.KEY_NUMLOCK) == (ecodes.KEY_LEFTSHIFT, ecodes.KEY_RIGHTSHIFT, ecodes.KEY_CAPSLOCK, ecodes.KEY_NUMLOCK)
    assert {code: ecodes.ecodes[f"KEY_{c}"] for code, c in badge.DIGIT_KEYS.items()} == {code: code for code in badge.DIGIT_KEYS}
    assert {code: ecodes.ecodes[f"KEY_KP{c}"] for code, c in badge.KEYPAD_KEYS.items()} == {code: code for code in badge.KEYPAD_KEYS}
    assert {code: ecodes.ecodes[f"KEY_{c}"] for code, c in badge.LETTER_KEYS.items()} == {code: code for code in badge.LETTER_KEYS}


# -- the assembler ------------------------------------------------------------------------


def test_digits_until_enter_are_one_card():
    a = CardAssembler(Mono())
    assert feed(a, typed("0012345678")) == [Card("0012345678")]
    assert not a.pending


def test_what_a_real_reader_sends_scan_codes_syn_and_key_ups_included():
    # A 125 kHz reader on a Pi: MSC_SCAN, key down, SYN, MSC_SCAN, key up, SYN for each digit.
    events = []
    for code in (ecodes.KEY_0, ecodes.KEY_4, ecodes.KEY_2, ecodes.KEY_7, ecodes.KEY_KPENTER):
        events += [
            InputEvent(1764031200, 1000, ecodes.EV_MSC, ecodes.MSC_SCAN, 458791),
            InputEvent(1764031200, 1000, ecodes.EV_KEY, code, 1),
            InputEvent(1764031200, 1000, ecodes.EV_SYN, ecodes.SYN_REPORT, 0),
            InputEvent(1764031200, 9000, ecodes.EV_MSC, ecodes.MSC_SCAN, 458791),
            InputEvent(1764031200, 9000, ecodes.EV_KEY, code, 0),
            InputEvent(1764031200, 9000, ecodes.EV_SYN, ecodes.SYN_REPORT, 0),
        ]
    assert feed(CardAssembler(Mono()), events) == [Card("0427")]


def test_keypad_digits_and_keypad_enter_read_the_same():
    keys = [ecodes.KEY_KP0, ecodes.KEY_KP0, ecodes.KEY_KP9, ecodes.KEY_KP1, ecodes.KEY_KPENTER]
    assert feed(CardAssembler(Mono()), [key(k) for k in keys]) == [Card("0091")]


def test_auto_repeat_and_key_ups_add_nothing():
    events = [key(ecodes.KEY_1), key(ecodes.KEY_1, 2), key(ecodes.KEY_1, 0), key(ecodes.KEY_2), key(ecodes.KEY_3), key(ecodes.KEY_4), key(ecodes.KEY_ENTER)]
    assert feed(CardAssembler(Mono()), events) == [Card("1234")]


def test_a_stray_enter_reads_nothing():
    assert feed(CardAssembler(Mono()), [key(ecodes.KEY_ENTER)]) == []


def test_letters_from_a_decimal_reader_are_a_bad_read():
    assert feed(CardAssembler(Mono()), typed("3A5F01BC")) == [
        BadRead("letters", "'3A5F01BC' is not a card number: A, F, B, C typed where a card number has only digits 0-9 (a reader that types hex needs badge.card_format = \"hex\")")
    ]


def test_a_hex_reader_reads_a_to_f_in_either_case_and_upper_cases_them():
    a = CardAssembler(Mono(), card_format="hex")
    assert feed(a, typed("3a5F01bc")) == [Card("3A5F01BC")]
    assert feed(a, typed("12G4")) == [BadRead("letters", "'12G4' is not a card number: G typed where a card number has only digits 0-9 and A-F")]


def test_other_keys_are_a_bad_read():
    events = [key(ecodes.KEY_1), key(ecodes.KEY_2), key(ecodes.KEY_TAB), key(ecodes.KEY_3), key(ecodes.KEY_4), key(ecodes.KEY_ENTER)]
    assert feed(CardAssembler(Mono()), events) == [BadRead("letters", "'12?34' is not a card number: <key 15> typed where a card number has only digits 0-9 (a reader that types hex needs badge.card_format = \"hex\")")]


def test_an_overlong_number_is_a_bad_read_and_the_next_card_reads_clean():
    a = CardAssembler(Mono(), max_digits=10)
    assert feed(a, typed("1" * 30)) == [BadRead("too_long", "30 characters ('11111111111') is longer than a card number (at most 10)")]
    assert feed(a, typed("0012345678")) == [Card("0012345678")]


def test_a_too_short_number_is_a_bad_read():
    assert feed(CardAssembler(Mono()), typed("123")) == [BadRead("too_short", "3 characters ('123') is shorter than a card number (at least 4)")]


def test_a_partial_read_is_dropped_after_the_inter_key_timeout():
    clock = Mono()
    a = CardAssembler(clock, inter_key_timeout_s=0.3)
    feed(a, typed("0012")[:-4])  # "0012" without its Enter
    clock.now += 0.3
    assert a.expire() is None  # not yet
    clock.now += 0.2
    assert a.expire() == BadRead("partial", "4 characters ('0012') then nothing for 0.5 s; the read was dropped")
    assert a.expire() is None  # reported once
    assert feed(a, typed("0087654321")) == [Card("0087654321")]


def test_a_pause_inside_a_read_splits_it_even_without_an_expire_call():
    clock = Mono()
    a = CardAssembler(clock)
    feed(a, [key(ecodes.KEY_9), key(ecodes.KEY_9)])
    clock.now += 1.0
    out = feed(a, typed("00123456"))
    assert out == [BadRead("partial", "2 characters ('99') then nothing for 1.0 s; the read was dropped"), Card("00123456")]


@settings(max_examples=200, deadline=None)
@given(st.text("0123456789", min_size=4, max_size=20))
def test_any_decimal_card_number_reads_back_exactly(number):
    assert feed(CardAssembler(Mono()), typed(number)) == [Card(number)]


EVENTS = st.builds(lambda t, c, v: InputEvent(0, 0, t, c, v), st.sampled_from([0, 1, 4]), st.integers(0, 120), st.integers(0, 2))


@settings(max_examples=300, deadline=None)
@given(st.lists(EVENTS, max_size=60), st.sampled_from(["decimal", "hex"]))
def test_whatever_the_reader_sends_only_well_formed_cards_come_out(events, fmt):
    allowed = set("0123456789ABCDEF" if fmt == "hex" else "0123456789")
    for read in feed(CardAssembler(Mono(), card_format=fmt), events):
        if isinstance(read, Card):
            assert 4 <= len(read.number) <= 20 and set(read.number) <= allowed
        else:
            assert read.kind in ("letters", "too_long", "too_short", "partial") and read.reason


# -- the evdev reader thread -----------------------------------------------------------------


class FakeDevice:
    """An evdev device for tests: a real fd for select(); type events, pull the plug; records grabs."""

    def __init__(self, busy: bool = False) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self.fd = self._r
        self.busy = busy
        self.queue: deque = deque()
        self.calls: list[str] = []
        self.unplugged = False
        self.read_done = threading.Event()

    def type(self, events) -> None:
        self.read_done.clear()
        self.queue.extend(events)
        os.write(self._w, b"!")

    def unplug(self) -> None:
        self.unplugged = True
        os.write(self._w, b"!")

    def grab(self) -> None:
        self.calls.append("grab")
        if self.busy:
            raise OSError(errno.EBUSY, "Device or resource busy")

    def ungrab(self) -> None:
        self.calls.append("ungrab")
        if self.unplugged:
            raise OSError(errno.ENODEV, "No such device")

    def read(self):
        try:
            os.read(self._r, 4096)
        except BlockingIOError:
            pass
        if self.unplugged:
            raise OSError(errno.ENODEV, "No such device")
        events = list(self.queue)
        self.queue.clear()
        self.read_done.set()
        if not events:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        return iter(events)

    def close(self) -> None:
        self.calls.append("close")
        os.close(self._r)
        os.close(self._w)


class Socket:
    """The USB socket: what ``open_device`` finds at the path (or not), and how often it was asked."""

    def __init__(self) -> None:
        self.device: FakeDevice | None = None
        self.opens = 0
        self.error: OSError = FileNotFoundError(errno.ENOENT, "No such file or directory")

    def plug(self, **kw) -> FakeDevice:
        self.device = FakeDevice(**kw)
        return self.device

    def pull(self) -> None:
        self.device.unplug()
        self.device = None

    def open(self, path: str) -> FakeDevice:
        self.opens += 1
        if self.device is None:
            raise self.error
        return self.device


PATH = "/dev/input/by-id/usb-Reader-event-kbd"


def wait_for(condition, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.005)


@pytest.fixture
def rig():
    socket = Socket()
    cards, garbage, states = [], [], []
    reader = EvdevBadgeReader(
        PATH, cards.append, lambda kind, reason: garbage.append((kind, reason)),
        on_state=lambda up, detail: states.append((up, detail)),
        open_device=socket.open, reconnect_interval_s=0.02, poll_s=0.01, inter_key_timeout_s=0.2,
    )
    yield socket, reader, cards, garbage, states
    reader.stop()


def test_the_reader_is_grabbed_and_reads_cards(rig):
    socket, reader, cards, garbage, states = rig
    device = socket.plug()
    reader.start()
    wait_for(lambda: reader.connected)
    assert device.calls == ["grab"]
    device.type(typed("0012345678"))
    wait_for(lambda: cards)
    assert cards == ["0012345678"] and garbage == []
    assert states == [(True, f"{PATH}: reading (grabbed)")]
    reader.stop()
    assert not reader.is_alive()
    assert device.calls == ["grab", "ungrab", "close"]


def test_unplugged_mid_read_drops_the_partial_read_and_reconnects_when_plugged_back(rig):
    socket, reader, cards, garbage, states = rig
    device = socket.plug()
    reader.start()
    wait_for(lambda: reader.connected)
    device.type(typed("0012345678")[:16])  # four digits, then the plug is pulled
    wait_for(device.read_done.is_set)
    socket.pull()
    wait_for(lambda: garbage)
    assert garbage == [("partial", "4 characters ('0012') then the reader was unplugged; the read was dropped")]
    wait_for(lambda: socket.opens >= 5)  # retrying, but reported once
    assert states == [
        (True, f"{PATH}: reading (grabbed)"),
        (False, f"{PATH}: unplugged (No such device); retrying every 0.02 s"),
        (False, f"{PATH}: not present (No such file or directory); is the reader plugged in? retrying every 0.02 s"),
    ]
    assert device.calls == ["grab", "ungrab", "close"]
    again = socket.plug()
    wait_for(lambda: reader.connected)
    again.type(typed("0087654321"))
    wait_for(lambda: cards)
    assert cards == ["0087654321"], "nothing of the cut read was glued to the next"
    assert reader.connects == 2
    assert states[-1] == (True, f"{PATH}: reading (grabbed)")


def test_a_partial_read_times_out_in_the_thread(rig):
    socket, reader, cards, garbage, states = rig
    device = socket.plug()
    reader.start()
    wait_for(lambda: reader.connected)
    device.type(typed("99")[:4])
    wait_for(lambda: garbage)
    kind, reason = garbage[0]
    assert kind == "partial" and reason.startswith("1 character ('9') then nothing for 0.")
    device.type(typed("0012345678"))
    wait_for(lambda: cards)
    assert cards == ["0012345678"]


def test_a_reader_another_program_holds_is_not_read_and_is_tried_again(rig):
    socket, reader, cards, garbage, states = rig
    busy = socket.plug(busy=True)
    reader.start()
    wait_for(lambda: socket.opens >= 3)
    assert states == [(False, f"{PATH}: another program holds the reader (Device or resource busy); retrying")]
    assert "close" in busy.calls and "ungrab" not in busy.calls
    socket.plug()
    wait_for(lambda: reader.connected)


def test_a_reader_the_service_may_not_open_says_how_to_fix_it(rig):
    socket, reader, cards, garbage, states = rig
    socket.error = PermissionError(errno.EACCES, "Permission denied")
    reader.start()
    wait_for(lambda: states)
    assert states == [(False, f"{PATH}: permission denied (Permission denied); the service user needs the 'input' group")]


def test_a_failing_card_handler_does_not_stop_the_reader(rig):
    socket, _, _, _, _ = rig
    seen = []

    def broken(card):
        seen.append(card)
        raise RuntimeError("store full")

    reader = EvdevBadgeReader(PATH, broken, open_device=socket.open, poll_s=0.01)
    device = socket.plug()
    reader.start()
    try:
        wait_for(lambda: reader.connected)
        device.type(typed("00001111"))
        device.type(typed("00002222"))
        wait_for(lambda: len(seen) == 2)
        assert reader.is_alive()
    finally:
        reader.stop()


def test_the_default_opener_is_evdev(monkeypatch):
    opened = []
    monkeypatch.setattr(evdev, "InputDevice", lambda path: opened.append(path) or "device")
    assert badge._open_evdev(PATH) == "device" and opened == [PATH]


# -- the simulated reader and the choice --------------------------------------------------------


def test_the_simulated_reader_types_through_the_same_assembler():
    got = []
    sim = SimulatedBadgeReader(lambda card: got.append(card) or {"ok": card}, lambda kind, reason: (kind, reason))
    assert sim.swipe("0012345678") == [{"card": "0012345678", "result": {"ok": "0012345678"}}]
    assert sim.swipe("12AB") == [{"bad_read": "letters", "reason": "'12AB' is not a card number: A, B typed where a card number has only digits 0-9 (a reader that types hex needs badge.card_format = \"hex\")", "result": ("letters", "'12AB' is not a card number: A, B typed where a card number has only digits 0-9 (a reader that types hex needs badge.card_format = \"hex\")")}]
    assert got == ["0012345678"]
    assert sim.swipes == ["0012345678", "12AB"]


def test_the_simulator_refuses_what_no_reader_can_type():
    sim = SimulatedBadgeReader(lambda card: None)
    with pytest.raises(UntypeableCard, match="'中' cannot come from a badge reader: a card number is digits \\(or A–F for a hex reader\\)"):
        sim.swipe("12中4")


def test_a_real_reader_cannot_be_swiped_from_the_simulator():
    reader = EvdevBadgeReader(PATH, lambda card: None, open_device=Socket().open)
    with pytest.raises(NotSimulated):
        reader.swipe("0012345678")


def config(**kw) -> BadgeConfig:
    return BadgeConfig(**({"enabled": True, "driver": "evdev", "device": PATH} | kw))


def test_make_badge_reader_chooses_from_config():
    socket = Socket()
    assert make_badge_reader(config(enabled=False), print) is None
    real = make_badge_reader(config(card_format="hex", inter_key_timeout_s=0.05, reconnect_interval_s=7.0), print, open_device=socket.open)
    assert isinstance(real, EvdevBadgeReader)
    assert (real.path, real.reconnect_interval_s, real.keys.assembler.hex, real.keys.assembler.inter_key_timeout_s) == (PATH, 7.0, True, 0.05)
    assert isinstance(make_badge_reader(config(driver="simulated", device=None), print), SimulatedBadgeReader)
    # The simulator never touches a real reader, whatever the file says.
    assert isinstance(make_badge_reader(config(), print, simulate=True), SimulatedBadgeReader)


# -- the [badge] config keys ----------------------------------------------------------------------

MINIMAL = """\
[device]
id = "hall-01"
hall = "测试政务服务中心"
township = "t"
county = "c"

[[windows]]
id = "w1"
name = "综合受理窗口"
buttons = [17, 27, 22]
"""


def test_badge_config_defaults_and_values():
    assert parse_config(tomllib.loads(MINIMAL)).badge == BadgeConfig(False, "evdev", None, "decimal", 20, 0.3, 2.0)
    text = MINIMAL + '\n[badge]\nenabled = true\ndevice = "/dev/input/by-id/x"\ncard_format = "hex"\nmax_digits = 8\ninter_key_timeout_ms = 150\nreconnect_interval = 5\n'
    assert parse_config(tomllib.loads(text)).badge == BadgeConfig(True, "evdev", "/dev/input/by-id/x", "hex", 8, 0.15, 5.0)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('card_format = "octal"', "badge.card_format = 'octal': must be one of decimal, hex. Fix: use one of decimal, hex: what the reader types"),
        ("max_digits = 2", "badge.max_digits = 2: must be between 4 and 64. Fix: give the longest card number the reader types, between 4 and 64"),
        ("inter_key_timeout_ms = 0.5", "badge.inter_key_timeout_ms = 0.5: must be a whole number. Fix: give milliseconds between 20 and 5000"),
        ("reconnect_interval = 0", "badge.reconnect_interval = 0: must be between 0.1 and 600. Fix: give seconds between 0.1 and 600"),
    ],
)
def test_bad_badge_config_is_named(line, problem):
    with pytest.raises(ConfigError) as exc:
        parse_config(tomllib.loads(MINIMAL + "\n[badge]\n" + line + "\n"))
    assert [str(p) for p in exc.value.problems] == [problem]

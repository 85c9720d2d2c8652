"""The staff badge reader: a USB HID card reader that types the card number and presses Enter.

The common 125 kHz (EM4100 "ID card") and 13.56 MHz (Mifare UID) desk readers present
themselves as a keyboard. We read them through evdev from their ``/dev/input/by-id/…`` path
and *grab* the device, so the digits never reach a console or the login prompt, and assemble
the key-downs ourselves in ``CardAssembler``, with an injectable monotonic clock:

- digits (top row or keypad) are collected until KEY_ENTER or KEY_KPENTER;
- a read whose keys stop for longer than ``inter_key_timeout_s`` is dropped: a reader types a
  whole number within a few tens of milliseconds, so a pause means a read cut short (the
  reader was pulled out, or someone is typing on something that is not a reader);
- letters, other keys, fewer than ``min_digits`` or more than ``max_digits`` characters are
  reported as a bad read, never passed on as a card.

Card numbers are decimal by default (what the usual readers are set to: 10 digits for an
EM4100 card, 8 to 10 for a Mifare UID). A reader switched to hex output types A–F as well;
set ``card_format = "hex"`` for it and the letters A–F (either case; shift is ignored) are
accepted and upper-cased. In decimal mode a letter is always a bad read, so a hex reader
plugged in by mistake is reported rather than read as wrong numbers. Leading zeros are part
of the number: cards are compared as text, never as integers.

``EvdevBadgeReader`` is a thread that opens the device through an injectable
``open_device`` (default ``evdev.InputDevice``), grabs it, waits on it with ``select()`` so
it can stop and expire partial reads on time, and when the reader is unplugged (ENODEV)
drops what was half typed and reopens the path every ``reconnect_interval_s`` until it is
back. ``SimulatedBadgeReader`` types a card as synthetic key events through the same
``BadgeKeys`` path (the simulator's ``hall-appliance sim badge CARD``). ``make_badge_reader``
chooses between them from config. Tests drive everything with synthetic evdev events: CI has
no ``/dev/uinput``.
"""

from __future__ import annotations

import errno
import logging
import select as _select
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, NamedTuple

log = logging.getLogger(__name__)

Monotonic = Callable[[], float]
OnCard = Callable[[str], Any]
OnGarbage = Callable[[str, str], Any]  # (kind, reason)
OnState = Callable[[bool, str], None]  # (connected, detail)

CARD_FORMATS = ("decimal", "hex")

# Codes from the kernel's include/uapi/linux/input-event-codes.h: a stable ABI, written out
# here so the assembler and the simulator need no evdev (it only builds on Linux);
# tests/test_badge.py checks them against evdev.ecodes.
EV_SYN, EV_KEY, EV_MSC = 0, 1, 4
KEY_DOWN, KEY_UP, KEY_HOLD = 1, 0, 2
KEY_ENTER, KEY_KPENTER = 28, 96
KEY_LEFTSHIFT, KEY_RIGHTSHIFT, KEY_CAPSLOCK, KEY_NUMLOCK = 42, 54, 58, 69
DIGIT_KEYS = {2: "1", 3: "2", 4: "3", 5: "4", 6: "5", 7: "6", 8: "7", 9: "8", 10: "9", 11: "0"}
KEYPAD_KEYS = {79: "1", 80: "2", 81: "3", 75: "4", 76: "5", 77: "6", 71: "7", 72: "8", 73: "9", 82: "0"}
LETTER_KEYS = {
    16: "Q", 17: "W", 18: "E", 19: "R", 20: "T", 21: "Y", 22: "U", 23: "I", 24: "O", 25: "P",
    30: "A", 31: "S", 32: "D", 33: "F", 34: "G", 35: "H", 36: "J", 37: "K", 38: "L",
    44: "Z", 45: "X", 46: "C", 47: "V", 48: "B", 49: "N", 50: "M",
}
# Keys a reader may send around the number that carry no character of it.
MODIFIER_KEYS = frozenset({KEY_LEFTSHIFT, KEY_RIGHTSHIFT, KEY_CAPSLOCK, KEY_NUMLOCK})
HEX_LETTERS = frozenset("ABCDEF")
# errno values meaning "the reader is gone" rather than "something is broken".
UNPLUGGED = frozenset({errno.ENODEV, errno.ENOENT, errno.EIO, errno.ENXIO, errno.EBADF})

# Kinds of bad read, as reported to on_garbage(kind, reason).
LETTERS = "letters"
TOO_LONG = "too_long"
TOO_SHORT = "too_short"
PARTIAL = "partial"


class BadgeError(Exception):
    """Root of the badge reader's errors."""


class UntypeableCard(BadgeError, ValueError):
    """The simulator was asked to type a character no card reader can type."""


class NotSimulated(BadgeError, RuntimeError):
    """A swipe can only be simulated on the simulated reader."""


class KeyEvent(NamedTuple):
    """A key event shaped like ``evdev.InputEvent`` (type, code, value): what the simulator types."""

    type: int
    code: int
    value: int


@dataclass(frozen=True)
class Card:
    """A complete card number, as the reader typed it (upper-case for hex)."""

    number: str


@dataclass(frozen=True)
class BadRead:
    """Keys that were not a card number; ``kind`` is stable, ``reason`` says what was seen."""

    kind: str
    reason: str


Read = Card | BadRead


def _characters(n: int) -> str:
    return f"{n} character" + ("" if n == 1 else "s")


def _shown(text: str, limit: int = 24) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


class CardAssembler:
    """Turns a reader's key events into card numbers and bad reads; pure, with an injectable clock."""

    def __init__(
        self,
        clock: Monotonic = time.monotonic,
        *,
        card_format: str = "decimal",
        min_digits: int = 4,
        max_digits: int = 20,
        inter_key_timeout_s: float = 0.3,
    ) -> None:
        if card_format not in CARD_FORMATS:
            raise ValueError(f"card_format {card_format!r} must be one of {', '.join(CARD_FORMATS)}")
        self.clock = clock
        self.hex = card_format == "hex"
        self.min_digits = min_digits
        self.max_digits = max_digits
        self.inter_key_timeout_s = inter_key_timeout_s
        self._chars: list[str] = []
        self._typed = 0  # characters typed in this read, kept or not
        self._foreign: list[str] = []  # what made it a bad read, in order
        self._last_key: float | None = None

    @property
    def pending(self) -> bool:
        """True while a read has started and not ended."""
        return self._typed > 0

    def feed(self, event: Any) -> list[Read]:
        """One input event (anything with ``type``, ``code``, ``value``); returns what it completed."""
        if getattr(event, "type", None) != EV_KEY or getattr(event, "value", None) != KEY_DOWN:
            return []  # key-ups, auto-repeat, EV_SYN and EV_MSC scan codes say nothing more
        out: list[Read] = []
        expired = self.expire()
        if expired:
            out.append(expired)
        code = event.code
        if code in MODIFIER_KEYS:
            return out
        self._last_key = self.clock()
        if code in (KEY_ENTER, KEY_KPENTER):
            done = self._finish()
            if done:
                out.append(done)
            return out
        char = DIGIT_KEYS.get(code) or KEYPAD_KEYS.get(code)
        if char is None:
            letter = LETTER_KEYS.get(code)
            if letter is not None and self.hex and letter in HEX_LETTERS:
                char = letter
            else:
                self._foreign.append(letter or f"<key {code}>")
                char = letter or "?"
        self._typed += 1
        if len(self._chars) <= self.max_digits:  # keep one past the limit, for the report
            self._chars.append(char)
        return out

    def expire(self) -> BadRead | None:
        """Drop a read whose keys stopped more than the inter-key timeout ago (call it regularly)."""
        if not self.pending or self._last_key is None:
            return None
        gap = self.clock() - self._last_key
        if gap <= self.inter_key_timeout_s:
            return None
        return self.drop(f"then nothing for {gap:.1f} s")

    def drop(self, why: str) -> BadRead | None:
        """Abandon a read cut short (``why``: 'the reader was unplugged'); None if nothing was typed."""
        if not self.pending:
            self._reset()
            return None
        bad = BadRead(PARTIAL, f"{_characters(self._typed)} ({_shown(''.join(self._chars))}) {why}; the read was dropped")
        self._reset()
        return bad

    def _finish(self) -> Read | None:
        chars, typed, foreign = "".join(self._chars), self._typed, self._foreign
        self._reset()
        if typed == 0:
            return None  # a stray Enter: nothing was read, nothing to report
        if foreign:
            allowed = "digits 0-9 and A-F" if self.hex else "digits 0-9"
            fix = "" if self.hex else ' (a reader that types hex needs badge.card_format = "hex")'
            return BadRead(LETTERS, f"{_shown(chars)} is not a card number: {', '.join(dict.fromkeys(foreign))} typed where a card number has only {allowed}{fix}")
        if typed > self.max_digits:
            return BadRead(TOO_LONG, f"{_characters(typed)} ({_shown(chars)}) is longer than a card number (at most {self.max_digits})")
        if typed < self.min_digits:
            return BadRead(TOO_SHORT, f"{_characters(typed)} ({_shown(chars)}) is shorter than a card number (at least {self.min_digits})")
        return Card(chars)

    def _reset(self) -> None:
        self._chars = []
        self._typed = 0
        self._foreign = []
        self._last_key = None


class BadgeKeys:
    """Feeds events to an assembler and calls ``on_card``/``on_garbage``: the path hardware and simulator share."""

    def __init__(self, assembler: CardAssembler, on_card: OnCard, on_garbage: OnGarbage | None = None) -> None:
        self.assembler = assembler
        self.on_card = on_card
        self.on_garbage = on_garbage
        self._lock = threading.Lock()

    def events(self, events: Iterable[Any]) -> list[dict]:
        """Feed events; returns one entry per card or bad read with what its callback returned."""
        out: list[dict] = []
        for event in events:
            with self._lock:
                reads = self.assembler.feed(event)
            out.extend(self._dispatch(reads))
        return out

    def expire(self) -> list[dict]:
        with self._lock:
            bad = self.assembler.expire()
        return self._dispatch([bad] if bad else [])

    def drop(self, why: str) -> list[dict]:
        with self._lock:
            bad = self.assembler.drop(why)
        return self._dispatch([bad] if bad else [])

    def _dispatch(self, reads: list[Read]) -> list[dict]:
        out = []
        for read in reads:
            try:
                if isinstance(read, Card):
                    out.append({"card": read.number, "result": self.on_card(read.number)})
                else:
                    log.warning("badge reader: bad read (%s): %s", read.kind, read.reason)
                    result = self.on_garbage(read.kind, read.reason) if self.on_garbage else None
                    out.append({"bad_read": read.kind, "reason": read.reason, "result": result})
            except Exception:  # noqa: BLE001 - a failing handler must not kill the reader thread
                log.exception("badge read %r could not be handled", read)
                out.append({"error": f"{read!r} could not be handled; see the log"})
        return out


def keystrokes(text: str) -> list[KeyEvent]:
    """The key events a keyboard-emulating reader sends for ``text`` and Enter (SYN after each)."""
    by_char = {c: k for k, c in DIGIT_KEYS.items()} | {c: k for k, c in LETTER_KEYS.items()}
    events: list[KeyEvent] = []

    def press(code: int, value: int) -> None:
        events.append(KeyEvent(EV_KEY, code, value))
        events.append(KeyEvent(EV_SYN, 0, 0))

    for char in text:
        code = by_char.get(char.upper())
        if code is None:
            raise UntypeableCard(f"{char!r} cannot come from a badge reader: a card number is digits (or A–F for a hex reader)")
        shifted = char.isalpha() and char.isupper()
        if shifted:
            press(KEY_LEFTSHIFT, KEY_DOWN)
        press(code, KEY_DOWN)
        press(code, KEY_UP)
        if shifted:
            press(KEY_LEFTSHIFT, KEY_UP)
    press(KEY_ENTER, KEY_DOWN)
    press(KEY_ENTER, KEY_UP)
    return events


def _open_evdev(path: str) -> Any:
    import evdev  # only here: python-evdev builds on Linux alone, and the simulator runs anywhere

    return evdev.InputDevice(path)


class EvdevBadgeReader(threading.Thread):
    """Reads a USB HID badge reader through evdev, grabbed, reconnecting when it comes back."""

    def __init__(
        self,
        path: str,
        on_card: OnCard,
        on_garbage: OnGarbage | None = None,
        *,
        on_state: OnState | None = None,
        open_device: Callable[[str], Any] | None = None,
        clock: Monotonic = time.monotonic,
        card_format: str = "decimal",
        max_digits: int = 20,
        inter_key_timeout_s: float = 0.3,
        reconnect_interval_s: float = 2.0,
        poll_s: float = 0.1,
    ) -> None:
        super().__init__(name="badge", daemon=True)
        self.path = path
        self.open_device = open_device or _open_evdev
        self.on_state = on_state
        self.reconnect_interval_s = reconnect_interval_s
        self.poll_s = poll_s
        self.keys = BadgeKeys(
            CardAssembler(clock, card_format=card_format, max_digits=max_digits, inter_key_timeout_s=inter_key_timeout_s),
            on_card,
            on_garbage,
        )
        self.connected = False
        self.detail = "not opened yet"
        self.connects = 0
        self._halt = threading.Event()
        self._reported: tuple[bool, str] | None = None

    # -- the thread -------------------------------------------------------------------

    def run(self) -> None:
        while not self._halt.is_set():
            device = self._open()
            if device is None:
                self._halt.wait(self.reconnect_interval_s)
                continue
            try:
                self._serve(device)
            except OSError as exc:
                gone = exc.errno in UNPLUGGED
                self.keys.drop("then the reader was unplugged" if gone else f"then the reader failed ({exc.strerror or exc})")
                self._state(False, f"{self.path}: {'unplugged' if gone else 'read failed'} ({exc.strerror or exc}); retrying every {self.reconnect_interval_s:g} s")
                if not gone:
                    log.error("badge reader %s failed: %s", self.path, exc)
            finally:
                self._release(device)
            if not self._halt.is_set():
                self._halt.wait(self.reconnect_interval_s)

    def _open(self) -> Any | None:
        try:
            device = self.open_device(self.path)
        except PermissionError as exc:
            self._state(False, f"{self.path}: permission denied ({exc.strerror}); the service user needs the 'input' group")
            return None
        except OSError as exc:
            self._state(False, f"{self.path}: not present ({exc.strerror or exc}); is the reader plugged in? retrying every {self.reconnect_interval_s:g} s")
            return None
        try:
            # Exclusive: while we hold it, the digits reach no console, login prompt or X session.
            device.grab()
        except OSError as exc:
            self._release(device, grabbed=False)
            busy = exc.errno == errno.EBUSY
            self._state(False, f"{self.path}: {'another program holds the reader' if busy else 'cannot grab the reader'} ({exc.strerror or exc}); retrying")
            return None
        self.connects += 1
        self._state(True, f"{self.path}: reading (grabbed)")
        return device

    def _serve(self, device: Any) -> None:
        fd = device.fd
        while not self._halt.is_set():
            ready, _, _ = _select.select([fd], [], [], self.poll_s)
            if ready:
                try:
                    events = list(device.read())
                except BlockingIOError:
                    events = []
                self.keys.events(events)
            self.keys.expire()

    def _release(self, device: Any, grabbed: bool = True) -> None:
        if grabbed:
            try:
                device.ungrab()
            except OSError:
                pass  # unplugged: nothing left to release
        try:
            device.close()
        except OSError:
            pass

    def _state(self, connected: bool, detail: str) -> None:
        self.connected, self.detail = connected, detail
        if self._reported == (connected, detail):
            return  # a reader left unplugged is reported once, not at every retry
        self._reported = (connected, detail)
        (log.info if connected else log.warning)("badge reader: %s", detail)
        if self.on_state:
            try:
                self.on_state(connected, detail)
            except Exception:  # noqa: BLE001 - a failing alarm must not stop the reader
                log.exception("badge reader state callback failed")

    # -- control ------------------------------------------------------------------------

    def stop(self, timeout: float = 2.0) -> None:
        """End the thread; the device is ungrabbed and closed on the way out."""
        self._halt.set()
        if self.is_alive():
            self.join(timeout)

    def swipe(self, text: str) -> list[dict]:
        raise NotSimulated(f"the badge reader at {self.path} is real hardware; swipes are simulated only with badge.driver = \"simulated\" (hall-appliance simulate)")


class SimulatedBadgeReader:
    """The badge reader's twin: ``swipe(card)`` types it as key events through the same assembler."""

    def __init__(
        self,
        on_card: OnCard,
        on_garbage: OnGarbage | None = None,
        *,
        clock: Monotonic = time.monotonic,
        card_format: str = "decimal",
        max_digits: int = 20,
        inter_key_timeout_s: float = 0.3,
    ) -> None:
        self.keys = BadgeKeys(
            CardAssembler(clock, card_format=card_format, max_digits=max_digits, inter_key_timeout_s=inter_key_timeout_s),
            on_card,
            on_garbage,
        )
        self.connected = False
        self.detail = "simulated reader"
        self.swipes: list[str] = []  # what was typed, in order: the instrument a test reads

    def start(self) -> None:
        self.connected = True

    def stop(self, timeout: float = 0.0) -> None:
        self.connected = False

    def is_alive(self) -> bool:
        return self.connected

    def swipe(self, text: str) -> list[dict]:
        """Type ``text`` and Enter as a reader would; returns each card or bad read with its callback's result."""
        events = keystrokes(text)
        self.swipes.append(text)
        return self.keys.events(events)


BadgeReader = EvdevBadgeReader | SimulatedBadgeReader


def make_badge_reader(
    config: Any,
    on_card: OnCard,
    on_garbage: OnGarbage | None = None,
    *,
    on_state: OnState | None = None,
    simulate: bool = False,
    open_device: Callable[[str], Any] | None = None,
    clock: Monotonic = time.monotonic,
) -> BadgeReader | None:
    """The reader ``config`` (the [badge] section) asks for; None when it is disabled.

    ``simulate`` (``hall-appliance simulate``) always gives the simulated reader, as the
    simulator always uses mock pins. The caller starts it with ``start()``.
    """
    if not config.enabled:
        return None
    common = dict(
        clock=clock,
        card_format=getattr(config, "card_format", "decimal"),
        max_digits=getattr(config, "max_digits", 20),
        inter_key_timeout_s=getattr(config, "inter_key_timeout_s", 0.3),
    )
    if simulate or config.driver == "simulated":
        return SimulatedBadgeReader(on_card, on_garbage, **common)
    if not config.device:
        raise ValueError("badge.device is required for the evdev badge reader: give its /dev/input/by-id/…-event-kbd path")
    return EvdevBadgeReader(
        config.device,
        on_card,
        on_garbage,
        on_state=on_state,
        open_device=open_device,
        reconnect_interval_s=getattr(config, "reconnect_interval_s", 2.0),
        **common,
    )

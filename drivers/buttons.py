"""The rating buttons at each window, read through gpiozero.

Each button is a gpiozero ``DigitalInputDevice`` on the configured pin factory, wired to
ground with the internal pull-up (gpiozero's ``Button`` is the same device plus a hold thread
per button, waking ten times a second; a held button is noticed here instead). Debounce is
decided here, in ``ContactDebouncer``, with an injectable clock:
gpiozero's mock pins ignore ``bounce_time`` (so tests could not see it), real contacts chatter
for several milliseconds, and a jammed button must be reported once rather than counted. The
simulator presses a button by driving its mock pin, so a simulated press takes the same path
as a real one.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable

from gpiozero import DigitalInputDevice, Factory

from .gpio import MOCK_HISTORY

log = logging.getLogger(__name__)

OnPress = Callable[[str, str], None]
OnStuck = Callable[[str, str, bool], None]
Monotonic = Callable[[], float]


class UnknownButton(ValueError):
    """No button is configured for that window and level."""


class ContactDebouncer:
    """Turns one contact's raw edges into presses.

    After an accepted change, edges are ignored for ``debounce_s`` (contact chatter); the
    level last seen in that time is settled afterwards. A press counts once, on the way down,
    however long it is held; held past ``stuck_after_s`` it is reported stuck, once. The jam
    ends when the contact has stayed open for ``free_after_s``: a jammed contact that flickers
    open for a moment now and then is still jammed, not freed and jammed again each time.
    """

    def __init__(self, clock: Monotonic, debounce_s: float = 0.05, stuck_after_s: float = 20.0, pressed: bool = False, free_after_s: float = 1.0) -> None:
        self.clock = clock
        self.debounce_s = debounce_s
        self.stuck_after_s = stuck_after_s
        self.free_after_s = free_after_s
        # While jammed: since when the contact has been open (None while it is closed).
        self.freeing_since: float | None = None
        self.pressed = pressed
        self.changed_at = -float("inf")
        self.pressed_at = clock() if pressed else None
        self.settle_to: bool | None = None
        # A contact found closed at start is treated as jammed until it opens.
        self.stuck = False
        # How long the contact was last seen open (raw edges): a close after an opening that
        # long is a new press even when it settles after a lockout; a shorter one is chatter.
        self.opened_at: float | None = None
        self.open_for = float("inf")

    def edge(self, pressed: bool) -> list[str]:
        """A raw edge; returns what it means: 'press', 'release', 'stuck', 'unstuck'."""
        now = self.clock()
        if pressed:
            self.open_for = now - self.opened_at if self.opened_at is not None else float("inf")
            self.opened_at = None
        elif self.opened_at is None:
            self.opened_at = now
        # Settle first: a close still waiting out the lockout means the jam goes on.
        out = self._settle(now)
        out += self._free(now)
        if now - self.changed_at < self.debounce_s:
            self.settle_to = pressed
            return out
        return out + self._change(pressed, now)

    def tick(self) -> list[str]:
        """Called regularly: settles chatter and notices a jammed contact."""
        now = self.clock()
        out = self._settle(now)
        out += self._free(now)
        if self.pressed and not self.stuck and self.pressed_at is not None and now - self.pressed_at >= self.stuck_after_s:
            self.stuck = True
            out.append("stuck")
        return out

    def _free(self, now: float) -> list[str]:
        if self.freeing_since is None or self.pressed or now - self.freeing_since < self.free_after_s - 1e-6:
            return []
        self.stuck = False
        self.freeing_since = None
        return ["unstuck"]

    def _settle(self, now: float) -> list[str]:
        if self.settle_to is None or now - self.changed_at < self.debounce_s:
            return []
        level, self.settle_to = self.settle_to, None
        # The level held from the end of the lockout, not from whenever we noticed.
        return self._change(level, self.changed_at + self.debounce_s, settling=True)

    def _change(self, pressed: bool, now: float, settling: bool = False) -> list[str]:
        if pressed == self.pressed:
            return []
        self.pressed = pressed
        self.changed_at = now
        if pressed:
            self.pressed_at = now
            if self.stuck:
                self.freeing_since = None  # it opened only for a moment: still jammed
                return []
            # Settled after a lockout: a new press if the contact had really opened (for the
            # debounce time, give or take float rounding), else the same press continuing.
            return ["press"] if not settling or self.open_for >= self.debounce_s - 1e-6 else []
        self.pressed_at = None
        if self.stuck:
            self.freeing_since = now  # freed once it stays open (_free)
            return []
        return ["release"]


class WindowButtons:
    """Every window's buttons; calls ``on_press(window_id, level_code)`` for each accepted press."""

    def __init__(
        self,
        windows: Iterable,
        pin_factory: Factory,
        on_press: OnPress,
        *,
        on_stuck: OnStuck | None = None,
        clock: Monotonic = time.monotonic,
        debounce_s: float = 0.05,
        stuck_after_s: float = 20.0,
        hardware_bounce_s: float | None = None,
    ) -> None:
        self.factory = pin_factory
        self.on_press = on_press
        self.on_stuck = on_stuck
        self.buttons: dict[tuple[str, str], DigitalInputDevice] = {}
        self.contacts: dict[tuple[str, str], ContactDebouncer] = {}
        self._lock = threading.Lock()
        try:
            for window in windows:
                for level, pin in window.buttons:
                    key = (window.id, level)
                    # The factory's own bounce filter (lgpio, RPi.GPIO) takes the worst
                    # chatter off the CPU; ours still decides, with a clock tests control.
                    button = DigitalInputDevice(pin, pull_up=True, bounce_time=hardware_bounce_s, pin_factory=pin_factory)
                    self.buttons[key] = button
                    self.contacts[key] = ContactDebouncer(clock, debounce_s, stuck_after_s, pressed=button.is_active)
                    if button.is_active:
                        self.contacts[key].stuck = True
                        log.warning("button %s/%s is closed at start: treated as jammed until released", *key)
                    button.when_activated = self._handler(key, True)
                    button.when_deactivated = self._handler(key, False)
        except Exception:
            self.close()
            raise

    def _handler(self, key: tuple[str, str], pressed: bool) -> Callable[[], None]:
        def changed() -> None:
            with self._lock:
                happened = self.contacts[key].edge(pressed)
            self._dispatch(key, happened)

        return changed

    def tick(self) -> None:
        """Settle chatter and report jammed buttons; the daemon calls this about once a second."""
        for key, contact in self.contacts.items():
            with self._lock:
                happened = contact.tick()
            self._dispatch(key, happened)

    def _dispatch(self, key: tuple[str, str], happened: list[str]) -> None:
        for what in happened:
            try:
                if what == "press":
                    self.on_press(*key)
                elif what in ("stuck", "unstuck") and self.on_stuck:
                    self.on_stuck(key[0], key[1], what == "stuck")
            except Exception:  # noqa: BLE001 - a failure must not kill gpiozero's callback thread
                log.exception("%s at %s (%s) could not be handled", what, *key)

    def stuck_buttons(self) -> list[tuple[str, str]]:
        """(window, level) of every button jammed: held down past the stuck time, and not yet
        open for ``free_after_s`` since."""
        return [key for key, c in self.contacts.items() if c.stuck]

    def pin(self, window_id: str, level: str):
        """The gpiozero pin behind a button (a MockPin in the simulator and tests)."""
        button = self.buttons.get((window_id, level))
        if button is None:
            known = sorted({w for w, _ in self.buttons})
            levels = sorted(lv for w, lv in self.buttons if w == window_id)
            if window_id not in known:
                raise UnknownButton(f"window '{window_id}' has no buttons; windows: {', '.join(known)}")
            raise UnknownButton(f"window '{window_id}' has no '{level}' button; its buttons: {', '.join(levels)}")
        return button.pin

    def press(self, window_id: str, level: str) -> None:
        """Simulate a press and release on a mock pin (simulator and tests only).

        The contact is held, then left open, for the debounce time each, as a finger would:
        two simulated presses closer than that would rightly count as one.
        """
        pin = self.pin(window_id, level)
        if not hasattr(pin, "drive_low"):
            raise RuntimeError("presses can only be simulated on mock pins (gpio.pin_factory = 'mock')")
        debounce = self.contacts[(window_id, level)].debounce_s
        pin.drive_low()
        time.sleep(debounce)
        pin.drive_high()
        time.sleep(debounce)
        # The mock pin keeps every change for assert_states; a long simulation must not.
        if len(pin.states) > MOCK_HISTORY:
            del pin.states[:-MOCK_HISTORY]

    def close(self) -> None:
        for button in self.buttons.values():
            button.close()
        self.buttons.clear()

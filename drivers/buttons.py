"""The rating buttons at each window, read through gpiozero.

Each button is a gpiozero ``Button`` on the configured pin factory, wired to ground with the
internal pull-up. The simulator presses a button by driving its mock pin, so a simulated press
takes the same path as a real one.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable

from gpiozero import Button, Factory

log = logging.getLogger(__name__)

OnPress = Callable[[str, str], None]


class UnknownButton(ValueError):
    """No button is configured for that window and level."""


class WindowButtons:
    """Every window's buttons; calls ``on_press(window_id, level_code)`` for each press."""

    def __init__(self, windows: Iterable, pin_factory: Factory, on_press: OnPress) -> None:
        self.factory = pin_factory
        self.on_press = on_press
        self.buttons: dict[tuple[str, str], Button] = {}
        try:
            for window in windows:
                for level, pin in window.buttons:
                    button = Button(pin, pull_up=True, pin_factory=pin_factory)
                    button.when_pressed = self._handler(window.id, level)
                    self.buttons[(window.id, level)] = button
        except Exception:
            self.close()
            raise

    def _handler(self, window_id: str, level: str) -> Callable[[], None]:
        def pressed() -> None:
            try:
                self.on_press(window_id, level)
            except Exception:  # noqa: BLE001 - a failure must not kill gpiozero's callback thread
                log.exception("press at %s (%s) could not be handled", window_id, level)

        return pressed

    def press(self, window_id: str, level: str) -> None:
        """Simulate a press and release on a mock pin (simulator and tests only)."""
        button = self.buttons.get((window_id, level))
        if button is None:
            known = sorted({w for w, _ in self.buttons})
            levels = sorted(lv for w, lv in self.buttons if w == window_id)
            if window_id not in known:
                raise UnknownButton(f"window '{window_id}' has no buttons; windows: {', '.join(known)}")
            raise UnknownButton(f"window '{window_id}' has no '{level}' button; its buttons: {', '.join(levels)}")
        pin = button.pin
        if not hasattr(pin, "drive_low"):
            raise RuntimeError("presses can only be simulated on mock pins (gpio.pin_factory = 'mock')")
        pin.drive_low()
        pin.drive_high()

    def close(self) -> None:
        for button in self.buttons.values():
            button.close()
        self.buttons.clear()

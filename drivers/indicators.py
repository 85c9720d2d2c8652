"""The indicator LED at each window: a short blink says "your rating was taken"."""

from __future__ import annotations

import logging
import threading
from typing import Iterable

from gpiozero import LED, Factory

log = logging.getLogger(__name__)


class WindowIndicators:
    """One gpiozero ``LED`` per window that has ``indicator_pin`` set."""

    def __init__(self, windows: Iterable, pin_factory: Factory, *, on_s: float = 0.15, off_s: float = 0.15, blinks: int = 3) -> None:
        self.leds: dict[str, LED] = {}
        self._lock = threading.Lock()
        self.on_s, self.off_s, self.blinks = on_s, off_s, blinks
        try:
            for window in windows:
                if window.indicator_pin is not None:
                    self.leds[window.id] = LED(window.indicator_pin, pin_factory=pin_factory)
        except Exception:
            self.close()
            raise

    def blink(self, window_id: str) -> None:
        """Blink the window's LED in the background (no-op for a window without one)."""
        led = self.leds.get(window_id)
        if led is not None:
            # gpiozero restarts the LED's blink thread; two presses at once must not race it.
            with self._lock:
                led.blink(on_time=self.on_s, off_time=self.off_s, n=self.blinks, background=True)

    def close(self) -> None:
        for led in self.leds.values():
            led.close()
        self.leds.clear()

"""Chooses gpiozero's pin factory from config: the one GPIO seam (STYLE 2, 5)."""

from __future__ import annotations

import logging

from gpiozero import Factory

log = logging.getLogger(__name__)


class NoPinFactory(RuntimeError):
    """No GPIO library could drive the header."""


def make_pin_factory(name: str) -> tuple[Factory, str]:
    """The factory for ``auto|lgpio|rpigpio|mock`` and the name of the one really in use.

    ``auto`` prefers lgpio (works on every Pi, the Pi 5 included) and falls back to RPi.GPIO
    for older images; the caller compares the name in use with the one configured and raises
    an alarm when they differ (lgpio failing under ProtectSystem=strict is the known case).
    """
    if name == "mock":
        from gpiozero.pins.mock import MockFactory

        return MockFactory(), "mock"
    errors = []
    for candidate in (("lgpio", "rpigpio") if name == "auto" else (name,)):
        try:
            if candidate == "lgpio":
                from gpiozero.pins.lgpio import LGPIOFactory

                return LGPIOFactory(), "lgpio"
            from gpiozero.pins.rpigpio import RPiGPIOFactory

            return RPiGPIOFactory(), "rpigpio"
        except Exception as exc:  # noqa: BLE001 - import errors and "not a Pi" alike
            errors.append(f"{candidate}: {exc}")
            log.warning("pin factory %s unavailable: %s", candidate, exc)
    raise NoPinFactory(
        f"no GPIO library can drive the pins ({'; '.join(errors)}). On a Pi install python3-lgpio; "
        "off the Pi set gpio.pin_factory = 'mock'"
    )


# A mock pin records every change it ever saw (MockPin.states, for assert_states). Tests read
# that history; a simulator that runs for days must not keep it.
MOCK_HISTORY = 64


def forget_mock_history(factory: Factory, keep: int = MOCK_HISTORY) -> None:
    """Keep only the last ``keep`` recorded changes of every mock pin (a no-op on real pins)."""
    for pin in list(getattr(factory, "pins", {}).values()):
        states = getattr(pin, "states", None)
        if isinstance(states, list) and len(states) > keep:
            del states[:-keep]

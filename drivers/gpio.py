"""Chooses gpiozero's pin factory from config: the one GPIO seam (STYLE 2, 5)."""

from __future__ import annotations

import logging

from gpiozero import Factory

log = logging.getLogger(__name__)


class NoPinFactory(RuntimeError):
    """No GPIO library could drive the header."""


def make_pin_factory(name: str) -> tuple[Factory, str, list[str]]:
    """The factory for ``auto|lgpio|rpigpio|mock``, the name of the one in use, and why any
    preferred one was passed over.

    ``auto`` prefers lgpio (works on every Pi, the Pi 5 included) and falls back to RPi.GPIO
    for older images. The pins then work, but not as installed: the caller raises the
    ``pin_factory`` alarm with the reasons (lgpio failing under ProtectSystem=strict, gpiozero
    #1106, is the known case). A factory named outright is that one or none.
    """
    if name == "mock":
        from gpiozero.pins.mock import MockFactory

        return MockFactory(), "mock", []
    errors = []
    for candidate in (("lgpio", "rpigpio") if name == "auto" else (name,)):
        try:
            if candidate == "lgpio":
                from gpiozero.pins.lgpio import LGPIOFactory

                return LGPIOFactory(), "lgpio", errors
            from gpiozero.pins.rpigpio import RPiGPIOFactory

            return RPiGPIOFactory(), "rpigpio", errors
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

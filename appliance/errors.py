"""The appliance's exceptions: one root, each subclass also the matching built-in."""

from __future__ import annotations


class ApplianceError(Exception):
    """Root of every error the appliance raises on purpose."""


class ConfigError(ApplianceError, ValueError):
    """The config file has one or more problems; ``problems`` lists every one of them."""

    def __init__(self, problems: list, path: str | None = None) -> None:
        self.problems = list(problems)
        self.path = path  # the file, when the problems came from one
        super().__init__("\n".join(str(p) for p in self.problems))


class StoreError(ApplianceError, RuntimeError):
    """The store could not do what was asked."""


class StoreFullError(StoreError, OSError):
    """The disk (or the store's size limit) has no room left for the record."""


class CommandRejected(ApplianceError, ValueError):
    """A county command was refused; ``field`` and ``reason`` say why."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{field}: {reason}" if field else reason)


class CommandDeferred(ApplianceError, RuntimeError):
    """A command could not be applied because the store failed; nothing was applied.

    The uplink lets it end the session before the message is acknowledged, so the broker
    delivers it again after the reconnect (a one-off from the persistent session, a desired
    state as the retained message).
    """


class ControlError(ApplianceError, ConnectionError):
    """The daemon's control socket could not be reached or refused the request."""

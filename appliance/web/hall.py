"""What the page works with: the config, the store, the accounts, the daemon's control socket, a clock, a recorder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import current_app

from ..accounts import Accounts, SignInDelays
from ..clock import Clock
from ..config import Config
from ..control import ControlClient
from ..events import Recorder
from ..store import Store


@dataclass
class Hall:
    """One appliance as the page sees it; ``simulator`` adds the simulator panel.

    ``recorder`` records what people do on the page (leave, a card registered) as events in
    the store's outbox; the daemon's uplink sends them, as it sends the daemon's own.
    """

    config: Config
    store: Store
    accounts: Accounts
    delays: SignInDelays
    control: ControlClient
    clock: Clock
    simulator: bool
    tls: bool
    recorder: Recorder

    def daemon(self, op: str, **args: Any) -> Any:
        """Ask the running daemon; raises ControlError (with the reason) when it cannot answer."""
        return self.control.call(op, **args)

    def close(self) -> None:
        """Close the page's connection to the store."""
        self.store.close()


def hall() -> Hall:
    """The Hall of the app handling this request."""
    return current_app.extensions["hall"]

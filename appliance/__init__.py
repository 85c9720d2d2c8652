"""The hall appliance's runtime core: config, store, events, outbox, uplink, clock, daemon."""

__version__ = "0.1.0"

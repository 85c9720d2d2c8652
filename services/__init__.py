"""The hall's business logic, free of hardware and network: it takes a store, a clock and an event sink."""

"""The daemon: wires the store, the uplink, the drivers and the services, and keeps them alive.

It alone owns the hardware, the live state and the uplink. systemd learns READY only once the
store and the drivers are up, and gets a watchdog ping from the main loop only while the
worker threads are alive. SIGTERM finishes what is in flight and leaves nothing unrecorded:
everything a person did is in the store before it is acknowledged to them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import signal
import sqlite3
import threading
import time
from dataclasses import asdict
from datetime import timedelta
from typing import Any, Callable

from drivers.badge import NotSimulated, UntypeableCard, make_badge_reader
from drivers.buttons import WindowButtons
from drivers.display import DisplayError, make_display
from drivers.gpio import forget_mock_history, make_pin_factory
from drivers.indicators import WindowIndicators
from services.board import BoardRejected, BoardService, BoardSettings, BrightnessSchedule, Font, merge_scopes, validate_board_state, validate_item
from services.complaints import ComplaintRejected, Complaints, KeyInvalid, Sealer
from services.calendar import CalendarInvalid, HallCalendar, validate_calendar
from services.levels import BY_CODE
from services.ratings import FollowupRejected, RatingPolicy, Ratings
from services.roster import STATE_NAMES as ROSTER_STATES
from services.roster import Notice, Roster, RosterRejected

from . import __version__
from .clock import Clock, SystemClock, boot_id
from .commands import ActionHandler, CommandRouter, StateHandler, require
from .config import Config
from .control import ControlServer
from .errors import CommandRejected, StoreError
from .events import Recorder
# SETTINGS and validate_settings live in a driver-free module the config page shares.
from .settings import SETTINGS, merge_settings, validate_settings
from .store import Checkpointer, Store
from .systemd import notify, watchdog_interval
from .uplink import Uplink

log = logging.getLogger(__name__)

MAINTENANCE_INTERVAL_S = 60.0
BOARD_FPS = 30
# Proof of play leaves at most this often (the counts are per item per day).
PROOF_OF_PLAY_INTERVAL_S = 3600.0


class BoardLoop(threading.Thread):
    """Draws the board about 30 times a second: the service decides, the driver shows."""

    def __init__(self, service: BoardService, display, on_error, fps: int = BOARD_FPS) -> None:
        super().__init__(name="board", daemon=True)
        self.service = service
        self.display = display
        self.on_error = on_error
        self.period = 1.0 / fps
        self.halt = threading.Event()
        self.failing = False

    def run(self) -> None:
        next_at = time.monotonic()
        resync_at = next_at + 60
        while not self.halt.is_set():
            try:
                frame = self.service.next_frame()
                self.display.set_contrast(frame.contrast)
                self.display.blank(frame.blank)
                if frame.changed and not frame.blank:
                    self.display.show(frame.image)
                if time.monotonic() >= resync_at:
                    # A supply glitch can upset a MAX7219's registers: send setup and frame again.
                    resync_at = time.monotonic() + 60
                    self.display.resync()
                if self.failing:
                    self.failing = False
                    self.on_error(None)
            except (DisplayError, OSError) as exc:
                if not self.failing:
                    self.failing = True
                    self.on_error(exc)
                self.halt.wait(1.0)  # a board unplugged from SPI: try again, slowly
            next_at += self.period
            delay = next_at - time.monotonic()
            if delay < -self.period:  # fell behind (a slow card write): skip, do not race
                next_at = time.monotonic()
                delay = 0
            self.halt.wait(max(delay, 0))

    def stop(self) -> None:
        self.halt.set()
        if self.is_alive():
            self.join(2)


def _no_args(args: Any) -> dict:
    """For actions that take no arguments: an empty object (or none at all)."""
    if not isinstance(args, dict):
        raise CommandRejected("must be an object", "args")
    if args:
        raise CommandRejected(f"takes no arguments, got {', '.join(sorted(args))}", "args")
    return args


def _libc() -> Any:
    """glibc, for its malloc tuning; None elsewhere (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()
_M_ARENA_MAX = -8  # glibc's malloc.h


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's per-thread malloc arenas before the worker threads start.

    glibc gives threads their own arenas (up to 8 per core) and each keeps the memory it
    once held; the daemon's dozen short- and long-lived threads would hold several MB of a
    Pi Zero 2's 512 MB that way. Two arenas are plenty for threads that mostly wait.
    """
    if _LIBC is not None:
        _LIBC.mallopt(_M_ARENA_MAX, arenas)


def return_free_memory() -> None:
    """Give freed heap pages back to the system (glibc keeps them otherwise)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _update() -> Any:
    """appliance.update, imported on first use (the daemon rarely needs it)."""
    from . import update

    return update


def _rejecting(validate, *errors):
    """Turn a service's own validation error (with ``field`` and ``reason``) into CommandRejected."""

    def checked(data: Any) -> Any:
        try:
            return validate(data)
        except errors as exc:
            raise CommandRejected(exc.reason, exc.field) from None

    return checked


class Daemon:
    """One appliance: ``start()``, then ``serve()`` until ``stop()`` (or SIGTERM)."""

    def __init__(self, config: Config, *, clock: Clock | None = None, simulate: bool = False) -> None:
        self.config = config
        self.clock = clock or SystemClock(config.clock.source)
        self.simulate = simulate
        self.boot_id = boot_id()
        self.started_mono = time.monotonic()
        self.stopping = threading.Event()
        self.settings = {k: v[2] for k, v in SETTINGS.items()}
        self.store: Store | None = None
        self.uplink: Uplink | None = None
        self.control: ControlServer | None = None
        self.buttons: WindowButtons | None = None
        self.indicators: WindowIndicators | None = None
        self.badge = None
        self.board: BoardService | None = None
        self.display = None
        self.board_loop: BoardLoop | None = None
        self.checkpointer: Checkpointer | None = None
        self._shown_duty: str | None = None
        self.pin_factory_name = ""
        self.pin_factory = None
        self._was_synced: bool | None = None
        self._stopped = False

    # -- start and stop -----------------------------------------------------------------

    def start(self) -> None:
        """Open the store, start the uplink, the drivers and the control socket; then READY."""
        c = self.config
        limit_malloc_arenas()
        self.store = Store(
            c.store.path,
            outbox_cap=c.store.outbox_cap,
            retention_days=c.store.retention_days,
            free_space_floor_mb=c.store.free_space_floor_mb,
            reserve_mb=c.store.reserve_mb,
        )
        self.recorder = Recorder(self.store, c.device, self.clock, self.boot_id)
        if self.store.recovered_from:
            self.recorder.raise_alarm(
                "store_damaged",
                f"the database failed its integrity check; kept as {self.store.recovered_from} and a fresh store was started",
            )
        self.calendar = HallCalendar(
            c.hall.opening_hours,
            # Raised at once when a count first runs into such a year; judged every minute.
            on_unknown_year=lambda year: self._alarm_unknown_years(counting=year),
        )
        self.roster = Roster(self.recorder, self.store, self.clock, self.calendar, {w.id: w.name for w in c.windows}, on_notice=self._notice)
        self.ratings = Ratings(
            self.recorder,
            self.store,
            self.clock,
            self.calendar,
            {w.id: w.name for w in c.windows},
            RatingPolicy(
                repeat_interval_s=c.ratings.repeat_interval_s,
                burst_limit=c.ratings.burst_limit,
                callback_working_days=c.ratings.callback_working_days,
                rectify_working_days=c.ratings.rectify_working_days,
            ),
            on_duty=self.roster,
            on_feedback=self._feedback,
        )
        if c.display.enabled:
            self.font = Font()
            self.display = make_display(c.display)
            settings = BoardSettings(
                speed_px_s=c.display.scroll_speed,
                hold_s=c.display.hold_s,
                brightness=BrightnessSchedule(c.display.brightness_steps()),
                blank_when_closed=c.display.blank_when_closed,
            )
            self.board = BoardService(
                self.font, self.display.width, self.display.height, self.calendar, self.clock, settings, complaint_address=c.complaints.address
            )
        self.complaints = Complaints(self.recorder, self.store, self.clock, self._complaint_sealer(), {w.id: w.name for w in c.windows})
        self.router = CommandRouter(self.recorder, c.broker.max_command_bytes)
        self._register_commands()
        self._load_calendar()
        self._load_roster()
        self._load_board()
        self._load_settings()
        self.uplink = Uplink(c.broker, self.recorder, self.router, self.clock, self.status, status_interval_s=self.settings["status_interval"])

        factory, in_use, passed_over = make_pin_factory("mock" if self.simulate else c.gpio.pin_factory)
        self.pin_factory_name = in_use
        self.pin_factory = factory
        if passed_over:
            self.recorder.raise_alarm("pin_factory", f"gpio.pin_factory = '{c.gpio.pin_factory}' fell back to {in_use}: {'; '.join(passed_over)}")
        else:
            self.recorder.clear_alarm("pin_factory")
        self.buttons = WindowButtons(
            c.windows,
            factory,
            self.on_press,
            on_stuck=self.on_stuck,
            # Contact timing is physical: the driver keeps the real monotonic clock (its
            # default) even when tests fake the hall's clock for the services.
            debounce_s=c.ratings.debounce_ms / 1000,
            stuck_after_s=c.ratings.stuck_after_s,
            hardware_bounce_s=None if in_use == "mock" else 0.005,
        )
        for window_id, level in self.buttons.stuck_buttons():  # closed at power-on: jammed
            self.on_stuck(window_id, level, True)
        self.indicators = WindowIndicators(c.windows, factory)
        self.badge = make_badge_reader(c.badge, self.roster.swipe, self.roster.bad_read, on_state=self._badge_state, simulate=self.simulate)

        self.control = ControlServer(c.control.socket, c.control.group)
        self._register_control()
        self.checkpointer = Checkpointer(self.store)
        self.checkpointer.start()
        self.uplink.start()
        self.control.start()
        if self.badge:
            self.badge.start()
        if self.board:
            self.board_loop = BoardLoop(self.board, self.display, self._board_error)
            self.board_loop.start()
        self.maintenance()
        self.complaints.announce_status()  # a change a power cut kept from going out
        return_free_memory()  # what starting up (the font's map, the migrations) left behind
        notify("READY=1\nSTATUS=recording")
        log.info("hall appliance %s ready: device %s, store %s, uplink %s", __version__, c.device.id, self.store.store_id, self.uplink.info.broker or "off")

    def stop(self) -> None:
        """Stop cleanly: no new presses, in-flight publishes finished, offline status sent."""
        if self._stopped:
            return
        self._stopped = True
        self.stopping.set()
        notify("STOPPING=1")
        if self.buttons:
            self.buttons.close()
        if self.indicators:
            self.indicators.close()
        if self.badge:
            self.badge.stop()
        if self.board_loop:
            self.board_loop.stop()
        try:
            # The board has stopped counting: what it counted since the last report goes in
            # the outbox now rather than vanishing with the process (a restart, an update).
            self.publish_proof_of_play()
        except (StoreError, sqlite3.Error) as exc:
            log.error("proof of play at stop could not be recorded: %s", exc)
        if self.display:
            self.display.close()
        if self.control:
            self.control.stop()
        if self.uplink and self.uplink.is_alive():
            self.uplink.stop()
        if self.checkpointer:
            self.checkpointer.stop()
        if self.store:
            self.store.close()
        log.info("hall appliance stopped")

    def serve(self) -> None:
        """The main loop: watchdog pings, clock watch, housekeeping; returns after stop()."""
        interval = watchdog_interval()
        tick = min(interval or 1.0, self.config.clock.check_interval_s, 1.0)
        next_maintenance = time.monotonic() + MAINTENANCE_INTERVAL_S
        next_health = time.monotonic() + self.settings["health_interval"]
        next_clock = 0.0
        next_play = time.monotonic() + PROOF_OF_PLAY_INTERVAL_S
        while not self.stopping.wait(tick):
            now = time.monotonic()
            if interval and self.healthy():
                notify("WATCHDOG=1")
            self.buttons.tick()
            try:
                self.roster.tick()
            except StoreError as exc:
                log.error("attendance check failed: %s", exc)
            if now >= next_clock:
                next_clock = now + self.config.clock.check_interval_s
                self.watch_clock()
            if now >= next_maintenance:
                next_maintenance = now + MAINTENANCE_INTERVAL_S
                self.maintenance()
            if now >= next_play:
                next_play = now + PROOF_OF_PLAY_INTERVAL_S
                self.publish_proof_of_play()
            if now >= next_health:
                next_health = now + self.settings["health_interval"]
                self.recorder.telemetry("device.health", self.health())

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT end serve(); the caller then calls stop()."""
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())

    def healthy(self) -> bool:
        """True while every worker thread is alive (else systemd's watchdog restarts us)."""
        dead = [t.name for t in (self.uplink, self.control) if t is not None and not t.is_alive()]
        if self.badge is not None and not self.badge.is_alive():
            dead.append("badge reader")
        if self.board_loop is not None and not self.board_loop.is_alive():
            dead.append("board")
        if dead:
            log.error("worker threads died: %s; withholding the watchdog ping", ", ".join(dead))
        return not dead

    # -- what people do ---------------------------------------------------------------

    def on_press(self, window_id: str, level: str) -> None:
        """A rating button was pressed: the ratings service records it durably."""
        self.ratings.press(window_id, level)

    def _feedback(self, window_id: str, level: str) -> None:
        # The window's LED says "taken", and the board flashes its thank-you.
        if self.indicators:
            self.indicators.blink(window_id)
        if self.board:
            self.board.on_rating(window_id, level)

    def on_stuck(self, window_id: str, level: str, stuck: bool) -> None:
        """A button jammed (or freed): reported once, never counted as a stream of presses."""
        self.recorder.telemetry("button.stuck" if stuck else "button.freed", {"window": window_id, "level": level}, droppable=False)
        jammed = self.buttons.stuck_buttons()
        if jammed:
            self.recorder.raise_alarm("button_stuck", "held down: " + ", ".join(f"{w}/{lv}" for w, lv in jammed))
        else:
            self.recorder.clear_alarm("button_stuck")

    # -- housekeeping -------------------------------------------------------------------

    def watch_clock(self) -> None:
        """Publish a time anchor when the clock becomes synchronised."""
        synced = self.clock.is_synced()
        if synced and self._was_synced is None:
            # Started with a good clock: follow-ups left provisional by an earlier boot are
            # settled now (their own boot's anchor is gone; they keep their recorded time).
            self.ratings.settle(self.clock.now(), self.clock.monotonic_ns(), self.boot_id)
        if synced and self._was_synced is False:
            # Events of this boot recorded before now can be corrected from this pair:
            # true time = anchor.time - (anchor.mono_ns - event.mono_ns) / 1e9.
            anchor_mono, anchor_time = self.clock.monotonic_ns(), self.clock.now()
            self.recorder.telemetry("clock.synced", {"boot_id": self.boot_id, "mono_ns": anchor_mono, "time": anchor_time.isoformat(timespec="milliseconds")}, droppable=False)
            self.recorder.clear_alarm("clock_unsynced")
            self.ratings.settle(anchor_time, anchor_mono, self.boot_id)
            self.roster.settle(anchor_time, anchor_mono, self.boot_id)
            self.uplink.publish_status_soon()
        elif not synced and self._was_synced is not False:
            # At start, or NTP lost its sources since: verdicts are provisional again.
            self.recorder.raise_alarm("clock_unsynced", "the clock is not synchronised; time-of-day verdicts stay provisional")
        self._was_synced = synced

    def maintenance(self) -> None:
        """Prune acknowledged rows, watch free space and the outbox cap, count follow-ups' deadlines."""
        store = self.store
        try:
            pruned = store.prune()
            if pruned:
                log.info("pruned %d acknowledged events past retention", pruned)
        except StoreError as exc:
            log.error("prune failed: %s", exc)
        except Exception as exc:  # noqa: BLE001 - sqlite3 errors from a busy or full disk
            log.error("prune failed: %s", exc)
        if store.check_space():
            self.recorder.clear_alarm("disk_low")
        else:
            self.recorder.raise_alarm("disk_low", f"less than {store.floor_bytes >> 20} MB free beside the store; telemetry is paused, what people do is still recorded")
        if self.board and self._duty_text() != self._shown_duty:
            self.reload_hall_items()
        self._reschedule(self.ratings.reschedule_if_stale)
        self._alarm_unknown_years()
        try:
            self.ratings.check_overdue()
        except StoreError as exc:
            log.error("overdue check failed: %s", exc)
        if self.pin_factory_name == "mock":
            forget_mock_history(self.pin_factory)
        return_free_memory()
        summary = store.outbox_summary()
        if not summary["refused"]:
            self.recorder.clear_alarm("publish_refused")
        if summary["depth"] >= store.outbox_cap:
            self.recorder.raise_alarm("outbox_full", f"{summary['depth']} events wait to be sent (cap {store.outbox_cap}); telemetry is dropped, what people do is kept")
        elif summary["depth"] < store.outbox_cap * 0.9:
            self.recorder.clear_alarm("outbox_full")

    def health(self) -> dict:
        return {
            "uptime_s": round(time.monotonic() - self.started_mono),
            "outbox_depth": self.store.depth,
            "free_mb": self.store.free_bytes() >> 20,
            "alarms": [a.code for a in self.store.active_alarms()],
            "uplink": self.uplink.info.state,
        }

    def status(self) -> dict:
        """Everything the status message, the control socket and the page show."""
        return {
            "version": __version__,
            "device": asdict(self.config.device),
            "uplink": asdict(self.uplink.info) if self.uplink else {},
            "outbox": self.store.outbox_summary(),
            "clock": {"synced": self.clock.is_synced(), "source": self.config.clock.source, "now": self.clock.now().isoformat(timespec="seconds")},
            "alarms": [asdict(a) for a in self.store.active_alarms()],
            "applied": self.store.applied_versions(),
            "pin_factory": self.pin_factory_name,
            "simulated": self.simulate,
            "calendar": {str(y): self.calendar.source(y) for y in (self.clock.now().year, self.clock.now().year + 1)},
            "ratings_today": self.ratings.figures()["total"],
            "board": self.board.status() if self.board else None,
            "badge_reader": None if self.badge is None else {"connected": getattr(self.badge, "connected", True), "detail": getattr(self.badge, "detail", "simulated")},
            # What the last software update did (the updater writes it beside the store).
            "update": self._update_state(),
        }

    # -- commands and control -----------------------------------------------------------

    def _register_commands(self) -> None:
        self.router.register_action(
            "resync",
            ActionHandler(
                validate=_no_args,
                apply=lambda conn, args: {"unacked": self.store.depth},
                after=lambda args: self.uplink.resync(),
            ),
        )
        # County IT acknowledges a latched alarm (store_damaged once the card was dealt
        # with). Alarms re-checked every minute (disk_low, outbox_full, publish_refused)
        # come back if their condition remains; the others only when it happens again.
        self.router.register_action(
            "alarm.clear",
            ActionHandler(validate=self._validate_alarm_clear, apply=lambda conn, args: {"code": args["code"]}, after=lambda args: self.recorder.clear_alarm(args["code"])),
        )
        self.router.register_state(
            "settings",
            StateHandler(validate=validate_settings, apply=lambda conn, scopes: None, after=self._apply_settings),
        )
        self.router.register_state(
            "calendar",
            StateHandler(
                validate=_rejecting(lambda data: (validate_calendar(data), data)[1], CalendarInvalid),
                apply=lambda conn, scopes: None,
                after=self._apply_calendar,
            ),
        )
        for name in ROSTER_STATES:
            self.router.register_state(
                name,
                StateHandler(
                    validate=_rejecting(self.roster.validator(name), RosterRejected),
                    apply=lambda conn, scopes: None,
                    after=lambda scopes, n=name: self.roster.apply_state(n, scopes),
                ),
            )
        self.router.register_state(
            "board",
            StateHandler(validate=self._validate_board, apply=lambda conn, scopes: None, after=self._apply_board),
        )
        self.router.register_action(
            "complaint.status",
            ActionHandler(
                validate=_rejecting(self.complaints.validate_status, ComplaintRejected),
                apply=self.complaints.apply_status,
                after=self.complaints.announce_status,
            ),
        )
        # County IT announces a signed release (docs/updates.md). The daemon only checks the
        # arguments and leaves a request file: the update restarts this process, so systemd's
        # hall-update.path starts `hall-appliance update --request FILE` as root, outside it.
        # appliance.update (tarfile, urllib, http) is imported only when one arrives.
        self.router.register_action(
            "update.install",
            ActionHandler(
                validate=lambda args: _update().validate_install_args(args),
                apply=lambda conn, args: _update().request_install(self.config.store.path.parent, args),
            ),
        )
        self.router.register_action(
            "followup.close",
            ActionHandler(validate=_rejecting(self.ratings.validate_close, FollowupRejected), apply=self.ratings.apply_close),
        )

    def _update_state(self) -> dict | None:
        path = self.config.store.path.parent / "update-state.json"
        return _update().read_update_state(path) if path.exists() else None

    def _complaint_sealer(self) -> Sealer | None:
        """The supervisor's key, or None (box closed, with an alarm while a key is configured)."""
        path = self.config.complaints.public_key
        if path is None:
            self.recorder.clear_alarm("complaint_key")
            return None
        try:
            sealer = Sealer.from_file(path)
        except KeyInvalid as exc:
            self.recorder.raise_alarm("complaint_key", f"the complaint box is closed: {exc}")
            return None
        self.recorder.clear_alarm("complaint_key")
        return sealer

    def _validate_alarm_clear(self, args: Any) -> dict:
        code = require(args, "code", str, path="args", fix="give the code of an active alarm")
        active = [a.code for a in self.store.active_alarms()]
        if code not in active:
            raise CommandRejected(f"{code!r} is not an active alarm; active: {', '.join(active) or 'none'}", "args.code")
        return {"code": code}

    def _load_board(self) -> None:
        if not self.board:
            return
        self._apply_board({scope: data for scope, data in self._stored_scopes("board").items() if scope != "hall"})
        self.reload_hall_items()

    def _validate_board(self, data: Any) -> Any:
        if not self.board:
            raise CommandRejected("this appliance has no LED board ([display] enabled = false)", "topic")
        try:
            validate_board_state(data, self.font)
        except BoardRejected as exc:
            # The first problem names the field; the reason counts and names the rest, as the
            # roster's refusals do, so the county can mend the whole list in one go.
            rest = exc.problems[1:]
            reason = exc.reason + (f" (and {len(rest)} more: " + "; ".join(f"{f}: {r}" for f, r in rest) + ")" if rest else "")
            raise CommandRejected(reason, exc.field) from None
        return data

    def _apply_board(self, scopes: dict) -> None:
        if self.board:
            by_scope = {scope: validate_board_state(data, self.font) for scope, data in scopes.items() if scope != "hall"}
            self.board.set_items("county", merge_scopes(by_scope))

    def reload_hall_items(self) -> list[str]:
        """The hall's own items (kept by the config page as the 'hall' scope of 'board') and today's duty."""
        if not self.board:
            return []
        stored = self.store.applied_state("board").get("hall")
        items, refused = [], []
        for i, raw in enumerate(stored[1].get("items", []) if stored else []):
            try:
                items.append(validate_item(raw, self.font, source="hall", path=f"items[{i}]"))
            except BoardRejected as exc:  # e.g. a font update lost a glyph: show the rest, say which
                refused.append(f"{exc.field}: {exc.reason}")
        if refused:
            self.recorder.raise_alarm("board_items_refused", "hall items not shown: " + "; ".join(refused))
        else:
            self.recorder.clear_alarm("board_items_refused")
        duty = self._shown_duty = self._duty_text()
        if duty:
            try:
                items.append(validate_item({"id": "duty-today", "kind": "duty", "text": duty}, self.font, source="hall"))
            except BoardRejected as exc:  # a name with a glyph Unifont lacks: say so, show the rest
                log.warning("today's duty cannot be shown on the board: %s", exc)
        self.board.set_items("hall", items)
        return [i.id for i in items]

    def _duty_text(self) -> str | None:
        return self.roster.on_duty_today().get("text") if self.roster.known else None

    def publish_proof_of_play(self) -> None:
        if self.board:
            plays = self.board.take_proof_of_play()
            if plays:
                self.recorder.telemetry("board.played", {"plays": plays})

    def _board_error(self, exc: Exception | None) -> None:
        if exc is None:
            self.recorder.clear_alarm("board_error")
        else:
            self.recorder.raise_alarm("board_error", f"the LED board cannot be driven: {exc}")

    def _load_roster(self) -> None:
        for name in ROSTER_STATES:
            self.roster.apply_state(name, self._stored_scopes(name))

    def _notice(self, notice: Notice) -> None:
        # A short message on the board after a swipe (checked in, unknown card, ...).
        log.info("badge: %s", notice.text)
        if self.board and not self.board.flash(notice.text):
            log.warning("the board cannot show the notice %r", notice.text)

    def _badge_state(self, connected: bool, detail: str) -> None:
        if connected:
            self.recorder.clear_alarm("badge_reader")
        else:
            self.recorder.raise_alarm("badge_reader", f"the badge reader is not connected: {detail}")

    def _control_frame(self, args: dict) -> dict:
        """The board's current frame as a PNG (base64), with what it is showing."""
        if not self.board:
            raise CommandRejected("this appliance has no LED board ([display] enabled = false)")
        import base64

        return {"png": base64.b64encode(self.display.frame_png()).decode(), "status": self.board.status()}

    def _control_badge(self, args: dict) -> list[dict]:
        card = require(args, "card", str)
        if self.badge is None:
            raise CommandRejected("the badge reader is disabled; set [badge] enabled = true", "card")
        try:
            entries = self.badge.swipe(card)
        except (NotSimulated, UntypeableCard) as exc:
            raise CommandRejected(str(exc), "card") from None
        return [{k: (v.as_dict() if hasattr(v, "as_dict") else v) for k, v in e.items()} for e in entries]

    def _load_calendar(self) -> None:
        self._apply_calendar(self._stored_scopes("calendar"))

    def _apply_calendar(self, scopes: dict) -> None:
        years = {}
        for data in scopes.values():  # widest first: a township's year replaces the county's
            years.update(validate_calendar(data))
        self.calendar.set_county_years(years)
        # Deadlines already counted on the old calendar (the weekday rule for a year nobody
        # had supplied) are counted again. At every start too (a new release may bring a
        # newer holiday library); maintenance() counts what an unsynchronised clock or a
        # failed write left.
        self._reschedule(self.ratings.reschedule)
        # A calendar that leaves out a year in use (one an earlier version covered) puts that
        # year back on the weekday rule: the alarm comes back with it.
        self._alarm_unknown_years()

    def _alarm_unknown_years(self, counting: int | None = None) -> None:
        """Raise calendar_year_unknown for the years in use that no calendar knows, or clear it.

        In use: this year (and tomorrow's: the roster plans the shifts around midnight), and
        every year an open follow-up's deadlines ahead are counted through
        (Ratings.years_in_use). Judged from the store each time (a calendar applied,
        every maintenance round, a count running into such a year), so it never rests on
        what was reported earlier. On an unsynchronised clock nothing is judged: its year may
        be anything, and an alarm from before stands until the clock is right. ``counting``
        is a year a count is running into right now (a 差评's deadlines, not yet written).
        """
        ratings = getattr(self, "ratings", None)
        if ratings is None or not self.clock.is_synced():
            return  # (still starting: the start applies the calendar and judges then)
        now = self.clock.now()
        try:
            in_use = ratings.years_in_use(now) | {now.year, (now + timedelta(days=1)).year} | ({counting} if counting else set())
        except (StoreError, sqlite3.Error) as exc:
            log.error("could not read the years the follow-ups use (the next round tries again): %s", exc)
            return
        years = sorted(y for y in in_use if self.calendar.source(y) == "weekday_rule")
        if not years:
            self.recorder.clear_alarm("calendar_year_unknown")
            return
        named = ", ".join(str(y) for y in years)
        self.recorder.raise_alarm("calendar_year_unknown", f"no holiday calendar for {named}: working days follow the weekday rule until the county sends one")

    def _reschedule(self, how: Callable[[], int]) -> None:
        try:
            how()
        except (StoreError, sqlite3.Error) as exc:
            log.error("could not reschedule follow-ups on the hall calendar (maintenance tries again): %s", exc)
        except Exception:  # noqa: BLE001 - a recount must not refuse an applied calendar or stop a start
            log.exception("could not reschedule follow-ups on the hall calendar")

    def _load_settings(self) -> dict:
        self._apply_settings(self._stored_scopes("settings"))
        return self.settings

    def _stored_scopes(self, name: str) -> dict:
        """The desired state ``name`` applied before this start: scope → data, widest first."""
        return {scope: data for scope, (_, data) in self.store.applied_state(name).items()}

    def _apply_settings(self, scopes: dict) -> None:
        # Widest scope first, then changes made on the config page (the store's settings
        # table), which win: they are the latest word of someone at this device.
        merged, _ = merge_settings(scopes, self.store.local_settings())
        self.settings = merged
        if self.uplink:
            self.uplink.status_interval_s = merged["status_interval"]

    def _register_control(self) -> None:
        ctl = self.control
        ctl.register("status", lambda args: self.status())
        ctl.register("events", lambda args: self.store.recent_events(int(args.get("limit", 20))))
        ctl.register("press", self._control_press)
        ctl.register("figures", lambda args: self.ratings.figures(args.get("day")) | {"followups": self.ratings.open_followups()})
        ctl.register("badge", self._control_badge)
        ctl.register("duty", lambda args: self.roster.on_duty_today())
        ctl.register("frame", self._control_frame)
        ctl.register("reload", lambda args: {"settings": self._load_settings(), "hall_items": self.reload_hall_items()})

    def _control_press(self, args: dict) -> dict:
        window = require(args, "window", str)
        level = require(args, "level", str)
        if level not in BY_CODE:
            raise CommandRejected(f"'{level}' is not a rating level; levels: {', '.join(BY_CODE)}", "level")
        # The newest rating before the press, then one at this window and level after it: the
        # debouncer may refuse the press (a jammed button), and a press records at most one.
        before = self.store.rows("SELECT COALESCE(MAX(rowid), 0) FROM ratings")[0][0]
        self.buttons.press(window, level)
        new = self.store.rows("SELECT seq FROM ratings WHERE rowid > ? AND window = ? AND level = ? ORDER BY rowid DESC LIMIT 1", (before, window, level))
        return {"window": window, "level": level, "seq": new[0][0] if new else None, "recorded": bool(new)}




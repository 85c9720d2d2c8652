"""The appliance's TOML config, parsed once into frozen, typed objects.

Every problem is collected and reported at once with its path (``windows[1].buttons.satisfied``),
the value found and the fix, so county IT can mend a file in one pass. Defaults live here and
nowhere else; ``config/appliance.example.toml`` documents every key.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Any, Callable

from services.calendar import parse_hours
from services.levels import BY_CODE, LEVELS

from .errors import ConfigError

# \Z, not $: $ also matches before a trailing newline, and "hall-01\n" is no MQTT username.
ID_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62})\Z")
ID_FIX = "use 1 to 63 lower-case letters, digits and dashes, starting with a letter or digit, e.g. 'xlgl-baiyinxile-01'"

PIN_FACTORIES = ("auto", "lgpio", "rpigpio", "mock")
CLOCK_SOURCES = ("system", "assume_synced", "assume_unsynced")
DISPLAY_DRIVERS = ("max7219", "emulator")
# How a MAX7219 chain runs through its rows of modules (drivers.display.MODULE_ORDERS).
MODULE_ORDERS = ("rows", "rows_reversed", "snake", "snake_reversed")
BADGE_DRIVERS = ("evdev", "simulated")
# What the badge reader types: digits only, or hex digits (A–F too).
CARD_FORMATS = ("decimal", "hex")

# BCM pins an SPI bus claims on the 40-pin header (MOSI, MISO, SCLK and the chip selects);
# a button on one of them would fight the display driver.
SPI_PINS = {0: frozenset({7, 8, 9, 10, 11}), 1: frozenset({16, 17, 18, 19, 20, 21})}
HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
# What a plain list of button pins means, best level first.
DEFAULT_LEVELS = {
    3: ("satisfied", "basically_satisfied", "dissatisfied"),
    5: tuple(level.code for level in LEVELS),
}
# The usable BCM GPIO range on the 40-pin header.
GPIO_RANGE = range(2, 28)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the config: where, what was found, what to do."""

    path: str
    value: Any
    message: str
    fix: str

    def __str__(self) -> str:
        if self.value is _WHOLE_FILE:
            return f"{self.path}: {self.message}. Fix: {self.fix}"
        shown = "(missing)" if self.value is _MISSING else repr(self.value)
        return f"{self.path} = {shown}: {self.message}. Fix: {self.fix}"


class _Missing:
    def __repr__(self) -> str:
        return "(missing)"


_MISSING: Any = _Missing()
# The value of a problem with the file as a whole (unreadable, not UTF-8, not TOML): there is
# no single value to show, and "(missing)" would say the file is absent when it is not.
_WHOLE_FILE: Any = object()


@dataclass(frozen=True)
class DeviceConfig:
    """Who this appliance is; ``id`` is also its MQTT username and client id."""

    id: str
    hall: str
    township: str
    county: str


@dataclass(frozen=True)
class TlsConfig:
    """Files for a TLS connection to the county broker."""

    ca_file: Path
    cert_file: Path | None
    key_file: Path | None


@dataclass(frozen=True)
class BrokerConfig:
    """The county broker; ``host`` None means no broker: record and queue only."""

    host: str | None
    port: int
    tls: TlsConfig | None
    username: str
    password_file: Path | None
    keepalive_s: int
    session_expiry_s: int
    will_delay_s: int
    inflight: int
    aggregator_ack: bool
    reconnect_min_s: float
    reconnect_max_s: float
    max_command_bytes: int


@dataclass(frozen=True)
class StoreConfig:
    """Where the SQLite store lives and how it keeps room for what people do."""

    path: Path
    retention_days: float
    outbox_cap: int
    free_space_floor_mb: int
    reserve_mb: int


@dataclass(frozen=True)
class GpioConfig:
    """Which gpiozero pin factory drives the header."""

    pin_factory: str


@dataclass(frozen=True)
class WindowConfig:
    """One service window: its rating buttons (level code → BCM pin) and indicator LED."""

    id: str
    name: str
    buttons: tuple[tuple[str, int], ...]
    indicator_pin: int | None


@dataclass(frozen=True)
class DisplayConfig:
    """The LED board."""

    enabled: bool
    driver: str
    width: int
    height: int
    spi_port: int
    spi_device: int
    block_orientation: int
    rotate: int
    contrast: int
    module_order: str = "rows"
    scroll_speed: float = 32.0
    hold_s: float = 6.0
    # (time of day, contrast) steps; None: ``contrast`` by day (07:00), dimmer from 19:00.
    brightness: tuple[tuple[time, int], ...] | None = None
    blank_when_closed: bool = True

    def brightness_steps(self) -> tuple[tuple[time, int], ...]:
        """The brightness schedule in force."""
        return self.brightness or ((time(7, 0), self.contrast), (time(19, 0), min(self.contrast, 8)))


@dataclass(frozen=True)
class BadgeConfig:
    """The staff badge reader."""

    enabled: bool
    driver: str
    device: str | None
    card_format: str = "decimal"
    max_digits: int = 20
    inter_key_timeout_s: float = 0.3
    reconnect_interval_s: float = 2.0


@dataclass(frozen=True)
class WebConfig:
    """Where the local config page listens."""

    host: str
    port: int
    cert_file: Path | None
    key_file: Path | None


@dataclass(frozen=True)
class ControlConfig:
    """The daemon's local control socket and the group allowed to use it."""

    socket: Path
    group: str | None


@dataclass(frozen=True)
class ClockConfig:
    """How the appliance knows its wall clock is right."""

    source: str
    ntp_server: str | None
    check_interval_s: float


@dataclass(frozen=True)
class HallConfig:
    """The hall itself: its opening hours on working days."""

    opening_hours: tuple[tuple[time, time], ...] = ((time(8, 30), time(12, 0)), (time(14, 30), time(17, 30)))


@dataclass(frozen=True)
class RatingsConfig:
    """How presses are read and flagged, and how long a 差评 follow-up may take."""

    debounce_ms: int = 50
    stuck_after_s: float = 20.0
    repeat_interval_s: float = 5.0
    burst_limit: int = 10
    callback_working_days: int = 1
    rectify_working_days: int = 15


@dataclass(frozen=True)
class ComplaintsConfig:
    """The sealed complaint box: whose key seals, and how citizens reach the public form."""

    # The county supervisor's public key (from the bundle); None: the box is closed.
    public_key: Path | None = None
    # The form's address as citizens type it, printed on the notice and scrolled on the board.
    address: str | None = None
    # The hall Wi-Fi the notice's second QR code joins (None: no Wi-Fi code).
    wifi_ssid: str | None = None
    wifi_password: str | None = None
    # Submissions one phone may make in an hour, and the whole form in a minute.
    per_client_per_hour: int = 5
    per_minute: int = 30


@dataclass(frozen=True)
class Config:
    """The whole config, valid by construction."""

    device: DeviceConfig
    broker: BrokerConfig
    store: StoreConfig
    gpio: GpioConfig
    windows: tuple[WindowConfig, ...]
    display: DisplayConfig
    badge: BadgeConfig
    web: WebConfig
    control: ControlConfig
    clock: ClockConfig
    source: Path | None = field(default=None, compare=False)
    hall: HallConfig = HallConfig()
    ratings: RatingsConfig = RatingsConfig()
    complaints: ComplaintsConfig = ComplaintsConfig()

    def window(self, window_id: str) -> WindowConfig | None:
        """The window with this id, or None."""
        return next((w for w in self.windows if w.id == window_id), None)


class _Reader:
    """Reads typed values out of nested TOML tables, collecting problems instead of raising."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.problems: list[Problem] = []

    def problem(self, path: str, value: Any, message: str, fix: str) -> None:
        self.problems.append(Problem(path, value, message, fix))

    def table(self, parent: dict, path: str, key: str, known: tuple[str, ...]) -> dict:
        full = f"{path}.{key}" if path else key
        value = parent.get(key, {})
        if not isinstance(value, dict):
            self.problem(full, value, "must be a table", f"write it as [{full}] with keys below it")
            return {}
        self.unknown(value, full, known)
        return value

    def unknown(self, tbl: dict, path: str, known: tuple[str, ...]) -> None:
        for key in tbl:
            if key in known:
                continue
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known keys are: {', '.join(known)}"
            self.problem(f"{path}.{key}" if path else key, tbl[key], "is not a known key", hint)

    def get(
        self,
        tbl: dict,
        path: str,
        key: str,
        kind: type | tuple[type, ...],
        default: Any = _MISSING,
        *,
        fix: str,
        check: Callable[[Any], str | None] | None = None,
    ) -> Any:
        full = f"{path}.{key}" if path else key
        value = tbl.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                self.problem(full, value, "is required", fix)
                # None, not the (truthy) sentinel, so that `or ""` and defaults taken from this
                # value (broker.username) do not report the same absence twice.
                return None
            return default
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # TOML booleans are not integers to a person writing a config.
        if isinstance(value, bool) and bool not in kinds:
            ok = False
        elif float in kinds and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        else:
            ok = isinstance(value, kinds)
        if not ok:
            names = " or ".join(_KIND_NAMES[k] for k in kinds)
            self.problem(full, value, f"must be {names}", fix)
            return default if default is not _MISSING else None
        if check is not None:
            message = check(value)
            if message:
                self.problem(full, value, message, fix)
                return default if default is not _MISSING else None
        return value

    def path(self, tbl: dict, path: str, key: str, default: Any = _MISSING, *, fix: str) -> Path | None:
        value = self.get(tbl, path, key, str, default, fix=fix, check=_non_empty)
        if value is None or value is _MISSING:
            return None
        try:
            p = Path(value).expanduser()
        except RuntimeError:  # "~someone/…" for a user this system does not have
            self.problem(f"{path}.{key}" if path else key, value, "starts with a home directory this system does not have", "give an absolute path")
            return None
        return p if p.is_absolute() else (self.base_dir / p)


_KIND_NAMES = {str: "text", int: "a whole number", float: "a number", bool: "true or false", list: "a list", dict: "a table"}


def _non_empty(value: str) -> str | None:
    return "must not be empty" if not value.strip() else None


def _one_line_name(value: str) -> str | None:
    """A name that goes into every event, the page and generated files: one line, printable."""
    if not value.strip():
        return "must not be empty"
    if not value.isprintable():
        return "contains a line break or another control character"
    return None if len(value) <= 100 else f"is {len(value)} characters; at most 100"


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _between(lo: float, hi: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if lo <= value <= hi else f"must be between {lo} and {hi}"

    return check


def _identifier(value: str) -> str | None:
    return None if ID_PATTERN.match(value) else "is not a valid id"


def _gpio_pin(value: int) -> str | None:
    return None if value in GPIO_RANGE else f"is not a usable BCM GPIO number ({GPIO_RANGE.start}–{GPIO_RANGE.stop - 1})"


def load_config(path: str | Path) -> Config:
    """Read and validate the config file; raise ConfigError listing every problem (``path`` set)."""
    try:
        return _load(Path(path))
    except ConfigError as exc:
        exc.path = str(path)
        raise


def _load(path: Path) -> Config:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([Problem(str(path), _WHOLE_FILE, f"cannot be read ({exc.strerror})", "give the path of an existing, readable config file")]) from None
    try:
        # utf-8-sig: Windows Notepad may save UTF-8 with a byte-order mark, which TOML refuses.
        data = tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1  # exc.object: the bytes after any BOM
        raise ConfigError([Problem(str(path), _WHOLE_FILE, f"is not UTF-8 text (line {line}, byte {exc.start})", "save the file as UTF-8")]) from None
    # tomllib lets two failures of its own through: an integer past Python's 4300-digit
    # limit (ValueError) and arrays nested past the recursion limit.
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:
        raise ConfigError([Problem(str(path), _WHOLE_FILE, f"is not valid TOML ({exc})", "correct the syntax at that line; compare with config/appliance.example.toml")]) from None
    return parse_config(data, base_dir=path.resolve().parent, source=path)


def parse_config(data: dict, base_dir: Path | None = None, source: Path | None = None) -> Config:
    """Validate an already-parsed TOML document; relative paths are taken from ``base_dir``."""
    r = _Reader(base_dir or Path.cwd())
    r.unknown(data, "", ("device", "hall", "broker", "store", "gpio", "windows", "ratings", "display", "badge", "web", "control", "clock", "complaints"))

    d = r.table(data, "", "device", ("id", "hall", "township", "county"))
    device = DeviceConfig(
        id=r.get(d, "device", "id", str, fix=ID_FIX, check=_identifier) or "",
        hall=r.get(d, "device", "hall", str, fix="give the hall's name on one line, e.g. '白音锡勒苏木政务服务中心'", check=_one_line_name) or "",
        township=r.get(d, "device", "township", str, fix=ID_FIX, check=_identifier) or "",
        county=r.get(d, "device", "county", str, fix=ID_FIX, check=_identifier) or "",
    )

    b = r.table(data, "", "broker", ("host", "port", "tls", "username", "password_file", "keepalive", "session_expiry", "will_delay", "inflight", "aggregator_ack", "reconnect_min", "reconnect_max", "max_command_bytes"))
    host = r.get(b, "broker", "host", str, "", fix="give the county broker's host name or address, or leave it empty to record and queue only")
    tls = None
    if "tls" in b:
        t = r.table(b, "broker", "tls", ("ca_file", "cert_file", "key_file"))
        ca = r.path(t, "broker.tls", "ca_file", fix="give the county CA certificate from the device bundle")
        cert = r.path(t, "broker.tls", "cert_file", None, fix="give the device certificate from the device bundle")
        key = r.path(t, "broker.tls", "key_file", None, fix="give the device key from the device bundle")
        if (cert is None) != (key is None):
            r.problem("broker.tls", {"cert_file": str(cert) if cert else None, "key_file": str(key) if key else None}, "needs both cert_file and key_file, or neither", "give both files from the device bundle")
        if ca is not None:
            tls = TlsConfig(ca, cert, key)
    broker = BrokerConfig(
        host=host.strip() or None if isinstance(host, str) else None,
        port=r.get(b, "broker", "port", int, 8883 if "tls" in b else 1883, fix="give a TCP port from 1 to 65535", check=_between(1, 65535)),
        tls=tls,
        username=r.get(b, "broker", "username", str, device.id, fix="leave it out to use device.id", check=_non_empty),
        password_file=r.path(b, "broker", "password_file", None, fix="give the file that holds the broker password (from the device bundle)"),
        keepalive_s=r.get(b, "broker", "keepalive", int, 30, fix="give seconds between 5 and 600", check=_between(5, 600)),
        session_expiry_s=r.get(b, "broker", "session_expiry", int, 7 * 86400, fix="give seconds between 60 and 2592000 (30 days)", check=_between(60, 30 * 86400)),
        will_delay_s=r.get(b, "broker", "will_delay", int, 30, fix="give seconds between 0 and 3600", check=_between(0, 3600)),
        inflight=r.get(b, "broker", "inflight", int, 20, fix="give a window between 1 and 1000", check=_between(1, 1000)),
        aggregator_ack=r.get(b, "broker", "aggregator_ack", bool, True, fix="true when the county aggregator acknowledges events, false to trust the broker's PUBACK"),
        reconnect_min_s=r.get(b, "broker", "reconnect_min", float, 1.0, fix="give seconds between 0.1 and 60", check=_between(0.1, 60)),
        reconnect_max_s=r.get(b, "broker", "reconnect_max", float, 120.0, fix="give seconds between 0.1 and 3600", check=_between(0.1, 3600)),
        max_command_bytes=r.get(b, "broker", "max_command_bytes", int, 1 << 20, fix="give bytes between 1024 and 16777216", check=_between(1024, 16 << 20)),
    )
    if broker.reconnect_min_s and broker.reconnect_max_s and broker.reconnect_min_s > broker.reconnect_max_s:
        r.problem("broker.reconnect_min", broker.reconnect_min_s, f"is above broker.reconnect_max ({broker.reconnect_max_s})", "make reconnect_min the smaller of the two")

    s = r.table(data, "", "store", ("path", "retention_days", "outbox_cap", "free_space_floor_mb", "reserve_mb"))
    store = StoreConfig(
        path=r.path(s, "store", "path", "/var/lib/hall-appliance/hall.db", fix="give the database file's path, e.g. '/var/lib/hall-appliance/hall.db'") or Path("hall.db"),
        retention_days=r.get(s, "store", "retention_days", float, 30.0, fix="give days between 0 and 3650", check=_between(0, 3650)),
        outbox_cap=r.get(s, "store", "outbox_cap", int, 200_000, fix="give a count between 100 and 10000000", check=_between(100, 10_000_000)),
        free_space_floor_mb=r.get(s, "store", "free_space_floor_mb", int, 200, fix="give megabytes between 0 and 100000", check=_between(0, 100_000)),
        reserve_mb=r.get(s, "store", "reserve_mb", int, 32, fix="give megabytes between 0 and 4096", check=_between(0, 4096)),
    )

    g = r.table(data, "", "gpio", ("pin_factory",))
    gpio = GpioConfig(pin_factory=r.get(g, "gpio", "pin_factory", str, "auto", fix=f"use one of {', '.join(PIN_FACTORIES)}", check=_one_of(PIN_FACTORIES)))

    windows = _windows(r, data.get("windows", []))

    disp = r.table(data, "", "display", ("enabled", "driver", "width", "height", "spi_port", "spi_device", "block_orientation", "rotate", "contrast", "module_order", "scroll_speed", "hold", "brightness", "blank_when_closed"))
    display = DisplayConfig(
        enabled=r.get(disp, "display", "enabled", bool, False, fix="true or false"),
        driver=r.get(disp, "display", "driver", str, "max7219", fix=f"use one of {', '.join(DISPLAY_DRIVERS)}", check=_one_of(DISPLAY_DRIVERS)),
        width=r.get(disp, "display", "width", int, 128, fix="give a multiple of 8 between 8 and 512", check=_multiple_of_8),
        height=r.get(disp, "display", "height", int, 16, fix="give a multiple of 8 between 8 and 64 (16 for Chinese)", check=_height),
        spi_port=r.get(disp, "display", "spi_port", int, 0, fix="use 0 or 1", check=_between(0, 1)),
        spi_device=r.get(disp, "display", "spi_device", int, 0, fix="use 0 (CE0) or 1 (CE1)", check=_between(0, 1)),
        block_orientation=r.get(disp, "display", "block_orientation", int, 0, fix="use 0, 90, -90 or 180", check=_angle((0, 90, -90, 180))),
        rotate=r.get(disp, "display", "rotate", int, 0, fix="use 0, 1, 2 or 3 (quarter turns)", check=_between(0, 3)),
        contrast=r.get(disp, "display", "contrast", int, 64, fix="give a value between 0 and 255", check=_between(0, 255)),
        module_order=r.get(disp, "display", "module_order", str, "rows", fix=f"use one of {', '.join(MODULE_ORDERS)} (docs/board.md shows each wiring)", check=_one_of(MODULE_ORDERS)),
        scroll_speed=r.get(disp, "display", "scroll_speed", float, 32.0, fix="give pixels per second between 4 and 200 (32 is two characters a second)", check=_between(4, 200)),
        hold_s=r.get(disp, "display", "hold", float, 6.0, fix="give seconds between 1 and 60", check=_between(1, 60)),
        brightness=_brightness(r, disp.get("brightness")),
        blank_when_closed=r.get(disp, "display", "blank_when_closed", bool, True, fix="true to darken the board outside opening hours and on holidays"),
    )

    bd = r.table(data, "", "badge", ("enabled", "driver", "device", "card_format", "max_digits", "inter_key_timeout_ms", "reconnect_interval"))
    badge = BadgeConfig(
        enabled=r.get(bd, "badge", "enabled", bool, False, fix="true or false"),
        driver=r.get(bd, "badge", "driver", str, "evdev", fix=f"use one of {', '.join(BADGE_DRIVERS)}", check=_one_of(BADGE_DRIVERS)),
        device=r.get(bd, "badge", "device", str, None, fix="give the reader's /dev/input/by-id/… path", check=_non_empty),
        card_format=r.get(bd, "badge", "card_format", str, "decimal", fix=f"use one of {', '.join(CARD_FORMATS)}: what the reader types", check=_one_of(CARD_FORMATS)),
        max_digits=r.get(bd, "badge", "max_digits", int, 20, fix="give the longest card number the reader types, between 4 and 64", check=_between(4, 64)),
        inter_key_timeout_s=r.get(bd, "badge", "inter_key_timeout_ms", int, 300, fix="give milliseconds between 20 and 5000", check=_between(20, 5000)) / 1000,
        reconnect_interval_s=r.get(bd, "badge", "reconnect_interval", float, 2.0, fix="give seconds between 0.1 and 600", check=_between(0.1, 600)),
    )
    if badge.enabled and badge.driver == "evdev" and not badge.device:
        r.problem("badge.device", _MISSING, "is required when the evdev badge reader is enabled", "give the reader's /dev/input/by-id/…-event-kbd path")

    w = r.table(data, "", "web", ("host", "port", "cert_file", "key_file"))
    web = WebConfig(
        host=r.get(w, "web", "host", str, "0.0.0.0", fix="give an address to listen on, e.g. '0.0.0.0' or '127.0.0.1'", check=_non_empty),
        port=r.get(w, "web", "port", int, 8080, fix="give a TCP port from 1 to 65535", check=_between(1, 65535)),
        cert_file=r.path(w, "web", "cert_file", None, fix="give the page's certificate from the device bundle"),
        key_file=r.path(w, "web", "key_file", None, fix="give the page's key from the device bundle"),
    )
    if (web.cert_file is None) != (web.key_file is None):
        r.problem("web", {"cert_file": str(web.cert_file) if web.cert_file else None, "key_file": str(web.key_file) if web.key_file else None}, "needs both cert_file and key_file, or neither", "give both files from the device bundle")

    c = r.table(data, "", "control", ("socket", "group"))
    control = ControlConfig(
        socket=r.path(c, "control", "socket", "/run/hall-appliance/control.sock", fix="give the control socket's path") or Path("control.sock"),
        group=r.get(c, "control", "group", str, None, fix="give the group allowed to use the socket, e.g. 'hall'", check=_non_empty),
    )

    ck = r.table(data, "", "clock", ("source", "ntp_server", "check_interval"))
    clock = ClockConfig(
        source=r.get(ck, "clock", "source", str, "system", fix=f"use one of {', '.join(CLOCK_SOURCES)}", check=_one_of(CLOCK_SOURCES)),
        ntp_server=r.get(ck, "clock", "ntp_server", str, None, fix="give the county NTP server's host name or address", check=_non_empty),
        check_interval_s=r.get(ck, "clock", "check_interval", float, 10.0, fix="give seconds between 0.1 and 3600", check=_between(0.1, 3600)),
    )

    h = r.table(data, "", "hall", ("opening_hours",))
    hours_raw = r.get(h, "hall", "opening_hours", list, ["08:30-12:00", "14:30-17:30"], fix='list the spans the hall is open on working days, e.g. ["08:30-12:00", "14:30-17:30"]')
    hall = HallConfig()
    if hours_raw is not None:
        try:
            hall = HallConfig(parse_hours(hours_raw))
        except ValueError as exc:
            r.problem("hall.opening_hours", hours_raw, f"{exc}", 'write spans as "HH:MM-HH:MM" in order, e.g. ["08:30-12:00", "14:30-17:30"]')

    rt = r.table(data, "", "ratings", ("debounce_ms", "stuck_after", "repeat_interval", "burst_limit", "callback_working_days", "rectify_working_days"))
    ratings = RatingsConfig(
        debounce_ms=r.get(rt, "ratings", "debounce_ms", int, 50, fix="give milliseconds between 1 and 1000", check=_between(1, 1000)),
        stuck_after_s=r.get(rt, "ratings", "stuck_after", float, 20.0, fix="give seconds between 2 and 3600", check=_between(2, 3600)),
        repeat_interval_s=r.get(rt, "ratings", "repeat_interval", float, 5.0, fix="give seconds between 0 and 600", check=_between(0, 600)),
        burst_limit=r.get(rt, "ratings", "burst_limit", int, 10, fix="give presses per minute between 2 and 1000", check=_between(2, 1000)),
        callback_working_days=r.get(rt, "ratings", "callback_working_days", int, 1, fix="give working days between 0 and 30 (0: the same working day, by closing time)", check=_between(0, 30)),
        rectify_working_days=r.get(rt, "ratings", "rectify_working_days", int, 15, fix="give working days between 1 and 90", check=_between(1, 90)),
    )
    if ratings.callback_working_days and ratings.rectify_working_days and ratings.callback_working_days > ratings.rectify_working_days:
        r.problem("ratings.callback_working_days", ratings.callback_working_days, f"is after ratings.rectify_working_days ({ratings.rectify_working_days})", "call back before the rectification deadline")

    cp = r.table(data, "", "complaints", ("public_key", "address", "wifi_ssid", "wifi_password", "per_client_per_hour", "per_minute"))
    complaints = ComplaintsConfig(
        public_key=r.path(cp, "complaints", "public_key", None, fix="give the supervisor's public key file from the device bundle (hall-provision complaints keygen makes it)"),
        address=r.get(cp, "complaints", "address", str, None, fix="give the form's address as citizens type it, e.g. 'https://hall-0001.local:8080/ts'", check=_web_address),
        wifi_ssid=r.get(cp, "complaints", "wifi_ssid", str, None, fix="give the hall Wi-Fi's name (1 to 32 bytes)", check=_ssid),
        wifi_password=r.get(cp, "complaints", "wifi_password", str, None, fix="give the hall Wi-Fi's WPA password (8 to 63 characters)", check=_wpa_password),
        per_client_per_hour=r.get(cp, "complaints", "per_client_per_hour", int, 5, fix="give submissions per phone per hour between 1 and 100", check=_between(1, 100)),
        per_minute=r.get(cp, "complaints", "per_minute", int, 30, fix="give submissions per minute for the whole form between 1 and 1000", check=_between(1, 1000)),
    )
    if complaints.wifi_password is not None and complaints.wifi_ssid is None:
        r.problem("complaints.wifi_password", "(hidden)", "is given without complaints.wifi_ssid", "give the Wi-Fi's name too, or remove the password")

    _cross_checks(r, windows, display)
    if r.problems:
        raise ConfigError(r.problems)
    return Config(device, broker, store, gpio, windows, display, badge, web, control, clock, source, hall, ratings, complaints)


def _web_address(value: str) -> str | None:
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
        return "is not a web address starting with https:// or http://"
    return None if len(value) <= 80 else "is longer than 80 characters (too long to type from the wall)"


def _ssid(value: str) -> str | None:
    return None if 1 <= len(value.encode()) <= 32 else "must be 1 to 32 bytes"


def _wpa_password(value: str) -> str | None:
    return None if 8 <= len(value) <= 63 and value.isascii() and value.isprintable() else "must be 8 to 63 printable ASCII characters"


def _brightness(r: _Reader, raw: Any) -> tuple[tuple[time, int], ...] | None:
    if raw is None:
        return None
    steps = []
    if isinstance(raw, dict) and raw:
        for key, level in raw.items():
            m = HHMM.fullmatch(key)
            if not m:
                r.problem(f"display.brightness.{key}", level, f"'{key}' is not a time written HH:MM", 'write e.g. brightness = { "07:00" = 64, "19:00" = 8 }')
            elif isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 255:
                r.problem(f"display.brightness.{key}", level, "must be a whole number from 0 to 255", "give the board's contrast from that time on")
            else:
                steps.append((time(int(m[1]), int(m[2])), level))
    else:
        r.problem("display.brightness", raw, 'must be a table of "HH:MM" = contrast', 'write e.g. brightness = { "07:00" = 64, "19:00" = 8 }')
    return tuple(sorted(steps)) or None


def _multiple_of_8(value: int) -> str | None:
    return None if 8 <= value <= 512 and value % 8 == 0 else "must be a multiple of 8 between 8 and 512"


def _height(value: int) -> str | None:
    return None if 8 <= value <= 64 and value % 8 == 0 else "must be a multiple of 8 between 8 and 64"


def _angle(choices: tuple[int, ...]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(map(str, choices))}"

    return check


def _windows(r: _Reader, raw: Any) -> tuple[WindowConfig, ...]:
    if not isinstance(raw, list) or not all(isinstance(w, dict) for w in raw):
        r.problem("windows", raw, "must be a list of tables", "write each window as a [[windows]] table")
        return ()
    levels = ", ".join(level.code for level in LEVELS)
    out = []
    for i, w in enumerate(raw):
        path = f"windows[{i}]"
        r.unknown(w, path, ("id", "name", "buttons", "indicator_pin"))
        wid = r.get(w, path, "id", str, fix=ID_FIX, check=_identifier)
        name = r.get(w, path, "name", str, fix="give the window's name as the hall calls it, e.g. '社保窗口'", check=_non_empty)
        buttons_raw = w.get("buttons", _MISSING)
        buttons: list[tuple[str, int]] = []
        if buttons_raw is _MISSING or buttons_raw == {}:
            r.problem(f"{path}.buttons", buttons_raw, "has no buttons", f"map 3 to 5 rating levels to GPIO pins, e.g. buttons = {{ satisfied = 17, basically_satisfied = 27, dissatisfied = 22 }}")
        elif isinstance(buttons_raw, list):
            # A plain list of pins, best level first: the usual 3-button box or the full scale.
            default = DEFAULT_LEVELS.get(len(buttons_raw))
            if default is None:
                r.problem(f"{path}.buttons", buttons_raw, f"lists {len(buttons_raw)} pins; a list means 3 (满意, 基本满意, 不满意) or 5 (the whole scale)", "list 3 or 5 pins, or map levels to pins: buttons = { very_satisfied = 5, satisfied = 6, dissatisfied = 13, very_dissatisfied = 19 }")
            else:
                for code, (j, pin) in zip(default, enumerate(buttons_raw)):
                    value = r.get({code: pin}, f"{path}.buttons[{j}]", code, int, fix="give the button's BCM GPIO number", check=_gpio_pin)
                    if value is not None:
                        buttons.append((code, value))
        elif not isinstance(buttons_raw, dict):
            r.problem(f"{path}.buttons", buttons_raw, "must be a table of level = pin, or a list of 3 or 5 pins", "write e.g. buttons = { satisfied = 17, basically_satisfied = 27, dissatisfied = 22 }")
        else:
            for code, pin in buttons_raw.items():
                bpath = f"{path}.buttons.{code}"
                if code not in BY_CODE:
                    close = difflib.get_close_matches(code, BY_CODE, n=1)
                    r.problem(bpath, pin, f"'{code}' is not a rating level", (f"did you mean '{close[0]}'? " if close else "") + f"levels are: {levels}")
                    continue
                value = r.get(buttons_raw, f"{path}.buttons", code, int, fix="give the button's BCM GPIO number", check=_gpio_pin)
                if value is not None:
                    buttons.append((code, value))
            if not 3 <= len(buttons_raw) <= 5:
                r.problem(f"{path}.buttons", buttons_raw, f"has {len(buttons_raw)} buttons; a window has 3 to 5", "map 3 to 5 rating levels to GPIO pins")
        indicator = r.get(w, path, "indicator_pin", int, None, fix="give the indicator LED's BCM GPIO number, or leave it out", check=_gpio_pin)
        # Keep buttons in scale order (best first) whatever order the file used.
        buttons.sort(key=lambda b: -BY_CODE[b[0]].score)
        out.append(WindowConfig(wid or "", name or "", tuple(buttons), indicator))
    return tuple(out)


def _cross_checks(r: _Reader, windows: tuple[WindowConfig, ...], display: DisplayConfig) -> None:
    seen_ids: dict[str, int] = {}
    for i, w in enumerate(windows):
        if not w.id:
            continue
        if w.id in seen_ids:
            r.problem(f"windows[{i}].id", w.id, f"repeats windows[{seen_ids[w.id]}].id", "give every window its own id")
        else:
            seen_ids[w.id] = i

    users: dict[int, str] = {}
    spi = SPI_PINS[display.spi_port] if display.enabled and display.driver == "max7219" else frozenset()
    for i, w in enumerate(windows):
        pins = [(f"windows[{i}].buttons.{code}", pin) for code, pin in w.buttons]
        if w.indicator_pin is not None:
            pins.append((f"windows[{i}].indicator_pin", w.indicator_pin))
        for path, pin in pins:
            if pin in users:
                r.problem(path, pin, f"GPIO {pin} is already used by {users[pin]}", "give every button and indicator its own pin")
            elif pin in spi:
                r.problem(path, pin, f"GPIO {pin} belongs to SPI{display.spi_port}, which the display uses", f"move it off GPIO {', '.join(map(str, sorted(spi)))}")
            else:
                users[pin] = path

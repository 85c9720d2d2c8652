"""The LED scrolling board: what is on it at each moment, drawn in GNU Unifont at 16 px.

Content items (policy notices, job postings, 六公开 items, the leader on duty, announcements,
urgent notices) come from the county (desired state, merged over its three scopes) and from the
hall's config page. Everything is validated once, when it is accepted — including whether the
font has a glyph for every character — so nothing surprising reaches the board.

The pieces, each usable alone:

- ``Font``: GNU Unifont from Debian's ``fonts-unifont``, at its native 16 px without
  antialiasing, with its coverage read from the font's cmap.
- ``Renderer``: each text is drawn once into a 1-bit strip; a frame is a crop of it.
- ``Playlist``: which item is on at each moment (time in force, daily schedule, priority,
  rotation, urgent interruptions, the thank-you after a rating, blank when the hall is closed,
  the brightness schedule), with an injected clock.
- ``PlayCounter``: proof of play, completed showings per item per day.
- ``BoardService``: the above together; the daemon calls ``next_frame()`` about 30 times a
  second and sends the frame to the driver.

Wall time decides what is in force; the animation runs on monotonic time, so an NTP step
never makes the text jump.
"""

from __future__ import annotations

import bisect
import difflib
import io
import re
import threading
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Protocol, Sequence

from PIL import Image, ImageDraw, ImageFont

from .calendar import parse_hours
from .sink import Clock

# Debian's fonts-unifont (also on Raspberry Pi OS): the whole Basic Multilingual Plane at 16 px.
UNIFONT = Path("/usr/share/fonts/opentype/unifont/unifont.otf")
GLYPH_HEIGHT = 16
# The hall's wall time; services cannot import appliance.clock, and China has one fixed offset.
HALL_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")

KINDS = ("policy", "job", "publicity", "duty", "announcement", "urgent")
SOURCES = ("county", "hall")
FIELDS = ("id", "kind", "text", "start", "end", "priority", "schedule", "version")
# 500 characters is about 8,000 px of Chinese: over four minutes of scrolling at 32 px/s. A
# passer-by reads one screen at a time; anything longer belongs on the printed notice board,
# or in several items. It also bounds a strip to 16 kB.
MAX_TEXT = 500
# A rotation of 100 items at about a minute each already takes well over an hour.
MAX_ITEMS = 100
PRIORITIES = range(1, 10)  # 1 lowest … 9 highest
DEFAULT_PRIORITY = 5
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
# Traditional Mongolian is written top to bottom with joined letter forms; a 16-px board that
# draws one isolated glyph after another left to right would show nonsense.
MONGOLIAN = range(0x1800, 0x18B0)
# Collapsed to one space: newlines and tabs pasted from a document mean nothing on one line.
ASCII_SPACE = re.compile(r"[ \t\r\n\f\v]+")

THANKS_TEXT = "感谢您的评价"
COMPLAINT_ID = "_complaint"  # item ids must start with a letter or digit, so this never collides


# -- errors -------------------------------------------------------------------------------------


class BoardError(Exception):
    """Root of the board service's errors."""


class BoardRejected(BoardError, ValueError):
    """Board content that cannot be accepted; ``field`` and ``reason`` name the first problem.

    ``problems`` lists every problem found, as (field, reason) pairs, so a hall director or the
    county can mend them all in one go.
    """

    def __init__(self, field: str, reason: str, problems: Sequence[tuple[str, str]] = ()) -> None:
        self.field = field
        self.reason = reason
        self.problems = tuple(problems) or ((field, reason),)
        message = "; ".join(f"{f}: {r}" for f, r in self.problems)
        super().__init__(message)


class FontMissing(BoardError, FileNotFoundError):
    """GNU Unifont is not installed."""


class BoardTooSmall(BoardError, ValueError):
    """The board is lower than one line of 16-px text."""


# -- the font -----------------------------------------------------------------------------------


class Font:
    """GNU Unifont at its native 16 px: which characters it has, and drawing them.

    Pillow draws it with ``fontmode = "1"`` (no antialiasing: at 16 px Unifont's outlines are
    its bitmap, pixel for pixel) and the basic layout (one glyph after another, no shaping), so
    a strip is the same on every machine. Coverage comes from the font's cmap through fontTools,
    because Pillow draws a missing character as a box without saying so.
    """

    size = GLYPH_HEIGHT

    def __init__(self, path: str | Path = UNIFONT) -> None:
        self.path = Path(path)
        # fontTools: the maintained reader of OpenType tables; it is the only way to ask a
        # font which characters it maps (Pillow has no cmap API). It reads just the cmap
        # from the file, and it is kept as one bit per code point (136 KiB) rather than a
        # set of 57,000 ints (several MB on a Pi Zero).
        from fontTools.ttLib import TTFont

        self._codepoints = bytearray(0x110000 // 8)
        try:
            with self.path.open("rb") as f, TTFont(f, lazy=True) as tt:
                for cp in tt.getBestCmap():
                    self._codepoints[cp >> 3] |= 1 << (cp & 7)
            # By path, so FreeType reads glyphs from the file as they are drawn instead of
            # holding the whole 5 MB font in memory. The file was just opened, so Pillow's
            # fallback for a name it cannot open (looking it up in the system's font
            # folders) cannot quietly draw with another copy.
            self._font = ImageFont.truetype(str(self.path.resolve()), self.size, layout_engine=ImageFont.Layout.BASIC)
        except OSError as exc:
            raise FontMissing(f"the board's font {self.path} cannot be read ({exc.strerror or exc}). Fix: apt-get install fonts-unifont") from None
        self.name = "GNU Unifont"

    def _maps(self, cp: int) -> bool:
        return bool(self._codepoints[cp >> 3] & (1 << (cp & 7)))

    def has(self, char: str) -> bool:
        return self._maps(ord(char))

    def missing(self, text: str) -> list[str]:
        """The characters of ``text`` the font has no glyph for, each once, in order."""
        seen: dict[str, None] = {}
        for char in text:
            if not self._maps(ord(char)):
                seen.setdefault(char)
        return list(seen)

    def width(self, text: str) -> int:
        """Pixels ``text`` takes: 8 per half-width and 16 per full-width character."""
        return int(self._font.getlength(text))

    def draw(self, image: Image.Image, text: str, x: int, y: int = 0) -> None:
        """Draw ``text`` into the 1-bit ``image`` with its top line at ``y``."""
        draw = ImageDraw.Draw(image)
        draw.fontmode = "1"
        draw.text((x, y), text, font=self._font, fill=1, anchor="la")


# -- content ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContentItem:
    """One thing to show on the board, as accepted (text normalised, times aware)."""

    id: str
    kind: str
    text: str
    start: datetime | None = None
    end: datetime | None = None
    priority: int = DEFAULT_PRIORITY
    schedule: tuple[tuple[time, time], ...] = ()  # spans of the day it may show; () = all day
    source: str = "hall"
    version: int = 1

    @property
    def key(self) -> tuple[str, str]:
        """Who owns the item and its id: a hall item may share an id with a county one."""
        return (self.source, self.id)

    @property
    def urgent(self) -> bool:
        return self.kind == "urgent"

    def in_force(self, at: datetime) -> bool:
        """True if the item may be on the board at ``at`` (aware)."""
        if self.start is not None and at < self.start:
            return False
        if self.end is not None and at >= self.end:
            return False
        if self.schedule:
            t = at.astimezone(HALL_TZ).time()
            return any(start <= t < end for start, end in self.schedule)
        return True

    def to_dict(self) -> dict[str, Any]:
        """The item as ``validate_item`` accepts it (what the page stores and sends back)."""
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "text": self.text, "priority": self.priority, "version": self.version}
        if self.start is not None:
            out["start"] = self.start.isoformat()
        if self.end is not None:
            out["end"] = self.end.isoformat()
        if self.schedule:
            out["schedule"] = [f"{s:%H:%M}-{e:%H:%M}" for s, e in self.schedule]
        return out


def _field(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _chars(chars: Iterable[str]) -> str:
    return ", ".join(f"'{c}' (U+{ord(c):04X})" if unicodedata.category(c)[0] not in "CZ" else f"U+{ord(c):04X}" for c in chars)


def normalise_text(text: str) -> str:
    """NFC (a decomposed 'é' becomes one character), runs of spaces and line breaks as one space."""
    return ASCII_SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


class TextFault(NamedTuple):
    """One reason a text cannot go on the board, for a caller to word in its reader's language.

    ``code`` is one of ``TEXT_FAULTS``; ``chars`` are the characters concerned, each once, in
    order (invisible, marks, mongolian, missing); ``length`` is the text's length (too_long).
    """

    code: str
    chars: tuple[str, ...] = ()
    length: int = 0


TEXT_FAULTS = ("empty", "too_long", "invisible", "marks", "mongolian", "missing")


def text_faults(text: str, font: Font) -> list[TextFault]:
    """Why ``text`` (normalised) cannot go on the board, as codes; empty if it can."""
    if not text:
        return [TextFault("empty")]
    faults = []
    if len(text) > MAX_TEXT:
        faults.append(TextFault("too_long", length=len(text)))
    invisible = tuple(dict.fromkeys(c for c in text if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")))
    if invisible:
        faults.append(TextFault("invisible", invisible))
    marks = tuple(dict.fromkeys(c for c in text if unicodedata.category(c) in ("Mn", "Me") and c not in invisible))
    if marks:
        faults.append(TextFault("marks", marks))
    mongolian = tuple(dict.fromkeys(c for c in text if ord(c) in MONGOLIAN))
    if mongolian:
        faults.append(TextFault("mongolian", mongolian))
    missing = tuple(c for c in font.missing(text) if c not in invisible and c not in marks and ord(c) not in MONGOLIAN)
    if missing:
        faults.append(TextFault("missing", missing))
    return faults


def text_problems(text: str, font: Font) -> list[str]:
    """Why ``text`` (normalised) cannot go on the board, in words; empty if it can."""
    return [_text_reason(fault, font) for fault in text_faults(text, font)]


def _text_reason(fault: TextFault, font: Font) -> str:
    if fault.code == "empty":
        return "is empty; give the text to show"
    if fault.code == "too_long":
        return f"has {fault.length} characters; the limit is {MAX_TEXT} (that already scrolls for about four minutes): shorten it or split it into several items"
    if fault.code == "invisible":
        return f"contains control or invisible characters {_chars(fault.chars)}; remove them"
    if fault.code == "marks":
        return f"contains combining marks {_chars(fault.chars)} that the board draws as separate boxes; use precomposed letters"
    if fault.code == "mongolian":
        return "contains traditional Mongolian script, which the board cannot show (it draws letters unjoined, left to right); put the Mongolian text on the printed notice"
    return f"the board's font ({font.name}) has no glyph for {_chars(fault.chars)}; replace or remove them"


def _parse_when(value: Any, *, end: bool) -> datetime:
    """An ISO 8601 date and time; without an offset it is the hall's time. A date alone means
    the start of that day, or for an end the end of that day ('until 31 March' includes it)."""
    if not isinstance(value, str) or not 8 <= len(value) <= 40:
        raise ValueError
    when = datetime.fromisoformat(value)
    if not 2000 <= when.year <= 2100:  # a typo, and far years overflow timestamps
        raise ValueError
    if when.tzinfo is None:
        when = when.replace(tzinfo=HALL_TZ)
    if end and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        when += timedelta(days=1)
    return when


def validate_item(raw: Any, font: Font, *, source: str = "hall", path: str = "") -> ContentItem:
    """Check one item as the county or the page sends it; raise BoardRejected naming every bad field.

    ``{"id": "policy-2026-31", "kind": "policy", "text": "…", "start": "2026-03-01T08:00+08:00",
    "end": "2026-03-31", "priority": 5, "schedule": ["08:00-12:00"], "version": 3}`` — only id,
    kind and text are required.
    """
    problems = _item_problems(raw, font, source, path)
    if isinstance(problems, ContentItem):
        return problems
    raise BoardRejected(*problems[0], problems)


def _item_problems(raw: Any, font: Font, source: str, path: str) -> ContentItem | list[tuple[str, str]]:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")  # a caller's mistake, not content
    if not isinstance(raw, dict):
        return [(path or "item", "must be an object with id, kind and text")]
    problems: list[tuple[str, str]] = []

    def bad(key: str, reason: str) -> None:
        problems.append((_field(path, key), reason))

    for key in raw:
        if key not in FIELDS:
            close = difflib.get_close_matches(str(key), FIELDS, n=1)
            bad(str(key), "is not a field of a board item" + (f"; did you mean '{close[0]}'?" if close else f"; fields are: {', '.join(FIELDS)}"))

    item_id = raw.get("id")
    if not isinstance(item_id, str) or not ID_PATTERN.match(item_id):
        bad("id", "is required: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit" + ("" if item_id is None else f", got {item_id!r}"))

    kind = raw.get("kind")
    if kind not in KINDS:
        close = difflib.get_close_matches(kind, KINDS, n=1) if isinstance(kind, str) else []
        shown = "is required" if kind is None else f"{kind!r} is not a kind"
        bad("kind", f"{shown}; kinds are: {', '.join(KINDS)}" + (f" (did you mean '{close[0]}'?)" if close else ""))

    text = raw.get("text")
    if not isinstance(text, str):
        bad("text", "is required: the text to show" if text is None else f"must be text, got {type(text).__name__}")
        text = ""
    else:
        text = normalise_text(text)
        for reason in text_problems(text, font):
            bad("text", reason)

    times: dict[str, datetime | None] = {}
    for key in ("start", "end"):
        value = raw.get(key)
        times[key] = None
        if value is not None:
            try:
                times[key] = _parse_when(value, end=key == "end")
            except ValueError:
                bad(key, f"{value!r} is not a date and time; write e.g. '2026-03-01T08:00+08:00' (or '2026-03-01')")
    start, end = times["start"], times["end"]
    if start is not None and end is not None and end <= start:
        bad("end", f"{end.isoformat()} is not after start {start.isoformat()}: an item must end after it starts")
    if kind == "urgent" and raw.get("end") is None:  # absent or null; a bad value is named above
        bad("end", "is required for an urgent item: it takes over the board until it ends")

    priority = raw.get("priority", DEFAULT_PRIORITY)
    if isinstance(priority, bool) or not isinstance(priority, int) or priority not in PRIORITIES:
        bad("priority", f"must be a whole number from {PRIORITIES.start} (lowest) to {PRIORITIES.stop - 1} (highest), got {priority!r}")

    schedule: tuple[tuple[time, time], ...] = ()
    spans = raw.get("schedule", [])
    if not isinstance(spans, list):
        bad("schedule", f"must be a list of 'HH:MM-HH:MM' spans, e.g. ['08:00-12:00'], got {spans!r}")
    else:
        try:
            schedule = parse_hours(spans)
        except ValueError as exc:
            bad("schedule", f"{exc}; write spans as 'HH:MM-HH:MM', e.g. ['08:00-12:00', '14:30-17:00']")

    version = raw.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        bad("version", f"must be a whole number of 1 or more, got {version!r}")

    if problems:
        return problems
    return ContentItem(item_id, kind, text, start, end, priority, schedule, source, version)


def validate_items(raw: Any, font: Font, *, source: str = "hall", path: str = "items") -> tuple[ContentItem, ...]:
    """A list of items (the page's hall items, or the county's ``data.items``), all checked."""
    if not isinstance(raw, list):
        raise BoardRejected(path, f"must be a list of items, got {type(raw).__name__}")
    if len(raw) > MAX_ITEMS:
        raise BoardRejected(path, f"has {len(raw)} items; the limit is {MAX_ITEMS} (a rotation that long takes hours): withdraw expired ones or merge them")
    problems: list[tuple[str, str]] = []
    items: list[ContentItem] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(raw):
        where = f"{path}[{i}]"
        result = _item_problems(entry, font, source, where)
        if isinstance(result, ContentItem):
            items.append(result)
        else:
            problems.extend(result)
        item_id = entry.get("id") if isinstance(entry, dict) else None
        if isinstance(item_id, str):
            if item_id in seen:
                problems.append((f"{where}.id", f"{item_id!r} repeats {path}[{seen[item_id]}].id; give every item its own id"))
            else:
                seen[item_id] = i
    if problems:
        raise BoardRejected(*problems[0], problems)
    return tuple(items)


def validate_board_state(data: Any, font: Font, *, source: str = "county") -> tuple[ContentItem, ...]:
    """Check the county's ``board`` desired state, ``{"items": [...]}``, at one scope.

    Fields are named from the payload (``data.items[2].text``); the whole state is accepted or
    none of it, so a bad command leaves the board showing what it had.
    """
    if not isinstance(data, dict):
        raise BoardRejected("data", 'must be an object {"items": [...]}')
    unknown = [k for k in data if k != "items"]
    if unknown:
        raise BoardRejected(f"data.{unknown[0]}", 'is not part of the board state; send {"items": [...]}')
    if "items" not in data:
        raise BoardRejected("data.items", "is required: the list of items (an empty list withdraws them all)")
    return validate_items(data["items"], font, source=source, path="data.items")


def merge_scopes(by_scope: Mapping[str, Sequence[ContentItem]]) -> tuple[ContentItem, ...]:
    """The county's items over its scopes, widest first (county, township, device).

    An item of a narrower scope replaces one with the same id from a wider scope, so a
    township can adjust a county notice for its halls; to withdraw an item early, publish it
    again with an ``end`` in the past.
    """
    merged: dict[str, ContentItem] = {}
    for items in by_scope.values():
        for item in items:
            merged[item.id] = item
    return tuple(merged.values())


# -- brightness and settings --------------------------------------------------------------------


@dataclass(frozen=True)
class BrightnessSchedule:
    """Contrast levels from a time of day until the next, e.g. 64 from 07:00, 8 from 19:00."""

    steps: tuple[tuple[time, int], ...] = ((time(7, 0), 64), (time(19, 0), 8))

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("a brightness schedule needs at least one step")
        object.__setattr__(self, "steps", tuple(sorted(self.steps)))

    def contrast_at(self, t: time) -> int:
        """The level in force at ``t``; before the first step, the last step's (from the day before)."""
        i = bisect.bisect_right([s for s, _ in self.steps], t) - 1
        return self.steps[i][1]


def parse_brightness(raw: Any) -> BrightnessSchedule:
    """``{"07:00": 64, "19:00": 8}`` into a schedule; raises ValueError naming the bad entry."""
    if not isinstance(raw, dict) or not raw:
        raise ValueError('must be a table of "HH:MM" = contrast (0–255), e.g. { "07:00" = 64, "19:00" = 8 }')
    steps = []
    for key, level in raw.items():
        m = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)", key) if isinstance(key, str) else None
        if not m:
            raise ValueError(f"{key!r} is not a time written HH:MM")
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 255:
            raise ValueError(f"{key} = {level!r}: the contrast must be a whole number from 0 to 255")
        steps.append((time(int(m[1]), int(m[2])), level))
    return BrightnessSchedule(tuple(steps))


@dataclass(frozen=True)
class BoardSettings:
    """How the board moves and when it dims; defaults suit a 128×16 board in a hall."""

    speed_px_s: float = 32.0  # two full-width characters a second: a comfortable reading pace
    hold_s: float = 6.0  # text that fits is centred and held this long
    lead_s: float = 1.0  # scrolling text shows its first screen this long before it moves
    gap_px: int = 32  # blank between the end of a scrolling text and its start coming round again
    thanks_s: float = 3.0
    thanks_text: str = THANKS_TEXT
    complaint_text: str = "投诉建议请访问 {address}"
    brightness: BrightnessSchedule = field(default_factory=BrightnessSchedule)
    blank_when_closed: bool = True
    check_interval_s: float = 1.0  # how often what is in force is looked at again

    def __post_init__(self) -> None:
        for name in ("speed_px_s", "hold_s", "thanks_s", "check_interval_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be above 0, got {getattr(self, name)!r}")
        if self.lead_s < 0 or self.gap_px < 0:
            raise ValueError("lead_s and gap_px must not be negative")


# -- rendering ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Strip:
    """A text drawn once: the tape frames are cropped from, and how it moves."""

    text: str
    tape: Image.Image
    text_width: int
    scrolls: bool
    travel: int  # pixels one pass moves (0 for text that is held)
    duration: float  # seconds one showing lasts (one pass, or the hold)


class Renderer:
    """Draws each text once into a strip for a ``width``×``height`` board; frames are crops.

    Text that fits is centred on a board-sized tape and held. Longer text is drawn once, then
    ``gap_px`` of blank, then its first screen again: one pass scrolls from the text's start
    at the left edge round to that same picture, so a repeat follows seamlessly.
    """

    def __init__(self, font: Font, width: int, height: int, settings: BoardSettings = BoardSettings()) -> None:
        if height < font.size:
            raise BoardTooSmall(f"the board is {height} px high; Chinese at {font.size} px needs {font.size}: add a second row of modules")
        self.font = font
        self.width = width
        self.height = height
        self.settings = settings
        self.top = (height - font.size) // 2
        self._strips: dict[str, Strip] = {}
        # Content arrives on other threads than the frames': drawing and forgetting take
        # turns (one FreeType face is not to be used by two threads at once); a frame's
        # lookup of a strip already drawn needs no lock.
        self._drawing = threading.Lock()

    def strip(self, text: str) -> Strip:
        """The strip of ``text``, drawn on first use and kept."""
        strip = self._strips.get(text)
        if strip is None:
            with self._drawing:
                strip = self._strips.get(text)
                if strip is None:
                    strip = self._strips[text] = self._draw(text)
        return strip

    def retain(self, texts: Iterable[str]) -> None:
        """Forget the strips of every text not in ``texts`` (content that was withdrawn)."""
        keep = set(texts)
        with self._drawing:
            for text in [t for t in self._strips if t not in keep]:
                del self._strips[text]

    def _draw(self, text: str) -> Strip:
        s = self.settings
        width = self.font.width(text)
        if width <= self.width:
            tape = Image.new("1", (self.width, self.height))
            self.font.draw(tape, text, (self.width - width) // 2, self.top)
            return Strip(text, tape, width, False, 0, s.hold_s)
        travel = width + s.gap_px
        tape = Image.new("1", (travel + self.width, self.height))
        self.font.draw(tape, text, 0, self.top)
        tape.paste(tape.crop((0, 0, self.width, self.height)), (travel, 0))
        return Strip(text, tape, width, True, travel, s.lead_s + travel / s.speed_px_s)

    def offset(self, strip: Strip, elapsed: float) -> int:
        """How far ``strip`` has moved ``elapsed`` seconds into a showing."""
        if not strip.scrolls:
            return 0
        moved = elapsed - self.settings.lead_s
        return int(moved * self.settings.speed_px_s) % strip.travel if moved > 0 else 0

    def frame(self, strip: Strip, offset: int) -> Image.Image:
        """The board's picture at ``offset``: a crop (the tape itself for held text)."""
        if not strip.scrolls:
            return strip.tape
        return strip.tape.crop((offset, 0, offset + self.width, self.height))

    def pass_frames(self, text: str, fps: float = 30) -> list[Image.Image]:
        """Every frame of one showing of ``text`` at ``fps`` (for the simulator's GIF)."""
        strip = self.strip(text)
        count = max(1, round(strip.duration * fps))
        return [self.frame(strip, self.offset(strip, i / fps)) for i in range(count)]


# -- proof of play ------------------------------------------------------------------------------


class PlayCounter:
    """Completed showings per item per day (a scroll pass or a hold, not frames).

    ``take()`` hands the counts over and starts again, so the daemon can publish them as
    increments; the county adds them up per day. A count made while the clock was not
    synchronised is marked ``provisional``: its day may be wrong.
    """

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, str, int], list] = {}
        self._lock = threading.Lock()

    def count(self, item: ContentItem, day: date, synced: bool = True) -> None:
        key = (day.isoformat(), item.source, item.id, item.version)
        with self._lock:
            entry = self._counts.get(key)
            if entry is None:
                entry = self._counts[key] = [0, item.kind, False]
            entry[0] += 1
            entry[2] = entry[2] or not synced

    def counts(self) -> list[dict[str, Any]]:
        """The counts so far, oldest day first."""
        with self._lock:
            return self._rows(self._counts)

    def take(self) -> list[dict[str, Any]]:
        """The counts so far, and start counting from zero."""
        with self._lock:
            rows, self._counts = self._rows(self._counts), {}
        return rows

    @staticmethod
    def _rows(counts: dict) -> list[dict[str, Any]]:
        return [
            {"day": day, "source": source, "item_id": item_id, "version": version, "kind": kind, "shows": shows, "provisional": provisional}
            for (day, source, item_id, version), (shows, kind, provisional) in sorted(counts.items())
        ]


# -- the playlist -------------------------------------------------------------------------------


class OpenHours(Protocol):
    """When the hall is open; ``services.calendar.HallCalendar`` is one."""

    def is_open(self, at: datetime) -> bool: ...


class Showing:
    """One showing on the board: an item (or the thank-you), since when, for how long."""

    __slots__ = ("item", "text", "started", "duration", "label")

    def __init__(self, item: ContentItem | None, text: str, started: float, duration: float) -> None:
        self.item = item
        self.text = text
        self.started = started
        self.duration = duration
        self.label = "thanks" if item is None else f"{item.source}:{item.id}"


def _order(item: ContentItem) -> tuple:
    # Highest priority first, then the older item, then a stable tie-break.
    return (-item.priority, item.start.timestamp() if item.start else float("-inf"), item.source, item.id)


class Playlist:
    """Decides what is on the board: call ``advance(monotonic_s)`` for every frame.

    - Items in force (start, end, daily schedule) rotate in priority order, one showing each.
    - Urgent items interrupt at once and repeat, in turn, until they end; the item they cut
      short starts again afterwards.
    - ``thank()`` flashes the thank-you for ``thanks_s`` and then resumes the showing it paused
      at the very pixel it had reached.
    - When the hall is closed (calendar), nothing is shown.
    - An item withdrawn or expired while on the board is cut within ``check_interval_s``; an
      item changed while on the board finishes its showing and changes from the next one.

    Not thread-safe by itself: ``BoardService`` holds a lock around it.
    """

    def __init__(
        self,
        calendar: OpenHours,
        clock: Clock,
        duration_of: Callable[[str], float],
        settings: BoardSettings = BoardSettings(),
        *,
        on_played: Callable[[ContentItem, date, bool], None] | None = None,
    ) -> None:
        self.calendar = calendar
        self.clock = clock
        self.duration_of = duration_of
        self.settings = settings
        self.on_played = on_played
        self._items: dict[str, tuple[ContentItem, ...]] = {source: () for source in SOURCES}
        self._extra: ContentItem | None = None
        self._dirty = True
        self._check_at = float("-inf")
        self.now: datetime | None = None
        self._synced = True
        self.open = True
        self.contrast = settings.brightness.contrast_at(time(12))
        self._normal: list[ContentItem] = []
        self._normal_order: list[tuple] = []
        self._urgent: list[ContentItem] = []
        self._urgent_order: list[tuple] = []
        self._in_force: set[tuple[str, str]] = set()
        self.showing: Showing | None = None
        self._cursor: tuple | None = None  # order of the last normal item started
        self._urgent_cursor: tuple | None = None
        self._restart: tuple[str, str] | None = None  # a normal item cut short (urgent, closing)
        self._thanks: Showing | None = None
        self._thanks_until = 0.0
        self._paused_at = 0.0
        self._thank_requested: str | None = None

    # -- input ----------------------------------------------------------------------------

    def set_items(self, source: str, items: Iterable[ContentItem]) -> None:
        """Replace every item of ``source`` (county: the merged scopes; hall: the page's items)."""
        if source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        items = tuple(items)
        for item in items:
            if item.source != source:
                raise ValueError(f"item {item.id!r} comes from {item.source!r}, not {source!r}")
        self._items[source] = items
        self._dirty = True

    def set_extra(self, item: ContentItem | None) -> None:
        """An item of the appliance's own (the complaint form's address), or none."""
        self._extra = item
        self._dirty = True

    def items(self) -> tuple[ContentItem, ...]:
        """Every item known, in force or not, the appliance's own last."""
        extra = (self._extra,) if self._extra else ()
        return self._items["county"] + self._items["hall"] + extra

    def thank(self, text: str | None = None) -> None:
        """Flash the thank-you (or ``text``, a short notice) at the next frame, then resume."""
        self._thank_requested = text or self.settings.thanks_text

    # -- each frame -----------------------------------------------------------------------

    def advance(self, mono: float) -> tuple[Showing | None, float]:
        """What is on the board at monotonic time ``mono``, and how far into its showing."""
        if self._thank_requested:
            text, self._thank_requested = self._thank_requested, None
            if self._thanks is None:
                self._paused_at = mono
            if self._thanks is None or self._thanks.text != text:
                self._thanks = Showing(None, text, mono, self.settings.thanks_s)
            self._thanks_until = mono + self.settings.thanks_s  # another rating: a little longer
        if self._thanks is not None:
            if mono < self._thanks_until:
                return self._thanks, mono - self._thanks.started
            self._thanks = None
            if self.showing is not None:
                self.showing.started += mono - self._paused_at  # carry on where it was
        if self._dirty or mono >= self._check_at:
            self._evaluate(mono)
        showing = self.showing
        if showing is None:
            return None, 0.0
        elapsed = mono - showing.started
        if elapsed >= showing.duration:
            self._played(showing)
            self._start(self._pick(), mono)
            return self.showing, 0.0
        return showing, elapsed

    def _evaluate(self, mono: float) -> None:
        now = self.clock.now()
        self.now = now
        self._synced = self.clock.is_synced()
        self._dirty = False
        if mono >= self._check_at:
            # On a fixed grid, so the looks do not drift later by a frame each time.
            self._check_at += self.settings.check_interval_s
            if self._check_at <= mono:
                self._check_at = mono + self.settings.check_interval_s
        self.contrast = self.settings.brightness.contrast_at(now.astimezone(HALL_TZ).time())
        self.open = not self.settings.blank_when_closed or self.calendar.is_open(now)
        in_force = [item for item in self.items() if item.in_force(now)]
        in_force.sort(key=_order)
        self._normal = [i for i in in_force if not i.urgent]
        self._normal_order = [_order(i) for i in self._normal]
        self._urgent = [i for i in in_force if i.urgent]
        self._urgent_order = [_order(i) for i in self._urgent]
        self._in_force = {i.key for i in in_force}
        current = self.showing
        if not self.open:
            if current is not None and current.item is not None and not current.item.urgent:
                self._restart = current.item.key
            self.showing = None
            return
        if current is None:
            self._start(self._pick(), mono)
        elif current.item.key not in self._in_force:
            self._start(self._pick(), mono)  # withdrawn or expired: the rotation moves on
        elif self._urgent and not current.item.urgent:
            self._restart = current.item.key
            self._start(self._pick(), mono)

    def _pick(self) -> ContentItem | None:
        if self._urgent:
            item = _next_after(self._urgent, self._urgent_order, self._urgent_cursor)
            self._urgent_cursor = _order(item)
            return item
        if not self._normal:
            return None
        if self._restart is not None:
            key, self._restart = self._restart, None
            for item in self._normal:
                if item.key == key:
                    return item
        item = _next_after(self._normal, self._normal_order, self._cursor)
        self._cursor = _order(item)
        return item

    def _start(self, item: ContentItem | None, mono: float) -> None:
        self.showing = None if item is None else Showing(item, item.text, mono, self.duration_of(item.text))

    def _played(self, showing: Showing) -> None:
        if self.on_played is not None and showing.item is not None and self.now is not None:
            self.on_played(showing.item, self.now.astimezone(HALL_TZ).date(), self._synced)


def _next_after(items: list[ContentItem], order: list[tuple], cursor: tuple | None) -> ContentItem:
    """The item after ``cursor`` in ``order`` (by position, so it works after items change)."""
    if cursor is None:
        return items[0]
    i = bisect.bisect_right(order, cursor)
    return items[i] if i < len(items) else items[0]


# -- the service --------------------------------------------------------------------------------


class Frame(NamedTuple):
    """What the board should show now; ``changed`` is False when ``image`` is the last one again."""

    image: Image.Image
    contrast: int
    blank: bool
    changed: bool
    showing: str | None  # "county:<id>", "hall:<id>", "thanks", or None when dark


class BoardService:
    """The board, hardware-free: content in, frames out.

    The daemon creates it with the board's size, then about 30 times a second calls
    ``next_frame()`` and hands the result to the driver (``set_contrast``, ``blank``, and
    ``show`` when ``changed``). Content comes in through ``set_items``; ``on_rating`` fits the
    ratings service's ``on_feedback``; ``take_proof_of_play()`` empties the play counts into an
    event. Per frame the work is a clock reading and, when the picture moves, one crop.
    """

    def __init__(
        self,
        font: Font,
        width: int,
        height: int,
        calendar: OpenHours,
        clock: Clock,
        settings: BoardSettings = BoardSettings(),
        *,
        complaint_address: str | None = None,
    ) -> None:
        self.font = font
        self.clock = clock
        self.settings = settings
        self.renderer = Renderer(font, width, height, settings)
        self.plays = PlayCounter()
        self.playlist = Playlist(calendar, clock, self._duration_of, settings, on_played=self.plays.count)
        self._lock = threading.Lock()
        self._dark = Image.new("1", (width, height))
        self._last: Frame = Frame(self._dark, self.playlist.contrast, True, True, None)
        self._last_strip: Strip | None = None
        self._last_offset = -1
        if normalise_text(settings.thanks_text) != settings.thanks_text:
            raise BoardRejected("thanks_text", "must be one line without spaces around it")
        for problem in text_problems(settings.thanks_text, font):
            raise BoardRejected("thanks_text", problem)
        self.renderer.strip(settings.thanks_text)
        self.set_complaint_address(complaint_address)

    def _duration_of(self, text: str) -> float:
        return self.renderer.strip(text).duration

    def set_items(self, source: str, items: Iterable[ContentItem]) -> None:
        """Replace the items of ``source`` ('county' after merging scopes, or 'hall').

        The strips are drawn here, in the caller's thread, so no frame ever waits for drawing.
        """
        items = tuple(items)
        for item in items:
            self.renderer.strip(item.text)
        with self._lock:
            self.playlist.set_items(source, items)
            self._forget_unused()

    def set_complaint_address(self, address: str | None) -> None:
        """Scroll the complaint form's short address among the items (None: not configured)."""
        item = None
        if address:
            text = normalise_text(self.settings.complaint_text.format(address=address))
            problems = text_problems(text, self.font)
            if problems:
                raise BoardRejected("complaint_address", problems[0])
            item = ContentItem(COMPLAINT_ID, "announcement", text, priority=PRIORITIES.start, source="hall")
            self.renderer.strip(text)
        with self._lock:
            self.playlist.set_extra(item)
            self._forget_unused()

    def _forget_unused(self) -> None:
        self.renderer.retain([i.text for i in self.playlist.items()] + [self.settings.thanks_text] + ([self.playlist.showing.text] if self.playlist.showing else []))

    def items(self, source: str | None = None) -> tuple[ContentItem, ...]:
        with self._lock:
            items = self.playlist.items()
        if source is None:
            return items
        return tuple(i for i in items if i.source == source and i.id != COMPLAINT_ID)

    def on_rating(self, window_id: str = "", level_code: str = "") -> None:
        """A rating was recorded (at any window): flash the thank-you."""
        with self._lock:
            self.playlist.thank()

    def flash(self, text: str) -> bool:
        """Flash a short notice (e.g. after a badge swipe) as the thank-you is flashed.

        Returns False, showing nothing, for text the board cannot draw (a glyph Unifont lacks).
        """
        text = normalise_text(text)
        if not text or text_problems(text, self.font):
            return False
        self.renderer.strip(text)  # drawn here, in the caller's thread, not in a frame
        with self._lock:
            self.playlist.thank(text)
        return True

    def next_frame(self) -> Frame:
        """The frame for now; call it at the frame rate."""
        mono = self.clock.monotonic_ns() / 1e9
        with self._lock:
            showing, elapsed = self.playlist.advance(mono)
            contrast = self.playlist.contrast
            last = self._last
            if showing is None:
                frame = Frame(self._dark, contrast, True, last.image is not self._dark, None)
                self._last_strip = None
            else:
                strip = self.renderer.strip(showing.text)
                offset = self.renderer.offset(strip, elapsed)
                if strip is self._last_strip and offset == self._last_offset and not last.blank:
                    frame = Frame(last.image, contrast, False, False, showing.label)
                else:
                    frame = Frame(self.renderer.frame(strip, offset), contrast, False, True, showing.label)
                    self._last_strip, self._last_offset = strip, offset
            self._last = frame
            return frame

    def pass_frames(self, text: str, fps: float = 30) -> list[Image.Image]:
        """Every frame of one showing of ``text`` (for the simulator's GIF of a whole pass)."""
        with self._lock:
            return self.renderer.pass_frames(text, fps)

    def status(self) -> dict[str, Any]:
        """What the board is doing, for the page and the health report."""
        with self._lock:
            p = self.playlist
            showing = p._thanks or p.showing
            return {
                "state": "thanks" if p._thanks else ("closed" if not p.open else ("showing" if showing else "empty")),
                "item": None if showing is None or showing.item is None else {"source": showing.item.source, "id": showing.item.id, "kind": showing.item.kind, "version": showing.item.version},
                "contrast": p.contrast,
                "in_force": len(p._normal) + len(p._urgent),
                "items": len(p.items()),
            }

    def take_proof_of_play(self) -> list[dict[str, Any]]:
        """Completed showings per item per day since the last call (for a telemetry event)."""
        return self.plays.take()

"""The hall's own board items as the store keeps them, the county's beside them, and pictures of a text.

The hall's items are one list, kept as the desired state ``('board', 'hall')`` that the daemon
reads (``Daemon.reload_hall_items``). Every change writes the whole list as its next version,
with a ``board.hall_items`` event (person stream: someone did it on the page) and the audit row,
in one transaction; the page then asks the daemon to ``reload``. Nothing here is worded for
people: refusals are exceptions carrying what the page needs to say why.

Ending an item sets its ``end`` to now and keeps it in the list, so the page can still show it
and it can be reopened by editing its end; an item not yet begun is withdrawn (taken out of the
list) instead, as it was never shown. Items that ended more than ``ENDED_KEPT_DAYS`` ago leave
the list at the next change; the events and the audit log keep them.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

from flask import Flask
from PIL import Image

from services.board import HALL_TZ, ID_PATTERN, MAX_ITEMS, BoardRejected, BoardSettings, BoardTooSmall, ContentItem, Font, Renderer, validate_board_state, validate_item
from services.sink import PERSON, EventSpec

from ...config import Config
from ...events import SCOPES
from ...store import Store
from ..hall import Hall

EVENT = "board.hall_items"
NAME, HALL_SCOPE = "board", "hall"
ENDED_KEPT_DAYS = 30
AUDIT_ACTIONS = {"added": "board.added", "changed": "board.changed", "ended": "board.ended", "withdrawn": "board.withdrawn"}
# What the preview draws with: the emulator's colours for a lit and an unlit LED.
LIT, UNLIT = (255, 64, 32), (52, 14, 10)
SAVE_ATTEMPTS = 3


class BoardPageError(Exception):
    """Root of the board page's refusals."""


class ItemNotFound(BoardPageError, LookupError):
    """No hall item has this id."""


class CountyItem(BoardPageError, PermissionError):
    """The id is one of the county's items, which the hall cannot change."""

    def __init__(self, item_id: str, scope: str) -> None:
        super().__init__(item_id)
        self.item_id, self.scope = item_id, scope


class ItemChanged(BoardPageError, RuntimeError):
    """The item changed since the form was opened; saving would undo someone's change."""

    def __init__(self, item_id: str, version: int) -> None:
        super().__init__(item_id)
        self.item_id, self.version = item_id, version


class AlreadyEnded(BoardPageError, ValueError):
    """The item has already ended."""

    def __init__(self, item_id: str, end: str) -> None:
        super().__init__(item_id)
        self.item_id, self.end = item_id, end


class ItemsFull(BoardPageError, OverflowError):
    """The list holds MAX_ITEMS items that have not ended: one must end before another is added."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class _Stale(Exception):
    """The list changed between reading it and writing the next version: read it again."""


# -- the font and pictures ---------------------------------------------------------------------

_loading = threading.Lock()


@dataclass(frozen=True)
class Preview:
    """A text as the board draws it: a 1-LED-per-pixel PNG and how it moves."""

    png: bytes
    width: int
    height: int
    board_width: int
    scrolls: bool
    duration: float


class BoardPictures:
    """The page's own font and renderer, the daemon's at the board's size; drawn texts are not kept."""

    def __init__(self, config: Config) -> None:
        display = config.display
        self.font = Font()
        # As the daemon: the emulator turned a quarter is as wide as the board is high.
        self.width, self.height = (display.width, display.height) if display.rotate % 2 == 0 else (display.height, display.width)
        self.settings = BoardSettings(speed_px_s=display.scroll_speed, hold_s=display.hold_s)
        try:
            self.renderer: Renderer | None = Renderer(self.font, self.width, self.height, self.settings)
        except BoardTooSmall:
            self.renderer = None

    def preview(self, text: str) -> Preview | None:
        """``text`` (accepted) drawn as the board draws it; None when the board is too low for text."""
        if self.renderer is None:
            return None
        # One FreeType face must not draw in two threads at once: the renderer's lock sees to it.
        strip = self.renderer.strip(text)
        self.renderer.retain(())
        # Scrolling text: the text once, as it passes; text that fits: the board as it shows it.
        picture = strip.tape.crop((0, 0, strip.text_width, strip.tape.height)) if strip.scrolls else strip.tape
        indices = Image.frombytes("P", picture.size, picture.convert("L").point(lambda v: 1 if v else 0).tobytes())
        indices.putpalette([*UNLIT, *LIT])
        out = io.BytesIO()
        indices.save(out, format="PNG")
        return Preview(out.getvalue(), picture.width, picture.height, self.width, strip.scrolls, strip.duration)


def pictures(app: Flask, config: Config) -> BoardPictures:
    """The app's BoardPictures, made on first use (GNU Unifont takes a moment to read); FontMissing if it cannot be."""
    found = app.extensions.get("board_pictures")
    if found is None:
        with _loading:
            found = app.extensions.get("board_pictures")
            if found is None:
                found = app.extensions["board_pictures"] = BoardPictures(config)
    return found


# -- what the store holds ----------------------------------------------------------------------


@dataclass(frozen=True)
class Listed:
    """An item on the page: where it came from (``hall`` or the county's scope), that list's version, its state now."""

    item: ContentItem
    scope: str
    list_version: int
    state: str  # in_force, off_schedule, upcoming, ended


def state_at(item: ContentItem, now: datetime) -> str:
    if item.end is not None and now >= item.end:
        return "ended"
    if item.start is not None and now < item.start:
        return "upcoming"
    return "in_force" if item.in_force(now) else "off_schedule"


def stored(store: Store) -> tuple[int, list[dict]]:
    """The hall's list as stored: its version (0 before the first) and its items."""
    found = store.applied_state(NAME).get(HALL_SCOPE)
    return (found[0], list(found[1].get("items", []))) if found else (0, [])


@dataclass(frozen=True)
class Unshowable:
    """A hall item stored earlier that no longer passes the board's check; the list offers to withdraw it."""

    item_id: str | None
    text: str
    problem: BoardRejected


def hall_items(store: Store, font: Font, now: datetime) -> tuple[int, list[Listed], list[Unshowable]]:
    """The hall's list: its version, its items, and why any item no longer passes (a font without a glyph it had)."""
    version, raw = stored(store)
    listed, refused = [], []
    for i, entry in enumerate(raw):
        try:
            item = validate_item(entry, font, source="hall", path=f"items[{i}]")
        except BoardRejected as exc:
            entry = entry if isinstance(entry, dict) else {}
            item_id, text = entry.get("id"), entry.get("text")
            refused.append(Unshowable(item_id if isinstance(item_id, str) and ID_PATTERN.match(item_id) else None, text if isinstance(text, str) else "", exc))
            continue
        listed.append(Listed(item, HALL_SCOPE, version, state_at(item, now)))
    return version, listed, refused


def county_items(store: Store, font: Font, now: datetime) -> tuple[list[Listed], list[str]]:
    """The county's items in force on this device, merged as the daemon merges them; and the scopes it could not read."""
    merged: dict[str, Listed] = {}
    unreadable = []
    for scope, (version, data) in store.applied_state(NAME).items():
        if scope not in SCOPES:
            continue
        try:
            items = validate_board_state(data, font)
        except BoardRejected:
            unreadable.append(scope)  # accepted by a daemon with another font: it says so itself
            continue
        for item in items:  # widest scope first: a narrower one replaces an item of the same id
            merged[item.id] = Listed(item, scope, version, state_at(item, now))
    return list(merged.values()), unreadable


def county_scope_of(store: Store, font: Font, item_id: str, now: datetime) -> str | None:
    for listed in county_items(store, font, now)[0]:
        if listed.item.id == item_id:
            return listed.scope
    return None


def new_id(items: list[dict], now: datetime) -> str:
    """``hall-<day>-<n>``: the hall's day and the first number not in the list, so an id tells when it was made."""
    day = now.astimezone(HALL_TZ).strftime("%Y%m%d")
    taken = {i.get("id") for i in items}
    n = 1
    while f"hall-{day}-{n}" in taken:
        n += 1
    return f"hall-{day}-{n}"


# -- changing the list ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Saved:
    """What a change did: the list's new version, the action, the item as now stored (None when withdrawn)."""

    version: int
    action: str
    item_id: str
    item: dict | None
    ids: list[str]
    dropped: list[str]
    event_id: str


def _find(items: list[dict], item_id: str) -> int | None:
    return next((i for i, entry in enumerate(items) if entry.get("id") == item_id), None)


def _long_ended(entry: dict, now: datetime) -> bool:
    return _ended(entry, now - timedelta(days=ENDED_KEPT_DAYS))


def _ended(entry: dict, now: datetime) -> bool:
    end = entry.get("end")
    return isinstance(end, str) and datetime.fromisoformat(end) <= now


def _commit(h: Hall, font: Font, username: str, change: Callable[[list[dict], datetime], tuple[str, str, dict | None, list[dict]]]) -> Saved:
    """Apply ``change`` to the list as stored and write the result as its next version.

    ``change(items, now)`` returns (action, item_id, the item as it will be stored or None,
    the new list). The version is checked again inside the transaction: if another change
    came first, the list is read again and ``change`` runs on it (it refuses what no longer fits).
    """
    for _attempt in range(SAVE_ATTEMPTS):
        now = h.clock.now()
        version, items = stored(h.store)
        action, item_id, item, new_items = change(items, now)
        dropped = [e["id"] for e in new_items if e.get("id") != item_id and _long_ended(e, now)]
        kept = [e for e in new_items if e["id"] not in dropped]
        over = len(kept) - MAX_ITEMS
        if over > 0:
            # Items that have ended are kept for reference only: the oldest make room first.
            ended = sorted((e for e in kept if e.get("id") != item_id and _ended(e, now)), key=lambda e: e["end"])
            dropped += [e["id"] for e in ended[:over]]
            kept = [e for e in kept if e["id"] not in dropped]
        if len(kept) > MAX_ITEMS:
            raise ItemsFull(MAX_ITEMS)
        # Only the changed item is checked against the font (by the caller): one stored earlier
        # that a font update made unshowable must not block every change, its own end included.
        data = {"version": version + 1, "action": action, "item_id": item_id, "item": item, "ids": [e["id"] for e in kept], "recorded_by": username}

        def domain(conn, envelope: dict) -> None:
            row = conn.execute("SELECT version FROM desired_state WHERE name = ? AND scope = ?", (NAME, HALL_SCOPE)).fetchone()
            if (row[0] if row else 0) != version:
                raise _Stale
            Store.save_state(conn, NAME, HALL_SCOPE, version + 1, {"items": kept}, now.isoformat(timespec="seconds"))
            detail = {"item_id": item_id, "version": version + 1, "event_id": envelope["event_id"]}
            if dropped:
                detail["dropped"] = dropped
            h.accounts.audit(username, AUDIT_ACTIONS[action], detail, conn=conn)

        try:
            [recorded] = h.recorder.record_together([EventSpec(EVENT, data, PERSON, domain)])
        except _Stale:
            continue
        return Saved(version + 1, action, item_id, item, data["ids"], dropped, recorded.envelope["event_id"])
    raise BoardPageError(f"the hall's items kept changing while saving ({SAVE_ATTEMPTS} attempts)")


def _checked(raw: dict, font: Font) -> dict:
    return validate_item(raw, font, source="hall").to_dict()


def add_item(h: Hall, font: Font, username: str, fields: dict[str, Any]) -> Saved:
    """A new hall item from ``fields`` (kind, text, start, end, priority, schedule), with an id made for it."""

    def change(items: list[dict], now: datetime):
        item = _checked({"id": new_id(items, now), **fields, "version": 1}, font)
        return "added", item["id"], item, [*items, item]

    return _commit(h, font, username, change)


def edit_item(h: Hall, font: Font, username: str, item_id: str, fields: dict[str, Any], opened_version: int | None) -> Saved:
    """The hall item ``item_id`` changed to ``fields``; refused if it changed since ``opened_version``."""

    def change(items: list[dict], now: datetime):
        i = _owned(h, font, items, item_id)
        current = items[i]
        if opened_version is not None and current.get("version", 1) != opened_version:
            raise ItemChanged(item_id, current.get("version", 1))
        item = _checked({"id": item_id, **fields, "version": current.get("version", 1) + 1}, font)
        return "changed", item_id, item, [*items[:i], item, *items[i + 1 :]]

    return _commit(h, font, username, change)


def end_item(h: Hall, font: Font, username: str, item_id: str) -> Saved:
    """Take the hall item ``item_id`` off the board now: ended (kept) if it has begun, withdrawn if not."""

    def change(items: list[dict], now: datetime):
        i = _owned(h, font, items, item_id)
        current = items[i]
        try:
            validate_item(current, font, source="hall")
        except BoardRejected:
            # Stored earlier, unshowable now (a font update lost a glyph): it leaves the list,
            # ended or not.
            return "withdrawn", item_id, None, [*items[:i], *items[i + 1 :]]
        if current.get("end") and datetime.fromisoformat(current["end"]) <= now:
            raise AlreadyEnded(item_id, current["end"])
        ended_at = now.replace(microsecond=0)
        if current.get("start") and datetime.fromisoformat(current["start"]) >= ended_at:
            return "withdrawn", item_id, None, [*items[:i], *items[i + 1 :]]
        item = _checked({**current, "end": ended_at.isoformat(), "version": current.get("version", 1) + 1}, font)
        return "ended", item_id, item, [*items[:i], item, *items[i + 1 :]]

    return _commit(h, font, username, change)


def _owned(h: Hall, font: Font, items: list[dict], item_id: str) -> int:
    i = _find(items, item_id)
    if i is not None:
        return i
    scope = county_scope_of(h.store, font, item_id, h.clock.now())
    if scope is not None:
        raise CountyItem(item_id, scope)
    raise ItemNotFound(item_id)


def find_item(h: Hall, font: Font, item_id: str) -> dict:
    """The stored hall item ``item_id``; CountyItem or ItemNotFound otherwise."""
    items = stored(h.store)[1]
    return items[_owned(h, font, items, item_id)]

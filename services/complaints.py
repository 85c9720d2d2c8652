"""The sealed complaint box (举报箱): intake, sealing, receipts, the county's status, counts.

A complaint is meant for the county's supervisors (纪检监察), not for the hall whose staff
run the appliance. So on arrival its text, the citizen's contact and whom it is about (the
window or staff member named) are sealed to the supervisor's public key with a libsodium
sealed box, and only the ciphertext is stored and published. The plaintext lives in memory
for the length of one call: it is never written to the store, the log or the outbox, and
nothing here keeps a reference to it. What stays readable on the device is what the hall
may see — the receipt code, the category, how it came in, its status — and the county's
public reply.

A complaint is recorded like a rating: the ``complaints`` row and the ``complaint.received``
event (person stream, never dropped at the outbox cap) commit together. There is no way to
delete one. The citizen keeps a receipt code to look up the status the county sets with the
``complaint.status`` one-off command. See docs/complaints.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import sqlite3
import threading
import time
import unicodedata
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from nacl.public import PublicKey, SealedBox

from .sink import PERSON, TELEMETRY, Clock, EventSink, EventSpec, Rows

log = logging.getLogger(__name__)


# -- categories and statuses ---------------------------------------------------------------


@dataclass(frozen=True)
class Category:
    """What a complaint is about; ``code`` is stable (events, counts), ``label`` is for people."""

    code: str
    label: str
    label_en: str
    hint: str


# The codes are part of the MQTT contract: add new ones at the end, never rename one.
CATEGORIES: tuple[Category, ...] = (
    Category("attitude", "服务态度", "Attitude", "态度生硬、冷漠、推诿"),
    Category("delay", "办事拖延", "Delay", "拖延办理、超时限不办结"),
    Category("runaround", "反复跑腿", "Sent back and forth", "材料不一次性告知、让群众多跑"),
    Category("discipline", "工作纪律", "Work discipline", "脱岗、迟到早退、上班时间办私事"),
    Category("fees", "违规收费", "Improper fees", "乱收费、搭车收费"),
    Category("bribery", "吃拿卡要", "Asking for favours", "索要、收受财物或好处"),
    Category("favoritism", "优亲厚友", "Favouritism", "补贴、低保等办理中照顾亲友、违规操作"),
    Category("other", "其他", "Other", "以上都不是"),
)
CATEGORY_BY_CODE: dict[str, Category] = {c.code: c for c in CATEGORIES}

# The county sets these with complaint.status; a new complaint is 'received'.
STATUSES: dict[str, str] = {"received": "已受理", "in_progress": "办理中", "answered": "已答复"}
STATUS_LABELS_EN: dict[str, str] = {"received": "Received", "in_progress": "In progress", "answered": "Answered"}

FORM = "form"
TRANSCRIBED = "transcribed"

TEXT_MAX = 2000  # characters; a page of handwriting is about 600
CONTACT_MAX = 100
STAFF_MAX = 50
TRANSCRIBER_MAX = 64
REPLY_MAX = 1000
SET_BY_MAX = 100
# The sealed document is padded to a multiple of this, so the ciphertext's length says
# little about how long the text is or whether a contact was given.
PAD_TO = 512


# -- errors -----------------------------------------------------------------------------


class ComplaintRejected(ValueError):
    """A submission, a lookup or a status command cannot be taken; ``field`` names why.

    ``code`` is a stable word the page translates (``empty``, ``too_long``, ``unknown``…);
    ``problems`` lists every (field, reason) found, the first one being ``field``/``reason``.
    Messages never repeat what the citizen wrote.
    """

    def __init__(self, field: str, reason: str, *, code: str = "invalid", problems: list[tuple[str, str]] | None = None) -> None:
        self.field = field
        self.reason = reason
        self.code = code
        self.problems = problems or [(field, reason)]
        super().__init__(f"{field}: {reason}")


class UnknownReceipt(ComplaintRejected, LookupError):
    """A well-formed receipt code that names no complaint on this device."""


class RateLimited(ComplaintRejected):
    """Too many submissions from one client, or from everyone, in the window."""

    def __init__(self, reason: str, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__("submission", reason, code="rate_limited")


class KeyInvalid(ValueError):
    """A complaint key file or key cannot be used; the message says what to do."""


# -- the supervisor's key -------------------------------------------------------------------

PUBLIC_KEY_TAG = "hall-complaints-public-v1"
PRIVATE_KEY_TAG = "hall-complaints-private-v1"


def key_id(public_key: bytes) -> str:
    """The key's fingerprint: the first 32 hex digits of SHA-256 over the raw 32-byte key.

    Anyone can recompute it (``base64 -d | sha256sum``); events carry it so the county
    knows which key sealed a complaint after a key change.
    """
    return hashlib.sha256(public_key).hexdigest()[:32]


def show_fingerprint(kid: str) -> str:
    """A key id in groups of four, for reading over the phone: ``3f2a 9c1b …``."""
    return " ".join(kid[i : i + 4] for i in range(0, len(kid), 4))


def format_key_file(tag: str, raw: bytes, comment: str) -> str:
    """A key file: ``#`` comment lines, then ``<tag> <base64 key>``."""
    lines = [f"# {line}" if line else "#" for line in comment.splitlines()]
    return "\n".join(lines + [f"{tag} {base64.b64encode(raw).decode()}", ""])


def parse_key_file(text: str, tag: str, source: str) -> bytes:
    """The 32 raw key bytes from a key file written by ``format_key_file`` with ``tag``."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if len(lines) != 1:
        raise KeyInvalid(f"{source}: expected one line '{tag} <base64>', found {len(lines)} non-comment lines; use the file hall-provision complaints keygen wrote")
    found_tag, _, value = lines[0].partition(" ")
    if found_tag != tag:
        if found_tag == PRIVATE_KEY_TAG:
            raise KeyInvalid(f"{source} is the supervisor's PRIVATE key: it must never be on a hall device; install the .pub file keygen wrote beside it, and keep this one with the county")
        if found_tag == PUBLIC_KEY_TAG:
            raise KeyInvalid(f"{source} is the public key; opening complaints needs the private key keygen wrote with it")
        raise KeyInvalid(f"{source}: starts with {found_tag[:40]!r}, not {tag!r}; use the file hall-provision complaints keygen wrote")
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except ValueError:
        raise KeyInvalid(f"{source}: the key is not valid base64; the file may be damaged, copy it again") from None
    if len(raw) != 32:
        raise KeyInvalid(f"{source}: the key is {len(raw)} bytes, not 32; the file may be damaged, copy it again")
    return raw


class Sealer:
    """Seals a complaint's contents to the county supervisor's public key (libsodium sealed box).

    A sealed box is encrypted with a fresh key pair each time: nothing on the device,
    including this object, can open what it sealed.
    """

    def __init__(self, public_key: bytes) -> None:
        if not isinstance(public_key, bytes) or len(public_key) != 32:
            raise KeyInvalid("the supervisor's public key must be 32 bytes (an X25519 public key from hall-provision complaints keygen)")
        self._box = SealedBox(PublicKey(public_key))
        self.key_id = key_id(public_key)

    @classmethod
    def from_file(cls, path: str | Path) -> "Sealer":
        """The sealer for the public key file that came with provisioning."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyInvalid(f"{path}: cannot read the complaint supervisor's public key ({exc}); install the .pub file from provisioning") from None
        return cls(parse_key_file(text, PUBLIC_KEY_TAG, str(path)))

    def seal(self, *, receipt: str, category: str, text: str, contact: str, window: str | None, staff: str | None) -> bytes:
        """The sealed box of one complaint's contents, as UTF-8 JSON padded with spaces.

        The receipt and category go inside too, so the county can see that a ciphertext was
        not moved to another complaint.
        """
        doc = json.dumps(
            {"v": 1, "receipt": receipt, "category": category, "text": text, "contact": contact, "window": window, "staff": staff},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode("utf-8")
        doc += b" " * (-len(doc) % PAD_TO)
        return self._box.encrypt(doc)


# -- receipt codes ------------------------------------------------------------------------

# No 0/O, 1/I/L, and no U (read as V): 30 symbols, an even count so Luhn mod N catches
# every single misread character and most swapped neighbours.
RECEIPT_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
RECEIPT_RANDOM = 11  # 30**11 ≈ 2**54 codes; the twelfth character is the check
RECEIPT_LENGTH = RECEIPT_RANDOM + 1
_INDEX = {ch: i for i, ch in enumerate(RECEIPT_ALPHABET)}
_N = len(RECEIPT_ALPHABET)
_SEPARATORS = " -_.·—–"


def _luhn_sum(codepoints: list[int], first_factor: int) -> int:
    total, factor = 0, first_factor
    for cp in reversed(codepoints):
        addend = factor * cp
        total += addend // _N + addend % _N
        factor = 1 if factor == 2 else 2
    return total


def _check_char(body: str) -> str:
    return RECEIPT_ALPHABET[(_N - _luhn_sum([_INDEX[c] for c in body], 2) % _N) % _N]


def format_receipt(code: str) -> str:
    """Twelve characters in three groups of four, for reading aloud: ``7KQM-X3PD-9HTR``."""
    return "-".join(code[i : i + 4] for i in range(0, len(code), 4))


def new_receipt() -> str:
    """A fresh receipt code from ``secrets``, with its check character, grouped."""
    body = "".join(secrets.choice(RECEIPT_ALPHABET) for _ in range(RECEIPT_RANDOM))
    return format_receipt(body + _check_char(body))


def normalize_receipt(value: Any, field: str = "receipt") -> str:
    """A receipt code as typed (any case, full-width, spaces or dashes) in its grouped form.

    Raises ComplaintRejected (``malformed`` or ``typo``) with a message for the citizen.
    """
    if not isinstance(value, str):
        raise ComplaintRejected(field, "must be text: the 12-character code on the receipt, like 7KQM-X3PD-9HTR", code="malformed")
    code = "".join(ch for ch in unicodedata.normalize("NFKC", value).upper() if ch not in _SEPARATORS and not ch.isspace())
    if not code:
        raise ComplaintRejected(field, "is empty: type the 12-character code on the receipt, like 7KQM-X3PD-9HTR", code="empty")
    wrong = sorted({ch for ch in code if ch not in _INDEX})
    if wrong:
        never = [ch for ch in wrong if ch in "0O1ILU"]
        if never:
            raise ComplaintRejected(field, f"has {', '.join(never)}: receipt codes never use 0, O, 1, I, L or U; compare it with the receipt again", code="malformed")
        raise ComplaintRejected(field, "has characters no receipt code uses: only the digits 2-9 and capital letters", code="malformed")
    if len(code) != RECEIPT_LENGTH:
        raise ComplaintRejected(field, f"has {len(code)} characters; a receipt code has {RECEIPT_LENGTH}, like 7KQM-X3PD-9HTR", code="malformed")
    if _luhn_sum([_INDEX[c] for c in code], 1) % _N != 0:
        raise ComplaintRejected(field, "does not check out: one character is probably misread or two are swapped; compare it with the receipt", code="typo")
    return format_receipt(code)


# -- what the service returns ------------------------------------------------------------------


@dataclass(frozen=True)
class Receipt:
    """What the citizen takes away after a complaint is safely recorded."""

    code: str
    category: str
    channel: str
    received_at: str
    event_id: str
    seq: int


@dataclass(frozen=True)
class ReceiptStatus:
    """What the lookup page shows for a receipt code: never the complaint itself."""

    receipt: str
    category: str
    category_label: str
    status: str
    status_label: str
    reply: str | None
    received_on: str
    status_at: str | None


@dataclass(frozen=True)
class _Draft:
    """A validated submission; the fields a person wrote stay out of any repr or traceback."""

    category: str
    channel: str
    transcribed_by: str | None
    text: str = field(repr=False)
    contact: str = field(repr=False)
    window: str | None = field(repr=False)
    staff: str | None = field(repr=False)


class _ReceiptTaken(Exception):
    """The code drawn is already used; draw another (inside the rolled-back transaction)."""


# -- validation ----------------------------------------------------------------------------


def _has_controls(value: str, allowed: str = "") -> bool:
    return any(unicodedata.category(ch) == "Cc" and ch not in allowed for ch in value)


def validate_submission(
    category: Any,
    text: Any,
    *,
    contact: Any = "",
    window: Any = None,
    staff: Any = None,
    transcribed_by: Any = None,
    windows: dict[str, str] | None = None,
) -> _Draft:
    """Check a submission; raises ComplaintRejected listing every problem, field by field."""
    problems: list[tuple[str, str, str]] = []

    def bad(name: str, reason: str, code: str) -> None:
        problems.append((name, reason, code))

    def optional_text(name: str, value: Any, limit: int, what: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            bad(name, f"must be text ({what})", "invalid")
            return None
        value = value.strip()
        if len(value) > limit:
            bad(name, f"is {len(value)} characters; at most {limit}", "too_long")
        elif _has_controls(value):
            bad(name, "has control characters or line breaks; keep it to one line", "invalid")
        return value or None

    if not isinstance(category, str) or not category:
        bad("category", f"is required: choose one of {', '.join(c.code for c in CATEGORIES)}", "empty")
    elif category not in CATEGORY_BY_CODE:
        bad("category", f"is not a complaint category; choose one of {', '.join(c.code for c in CATEGORIES)}", "unknown_category")

    body = ""
    if not isinstance(text, str):
        bad("text", "must be text: write what happened", "invalid")
    else:
        body = text.replace("\r\n", "\n").replace("\r", "\n").strip()
        if not body:
            bad("text", "is empty: write what happened", "empty")
        elif len(body) > TEXT_MAX:
            bad("text", f"is {len(body)} characters; at most {TEXT_MAX} — shorten it, or send the rest as a second complaint", "too_long")
        elif _has_controls(body, "\n\t"):
            bad("text", "has control characters; type or paste plain text", "invalid")

    contact_value = optional_text("contact", contact, CONTACT_MAX, "a phone number or an address; leave it empty to stay anonymous")
    staff_value = optional_text("staff", staff, STAFF_MAX, "a name or staff number, or leave it empty")

    window_value = None
    if window not in (None, ""):
        if not isinstance(window, str):
            bad("window", "must be a window id", "invalid")
        elif windows is not None and window not in windows:
            bad("window", f"is not a window of this hall; windows: {', '.join(windows) or 'none'}", "unknown_window")
        else:
            window_value = window

    transcriber = None
    if transcribed_by is not None:
        if not isinstance(transcribed_by, str) or not transcribed_by.strip():
            bad("transcribed_by", "must name who transcribed it (their staff id)", "empty")
        elif len(transcribed_by.strip()) > TRANSCRIBER_MAX or _has_controls(transcribed_by):
            bad("transcribed_by", f"must be a staff id of at most {TRANSCRIBER_MAX} characters on one line", "invalid")
        else:
            transcriber = transcribed_by.strip()

    if problems:
        first = problems[0]
        raise ComplaintRejected(first[0], first[1], code=first[2], problems=[(f, r) for f, r, _ in problems])
    return _Draft(
        category=category,
        channel=TRANSCRIBED if transcriber else FORM,
        transcribed_by=transcriber,
        text=body,
        contact=contact_value or "",
        window=window_value,
        staff=staff_value,
    )


def validate_status(store: Rows, args: Any) -> dict:
    """Check the county's ``complaint.status`` arguments (see ``Complaints.validate_status``)."""
    if not isinstance(args, dict):
        raise ComplaintRejected("args", 'must be an object, e.g. {"receipt": "7KQM-X3PD-9HTR", "status": "in_progress"}')
    unknown = sorted(set(args) - {"receipt", "status", "reply", "by"})
    if unknown:
        raise ComplaintRejected(f"args.{unknown[0]}", "is not an argument of complaint.status; it takes receipt, status, reply, by")
    if "receipt" not in args:
        raise ComplaintRejected("args.receipt", "is required: the receipt code of the complaint.received event", code="empty")
    receipt = normalize_receipt(args["receipt"], "args.receipt")
    if "status" not in args:
        raise ComplaintRejected("args.status", f"is required: one of {', '.join(STATUSES)}", code="empty")
    status = args["status"]
    if not isinstance(status, str) or status not in STATUSES:
        raise ComplaintRejected("args.status", f"{json.dumps(status, ensure_ascii=False)[:40]} is not a status; use one of {', '.join(STATUSES)}")
    out: dict[str, Any] = {"receipt": receipt, "status": status}
    if "reply" in args:
        reply = args["reply"]
        if reply is None:
            reply = ""
        if not isinstance(reply, str):
            raise ComplaintRejected("args.reply", "must be text (the public reply the citizen sees), or \"\" to remove it")
        reply = reply.replace("\r\n", "\n").strip()
        if len(reply) > REPLY_MAX:
            raise ComplaintRejected("args.reply", f"is {len(reply)} characters; at most {REPLY_MAX}", code="too_long")
        if _has_controls(reply, "\n"):
            raise ComplaintRejected("args.reply", "has control characters; send plain text")
        out["reply"] = reply or None
    by = "" if args.get("by") is None else args["by"]
    if not isinstance(by, str) or len(by) > SET_BY_MAX or _has_controls(by):
        raise ComplaintRejected("args.by", f"must be text of at most {SET_BY_MAX} characters on one line (who set the status)")
    out["by"] = by or None
    if not store.rows("SELECT 1 FROM complaints WHERE receipt = ?", (receipt,)):
        raise UnknownReceipt("args.receipt", f"{receipt} is not a complaint recorded on this device", code="unknown")
    return out


# -- reading, for the hall and the citizen ---------------------------------------------------


def lookup_receipt(store: Rows, code: Any) -> ReceiptStatus:
    """The status of the complaint with receipt ``code``, for the citizen's lookup page.

    Raises ComplaintRejected for a code that cannot be one (with what to check), and
    UnknownReceipt for a well-formed code that names nothing here. The code is the key of
    an indexed lookup and never compared character by character in Python, so how long the
    answer takes says nothing about how close a guess was; the page rate-limits lookups too.
    """
    receipt = normalize_receipt(code)
    rows = store.rows("SELECT category, status, reply, received_at, status_at FROM complaints WHERE receipt = ?", (receipt,))
    if not rows:
        raise UnknownReceipt(
            "receipt",
            "no complaint has this code on this hall's appliance; check it against the receipt, or ask at the hall which appliance took it",
            code="unknown",
        )
    category, status, reply, received_at, status_at = rows[0]
    cat = CATEGORY_BY_CODE.get(category)
    return ReceiptStatus(receipt, category, cat.label if cat else category, status, STATUSES[status], reply, received_at[:10], status_at)


def hall_counts(store: Rows) -> dict:
    """Counts for the hall's page: totals by status, category and channel — never contents."""
    out = {
        "total": 0,
        "by_status": dict.fromkeys(STATUSES, 0),
        "by_category": {c.code: 0 for c in CATEGORIES},
        "by_channel": {FORM: 0, TRANSCRIBED: 0},
    }
    for category, status, channel, n in store.rows("SELECT category, status, channel, COUNT(*) FROM complaints GROUP BY category, status, channel"):
        out["total"] += n
        out["by_status"][status] = out["by_status"].get(status, 0) + n
        out["by_category"][category] = out["by_category"].get(category, 0) + n
        out["by_channel"][channel] = out["by_channel"].get(channel, 0) + n
    return out


def hall_receipts(store: Rows, limit: int = 200) -> list[dict]:
    """The latest complaints as the hall may see them: receipt, category, channel, status, dates."""
    rows = store.rows(
        "SELECT receipt, category, channel, transcribed_by, status, received_at, status_at FROM complaints ORDER BY received_at DESC, seq DESC LIMIT ?",
        (limit,),
    )
    keys = ("receipt", "category", "channel", "transcribed_by", "status", "received_at", "status_at")
    return [dict(zip(keys, r)) for r in rows]


# -- the service ---------------------------------------------------------------------------


class Complaints:
    """Takes complaints, seals them, gives receipts and applies the county's status."""

    # Drawing a code already used is a 1-in-10^16 event; a few tries cover it many times over.
    RECEIPT_TRIES = 5

    def __init__(
        self,
        sink: EventSink,
        store: Rows,
        clock: Clock,
        sealer: Sealer | None,
        windows: dict[str, str] | None = None,
        *,
        draw_receipt: Callable[[], str] = new_receipt,
    ) -> None:
        self.sink = sink
        self.store = store
        self.clock = clock
        self.sealer = sealer  # None: the box is closed (statuses still apply)
        self.windows = windows  # id → name; None accepts any window id
        self._draw_receipt = draw_receipt
        self._announcing = threading.Lock()

    # -- intake -----------------------------------------------------------------------

    def submit(
        self,
        category: str,
        text: str,
        *,
        contact: str = "",
        window: str | None = None,
        staff: str | None = None,
        transcribed_by: str | None = None,
    ) -> Receipt:
        """Seal and record one complaint; returns its receipt once it is on the card.

        ``transcribed_by`` (the transcriber's staff id) marks a paper-box or phone complaint
        typed in by staff; without it the complaint came through the public form.
        Raises ComplaintRejected for bad input, or when no supervisor key is installed (the
        box is closed); nothing is recorded then.
        """
        if self.sealer is None:
            raise ComplaintRejected("complaints.public_key", "the complaint box is closed: no supervisor key is installed", code="closed")
        draft = validate_submission(category, text, contact=contact, window=window, staff=staff, transcribed_by=transcribed_by, windows=self.windows)
        for _ in range(self.RECEIPT_TRIES):
            receipt = self._draw_receipt()
            ciphertext = self.sealer.seal(
                receipt=receipt, category=draft.category, text=draft.text, contact=draft.contact, window=draft.window, staff=draft.staff
            )
            data = {
                "receipt": receipt,
                "category": draft.category,
                "channel": draft.channel,
                "transcribed_by": draft.transcribed_by,
                "key_id": self.sealer.key_id,
                "ciphertext": base64.b64encode(ciphertext).decode("ascii"),
            }
            try:
                recorded = self.sink.record_together([EventSpec("complaint.received", data, PERSON, self._writer(draft, receipt, ciphertext))])[0]
            except _ReceiptTaken:
                log.warning("receipt code drawn twice; drawing another")
                continue
            env = recorded.envelope
            log.info("complaint %s recorded (%s, %s)", receipt, draft.category, draft.channel)
            return Receipt(receipt, draft.category, draft.channel, env["time"], env["event_id"], recorded.seq)
        raise RuntimeError(f"could not draw an unused receipt code in {self.RECEIPT_TRIES} tries; the code generator is broken")

    def _writer(self, draft: _Draft, receipt: str, ciphertext: bytes) -> Callable[[sqlite3.Connection, dict], None]:
        def write(conn: sqlite3.Connection, env: dict) -> None:
            # Checked under the write lock (BEGIN IMMEDIATE); the primary key backs it up.
            if conn.execute("SELECT 1 FROM complaints WHERE receipt = ?", (receipt,)).fetchone():
                raise _ReceiptTaken()
            conn.execute(
                "INSERT INTO complaints (receipt, event_id, seq, category, channel, transcribed_by, key_id, sealed, received_at, clock_synced)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (receipt, env["event_id"], env["seq"], draft.category, draft.channel, draft.transcribed_by, self.sealer.key_id, ciphertext, env["time"], int(env["clock_synced"])),
            )

        return write

    # -- the citizen's lookup ------------------------------------------------------------

    def lookup(self, code: Any) -> ReceiptStatus:
        """The status the county set for receipt ``code`` (see ``lookup_receipt``)."""
        return lookup_receipt(self.store, code)

    # -- the county's complaint.status -------------------------------------------------------

    def validate_status(self, args: Any) -> dict:
        """Check ``complaint.status`` arguments: ``receipt``, ``status``, optional ``reply`` and ``by``.

        ``status`` is one of received, in_progress, answered. ``reply`` (at most
        REPLY_MAX characters) replaces the public reply; ``""`` or null removes it, and
        leaving it out keeps the one given before.
        """
        return validate_status(self.store, args)

    def apply_status(self, conn: sqlite3.Connection, args: dict) -> dict:
        """Inside the command's transaction: set the status and note the change to announce."""
        at = self.clock.now().isoformat(timespec="seconds")
        if "reply" in args:
            conn.execute("UPDATE complaints SET status = ?, reply = ?, status_at = ? WHERE receipt = ?", (args["status"], args["reply"], at, args["receipt"]))
        else:
            conn.execute("UPDATE complaints SET status = ?, status_at = ? WHERE receipt = ?", (args["status"], at, args["receipt"]))
        reply = conn.execute("SELECT reply FROM complaints WHERE receipt = ?", (args["receipt"],)).fetchone()[0]
        conn.execute(
            "INSERT INTO complaint_status (receipt, status, reply, set_by, at) VALUES (?, ?, ?, ?, ?)",
            (args["receipt"], args["status"], reply, args.get("by"), at),
        )
        return {"receipt": args["receipt"], "status": args["status"], "status_at": at}

    def announce_status(self, *_: Any) -> int:
        """Publish ``complaint.status_changed`` for every status change not yet announced.

        The command's transaction cannot also record a second event, so a change is noted
        in ``complaint_status`` there and announced here, each with its mark in one
        transaction. Run after every complaint.status and once at start: a change whose
        announcement a power cut interrupted goes out then, and none goes out twice.
        """
        with self._announcing:
            rows = self.store.rows("SELECT id, receipt, status, reply, set_by, at FROM complaint_status WHERE event_id IS NULL ORDER BY id")
            events = []
            for row_id, receipt, status, reply, set_by, at in rows:

                def mark(conn: sqlite3.Connection, env: dict, row_id: int = row_id) -> None:
                    conn.execute("UPDATE complaint_status SET event_id = ? WHERE id = ?", (env["event_id"], row_id))

                data = {"receipt": receipt, "status": status, "reply": reply, "set_by": set_by, "set_at": at}
                events.append(EventSpec("complaint.status_changed", data, TELEMETRY, mark))
            if events:
                self.sink.record_together(events)
            return len(events)

    # -- the hall's view -------------------------------------------------------------------------

    def counts(self) -> dict:
        """Counts by status, category and channel (see ``hall_counts``)."""
        return hall_counts(self.store)

    def receipts(self, limit: int = 200) -> list[dict]:
        """The latest receipts the hall may see (see ``hall_receipts``)."""
        return hall_receipts(self.store, limit)


# -- flood control for the public form -----------------------------------------------------------


class SubmissionLimiter:
    """Sliding-window limits on the public form: per client key, and for the whole hall.

    The key is whatever opaque value the caller gives (the page passes ``AddressKey``'s keyed
    hash of the client address); it is held in memory only, and forgotten once its window
    is over. ``check()`` before taking a submission, ``count()`` once it was recorded, so a
    citizen who fixes a typo in the form is not held back. The hall-wide limit keeps a flood
    from many addresses from filling the card: complaints are never dropped, so they are
    refused at the door instead, with a message to try again later.
    """

    def __init__(
        self,
        per_client: int = 5,
        window_s: float = 600.0,
        *,
        hall_limit: int = 120,
        hall_window_s: float = 3600.0,
        monotonic: Callable[[], float] = time.monotonic,
        max_clients: int = 4096,
    ) -> None:
        self.per_client = per_client
        self.window_s = window_s
        self.hall_limit = hall_limit
        self.hall_window_s = hall_window_s
        self.max_clients = max_clients
        self._now = monotonic
        self._clients: OrderedDict[str, deque[float]] = OrderedDict()
        self._hall: deque[float] = deque()
        self._lock = threading.Lock()
        self.refused = 0

    def _expire(self, now: float) -> None:
        while self._hall and self._hall[0] <= now - self.hall_window_s:
            self._hall.popleft()
        # Clients are kept in the order they were last counted: the stalest come first.
        while self._clients:
            key, hits = next(iter(self._clients.items()))
            while hits and hits[0] <= now - self.window_s:
                hits.popleft()
            if hits:
                break
            del self._clients[key]

    def check(self, key: str) -> None:
        """Raise RateLimited if a submission from ``key`` now would be one too many."""
        with self._lock:
            now = self._now()
            self._expire(now)
            if len(self._hall) >= self.hall_limit:
                self.refused += 1
                wait = self._hall[0] + self.hall_window_s - now
                raise RateLimited(f"the complaint box has taken {len(self._hall)} complaints in the last {self.hall_window_s / 60:.0f} minutes; try again in {_minutes(wait)}", wait)
            hits = self._clients.get(key)
            if hits is not None:
                while hits and hits[0] <= now - self.window_s:
                    hits.popleft()
                if len(hits) >= self.per_client:
                    self.refused += 1
                    wait = hits[0] + self.window_s - now
                    raise RateLimited(f"{len(hits)} complaints were sent from this device in the last {self.window_s / 60:.0f} minutes; try again in {_minutes(wait)}", wait)

    def count(self, key: str) -> None:
        """Count one submission from ``key`` (after it was recorded)."""
        with self._lock:
            now = self._now()
            self._expire(now)
            self._hall.append(now)
            hits = self._clients.pop(key, None) or deque()
            hits.append(now)
            self._clients[key] = hits
            while len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)

    @property
    def saturated(self) -> bool:
        """True while the hall-wide limit is reached (the daemon may raise an alarm)."""
        with self._lock:
            self._expire(self._now())
            return len(self._hall) >= self.hall_limit

    def clients(self) -> int:
        """How many client keys are held right now (for tests and the status page)."""
        with self._lock:
            self._expire(self._now())
            return len(self._clients)


def _minutes(seconds: float) -> str:
    minutes = max(1, int(-(-seconds // 60)))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


class AddressKey:
    """Turns a client address into an opaque limiter key: an HMAC under a secret kept in memory.

    The secret is replaced every ``rotate_s`` (a few limiter windows), so a key cannot be
    traced back to an address by anyone who reads the process's memory later, and nothing
    links one day's keys to another's. At a rotation a client starts afresh: the hall-wide
    limit still holds.
    """

    def __init__(self, rotate_s: float = 3600.0, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.rotate_s = rotate_s
        self._now = monotonic
        self._lock = threading.Lock()
        self._secret = secrets.token_bytes(32)
        self._since = monotonic()

    def __call__(self, address: str) -> str:
        with self._lock:
            now = self._now()
            if now - self._since >= self.rotate_s:
                self._secret = secrets.token_bytes(32)
                self._since = now
            secret = self._secret
        return hmac.new(secret, address.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()[:32]

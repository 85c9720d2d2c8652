"""The complaint box as the page runs it: the supervisor's key, flood control, the staff form's sink, the notice's QR codes.

One ``ComplaintBox`` per app (``init_app``): the key is read once when the page starts, and
the limiters count in this process's memory only — a restart forgets them, which only helps
the citizen. Nothing here holds a client address: the limiters see ``AddressKey``'s keyed
hash, whose secret is replaced every ``ADDRESS_ROTATE_S``.
"""

from __future__ import annotations

import base64
import io
import sqlite3
import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable

from services.complaints import AddressKey, Complaints, KeyInvalid, Sealer, SubmissionLimiter
from services.sink import EventSpec

from ...accounts import Accounts
from ...config import ComplaintsConfig
from ...events import Recorder
from ..hall import Hall

if TYPE_CHECKING:
    import segno

# Submissions: config.complaints.per_client_per_hour per client in an hour, and
# config.complaints.per_minute for the whole form in a minute.
SUBMIT_WINDOW_S = 3600.0
HALL_SUBMIT_WINDOW_S = 60.0
# Lookups of codes that name nothing: a guesser needs about 2^54 tries per hit, and a citizen
# who mistypes their own code a few times is not held back (typos are caught by the check
# character before they count).
LOOKUP_PER_CLIENT = 10
LOOKUP_WINDOW_S = 600.0
LOOKUP_HALL_LIMIT = 300
LOOKUP_HALL_WINDOW_S = 3600.0
# Two of the per-client windows: at a rotation a client starts afresh, so a longer period
# lets fewer through; a shorter one keeps a key linkable to its address for less time.
ADDRESS_ROTATE_S = 2 * SUBMIT_WINDOW_S

# What the staff form adds at the top of the sealed text, so the supervisor knows where a
# transcribed complaint came from (the event itself says only "transcribed", and by whom).
# Chinese whatever the page's language: the county reads it.
SOURCE_NOTES = {"paper": "【来源：纸质意见箱，工作人员录入】", "phone": "【来源：电话，工作人员录入】"}
AUDIT_TRANSCRIBED = "complaint.transcribed"

# Special in a WIFI: QR payload (ZXing's format): each is escaped with a backslash.
WIFI_SPECIAL = '\\;,":'
QR_SCALE = 8  # PNG pixels per module: sharp when printed 4–5 cm wide
QR_BORDER = 4  # the quiet zone the QR standard asks for


def open_sealer(config: ComplaintsConfig) -> tuple[Sealer | None, str | None]:
    """The supervisor's sealer, or None and why the box is closed (for the hall's page)."""
    if config.public_key is None:
        return None, "no supervisor key is configured ([complaints] public_key)"
    try:
        return Sealer.from_file(config.public_key), None
    except KeyInvalid as exc:
        return None, str(exc)


class ComplaintBox:
    """What the complaint pages keep while the page runs: the sealer and the flood limiters."""

    def __init__(self, config: ComplaintsConfig, windows: dict[str, str], monotonic: Callable[[], float]) -> None:
        self.config = config
        self.windows = windows
        self.sealer, self.closed_reason = open_sealer(config)
        self.submissions = SubmissionLimiter(
            per_client=config.per_client_per_hour,
            window_s=SUBMIT_WINDOW_S,
            hall_limit=config.per_minute,
            hall_window_s=HALL_SUBMIT_WINDOW_S,
            monotonic=monotonic,
        )
        self.lookups = SubmissionLimiter(
            per_client=LOOKUP_PER_CLIENT,
            window_s=LOOKUP_WINDOW_S,
            hall_limit=LOOKUP_HALL_LIMIT,
            hall_window_s=LOOKUP_HALL_WINDOW_S,
            monotonic=monotonic,
        )
        self.client_key = AddressKey(ADDRESS_ROTATE_S, monotonic=monotonic)
        # Held from the limit check to the count, so the check and the count agree.
        self.submitting = threading.Lock()

    @property
    def open(self) -> bool:
        """True while complaints can be sealed (a readable supervisor key is installed)."""
        return self.sealer is not None

    def service(self, h: Hall, sink: Any = None) -> Complaints:
        """The complaint service over the page's store; ``sink`` defaults to the page's Recorder."""
        return Complaints(sink or h.recorder, h.store, h.clock, self.sealer, self.windows)


class TranscriptionSink:
    """The staff form's sink: the complaint's event through the page's Recorder, with an audit row in its transaction.

    The audit row says what was done and by whom — the receipt, the category, where the
    complaint came from — never what it says.
    """

    def __init__(self, recorder: Recorder, accounts: Accounts, username: str, source: str) -> None:
        self.recorder = recorder
        self.accounts = accounts
        self.username = username
        self.source = source
        self.boot_id = recorder.boot_id

    def record_together(self, events: list[EventSpec]) -> list[Any]:
        first = events[0]
        detail = {"receipt": first.data.get("receipt"), "category": first.data.get("category"), "source": self.source}

        def domain(conn: sqlite3.Connection, envelope: dict) -> None:
            if first.domain is not None:
                first.domain(conn, envelope)
            self.accounts.audit(self.username, AUDIT_TRANSCRIBED, detail | {"event_id": envelope["event_id"]}, conn=conn)

        return self.recorder.record_together([replace(first, domain=domain), *events[1:]])

    # Alarms are the daemon's (see PageSink); the complaint service raises none on intake.
    def raise_alarm(self, code: str, detail: str) -> None:
        pass

    def clear_alarm(self, code: str) -> None:
        pass


# -- the wall notice's QR codes ------------------------------------------------------------


def wifi_escape(value: str) -> str:
    """A Wi-Fi name or password as a WIFI: payload needs it: ``\\ ; , " :`` each behind a backslash."""
    return "".join("\\" + ch if ch in WIFI_SPECIAL else ch for ch in value)


def wifi_payload(ssid: str, password: str | None) -> str:
    """What the Wi-Fi QR code holds: ``WIFI:T:WPA;S:<ssid>;P:<password>;;``, or ``T:nopass`` for an open network."""
    if password:
        return f"WIFI:T:WPA;S:{wifi_escape(ssid)};P:{wifi_escape(password)};;"
    return f"WIFI:T:nopass;S:{wifi_escape(ssid)};;"


def make_qr(data: str) -> "segno.QRCode":
    """The QR code of ``data``: always a full QR code (phones' cameras do not read Micro QR)."""
    # Error level M at least (segno raises it when the version has room to spare): a printed
    # notice gets scratched and faded.
    # Imported here: only the printed notice needs it (segno's writers pull in xml.sax).
    import segno

    return segno.make_qr(data, error="m")


def qr_data_uri(data: str) -> str:
    """The QR code of ``data`` as a ``data:image/png`` URI (the page's CSP allows data: images)."""
    # A 1-bit PNG, scaled with image-rendering: pixelated, prints as sharp as an SVG and
    # is what a test can decode back to the address.
    out = io.BytesIO()
    make_qr(data).save(out, kind="png", scale=QR_SCALE, border=QR_BORDER)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def lookup_address(address: str | None) -> str | None:
    """The lookup page's address beside the form's (``…/ts`` → ``…/ts/receipt``), or None when it cannot be told."""
    if not address:
        return None
    trimmed = address.rstrip("/")
    return trimmed + "/receipt" if trimmed.endswith("/ts") else None

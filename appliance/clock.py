"""Time on a Pi without a real-time clock.

After a power cut the Pi starts at its last saved time, hours or days behind. Every event
therefore carries the boot id and a monotonic reading beside the wall time, and whether the
wall clock was synchronised. Anything that judges the time of day asks ``is_synced()`` and
keeps its verdict provisional until it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol

# Asia/Shanghai has had no daylight saving since 1991: a fixed offset is exact and needs no tzdata.
HALL_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")


class Clock(Protocol):
    """What the appliance asks of a clock; the system one, or a fake in tests."""

    def now(self) -> datetime:
        """The wall time, aware, in the hall's time zone."""

    def monotonic_ns(self) -> int:
        """A reading that only moves forward within one boot."""

    def is_synced(self) -> bool:
        """True once the wall time is known to be right (NTP has synchronised)."""


def boot_id() -> str:
    """The kernel's id for this boot, so monotonic readings can be tied to one boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return str(uuid.uuid4())


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h>; only `modes` (in) and `status` (out) are used. The
    # trailing padding covers the reserved fields the kernel writes.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


_STA_UNSYNC = 0x0040
_TIME_ERROR = 5


def kernel_ntp_synced() -> bool | None:
    """The kernel's NTP state, as timedatectl's NTPSynchronized reads it; None if unknown.

    adjtimex() with modes=0 only reads, needs no privilege, and is what systemd-timesyncd,
    chrony and ntpd all update, so one check serves whichever the image runs.
    """
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR and not (tx.status & _STA_UNSYNC)


class SystemClock:
    """The real clock; ``source`` is 'system', 'assume_synced' or 'assume_unsynced'."""

    def __init__(self, source: str = "system") -> None:
        self.source = source

    def now(self) -> datetime:
        return datetime.now(HALL_TZ)

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def is_synced(self) -> bool:
        if self.source == "assume_synced":
            return True
        if self.source == "assume_unsynced":
            return False
        return bool(kernel_ntp_synced())


class FakeClock:
    """A clock a test moves by hand: ``advance()`` moves both readings, ``set_wall()`` jumps."""

    def __init__(self, start: datetime | None = None, synced: bool = True) -> None:
        self._wall = start or datetime(2026, 11, 25, 9, 0, tzinfo=HALL_TZ)
        self._mono = 1_000_000_000
        self.synced = synced

    def now(self) -> datetime:
        return self._wall

    def monotonic_ns(self) -> int:
        return self._mono

    def is_synced(self) -> bool:
        return self.synced

    def advance(self, seconds: float) -> None:
        self._wall += timedelta(seconds=seconds)
        self._mono += int(seconds * 1e9)

    def set_wall(self, wall: datetime, synced: bool | None = None) -> None:
        self._wall = wall
        if synced is not None:
            self.synced = synced

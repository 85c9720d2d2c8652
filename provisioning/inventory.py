"""The county's inventory of hall devices: who each one is, and checking a spreadsheet of them.

A device is its county, township, hall name and device id (which is also its MQTT username
and the device level of its topics), with an optional fixed address (it goes into the page's
certificate) and an optional Raspberry Pi serial (the enrolment refuses a bundle on another
Pi). Ids are checked by ``appliance.config`` itself, so the inventory can never hold an id
the device's own config would refuse.

Import is all or nothing: every bad row is reported with its line and field, and nothing is
imported while any row is bad.
"""

from __future__ import annotations

import csv
import difflib
import io
import ipaddress
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

from appliance.config import parse_config
from appliance.errors import ConfigError

from .complaints import ProvisionError

# The CSV's columns; device, township and hall are required, county defaults to the workspace's.
COLUMNS = ("device", "township", "hall", "county", "address", "serial")
REQUIRED = ("device", "township", "hall")
# Other spellings a spreadsheet may use for a column.
ALIASES = {"device_id": "device", "id": "device", "hall_name": "hall", "ip": "address", "pi_serial": "serial"}
# The config's [device] keys, by the inventory field they come from.
CONFIG_FIELD = {"device.id": "device", "device.township": "township", "device.hall": "hall", "device.county": "county"}
# A Pi's serial as /proc/device-tree/serial-number (or /proc/cpuinfo) gives it: hex digits.
SERIAL = re.compile(r"[0-9a-f]{8,16}")
SERIAL_FIX = "copy it from the Pi with: cat /proc/device-tree/serial-number (8 to 16 hex digits), or leave it empty"


class InventoryInvalid(ProvisionError, ValueError):
    """Rows of an inventory (or one device given on the command line) are bad; ``problems`` lists each."""

    def __init__(self, problems: list["RowProblem"], source: str) -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem{'s' if len(problems) != 1 else ''}, nothing imported:\n{lines}")


class UnknownDevice(ProvisionError, LookupError):
    """The device is not in the inventory."""


@dataclass(frozen=True)
class RowProblem:
    """One bad field: where (line, field), the value found, what is wrong and the fix."""

    line: int | None
    field: str
    value: str
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.field} = {self.value!r}: {self.message}. Fix: {self.fix}"


@dataclass(frozen=True)
class Device:
    """One hall device in the inventory."""

    id: str
    county: str
    township: str
    hall: str
    address: str | None = None
    serial: str | None = None
    added: str = ""
    # When it was revoked (no password, no ACL entry), or None.
    revoked: str | None = None
    # The broker password's hash ($7$…) of its latest bundle; the password itself is only in the bundle.
    password_hash: str | None = None
    bundled: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked is None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Device":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in doc.items() if k in known})


def normalise_serial(value: str) -> str:
    """A serial as compared: lower case, without the NUL and blanks /proc/device-tree leaves."""
    return value.strip().strip("\x00").strip().lower()


@dataclass
class Candidate:
    """A device as given (a CSV row or ``add``'s options), before it is checked."""

    line: int | None
    values: dict[str, str] = field(default_factory=dict)


def check_candidates(candidates: list[Candidate], county: str, existing: Iterable[Device], now: str, source: str = "the inventory") -> list[Device]:
    """The devices, or InventoryInvalid listing every problem of every candidate (nothing partial)."""
    problems: list[RowProblem] = []
    existing = list(existing)
    taken_ids = {d.id: d for d in existing}
    taken_addresses = {d.address: d for d in existing if d.address and d.active}
    taken_serials = {d.serial: d for d in existing if d.serial and d.active}
    seen_ids: dict[str, int | None] = {}
    seen_addresses: dict[str, int | None] = {}
    seen_serials: dict[str, int | None] = {}
    devices = []

    def where(line: int | None) -> str:
        return f"line {line}" if line is not None else "the command line"

    for c in candidates:
        v = {k: (c.values.get(k) or "").strip() for k in COLUMNS}
        row_county = v["county"] or county
        before = len(problems)
        try:
            # The device's own config check: the same rules, the same messages.
            parse_config({"device": {"id": v["device"], "hall": v["hall"], "township": v["township"], "county": row_county}})
        except ConfigError as exc:
            for p in exc.problems:
                name = CONFIG_FIELD.get(p.path, p.path)
                problems.append(RowProblem(c.line, name, v.get(name, ""), p.message, p.fix))
        if v["county"] and v["county"] != county:
            problems.append(RowProblem(c.line, "county", v["county"], f"is not this workspace's county ({county})", f"leave it empty or write {county}; another county needs its own workspace"))
        address = None
        if v["address"]:
            try:
                address = str(ipaddress.ip_address(v["address"]))
            except ValueError:
                problems.append(RowProblem(c.line, "address", v["address"], "is not an IP address", "give the hall's fixed address, e.g. 10.15.3.21, or leave it empty"))
        serial = normalise_serial(v["serial"]) or None
        if serial is not None and not SERIAL.fullmatch(serial):
            problems.append(RowProblem(c.line, "serial", v["serial"], "is not a Raspberry Pi serial number", SERIAL_FIX))
            serial = None
        if v["device"]:
            if v["device"] in taken_ids:
                d = taken_ids[v["device"]]
                state = f"revoked {d.revoked}" if d.revoked else f"added {d.added}"
                problems.append(RowProblem(c.line, "device", v["device"], f"is already in the inventory ({d.hall}, {state})", "give each device its own id; a replacement Pi for the same hall keeps its entry: just build a new bundle for it"))
            elif v["device"] in seen_ids:
                problems.append(RowProblem(c.line, "device", v["device"], f"repeats {where(seen_ids[v['device']])}", "give each device its own id"))
            else:
                seen_ids[v["device"]] = c.line
        for value, taken, seen, name in ((address, taken_addresses, seen_addresses, "address"), (serial, taken_serials, seen_serials, "serial")):
            if value is None:
                continue
            if value in taken:
                problems.append(RowProblem(c.line, name, value, f"is already device {taken[value].id}'s", f"check the {name}; every device has its own"))
            elif value in seen:
                problems.append(RowProblem(c.line, name, value, f"repeats {where(seen[value])}", f"check the {name}; every device has its own"))
            else:
                seen[value] = c.line
        if len(problems) == before:
            devices.append(Device(v["device"], county, v["township"], v["hall"].strip(), address, serial, added=now))
    if problems:
        raise InventoryInvalid(problems, source)
    return devices


def read_csv(path: Path) -> tuple[list[Candidate], list[RowProblem], str | None]:
    """The rows of an inventory CSV as candidates, problems with its shape, and a note on its encoding."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProvisionError(f"{path}: cannot be read ({exc.strerror}); give the path of the inventory CSV") from None
    note = None
    try:
        # utf-8-sig: Excel and WPS write "CSV UTF-8" with a byte-order mark.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        # A Chinese Excel saves plain "CSV" in the ANSI code page (GBK); GB18030 reads it.
        try:
            text = raw.decode("gb18030")
        except UnicodeDecodeError as exc:
            raise ProvisionError(f"{path}: is neither UTF-8 nor GB18030 text (byte {exc.start}); save it as 'CSV UTF-8'") from None
        note = f"{path}: not UTF-8; read as GB18030 (Excel's Chinese 'CSV'). Check the hall names below; to be sure, save it as 'CSV UTF-8'"
    problems: list[RowProblem] = []
    candidates: list[Candidate] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    header_line = 0
    last = 0
    try:
        for row in reader:
            line = last + 1  # where this row starts (a quoted cell may span lines)
            last = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header_line = line
                header = []
                for i, name in enumerate(row):
                    key = name.strip().lower().replace(" ", "_")
                    key = ALIASES.get(key, key)
                    if key not in COLUMNS:
                        close = difflib.get_close_matches(key, COLUMNS, n=1)
                        problems.append(RowProblem(line, f"column {i + 1}", name, "is not a column of the inventory", f"did you mean '{close[0]}'?" if close else f"columns are: {', '.join(COLUMNS)}"))
                    elif key in header:
                        problems.append(RowProblem(line, f"column {i + 1}", name, f"repeats column {header.index(key) + 1}", "keep one column of each"))
                    header.append(key)
                for need in REQUIRED:
                    if need not in header:
                        problems.append(RowProblem(line, need, "(missing)", "is a required column", f"the first row names the columns: {', '.join(REQUIRED)} (required) and county, address, serial"))
                continue
            if len(row) > len(header) and any(cell.strip() for cell in row[len(header):]):
                problems.append(RowProblem(line, f"column {len(header) + 1}", row[len(header)], f"is beyond the {len(header)} columns the first row names", "remove the extra cells or name the column"))
            candidates.append(Candidate(line, {k: row[i] for i, k in enumerate(header) if i < len(row) and k in COLUMNS}))
    except csv.Error as exc:
        problems.append(RowProblem(reader.line_num, "row", "", f"cannot be read as CSV ({exc})", "check the quotes on that line"))
    if header is None:
        problems.append(RowProblem(None, "file", str(path), "has no rows", f"the first row names the columns ({', '.join(COLUMNS)}), then one row per device"))
    elif not candidates and not problems:
        problems.append(RowProblem(header_line, "file", str(path), "has a header but no devices", "add one row per device"))
    return candidates, problems, note


def import_csv(path: Path, county: str, existing: list[Device], now: str) -> tuple[list[Device], str | None]:
    """Check every row of the CSV; the new devices, or InventoryInvalid with every problem."""
    candidates, problems, note = read_csv(path)
    try:
        devices = check_candidates(candidates, county, existing, now)
    except InventoryInvalid as exc:
        problems = problems + exc.problems
        devices = []
    if problems:
        problems.sort(key=lambda p: (p.line or 0))
        raise InventoryInvalid(problems, str(path))
    return devices, note


def revoke(devices: list[Device], device_id: str, now: str) -> list[Device]:
    """The inventory with ``device_id`` revoked (its password hash dropped)."""
    found = find(devices, device_id)
    if found.revoked:
        raise ProvisionError(f"device {device_id} was already revoked at {found.revoked}; nothing changed")
    return [replace(d, revoked=now, password_hash=None) if d.id == device_id else d for d in devices]


def find(devices: list[Device], device_id: str) -> Device:
    """The device with this id, or UnknownDevice naming the closest ids."""
    for d in devices:
        if d.id == device_id:
            return d
    close = difflib.get_close_matches(device_id, [d.id for d in devices], n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "add it first with hall-provision add or import"
    raise UnknownDevice(f"device {device_id!r} is not in the inventory; {hint}")

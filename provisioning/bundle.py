"""One device's enrolment bundle (``hall-provision bundle``).

The bundle is a tar.gz of the files ``appliance.enroll.FILES`` lists and a ``manifest.json``
with the sha256 of each: the device's complete ``appliance.toml``, a new broker password
(the workspace keeps only its hash, for the broker's password file), the county CA, the
config page's certificate and key for ``<device-id>.local`` (and the hall's fixed address),
the complaint supervisor's public key when the workspace has it, and a one-time password for
the page's county IT account. Building a bundle again rotates the broker password: the
previous bundle stops working once the broker files are reloaded.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import tarfile
import time
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from appliance.accounts import generate_password
from appliance.config import parse_config
from appliance.enroll import BUNDLE_FORMAT, BUNDLE_KIND, COUNTY_IT_ACCOUNT, DEFAULT_ETC, MANIFEST
from appliance.errors import ConfigError
from services.complaints import PUBLIC_KEY_TAG, KeyInvalid, parse_key_file, show_fingerprint, key_id

from . import inventory, pki
from .broker_files import BrokerFiles, write_broker_files
from .complaints import ProvisionError
from .inventory import Device
from .mosquitto import password_hash
from .workspace import GENERATED_SECTIONS, Settings, Workspace, now_text, toml_string, write_private


@dataclass(frozen=True)
class Built:
    """A bundle just built, and what county IT needs to know about it."""

    device: Device
    path: Path
    sha256: str
    sheet: str
    sheet_path: Path
    broker_files: BrokerFiles


def device_config(device: Device, settings: Settings, template: str, *, complaints_key: bool) -> str:
    """The device's complete appliance.toml: its own sections, then the county's standard kit."""
    lines = [
        f"# Hall appliance config of {device.id} ({device.hall}), county {device.county}.",
        f"# Made by hall-provision bundle at {now_text()}; installed by hall-appliance enroll as",
        f"# {DEFAULT_ETC}/appliance.toml. Relative paths are taken from that directory.",
        "# Every key is explained in config/appliance.example.toml.",
        "",
        "[device]",
        f"id = {toml_string(device.id)}",
        f"hall = {toml_string(device.hall)}",
        f"township = {toml_string(device.township)}",
        f"county = {toml_string(device.county)}",
        "",
        "[broker]",
        f"host = {toml_string(settings.broker_host)}",
        f"port = {settings.broker_port}",
        f"username = {toml_string(device.id)}",
        'password_file = "broker-password"',
        "",
        "[broker.tls]",
        "# The county CA: the broker's certificate must be signed by it and name the host above.",
        'ca_file = "ca.crt"',
        "",
        "[web]",
        'host = "0.0.0.0"',
        f"port = {settings.web_port}",
        f"# Signed by the county CA for {device.id}.local" + (f" and {device.address}" if device.address else "") + ".",
        'cert_file = "web.crt"',
        'key_file = "web.key"',
        "",
    ]
    if settings.ntp_server:
        lines += ["[clock]", f"ntp_server = {toml_string(settings.ntp_server)}", ""]
    if complaints_key:
        lines += ["[complaints]", 'public_key = "complaints.pub"', ""]
    lines += ["# -- The county's standard kit (the workspace's device-template.toml) --", "", template.rstrip(), ""]
    return "\n".join(lines)


def _template(ws: Workspace, settings: Settings) -> str:
    path = ws.resolve(settings.device_template)
    try:
        text = path.read_text(encoding="utf-8")
        doc = tomllib.loads(text)
    except OSError as exc:
        raise ProvisionError(f"{path}: cannot be read ({exc.strerror}); restore the county's device template (hall-provision init writes one)") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProvisionError(f"{path}: is not valid TOML ({exc}); correct it") from None
    clash = [k for k in doc if k in GENERATED_SECTIONS]
    if clash:
        raise ProvisionError(f"{path}: [{clash[0]}] is written by hall-provision bundle for each device; remove it from the template ({', '.join(GENERATED_SECTIONS)} are the bundle's)")
    return text


def _complaints_key(ws: Workspace, settings: Settings) -> bytes | None:
    path = ws.complaints_key(settings)
    if path is None:
        return None
    text = path.read_text(encoding="utf-8")
    try:
        # Checked as a PUBLIC key: a private key put here by mistake must never reach a hall.
        parse_key_file(text, PUBLIC_KEY_TAG, str(path))
    except KeyInvalid as exc:
        raise ProvisionError(f"{path}: {exc}; the workspace's complaints_public_key must be the public key keygen wrote (--public-out)") from None
    return text.encode("utf-8")


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            info.mtime = now
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_bundle(ws: Workspace, device_id: str, *, out: str | Path | None = None, serial: str | None = None) -> Built:
    """Build (or rebuild, rotating the broker password) one device's bundle, and refresh the broker files."""
    with ws.lock():
        settings = ws.settings()
        devices = ws.devices()
        device = inventory.find(devices, device_id)
        if not device.active:
            raise ProvisionError(f"device {device_id} was revoked at {device.revoked}; a revoked device gets no bundle. Give the hall a new device id (hall-provision add)")
        if serial is not None:
            value = inventory.normalise_serial(serial)
            if not inventory.SERIAL.fullmatch(value):
                raise ProvisionError(f"--serial {serial!r} is not a Raspberry Pi serial number; {inventory.SERIAL_FIX}")
            other = next((d for d in devices if d.serial == value and d.id != device.id and d.active), None)
            if other:
                raise ProvisionError(f"--serial {value} is already device {other.id}'s; check the serial")
            device = replace(device, serial=value)
        template = _template(ws, settings)
        complaints_pub = _complaints_key(ws, settings)
        ca = pki.Issued(ws.ca_cert_path.read_bytes(), ws.ca_key_path.read_bytes())

        broker_password = secrets.token_urlsafe(24)
        initial_password = generate_password()
        web = pki.issue_server_cert(ca, f"{device.id}.local", [f"{device.id}.local"], [device.address] if device.address else [], pki.WEB_DAYS)
        config_text = device_config(device, settings, template, complaints_key=complaints_pub is not None)
        try:
            parse_config(tomllib.loads(config_text), base_dir=Path(DEFAULT_ETC))
        except tomllib.TOMLDecodeError as exc:
            raise ProvisionError(f"the config made for {device.id} is not valid TOML ({exc}); check the inventory's entry and {ws.resolve(settings.device_template)}") from None
        except ConfigError as exc:
            problems = "\n".join(f"  - {p}" for p in exc.problems)
            raise ProvisionError(f"the config for {device.id} would be refused by the device; correct {ws.resolve(settings.device_template)}:\n{problems}") from None

        files: dict[str, bytes] = {
            "appliance.toml": config_text.encode("utf-8"),
            "ca.crt": ca.cert_pem,
            "broker-password": (broker_password + "\n").encode(),
            "web.crt": web.cert_pem + ca.cert_pem,  # the chain, so a client needs only the CA
            "web.key": web.key_pem,
            "initial-password": (initial_password + "\n").encode(),
        }
        if complaints_pub is not None:
            files["complaints.pub"] = complaints_pub
        created = now_text()
        manifest = {
            "kind": BUNDLE_KIND,
            "format": BUNDLE_FORMAT,
            "device": device.id,
            "county": device.county,
            "township": device.township,
            "hall": device.hall,
            "address": device.address,
            "serial": device.serial,
            "created": created,
            "files": {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)} for name, data in files.items()},
        }
        archive = _tar({MANIFEST: json.dumps(manifest, ensure_ascii=False, indent=2).encode("utf-8") + b"\n", **files})
        path = Path(out) if out else ws.bundle_path(device.id)
        # The bundle first: if anything after fails, the broker still knows the old password.
        write_private(path, archive, 0o600)
        device = replace(device, password_hash=password_hash(broker_password), bundled=created)
        ws.update_device(device)
        broker = write_broker_files(ws)
        digest = hashlib.sha256(archive).hexdigest()
        sheet = enrolment_sheet(device, settings, path, digest, initial_password, ca.cert_pem, web.cert_pem, complaints_pub)
        write_private(ws.sheet_path(device.id), sheet, 0o600)
    return Built(device, path, digest, sheet, ws.sheet_path(device.id), broker)


def enrolment_sheet(device: Device, settings: Settings, path: Path, digest: str, initial_password: str, ca_pem: bytes, web_pem: bytes, complaints_pub: bytes | None) -> str:
    """What county IT needs for one device, on one page: the one-time password, addresses, fingerprints."""
    page = f"https://{device.id}.local:{settings.web_port}/"
    lines = [
        f"Enrolment sheet: {device.id}   (keep it safe: it holds a password; destroy it after the first sign-in)",
        "",
        f"  hall         {device.hall}",
        f"  township     {device.township}   county {device.county}",
        f"  Pi serial    {device.serial or '(not recorded: the bundle fits any Pi)'}",
        f"  bundle       {path}",
        f"               sha256 {digest}, made {device.bundled}",
        "",
        "Config page",
        f"  address      {page}" + (f"   or https://{device.address}:{settings.web_port}/" if device.address else ""),
        f"  sign in as   {COUNTY_IT_ACCOUNT}",
        f"  password     {initial_password}   (one time: it must be changed at the first sign-in)",
        f"  certificate  valid until {pki.not_after(web_pem):%Y-%m-%d}; signed by the county CA",
        f"  county CA    SHA-256 {pki.fingerprint(ca_pem)}",
        "               (install the workspace's ca/ca.crt on the PCs that open the page)",
        "",
        "Broker",
        f"  {settings.broker_host}:{settings.broker_port} (TLS) as {device.id}; the password is only in the bundle,",
        "  the broker keeps its hash. A new bundle for this device makes this one useless.",
    ]
    if complaints_pub is not None:
        try:
            public = parse_key_file(complaints_pub.decode(), PUBLIC_KEY_TAG, "complaints.pub")
            lines.append(f"  complaint box key fingerprint {show_fingerprint(key_id(public))}")
        except KeyInvalid:
            pass
    else:
        lines.append("  no complaint supervisor's key in the workspace: the hall's complaint box stays closed")
    lines += [
        "",
        "Next",
        f"  1. install the broker files (hall-provision broker-files) and reload Mosquitto",
        f"  2. on the Pi: hall-appliance enroll {path.name}   (or copy it to the SD card's boot partition)",
        f"  3. hall-provision verify {path}",
        "",
    ]
    return "\n".join(lines)

"""A county workspace: the CA, the broker's files, the inventory, the service accounts, the bundles.

One directory per county, kept on county IT's machine (an encrypted volume: it holds the CA
key and every service password)::

    workspace.toml          county, broker host and port, NTP server, where things are
    device-template.toml    the county's standard hall kit: windows, pins, board (edit it)
    inventory.json          every device (0600: it holds the broker password hashes)
    complaints.pub          the supervisor's public key, when county IT puts it here
    ca/ca.crt, ca/ca.key    the county CA (the key 0600)
    broker/                 what goes to the broker host: mosquitto.conf, ca.crt,
                            server.crt, server.key, passwords, acl
    services/NAME.password  each service account's broker password (0600)
    bundles/DEVICE.tar.gz   each device's latest bundle (0600: it holds secrets)
    sheets/DEVICE.txt       what county IT needs for that device (0600)
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator

from appliance.config import parse_config
from appliance.errors import ConfigError
from appliance.files import write_atomic

from . import pki
from .complaints import ProvisionError
from .inventory import Device
from .mosquitto import SERVICE_NAMES

FORMAT = 1
DEFAULT_BROKER_DIR = "/etc/mosquitto/hall"
DEFAULT_WEB_PORT = 8080

# The county's standard kit, copied into every device's config. Taken from
# config/appliance.example.toml; county IT edits it to match the boxes it installs.
DEVICE_TEMPLATE = """\
# The county's standard hall kit: every device's appliance.toml ends with this file.
# hall-provision bundle writes [device], [broker], [web], [clock] and [complaints] itself;
# everything else is here. Every key is explained in config/appliance.example.toml.
# Relative paths are taken from the directory of the installed appliance.toml.

[hall]
opening_hours = ["08:30-12:00", "14:30-17:30"]

[store]
path = "/var/lib/hall-appliance/hall.db"

[control]
socket = "/run/hall-appliance/control.sock"
group = "hall"

[gpio]
pin_factory = "auto"

[[windows]]
id = "w1"
name = "综合受理窗口"
buttons = { very_satisfied = 5, satisfied = 6, basically_satisfied = 13, dissatisfied = 19, very_dissatisfied = 26 }
indicator_pin = 12

[[windows]]
id = "w2"
name = "社保医保窗口"
buttons = [17, 27, 22]
indicator_pin = 23

[display]
enabled = true
driver = "max7219"
width = 128
height = 16

[badge]
enabled = false
"""

# The config sections bundle writes for each device; the template may not hold them.
GENERATED_SECTIONS = ("device", "broker", "web", "clock", "complaints")


def toml_string(value: str) -> str:
    """``value`` as a TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value, ensure_ascii=False)


def now_text() -> str:
    """The local time, to the second, with its offset: when something was made."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def write_private(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    """Write ``path`` atomically with exactly ``mode`` (a temporary file renamed over it)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, raw, mode)


class WorkspaceExists(ProvisionError, FileExistsError):
    """init never overwrites a workspace: its CA signs every device's certificate."""


class NotAWorkspace(ProvisionError, FileNotFoundError):
    """The directory is not a county workspace."""


@dataclass(frozen=True)
class Settings:
    """The workspace's own settings (workspace.toml)."""

    county: str
    broker_host: str
    broker_port: int
    ntp_server: str | None
    created: str
    broker_dir: str = DEFAULT_BROKER_DIR
    web_port: int = DEFAULT_WEB_PORT
    # Relative to the workspace, or absolute.
    complaints_public_key: str = "complaints.pub"
    device_template: str = "device-template.toml"

    def to_toml(self) -> str:
        lines = [
            "# The county workspace's settings (hall-provision init made this file).",
            "# broker_dir: where the files of broker/ live on the broker host.",
            "# complaints_public_key: the supervisor's public key; bundles carry it when the file exists",
            "#   (hall-provision complaints keygen --public-out <this path> --private-out <elsewhere>).",
            f"format = {FORMAT}",
        ]
        for key in ("county", "broker_host", "broker_port", "ntp_server", "created", "broker_dir", "web_port", "complaints_public_key", "device_template"):
            value = getattr(self, key)
            if value is None:
                continue
            lines.append(f"{key} = {value if isinstance(value, int) else toml_string(value)}")
        return "\n".join(lines) + "\n"


class Workspace:
    """A county workspace directory: paths, settings, inventory, and the lock that serialises changes."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # -- paths ---------------------------------------------------------------------------

    @property
    def settings_path(self) -> Path:
        return self.root / "workspace.toml"

    @property
    def inventory_path(self) -> Path:
        return self.root / "inventory.json"

    @property
    def ca_cert_path(self) -> Path:
        return self.root / "ca" / "ca.crt"

    @property
    def ca_key_path(self) -> Path:
        return self.root / "ca" / "ca.key"

    @property
    def broker_dir(self) -> Path:
        return self.root / "broker"

    def service_password_path(self, name: str) -> Path:
        return self.root / "services" / f"{name}.password"

    def bundle_path(self, device_id: str) -> Path:
        return self.root / "bundles" / f"hall-bundle-{device_id}.tar.gz"

    def sheet_path(self, device_id: str) -> Path:
        return self.root / "sheets" / f"{device_id}.txt"

    def resolve(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.root / p

    # -- settings --------------------------------------------------------------------------

    def settings(self) -> Settings:
        """The workspace's settings; NotAWorkspace if there is none."""
        if not self.settings_path.is_file():
            raise NotAWorkspace(f"{self.root} is not a county workspace (no workspace.toml); make one with hall-provision init DIR, or give --workspace DIR")
        try:
            doc = tomllib.loads(self.settings_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ProvisionError(f"{self.settings_path}: cannot be read ({exc}); restore it from the workspace's backup") from None
        if doc.get("format") != FORMAT:
            raise ProvisionError(f"{self.settings_path}: format = {doc.get('format')!r} is not one this hall-provision knows ({FORMAT}); use the hall-provision that made it")
        known = set(Settings.__dataclass_fields__)
        try:
            return Settings(**{k: v for k, v in doc.items() if k in known})
        except TypeError as exc:
            raise ProvisionError(f"{self.settings_path}: {exc}; restore it from the workspace's backup") from None

    def complaints_key(self, settings: Settings) -> Path | None:
        """The supervisor's public key file when the workspace has one."""
        path = self.resolve(settings.complaints_public_key)
        return path if path.is_file() else None

    # -- the inventory --------------------------------------------------------------------

    def devices(self) -> list[Device]:
        """Every device of the inventory, in the order they were added."""
        if not self.inventory_path.exists():
            return []
        try:
            doc = json.loads(self.inventory_path.read_text(encoding="utf-8"))
            return [Device.from_json(d) for d in doc["devices"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ProvisionError(f"{self.inventory_path}: cannot be read ({exc}); restore it from the workspace's backup") from None

    def save_devices(self, devices: list[Device]) -> None:
        doc = {"format": FORMAT, "devices": [d.to_json() for d in devices]}
        write_private(self.inventory_path, json.dumps(doc, ensure_ascii=False, indent=2) + "\n", 0o600)

    def update_device(self, device: Device) -> None:
        self.save_devices([device if d.id == device.id else d for d in self.devices()])

    # -- service accounts -------------------------------------------------------------------

    def service_passwords(self) -> dict[str, str]:
        """Each service account's broker password (made at init, kept 0600)."""
        out = {}
        for name in SERVICE_NAMES:
            path = self.service_password_path(name)
            if not path.exists():
                # A workspace made before an account existed: make its password once, now.
                write_private(path, secrets.token_urlsafe(24) + "\n")
            out[name] = path.read_text(encoding="utf-8").strip()
        return out

    # -- changes ----------------------------------------------------------------------------

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise changes: two county IT sessions must not both rotate passwords or rewrite the inventory."""
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ProvisionError(f"another hall-provision is changing {self.root}; wait for it to finish and try again") from None
            yield
        finally:
            os.close(fd)


def check_host(value: str, field: str) -> str:
    """A host name or address as given on the command line, or ProvisionError."""
    host = value.strip()
    if not host or any(c.isspace() for c in host) or "/" in host or ":" in host and not _is_ip(host):
        raise ProvisionError(f"{field} {value!r} is not a host name or address; give e.g. mqtt.xilinhot.example or 10.15.0.2")
    return host


def _is_ip(value: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def init(root: str | Path, county: str, broker_host: str, broker_port: int = 8883, ntp_server: str | None = None, *, broker_dir: str = DEFAULT_BROKER_DIR, web_port: int = DEFAULT_WEB_PORT) -> Workspace:
    """Create a county workspace: settings, CA, broker certificate, service passwords, device template."""
    ws = Workspace(root)
    if ws.settings_path.exists() or ws.ca_key_path.exists():
        raise WorkspaceExists(f"{ws.root} already holds a county workspace; init never overwrites one (its CA signs every device's certificate). Use it as it is, or choose another directory")
    if ws.root.exists() and any(ws.root.iterdir()):
        raise WorkspaceExists(f"{ws.root} is not empty; give a new or empty directory for the workspace")
    try:
        parse_config({"device": {"id": "x", "hall": "x", "township": "x", "county": county}})
    except ConfigError as exc:
        p = exc.problems[0]
        raise ProvisionError(f"--county {county!r}: {p.message}. Fix: {p.fix}") from None
    broker_host = check_host(broker_host, "--broker-host")
    if ntp_server is not None:
        ntp_server = check_host(ntp_server, "--ntp-server")
    for name, port in (("--broker-port", broker_port), ("--web-port", web_port)):
        if not 1 <= port <= 65535:
            raise ProvisionError(f"{name} {port} is not a TCP port; give one from 1 to 65535")
    if not broker_dir.startswith("/"):
        raise ProvisionError(f"--broker-dir {broker_dir!r} must be an absolute path on the broker host, e.g. {DEFAULT_BROKER_DIR}")
    ws.root.mkdir(parents=True, exist_ok=True)
    os.chmod(ws.root, 0o700)
    settings = Settings(county, broker_host, broker_port, ntp_server, now_text(), broker_dir, web_port)
    with ws.lock():
        ca = pki.make_ca(county)
        write_private(ws.ca_key_path, ca.key_pem, 0o600)
        write_private(ws.ca_cert_path, ca.cert_pem, 0o644)
        dns, ips = pki.host_names(broker_host)
        server = pki.issue_server_cert(ca, broker_host, dns, ips, pki.BROKER_DAYS)
        write_private(ws.broker_dir / "server.key", server.key_pem, 0o600)
        write_private(ws.broker_dir / "server.crt", server.cert_pem, 0o644)
        write_private(ws.broker_dir / "ca.crt", ca.cert_pem, 0o644)
        ws.service_passwords()
        write_private(ws.root / settings.device_template, DEVICE_TEMPLATE, 0o644)
        ws.save_devices([])
        # Only county IT's account may look inside what holds keys, passwords and bundles.
        for sub in ("ca", "services", "bundles", "sheets"):
            (ws.root / sub).mkdir(mode=0o700, exist_ok=True)
            os.chmod(ws.root / sub, 0o700)
        # Last: a workspace without its settings file is not one, so a failed init can be retried.
        write_private(ws.settings_path, settings.to_toml(), 0o644)
    return ws

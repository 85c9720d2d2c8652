"""Writing the broker's files from the workspace, and revoking a device.

``broker/passwords`` and ``broker/acl`` are made whole from the inventory every time (never
edited in place), so what the broker enforces is exactly what the inventory says: an active
device with a bundle has a password line and an ACL block, a revoked one has neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import inventory
from .mosquitto import BrokerLayout, DeviceAccount, password_hash, render_acl, render_mosquitto_conf, render_password_file
from .workspace import Workspace, now_text, write_private

RELOAD_HINT = "systemctl reload mosquitto   (or: kill -HUP $(pidof mosquitto))"


@dataclass(frozen=True)
class BrokerFiles:
    """What broker-files wrote, and for whom."""

    directory: Path
    devices: list[str]
    without_password: list[str]
    revoked: list[str]
    services: list[str]


def layout_for(ws: Workspace) -> BrokerLayout:
    """The broker layout the workspace's settings describe."""
    s = ws.settings()
    return BrokerLayout(port=s.broker_port, files_dir=Path(s.broker_dir))


def write_broker_files(ws: Workspace) -> BrokerFiles:
    """Regenerate broker/passwords, broker/acl and broker/mosquitto.conf from the inventory (call under ws.lock())."""
    settings = ws.settings()
    devices = ws.devices()
    active = [d for d in devices if d.active]
    generated = now_text()
    services = ws.service_passwords()
    accounts = [(d.id, d.password_hash) for d in active if d.password_hash]
    accounts += [(name, password_hash(pw)) for name, pw in services.items()]
    acl = render_acl(settings.county, [DeviceAccount(d.id, d.township, d.password_hash) for d in active], generated)
    # 0600 here; on the broker host they are installed 0640 root:mosquitto (docs/provisioning.md).
    write_private(ws.broker_dir / "passwords", render_password_file(accounts), 0o600)
    write_private(ws.broker_dir / "acl", acl, 0o600)
    write_private(ws.broker_dir / "mosquitto.conf", render_mosquitto_conf(settings.county, layout_for(ws), generated), 0o644)
    return BrokerFiles(
        ws.broker_dir,
        [d.id for d in active if d.password_hash],
        [d.id for d in active if not d.password_hash],
        [d.id for d in devices if not d.active],
        list(services),
    )


def revoke_device(ws: Workspace, device_id: str) -> tuple[inventory.Device, BrokerFiles]:
    """Mark the device revoked (its password hash dropped) and regenerate the broker files."""
    with ws.lock():
        devices = inventory.revoke(ws.devices(), device_id, now_text())
        ws.save_devices(devices)
        files = write_broker_files(ws)
    return inventory.find(devices, device_id), files


def install_hint(ws: Workspace) -> str:
    """How county IT puts the files on the broker host and makes Mosquitto read them."""
    s = ws.settings()
    return (
        f"copy {ws.broker_dir}/ to {s.broker_dir}/ on the broker host (passwords, acl and server.key 0640 root:mosquitto),\n"
        f"then: {RELOAD_HINT}"
    )

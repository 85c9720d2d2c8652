"""What the county's Mosquitto needs: its configuration, the password file and the ACL.

Everything here is text made from the workspace and the inventory; ``hall-provision
broker-files`` writes it and county IT copies it to the broker. The broker never learns a
device's password, only its hash, in Mosquitto's own ``$7$`` format (PBKDF2-SHA512), which
``mosquitto_passwd`` writes too and Mosquitto 2.0 reads.

The ACL follows docs/mqtt.md: one set of ``pattern`` lines confines every device to the
topics under its own id (``%u`` is the MQTT username, which is the device id and the device
level of its topics), a ``user`` block per device adds its township's and the county's
desired state, and a ``user`` block per service account says what that service may do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

# Mosquitto 2.0's own choices (mosquitto_passwd writes the same): PBKDF2-HMAC-SHA512 over a
# 12-byte salt, 101 rounds, a 64-byte digest. The broker pays the rounds at every connection
# of 200 halls, and the passwords are 128-bit random strings no guesser can reach, so more
# rounds would buy nothing.
PBKDF2_ROUNDS = 101
SALT_BYTES = 12


def password_hash(password: str, *, salt: bytes | None = None, rounds: int = PBKDF2_ROUNDS) -> str:
    """The password's hash in Mosquitto's password-file format: ``$7$rounds$salt$digest``."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, rounds, 64)
    return f"$7${rounds}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, hashed: str) -> bool:
    """True if ``password`` matches a ``$7$`` hash (what Mosquitto will decide)."""
    try:
        _, kind, rounds, salt, digest = hashed.split("$")
        if kind != "7":
            return False
        want = base64.b64decode(digest)
        got = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), base64.b64decode(salt), int(rounds), len(want))
    except ValueError:
        return False
    return hmac.compare_digest(want, got)


@dataclass(frozen=True)
class ServiceAccount:
    """A county service's broker account: its name, what it is for, and its ACL lines (``{c}``: the county)."""

    name: str
    purpose: str
    rules: tuple[str, ...]


# Service account names carry an underscore: a device id never does (appliance.config
# ID_PATTERN), so a service can never be mistaken for a device, and the device pattern lines,
# which Mosquitto applies to every account, name no topic a service could use.
SERVICE_ACCOUNTS: tuple[ServiceAccount, ...] = (
    ServiceAccount(
        "svc_aggregator",
        "the county aggregator: reads every event and status, writes acknowledgements, per-device desired state and one-off commands",
        (
            # Mosquitto reads a user's deny lines before its grants. The aggregator's "+" for
            # the device level would also match _township and _county, which belong to the
            # content publisher; and complaint.status belongs to the supervisor alone.
            "topic deny hall/v1/{c}/+/+/cmd/complaint.status",
            "topic deny hall/v1/{c}/+/_township/set/#",
            "topic deny hall/v1/{c}/_county/_county/set/#",
            "topic read hall/v1/{c}/+/+/evt/#",
            "topic read hall/v1/{c}/+/+/status",
            # read as well: after a restart it reads back the retained acks it wrote.
            "topic readwrite hall/v1/{c}/+/+/ack",
            "topic readwrite hall/v1/{c}/+/+/set/#",
            "topic write hall/v1/{c}/+/+/cmd/#",
        ),
    ),
    ServiceAccount(
        "svc_publisher",
        "the county content publisher: writes county-wide and township-wide desired state (notices, rosters, settings) and reads the devices' answers",
        (
            "topic readwrite hall/v1/{c}/_county/_county/set/#",
            "topic readwrite hall/v1/{c}/+/_township/set/#",
            "topic read hall/v1/{c}/+/+/evt/state/#",
            "topic read hall/v1/{c}/+/+/evt/command/#",
        ),
    ),
    ServiceAccount(
        "svc_supervisor",
        "the complaint supervisor (纪检监察): reads complaint events, sets a complaint's status",
        (
            "topic read hall/v1/{c}/+/+/evt/complaint/#",
            "topic write hall/v1/{c}/+/+/cmd/complaint.status",
        ),
    ),
    ServiceAccount(
        "svc_dashboard",
        "dashboards: read only (events, status, acknowledgements, desired state)",
        (
            "topic read hall/v1/{c}/+/+/evt/#",
            "topic read hall/v1/{c}/+/+/status",
            "topic read hall/v1/{c}/+/+/ack",
            "topic read hall/v1/{c}/+/+/set/#",
        ),
    ),
)
SERVICE_NAMES = tuple(s.name for s in SERVICE_ACCOUNTS)

# Every device, by pattern: %u fills the whole device level (checked with Mosquitto 2.0.11),
# so a device reads only its own commands. Its writes are granted in its own block, under its
# real township: a pattern cannot name the township, and `+` there would let a device publish
# into another township's dashboards.
DEVICE_PATTERNS = (
    "pattern read hall/v1/{c}/+/%u/ack",
    "pattern read hall/v1/{c}/+/%u/set/#",
    "pattern read hall/v1/{c}/+/%u/cmd/#",
)


@dataclass(frozen=True)
class DeviceAccount:
    """What the ACL and the password file need of one device."""

    device: str
    township: str
    password_hash: str | None


def render_acl(county: str, devices: Iterable[DeviceAccount], generated: str) -> str:
    """The Mosquitto ``acl_file`` for the county: device patterns, one block per device, one per service."""
    lines = [
        f"# Mosquitto ACL for the hall appliances of county {county}.",
        f"# Generated by `hall-provision broker-files` at {generated}; edits here are lost at the",
        "# next run: change the inventory (hall-provision add/import/revoke) instead.",
        "#",
        "# Mosquitto checks a client's own `user` block, then the `pattern` lines, which apply to",
        "# every account; whatever no line grants is refused (an MQTT v5 client sees the reason",
        "# code 'Not authorized' on its PUBACK). Devices' usernames are their ids; service",
        "# accounts carry an underscore, which no device id may contain.",
        "",
        "# Every device reads only the topics under its own id (%u is the MQTT username = the device",
        "# level): its ack, its own desired state and its one-off commands.",
        *(p.format(c=county) for p in DEVICE_PATTERNS),
        "",
        "# Each device, by name, under its own township: it writes its events (which include its",
        "# answers to commands and desired state: evt/state/…, evt/command/…) and its retained",
        "# status (its Will too), and reads its township's and the county's desired state. A",
        "# revoked device has no block here and no password.",
    ]
    for d in sorted(devices, key=lambda d: d.device):
        lines += [
            f"user {d.device}",
            f"topic write hall/v1/{county}/{d.township}/{d.device}/evt/#",
            f"topic write hall/v1/{county}/{d.township}/{d.device}/status",
            f"topic read hall/v1/{county}/{d.township}/_township/set/#",
            f"topic read hall/v1/{county}/_county/_county/set/#",
            "",
        ]
    for s in SERVICE_ACCOUNTS:
        lines.append(f"# {s.name}: {s.purpose}.")
        lines.append(f"user {s.name}")
        lines += [r.format(c=county) for r in s.rules]
        lines.append("")
    return "\n".join(lines)


def render_password_file(accounts: Iterable[tuple[str, str]]) -> str:
    """The Mosquitto ``password_file``: one ``username:$7$…`` line per account."""
    return "".join(f"{user}:{hashed}\n" for user, hashed in accounts)


@dataclass(frozen=True)
class BrokerLayout:
    """Where the broker's files live on the broker host, and how it listens."""

    port: int = 8883
    # Where county IT copies the workspace's broker/ directory on the broker host.
    files_dir: Path = Path("/etc/mosquitto/hall")
    persistence_dir: Path = Path("/var/lib/mosquitto")
    bind_address: str | None = None
    log_file: Path | None = Path("/var/log/mosquitto/mosquitto.log")
    # None: Mosquitto's own default (started as root it drops to the 'mosquitto' user).
    run_as: str | None = None


def render_mosquitto_conf(county: str, layout: BrokerLayout, generated: str) -> str:
    """A complete mosquitto.conf for the county broker (it replaces the distribution's)."""
    d = layout.files_dir
    listener = f"listener {layout.port}" + (f" {layout.bind_address}" if layout.bind_address else "")
    lines = [
        f"# Mosquitto for the hall appliances of county {county}.",
        f"# Generated by hall-provision at {generated}. Install it as /etc/mosquitto/mosquitto.conf",
        f"# (it is complete: it replaces the distribution's) with the files of the workspace's broker/",
        f"# directory in {d}; see docs/provisioning.md.",
        "",
        "# One set of security settings for every listener.",
        "per_listener_settings false",
        "",
        "# TLS only: devices check the broker against the county CA from their bundle. Devices",
        "# authenticate with a password, so no client certificate is asked for. Mosquitto 2.0",
        "# allows TLS 1.2 and 1.3 when tls_version is not set.",
        listener,
        f"cafile {d / 'ca.crt'}",
        f"certfile {d / 'server.crt'}",
        f"keyfile {d / 'server.key'}",
        "require_certificate false",
        "",
        "# Every client must log in; what each account may do is in the ACL (hall-provision broker-files).",
        "allow_anonymous false",
        f"password_file {d / 'passwords'}",
        f"acl_file {d / 'acl'}",
        "",
        "# Retained desired state, persistent sessions (one-off commands for offline halls) and the",
        "# queues of the aggregator's session must survive a broker restart. Mosquitto writes them",
        "# to disk only every autosave_interval seconds (default 1800: half an hour lost in a crash);",
        "# a minute bounds the loss, and devices resend whatever the aggregator did not acknowledge.",
        "persistence true",
        f"persistence_location {layout.persistence_dir}/",
        "autosave_interval 60",
        "",
        "# Past max_queued_messages (default 1000) Mosquitto silently drops QoS 1 messages for a",
        "# client that is slow or offline: a restarting aggregator would lose events from 200 halls",
        "# within minutes. Queue up to a million per client (about a day of a county's events),",
        "# unbounded in bytes, and keep more in flight to a subscriber that is catching up.",
        "max_queued_messages 1000000",
        "max_queued_bytes 0",
        "max_inflight_messages 100",
        "# Sessions of MQTT 3.1.1 clients that never come back are dropped after 30 days (MQTT v5",
        "# clients, the devices among them, set their own session expiry).",
        "persistent_client_expiration 30d",
        "",
    ]
    if layout.run_as:
        lines += [f"user {layout.run_as}", ""]
    if layout.log_file:
        lines += [f"log_dest file {layout.log_file}"]
    else:
        lines += ["log_dest stderr"]
    lines += [
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "# Who connected and who was refused, by client id and username.",
        "connection_messages true",
        "",
    ]
    return "\n".join(lines)

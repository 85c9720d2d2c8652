"""``hall-provision complaints``: the county supervisor's key pair, and opening sealed complaints.

``keygen`` makes the X25519 key pair the halls seal complaints to: the public key goes to
every device with its provisioning bundle, the private key stays with the complaint
supervisor (纪检监察) and nowhere else. ``open`` reads ``complaint.received`` events — from a
capture file or straight from the county broker — and prints them decrypted.

A capture file holds one MQTT payload per line, exactly what ``mosquitto_sub`` prints
without ``-v``::

    mosquitto_sub -h BROKER -p 8883 --cafile ca.crt -u svc_supervisor -P … -V mqttv5 \\
        -t 'hall/v1/+/+/+/evt/complaint/received' >> complaints.capture

Events are compact JSON with no line breaks, so every line is one event. Blank lines are
skipped; a line that ``mosquitto_sub -v`` prefixed with its topic is read from its first
``{``. Other event types in the file are passed over. See docs/complaints.md.
"""

from __future__ import annotations

import argparse
import base64
import json
import ssl
import stat
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Iterator

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, SealedBox

from services.complaints import (
    CATEGORY_BY_CODE,
    PRIVATE_KEY_TAG,
    PUBLIC_KEY_TAG,
    KeyInvalid,
    format_key_file,
    key_id,
    parse_key_file,
    show_fingerprint,
)

from .keyfiles import write_key_pair

DEFAULT_TOPIC = "hall/v1/+/+/+/evt/complaint/received"
EXIT_OK, EXIT_UNOPENED, EXIT_USAGE = 0, 1, 2


class ProvisionError(Exception):
    """A county tool cannot do what was asked; the message says what to do instead."""


class KeyFileExists(ProvisionError, FileExistsError):
    """keygen never overwrites a key file: a lost private key means unreadable complaints."""


# -- keys -----------------------------------------------------------------------------------


def keygen(private_out: str | Path, public_out: str | Path) -> str:
    """Make the supervisor's key pair; returns the key id (the public key's fingerprint).

    The private key is created 0600 and neither file may exist already. If the public key
    cannot be written, the private key just made is removed again.
    """
    secret = PrivateKey.generate()
    public = bytes(secret.public_key)
    kid = key_id(public)
    fingerprint = show_fingerprint(kid)
    private_text = format_key_file(
        PRIVATE_KEY_TAG,
        bytes(secret),
        "Complaint supervisor's PRIVATE key (hall appliance complaint box, libsodium sealed boxes).\n"
        "Whoever holds this file can read every complaint sealed to it. Keep it with the\n"
        "supervisor (offline, backed up); never put it on a hall device, a share or in e-mail.\n"
        f"Public key fingerprint: {fingerprint}",
    )
    public_text = format_key_file(
        PUBLIC_KEY_TAG,
        public,
        "Complaint supervisor's public key: install it on every hall device with its provisioning\n"
        "bundle. Devices seal complaints to it; it cannot open them.\n"
        f"Fingerprint: {fingerprint}",
    )
    write_key_pair(
        Path(private_out),
        Path(public_out),
        private_text,
        public_text,
        tool="keygen",
        why="complaints sealed to it would become unreadable",
        error=ProvisionError,
        exists=KeyFileExists,
    )
    return kid


@dataclass(frozen=True)
class SupervisorKey:
    """One private key that ``open`` may use, with the id of its public half."""

    key_id: str
    private: bytes
    path: Path


def load_private_key(path: str | Path, warn: IO[str] | None = None) -> SupervisorKey:
    """Read a private key file keygen wrote; warns when others can read it."""
    path = Path(path)
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyInvalid(f"{path}: cannot read the private key ({exc.strerror if isinstance(exc, OSError) else exc})") from None
    raw = parse_key_file(text, PRIVATE_KEY_TAG, str(path))
    if warn is not None and stat.S_IMODE(info.st_mode) & 0o077:
        print(f"warning: {path} can be read by other users (mode {stat.S_IMODE(info.st_mode):04o}); chmod 600 {path}", file=warn)
    private = PrivateKey(raw)
    return SupervisorKey(key_id(bytes(private.public_key)), raw, path)


# -- opening --------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenedComplaint:
    """A complaint event with its sealed part opened."""

    event_id: str
    receipt: str
    category: str
    channel: str
    transcribed_by: str | None
    time: str
    clock_synced: bool
    device_id: str
    hall: str
    township: str
    county: str
    seq: int | None
    text: str
    contact: str
    window: str | None
    staff: str | None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Unopened:
    """An event that could not be opened, and why (said for a person, never a traceback)."""

    where: str
    event_id: str | None
    receipt: str | None
    reason: str


def open_sealed(private_key: bytes, ciphertext: bytes) -> dict:
    """Open one sealed complaint with the supervisor's private key.

    Raises KeyInvalid when the box does not open (another key, altered bytes) or holds
    something other than a sealed complaint.
    """
    try:
        plain = SealedBox(PrivateKey(private_key)).decrypt(ciphertext)
    except CryptoError:
        raise KeyInvalid("does not open with this key: it was altered or damaged on the way, or sealed to another key") from None
    try:
        doc = json.loads(plain.decode("utf-8"))  # the padding is spaces, which JSON ignores
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise KeyInvalid("opened, but holds no sealed complaint (not UTF-8 JSON)") from None
    if not isinstance(doc, dict) or doc.get("v") != 1 or not isinstance(doc.get("text"), str):
        raise KeyInvalid("opened, but holds no sealed complaint of a version this tool knows (v 1)")
    return doc


def open_event(payload: bytes, keys: list[SupervisorKey], where: str = "payload") -> OpenedComplaint | Unopened | None:
    """Open one MQTT payload; None when it is some other event (nothing to open)."""
    try:
        env = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return Unopened(where, None, None, "is not a JSON payload (capture with mosquitto_sub without -v, one payload per line)")
    if not isinstance(env, dict):
        return Unopened(where, None, None, "is JSON but not an event object")
    if env.get("type") != "complaint.received":
        return None
    event_id = env.get("event_id") if isinstance(env.get("event_id"), str) else None
    data = env.get("data") if isinstance(env.get("data"), dict) else {}
    receipt = data.get("receipt") if isinstance(data.get("receipt"), str) else None

    def fail(reason: str) -> Unopened:
        return Unopened(where, event_id, receipt, reason)

    if receipt is None:
        return fail("has no data.receipt: not a complaint.received event as the appliance writes it")
    try:
        ciphertext = base64.b64decode(data.get("ciphertext", ""), validate=True)
    except (ValueError, TypeError):
        return fail("data.ciphertext is not base64: the payload was altered or cut short")
    if not ciphertext:
        return fail("has no data.ciphertext")
    sealed_to = data.get("key_id")
    # The key the event names first; the others too, in case key_id itself was altered.
    ordered = sorted(keys, key=lambda k: k.key_id != sealed_to)
    doc = None
    reason = "cannot be opened: no private key was given"
    for key in ordered:
        try:
            doc = open_sealed(key.private, ciphertext)
            break
        except KeyInvalid as exc:
            reason = str(exc)
    if doc is None:
        given = ", ".join(show_fingerprint(k.key_id) for k in keys)
        if isinstance(sealed_to, str) and sealed_to not in {k.key_id for k in keys}:
            return fail(f"was sealed to key {show_fingerprint(sealed_to)}, and no key given opens it (given: {given}); use the private key with that fingerprint")
        return fail(reason)
    warnings = []
    if doc.get("receipt") != receipt:
        warnings.append(f"the sealed text belongs to receipt {doc.get('receipt')}, not {receipt}: the ciphertext was moved from another complaint")
    if doc.get("category") != data.get("category"):
        warnings.append(f"sealed with category {doc.get('category')}, but the event says {data.get('category')}")
    return OpenedComplaint(
        event_id=event_id or "",
        receipt=receipt,
        category=str(data.get("category")),
        channel=str(data.get("channel")),
        transcribed_by=data.get("transcribed_by"),
        time=str(env.get("time")),
        clock_synced=bool(env.get("clock_synced")),
        device_id=str(env.get("device_id")),
        hall=str(env.get("hall")),
        township=str(env.get("township")),
        county=str(env.get("county")),
        seq=env.get("seq") if isinstance(env.get("seq"), int) else None,
        text=doc["text"],
        contact=doc.get("contact") or "",
        window=doc.get("window"),
        staff=doc.get("staff"),
        warnings=tuple(warnings),
    )


def show_complaint(c: OpenedComplaint) -> str:
    """One opened complaint as a block of text for the supervisor."""
    cat = CATEGORY_BY_CODE.get(c.category)
    clock = "" if c.clock_synced else "  (the device's clock was not synchronised: the time may be off)"
    via = "public form" if c.channel == "form" else f"transcribed by staff {c.transcribed_by}"
    about = " · ".join(x for x in (f"window {c.window}" if c.window else "", f"staff {c.staff}" if c.staff else "") if x) or "not named"
    lines = [
        f"complaint {c.receipt}  [{c.category}{' ' + cat.label if cat else ''}]  received {c.time}{clock}",
        f"  hall:    {c.hall} (device {c.device_id}, township {c.township}, county {c.county}, seq {c.seq})",
        f"  via:     {via}",
        f"  about:   {about}",
        f"  contact: {c.contact or 'none given (anonymous)'}",
        "  text:",
        *(f"    {line}" for line in c.text.splitlines() or [""]),
    ]
    lines += [f"  WARNING: {w}" for w in c.warnings]
    return "\n".join(lines) + "\n"


def show_unopened(u: Unopened) -> str:
    """One event that did not open, for the supervisor."""
    what = f"complaint {u.receipt}" if u.receipt else "event"
    ident = f" (event {u.event_id})" if u.event_id else ""
    return f"!! {u.where}: {what}{ident} {u.reason}\n"


@dataclass
class Opener:
    """Opens events one by one, writes each out, skips repeats of an event_id, and counts."""

    keys: list[SupervisorKey]
    out: IO[str]
    as_json: bool = False
    opened: int = 0
    unopened: int = 0
    warned: int = 0
    repeats: int = 0
    other: int = 0
    _seen: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, payload: bytes, where: str) -> None:
        result = open_event(payload, self.keys, where)
        with self._lock:
            if result is None:
                self.other += 1
                return
            if result.event_id in self._seen:
                # The appliance sends again whatever was not acknowledged: same event_id.
                self.repeats += 1
                return
            if isinstance(result, Unopened):
                self.unopened += 1
                text = json.dumps({"where": where, "event_id": result.event_id, "receipt": result.receipt, "error": result.reason}, ensure_ascii=False) + "\n" if self.as_json else show_unopened(result)
            else:
                # Only an event that opened counts as seen: a damaged copy must not hide a good resend.
                if result.event_id:
                    self._seen.add(result.event_id)
                self.opened += 1
                self.warned += bool(result.warnings)
                text = json.dumps(asdict(result), ensure_ascii=False) + "\n" if self.as_json else show_complaint(result)
            self.out.write(text)
            self.out.flush()

    @property
    def handled(self) -> int:
        return self.opened + self.unopened

    def summary(self) -> str:
        parts = [f"{self.opened} opened"]
        if self.unopened:
            parts.append(f"{self.unopened} could not be opened")
        if self.warned:
            parts.append(f"{self.warned} with warnings")
        if self.repeats:
            parts.append(f"{self.repeats} repeats skipped")
        if self.other:
            parts.append(f"{self.other} other events passed over")
        return ", ".join(parts)

    @property
    def exit_code(self) -> int:
        return EXIT_UNOPENED if self.unopened or self.warned else EXIT_OK


def capture_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """(line number, payload) for every payload in a capture file."""
    for number, line in enumerate(stream, 1):
        line = line.rstrip(b"\r\n")
        if not line.strip():
            continue
        if not line.lstrip().startswith(b"{") and b" {" in line:
            line = line[line.index(b" {") + 1 :]  # mosquitto_sub -v: "topic payload"
        yield number, line


def open_file(path: str, opener: Opener) -> None:
    """Open every complaint in a capture file (``-`` reads standard input)."""
    if path == "-":
        for number, payload in capture_lines(sys.stdin.buffer):
            opener.handle(payload, f"line {number}")
        return
    try:
        stream = open(path, "rb")
    except OSError as exc:
        raise ProvisionError(f"{path}: cannot read the capture file ({exc.strerror})") from None
    with stream:
        for number, payload in capture_lines(stream):
            opener.handle(payload, f"line {number}")


# -- from the broker ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerAccess:
    """How to reach the county broker as the complaint supervisor."""

    host: str
    port: int
    topic: str = DEFAULT_TOPIC
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    client_id: str | None = None
    session_expiry_s: int = 7 * 86400


def parse_host_port(value: str, tls: bool) -> tuple[str, int]:
    """``HOST:PORT``, ``HOST`` (1883, or 8883 with TLS) or ``[v6]:PORT``."""
    default = 8883 if tls else 1883
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.removeprefix(":") or str(default)
    elif value.count(":") == 1:
        host, port = value.split(":")
    else:
        host, port = value, str(default)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ProvisionError(f"--broker {value!r}: give HOST:PORT, e.g. mqtt.county.example:8883")
    return host, int(port)


def listen(access: BrokerAccess, opener: Opener, *, count: int | None = None, idle_s: float | None = None, status: IO[str] | None = None) -> None:
    """Subscribe as the supervisor and open complaints as they arrive.

    Stops after ``count`` complaints, after ``idle_s`` seconds without one, or on Ctrl-C.
    With a ``client_id`` the session is persistent: what was published while the tool was
    not running waits at the broker for the next run.
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=access.client_id or f"complaints-open-{uuid.uuid4().hex[:12]}", protocol=mqtt.MQTTv5)
    if access.username:
        client.username_pw_set(access.username, access.password)
    if access.tls:
        try:
            client.tls_set(ca_certs=access.ca_file, certfile=access.cert_file, keyfile=access.key_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (OSError, ssl.SSLError) as exc:
            raise ProvisionError(f"cannot set up TLS ({exc}); check --cafile, --client-cert and --client-key") from None
    status = status or sys.stderr
    state = threading.Condition()
    problem: list[str] = []
    ready = threading.Event()
    last = [time.monotonic()]

    def on_connect(c, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            with state:
                problem.append(f"the broker refused the connection: {reason_code}; check --username and --password-file (the complaint supervisor's account)")
                state.notify_all()
            return
        c.subscribe(access.topic, qos=1)

    def on_subscribe(c, userdata, mid, reason_codes, properties) -> None:
        bad = [str(rc) for rc in reason_codes if rc.is_failure]
        with state:
            if bad:
                problem.append(f"the broker refused the subscription to {access.topic}: {', '.join(bad)}; the account may not read complaint events")
            else:
                if not ready.is_set():
                    print(f"listening on {access.host}:{access.port} for {access.topic}", file=status, flush=True)
                ready.set()
                last[0] = time.monotonic()
            state.notify_all()

    def on_message(c, userdata, message) -> None:
        opener.handle(message.payload, message.topic)
        with state:
            last[0] = time.monotonic()
            state.notify_all()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = access.session_expiry_s if access.client_id else 0
    client.reconnect_delay_set(1, 30)
    try:
        client.connect(access.host, access.port, keepalive=30, clean_start=not access.client_id, properties=props)
    except (OSError, ssl.SSLError) as exc:
        raise ProvisionError(f"cannot connect to {access.host}:{access.port} ({exc}); check --broker, the network and --tls") from None
    client.loop_start()
    try:
        with state:
            while not problem:
                if count is not None and opener.handled >= count:
                    break
                if idle_s is not None and time.monotonic() - last[0] >= idle_s:
                    if not ready.is_set():
                        problem.append(f"no answer from {access.host}:{access.port} within {idle_s:g} s")
                    break
                state.wait(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
        client.loop_stop()
    if problem:
        raise ProvisionError(problem[0])


# -- the command line -----------------------------------------------------------------------------


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="The complaint supervisor's key pair, and opening sealed complaints (docs/complaints.md).")
    sub = parser.add_subparsers(dest="tool", metavar="{keygen,open}")

    kg = sub.add_parser("keygen", help="make the supervisor's key pair", description="Make the complaint supervisor's key pair. Never overwrites a file.")
    kg.add_argument("--private-out", required=True, metavar="PATH", help="where to write the private key (created 0600; keep it with the supervisor)")
    kg.add_argument("--public-out", required=True, metavar="PATH", help="where to write the public key (goes to every hall device)")

    op = sub.add_parser(
        "open",
        help="print complaint.received events decrypted",
        description="Open complaint.received events with the supervisor's private key and print them.",
        epilog="A capture file holds one MQTT payload per line, as `mosquitto_sub -t FILTER` prints them (without -v). Exit status: 0 all opened, 1 some could not be opened or carry warnings, 2 nothing could be read.",
    )
    op.add_argument("--key", required=True, action="append", metavar="PATH", help="the private key file; repeat for older keys after a key change")
    src = op.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", metavar="CAPTURE", help="a capture file of payloads, one per line ('-' for standard input)")
    src.add_argument("--broker", metavar="HOST:PORT", help="read from the county broker as the complaint supervisor")
    op.add_argument("--topic", default=DEFAULT_TOPIC, metavar="FILTER", help=f"topic filter with --broker (default {DEFAULT_TOPIC})")
    op.add_argument("--username", help="the broker account (the complaint supervisor's)")
    op.add_argument("--password-file", metavar="PATH", help="a file holding the account's password (kept off the command line)")
    op.add_argument("--tls", action="store_true", help="connect with TLS (port 8883 unless given)")
    op.add_argument("--cafile", metavar="PATH", help="the county CA certificate, with --tls (default: the system's CAs)")
    op.add_argument("--client-cert", metavar="PATH", help="a client certificate, with --tls")
    op.add_argument("--client-key", metavar="PATH", help="the client certificate's key, with --tls")
    op.add_argument("--client-id", help="a fixed client id makes the session persistent, so complaints published between runs wait at the broker")
    op.add_argument("--count", type=int, metavar="N", help="with --broker: stop after N complaints")
    op.add_argument("--idle", type=float, metavar="SECONDS", help="with --broker: stop after this long without a complaint")
    op.add_argument("--json", action="store_true", help="one JSON object per complaint instead of text")
    return parser


def main(argv: list[str] | None = None, prog: str = "hall-provision complaints") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        if args.tool == "keygen":
            kid = keygen(args.private_out, args.public_out)
            print(f"private key: {args.private_out} (mode 0600) — keep it with the complaint supervisor; never on a hall device")
            print(f"public key:  {args.public_out} — install it on every hall device with its provisioning bundle")
            print(f"fingerprint: {show_fingerprint(kid)}")
            return EXIT_OK
        if args.tool == "open":
            keys = [load_private_key(path, warn=sys.stderr) for path in args.key]
            opener = Opener(keys, sys.stdout, as_json=args.json)
            if args.file:
                open_file(args.file, opener)
            else:
                tls = bool(args.tls or args.cafile or args.client_cert)
                host, port = parse_host_port(args.broker, tls)
                password = None
                if args.password_file:
                    try:
                        password = Path(args.password_file).read_text(encoding="utf-8").strip()
                    except OSError as exc:
                        raise ProvisionError(f"{args.password_file}: cannot read the password ({exc.strerror})") from None
                access = BrokerAccess(host, port, args.topic, args.username, password, tls, args.cafile, args.client_cert, args.client_key, args.client_id)
                listen(access, opener, count=args.count, idle_s=args.idle)
            print(opener.summary(), file=sys.stderr)
            return opener.exit_code
    except (ProvisionError, KeyInvalid) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    parser.print_help()
    return EXIT_OK

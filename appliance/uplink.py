"""The uplink: one thread that owns the MQTT client and drains the outbox to the county broker.

MQTT v5 throughout: with 3.1.1 Mosquitto answers a publish its ACL refuses with an ordinary
PUBACK, so only v5's reason code tells delivery from refusal. A row is marked published only
on a PUBACK with a success code; after every reconnect whatever is not acknowledged is sent
again in order (consumers de-duplicate by ``event_id``). paho's own queue is memory only, so
nothing is handed to paho beyond the in-flight window.

The thread runs its own select() over the client's socket and a wake-up pipe (paho's
documented external-loop API), so a recorded event leaves at once without polling.
"""

from __future__ import annotations

import json
import logging
import os
import random
import select
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .clock import Clock
from .commands import CommandRouter
from .config import BrokerConfig
from .errors import CommandDeferred
from .events import SCOPES, Recorder, Topics
from .store import PERSON, TELEMETRY, Recorded, Store

log = logging.getLogger(__name__)

# How many outbox rows to read ahead in one query while draining a backlog.
READ_AHEAD = 500


@dataclass
class UplinkState:
    """What the uplink is doing, for the status message, the control socket and the page."""

    state: str = "starting"  # starting | disabled | connecting | connected | waiting | stopped
    broker: str = ""
    connected_since: str | None = None
    last_publish_ok: str | None = None
    last_error: str | None = None
    connect_count: int = 0
    inflight: int = 0
    refused_publishes: int = 0
    ignored_acks: int = 0
    acks: dict = field(default_factory=dict)


class Uplink(threading.Thread):
    """Connects, reconnects with jittered back-off, publishes the outbox, routes commands."""

    def __init__(
        self,
        config: BrokerConfig,
        recorder: Recorder,
        router: CommandRouter,
        clock: Clock,
        status: Callable[[], dict],
        *,
        status_interval_s: float = 60.0,
    ) -> None:
        super().__init__(name="uplink", daemon=True)
        self.config = config
        self.recorder = recorder
        self.store: Store = recorder.store
        self.topics: Topics = recorder.topics
        self.router = router
        self.clock = clock
        self.status = status
        self.status_interval_s = status_interval_s
        self.info = UplinkState(broker=f"{config.host}:{config.port}" if config.host else "")
        self._halt = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._client: mqtt.Client | None = None
        self._inflight: dict[int, int] = {}
        self._published: list[int] = []
        self._queue: deque = deque()
        self._cursor = 0
        self._ready = False
        self._window = config.inflight
        self._resync = False
        self._status_due = 0.0
        self.store.add_listener(self._on_recorded)

    # -- called from other threads --------------------------------------------------------

    def wake(self) -> None:
        """Make the uplink look at the outbox now."""
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def _on_recorded(self, recorded: Recorded) -> None:
        self.wake()

    def resync(self) -> None:
        """Send every unacknowledged row again, from the oldest."""
        self._resync = True
        self.wake()

    def publish_status_soon(self) -> None:
        """Re-publish the retained status (e.g. after an alarm changed)."""
        self._status_due = 0.0
        self.wake()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish in-flight publishes (up to ``timeout``), say offline, and disconnect."""
        self._stop_deadline = time.monotonic() + timeout
        self._halt.set()
        self.wake()
        self.join(timeout + 5)

    # -- the thread ------------------------------------------------------------------------

    def run(self) -> None:
        if not self.config.host:
            self.info.state = "disabled"
            log.info("no broker configured: recording and queueing only")
            self._halt.wait()
            return
        attempt = 0
        while not self._halt.is_set():
            self.info.state = "connecting"
            try:
                connected = self._session()
            except CommandDeferred as exc:
                # Raised through paho's on_message before it acknowledged the message: the
                # broker delivers it again after the reconnect below.
                log.warning("uplink: %s; reconnecting so that it comes again", exc)
                self.info.last_error = f"a command could not be applied yet ({exc})"
                connected = False  # back off as after a failure: the store may need a while
            except Exception as exc:  # noqa: BLE001 - the uplink must outlive any one failure
                log.exception("uplink session failed")
                self.info.last_error = f"{type(exc).__name__}: {exc}"
                connected = False
            self._teardown()
            if self._halt.is_set():
                break
            attempt = 0 if connected else attempt + 1
            delay = min(self.config.reconnect_max_s, self.config.reconnect_min_s * (2 ** min(attempt, 16)))
            delay *= random.uniform(0.5, 1.0)  # jitter: 200 halls back from a county outage must not reconnect in step
            self.info.state = "waiting"
            log.info("uplink: reconnecting in %.1f s", delay)
            self._halt.wait(delay)
        self.info.state = "stopped"

    def _make_client(self, connect_count: int) -> mqtt.Client:
        c = self.config
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.recorder.device.id,
            protocol=mqtt.MQTTv5,
        )
        password = None
        if c.password_file:
            password = c.password_file.read_text(encoding="utf-8").strip()
        client.username_pw_set(c.username, password)
        if c.tls:
            client.tls_set(
                ca_certs=str(c.tls.ca_file),
                certfile=str(c.tls.cert_file) if c.tls.cert_file else None,
                keyfile=str(c.tls.key_file) if c.tls.key_file else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        client.max_inflight_messages_set(self._window)
        client.connect_timeout = 5.0
        will = Properties(PacketTypes.WILLMESSAGE)
        # A quick reconnect within the delay resumes the session and the Will is never sent.
        will.WillDelayInterval = c.will_delay_s
        client.will_set(self.topics.status, self._status_payload(False, connect_count, "connection lost"), qos=1, retain=True, properties=will)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _session(self) -> bool:
        """One connection, from connect to loss; True if the broker accepted us."""
        count = self.store.next_connect_count()
        self.info.connect_count = count
        self._window = self.config.inflight
        client = self._make_client(count)
        self._client = client
        props = Properties(PacketTypes.CONNECT)
        # A persistent session: one-off commands sent while we are offline wait at the broker.
        props.SessionExpiryInterval = self.config.session_expiry_s
        try:
            client.connect(self.config.host, self.config.port, self.config.keepalive_s, clean_start=False, properties=props)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.info.last_error = f"cannot reach {self.info.broker}: {exc}"
            log.warning("uplink: %s", self.info.last_error)
            return False
        accepted = False
        while not self._halt.is_set():
            sock = client.socket()
            if sock is None:
                break
            if self._ready:
                accepted = True
                self._fill_window(client)
                if time.monotonic() >= self._status_due:
                    self._publish_status(client)
            if not self._poll(client, sock, 0.5):
                break
            self._flush_published()
        if self._halt.is_set() and client.socket() is not None:
            self._drain_and_leave(client)
            accepted = accepted or self._ready
        return accepted

    def _poll(self, client: mqtt.Client, sock: Any, timeout: float) -> bool:
        """One turn of the network loop; False once the connection is gone."""
        pending = sock.pending() if hasattr(sock, "pending") else 0
        rlist, wlist = [sock, self._wake_r], [sock] if client.want_write() else []
        try:
            readable, writable, _ = select.select(rlist, wlist, [], 0 if pending else timeout)
        except (OSError, ValueError):
            return False
        if self._wake_r in readable:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        if sock in readable or pending:
            if client.loop_read() != mqtt.MQTT_ERR_SUCCESS:
                return False
        if client.socket() is not None and (sock in writable or client.want_write()):
            if client.loop_write() != mqtt.MQTT_ERR_SUCCESS:
                return False
        if client.socket() is None:
            return False
        return client.loop_misc() == mqtt.MQTT_ERR_SUCCESS

    def _fill_window(self, client: mqtt.Client) -> None:
        if self._resync:
            self._resync = False
            self._queue.clear()
            self._cursor = 0
            log.info("uplink: resync, sending every unacknowledged event again")
        while len(self._inflight) < self._window:
            if not self._queue:
                rows = self.store.unacked_after(self._cursor, READ_AHEAD)
                if not rows:
                    return
                self._queue.extend(rows)
                self._cursor = rows[-1].id
            row = self._queue.popleft()
            info = client.publish(row.topic, row.payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                # Not handed over; it stays pending and goes again after the reconnect.
                log.warning("uplink: publish of %s failed locally (%s)", row.event_id, mqtt.error_string(info.rc))
                return
            self._inflight[info.mid] = row.id
            self.info.inflight = len(self._inflight)

    def _flush_published(self) -> None:
        if self._published:
            ids, self._published = self._published, []
            self.store.mark_published(ids, final=not self.config.aggregator_ack)
            self.info.last_publish_ok = self.clock.now().isoformat(timespec="seconds")

    def _drain_and_leave(self, client: mqtt.Client) -> None:
        deadline = getattr(self, "_stop_deadline", time.monotonic() + 5)
        while self._inflight and time.monotonic() < deadline:
            sock = client.socket()
            if sock is None or not self._poll(client, sock, 0.1):
                break
        self._flush_published()
        try:
            info = client.publish(self.topics.status, self._status_payload(False, self.info.connect_count, "shutdown"), qos=1, retain=True)
            end = time.monotonic() + 1.0
            while not info.is_published() and time.monotonic() < end:
                sock = client.socket()
                if sock is None or not self._poll(client, sock, 0.05):
                    break
            # A normal DISCONNECT discards the Will: the offline status above already says why.
            client.disconnect()
        except Exception as exc:  # noqa: BLE001 - leaving anyway
            log.warning("uplink: unclean disconnect: %s", exc)

    def _teardown(self) -> None:
        try:
            self._flush_published()
        except Exception as exc:  # noqa: BLE001 - the rows stay unmarked and are simply sent again
            log.error("uplink: could not mark what the broker accepted (%s); it is sent again", exc)
        client, self._client = self._client, None
        if client is not None and client.socket() is not None:
            try:
                client.disconnect()
            except Exception:  # noqa: BLE001
                pass
        self._ready = False
        self._inflight.clear()
        self._queue.clear()
        self._cursor = 0
        self.info.inflight = 0
        self.info.connected_since = None

    # -- status ----------------------------------------------------------------------------

    def _status_payload(self, online: bool, connect_count: int, reason: str | None = None) -> bytes:
        doc: dict[str, Any] = {
            "v": 1,
            "online": online,
            "connect_count": connect_count,
            "device_id": self.recorder.device.id,
            "store_id": self.store.store_id,
            "boot_id": self.recorder.boot_id,
            "time": self.clock.now().isoformat(timespec="seconds"),
            "clock_synced": self.clock.is_synced(),
        }
        if online:
            doc.update(self.status())
        elif reason:
            doc["reason"] = reason
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()

    def _publish_status(self, client: mqtt.Client) -> None:
        self._status_due = time.monotonic() + self.status_interval_s
        client.publish(self.topics.status, self._status_payload(True, self.info.connect_count), qos=1, retain=True)

    # -- paho callbacks (they run in this thread, inside loop_read/loop_write) ---------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.info.last_error = f"broker refused the connection: {reason_code}"
            log.error("uplink: %s", self.info.last_error)
            self.recorder.raise_alarm("broker_refused", self.info.last_error)
            client.disconnect()
            return
        self.recorder.clear_alarm("broker_refused")
        receive_max = getattr(properties, "ReceiveMaximum", None) if properties else None
        if receive_max:
            self._window = min(self._window, receive_max)
        self.info.state = "connected"
        self.info.connected_since = self.clock.now().isoformat(timespec="seconds")
        self.info.last_error = None
        log.info("uplink: connected to %s (session %s)", self.info.broker, "resumed" if flags.session_present else "new")
        subs = [(self.topics.ack, 1), (self.topics.command(), 1)]
        subs += [(self.topics.desired(scope), 1) for scope in SCOPES]
        client.subscribe([(t, mqtt.SubscribeOptions(qos=q)) for t, q in subs])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            self.recorder.raise_alarm("subscribe_refused", f"the broker refused a subscription: {', '.join(failed)}")
        else:
            self.recorder.clear_alarm("subscribe_refused")
        # The backlog goes once subscriptions stand, so the retained ack can prune it first.
        self._ready = True
        self._status_due = 0.0

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._halt.is_set():
            log.info("uplink: disconnected cleanly")
        elif self.info.state == "connected":
            log.warning("uplink: disconnected (%s); events are queued in the store", reason_code)
            self.info.last_error = f"disconnected: {reason_code}"
        self.info.state = "connecting"

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        row_id = self._inflight.pop(mid, None)
        self.info.inflight = len(self._inflight)
        if row_id is None:
            return
        if reason_code.is_failure:
            # An ACL refusal is not delivery: the row stays pending and goes again after the
            # next reconnect (or a resync command), and the status and an alarm say so.
            reason = str(reason_code)
            self.info.refused_publishes += 1
            self.store.mark_refused(row_id, reason)
            self.recorder.raise_alarm("publish_refused", f"the broker refused a publish: {reason}")
            self._status_due = 0.0
            return
        self._published.append(row_id)

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        where = self.topics.classify(message.topic)
        if where is None:
            log.warning("uplink: message on unexpected topic %s ignored", message.topic)
            return
        kind, scope, name = where
        if kind == "ack":
            self._handle_ack(message.payload)
        else:
            self._flush_published()
            # CommandDeferred propagates: paho acknowledges a message only after this returns.
            self.router.handle(kind, scope, name, message.payload, message.topic)

    def _handle_ack(self, payload: bytes) -> None:
        try:
            doc = json.loads(payload.decode("utf-8"))
            store_id = doc["store_id"]
            seqs = {PERSON: doc["seq"], TELEMETRY: doc.get("telemetry_seq")}
            if not isinstance(seqs[PERSON], int) or not all(v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0) for v in seqs.values()):
                raise ValueError("seq (and telemetry_seq, if given) must be whole numbers")
        except (ValueError, KeyError, TypeError) as exc:
            self.info.ignored_acks += 1
            log.warning("uplink: malformed ack ignored: %s", exc)
            return
        if store_id != self.store.store_id:
            # Another store's ack (a reflashed card, a rebuilt database): it has never seen
            # our rows, so it must never prune them.
            self.info.ignored_acks += 1
            log.warning("uplink: ack for store %s ignored (this store is %s)", store_id, self.store.store_id)
            return
        self._flush_published()
        for stream, seq in seqs.items():
            if seq is not None:
                pruned = self.store.apply_ack(stream, seq)
                self.info.acks[stream] = seq
                if pruned:
                    log.debug("uplink: aggregator acknowledged %d %s events up to seq %d", pruned, stream, seq)

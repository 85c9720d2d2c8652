"""A private Mosquitto on a free loopback port, for the simulator, the tests and the benchmark.

Never the machine's own broker: a user's machine may have none, and a shared one mixes
strangers' messages with ours.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class BrokerUnavailable(RuntimeError):
    """Mosquitto is not installed or would not start."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_binary() -> str | None:
    """Path of the mosquitto binary (Debian installs it in /usr/sbin, often off a user's PATH)."""
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
    )


class PrivateBroker:
    """One Mosquitto process of our own; ``extra_conf`` adds lines (ACLs, passwords, listeners)."""

    def __init__(self, workdir: str | Path | None = None, *, extra_conf: str = "", port: int | None = None) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise BrokerUnavailable("mosquitto is not installed: apt-get install mosquitto")
        self.binary = binary
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="hall-broker-")
        self.dir = Path(workdir or self._tmp.name)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.proc: subprocess.Popen | None = None

    @property
    def conf_path(self) -> Path:
        return self.dir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.dir / "mosquitto.log"

    def write_conf(self) -> None:
        self.conf_path.write_text(
            "\n".join(
                [
                    f"listener {self.port} {self.host}",
                    "allow_anonymous true",
                    # Run as whoever started us (as root Mosquitto would otherwise switch to
                    # the 'mosquitto' user, who cannot write our temporary directory).
                    f"user {getpass.getuser()}",
                    "persistence true",
                    f"persistence_location {self.dir}/",
                    # Save at once: a test that restarts the broker must find what it held.
                    "autosave_interval 1",
                    # The default (1000) silently drops QoS 1 messages for a slow subscriber.
                    "max_queued_messages 1000000",
                    "max_inflight_messages 100",
                    f"log_dest file {self.log_path}",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    "log_type information",
                    self.extra_conf,
                    "",
                ]
            )
        )

    def start(self, timeout: float = 10.0) -> "PrivateBroker":
        """Start Mosquitto and wait until it accepts connections."""
        self.write_conf()
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
                raise BrokerUnavailable(f"mosquitto exited with {self.proc.returncode}: {err.strip()} {log[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise BrokerUnavailable(f"mosquitto did not listen on {self.host}:{self.port} within {timeout} s")

    def stop(self) -> None:
        """Stop the broker (SIGTERM, so it saves its persistence file)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def close(self) -> None:
        """Stop the broker and remove its directory if we made it."""
        self.stop()
        if self._tmp:
            self._tmp.cleanup()

    def sub_command(self, topic: str = "hall/v1/#") -> str:
        """The mosquitto_sub command that shows everything flowing."""
        return f"mosquitto_sub -h {self.host} -p {self.port} -V mqttv5 -t '{topic}' -v"

    def __enter__(self) -> "PrivateBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

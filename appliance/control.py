"""The daemon's local control socket: live actions for the web page and ``hall-appliance sim``.

One JSON request per line, one JSON answer per line. Only local peers reach a Unix socket;
of those, only root, the daemon's own user and members of the configured group are served
(checked with SO_PEERCRED, not just file permissions).
"""

from __future__ import annotations

import grp
import json
import logging
import os
import socket
import struct
import threading
from pathlib import Path
from typing import Any, Callable

from .errors import ApplianceError, ControlError

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024
Handler = Callable[[dict], Any]


def _peer_groups(pid: int) -> set[int]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Groups:"):
                return {int(g) for g in line.split()[1:]}
    except OSError:
        pass
    return set()


class ControlServer(threading.Thread):
    """Serves registered operations on a Unix socket until ``stop()``."""

    def __init__(self, path: Path, group: str | None = None) -> None:
        super().__init__(name="control", daemon=True)
        self.path = Path(path)
        self.gid: int | None = None
        if group:
            try:
                self.gid = grp.getgrnam(group).gr_gid
            except KeyError:
                log.warning("control.group %r does not exist; only root and this user may use the socket", group)
        self.handlers: dict[str, Handler] = {}
        self._halt = threading.Event()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(self.path))
        os.chmod(self.path, 0o660)
        if self.gid is not None:
            try:
                os.chown(self.path, -1, self.gid)
            except PermissionError:
                log.warning("cannot give the control socket to group %s", group)
        self._sock.listen(16)
        self._sock.settimeout(0.5)

    def register(self, op: str, handler: Handler) -> None:
        """Serve ``op``; the handler takes the request's args and returns a JSON-able result."""
        self.handlers[op] = handler

    def allowed(self, conn: socket.socket) -> bool:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", creds)
        if uid in (0, os.getuid()):
            return True
        return self.gid is not None and (gid == self.gid or self.gid in _peer_groups(pid))

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._halt.is_set():
                    break
                raise
            threading.Thread(target=self._serve, args=(conn,), name="control-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            if not self.allowed(conn):
                self._send(conn, {"ok": False, "error": "not allowed: join the appliance's group to use the control socket"})
                return
            try:
                line = conn.makefile("rb").readline(MAX_REQUEST + 1)
            except OSError:
                return
            answer = self.dispatch(line)
            self._send(conn, answer)

    def dispatch(self, line: bytes) -> dict:
        """Answer one request line (separate from the socket so it can be tested directly)."""
        if len(line) > MAX_REQUEST:
            return {"ok": False, "error": f"request over {MAX_REQUEST} bytes"}
        try:
            request = json.loads(line)
            op = request["op"]
            args = request.get("args", {})
            if not isinstance(args, dict):
                raise TypeError("args must be an object")
        except (ValueError, KeyError, TypeError) as exc:
            return {"ok": False, "error": f"malformed request: {exc}"}
        handler = self.handlers.get(op)
        if handler is None:
            return {"ok": False, "error": f"unknown operation '{op}'; known: {', '.join(sorted(self.handlers))}"}
        try:
            return {"ok": True, "result": handler(args)}
        except (ApplianceError, ValueError, KeyError, TypeError) as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one bad request must not take the socket down
            log.exception("control operation %s failed", op)
            return {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}

    @staticmethod
    def _send(conn: socket.socket, answer: dict) -> None:
        try:
            conn.sendall(json.dumps(answer, ensure_ascii=False).encode() + b"\n")
        except OSError:
            pass

    def stop(self) -> None:
        self._halt.set()
        self._sock.close()
        self.path.unlink(missing_ok=True)
        if self.is_alive():
            self.join(2)


class ControlClient:
    """Talks to a running daemon's control socket."""

    def __init__(self, path: str | Path, timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.timeout = timeout

    def call(self, op: str, **args: Any) -> Any:
        """Run ``op`` in the daemon and return its result; raise ControlError with the reason."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(str(self.path))
        except FileNotFoundError:
            s.close()
            raise ControlError(f"the appliance daemon is not running (no control socket at {self.path})") from None
        except ConnectionRefusedError:
            s.close()
            raise ControlError(f"the appliance daemon is not running (nothing listens on {self.path})") from None
        except PermissionError:
            s.close()
            raise ControlError(f"no permission to use {self.path}: join the appliance's group") from None
        except (BlockingIOError, OSError) as exc:  # e.g. the listen queue is full: busy, not broken
            s.close()
            raise ControlError(f"the daemon is busy or unreachable at {self.path} ({exc.strerror or exc}); try again") from None
        with s:
            try:
                try:
                    s.sendall(json.dumps({"op": op, "args": args}).encode() + b"\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # it answered (a refusal) and closed before reading the request: read that
                line = s.makefile("rb").readline()
            except OSError as exc:
                raise ControlError(f"the daemon did not answer: {exc}") from None
        if not line:
            raise ControlError("the daemon closed the connection without answering")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise ControlError(answer.get("error", "refused"))
        return answer.get("result")

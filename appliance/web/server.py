"""Serving the page with cheroot: pure Python, and unlike waitress it can serve TLS itself.

HTTPS whenever provisioning gave the device a certificate ([web] cert_file and key_file).
cheroot writes no access log; its error log goes through ``logging`` with client addresses
taken out, because the public complaint form promises to keep no one's address (a failed TLS
handshake would otherwise put "Client ('192.168.1.23', 50312) lost" in the journal).
"""

from __future__ import annotations

import logging
import re
import threading
import traceback as traceback_

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from ..config import WebConfig

# A hall has a handful of people on the page at once; a small pool keeps the Pi's memory free.
THREADS = 4

log = logging.getLogger(__name__)

# A socket address as cheroot prints it — ('192.0.2.5', 50312) or ('::1', 50312, 0, 0) — and
# bare IPv4 addresses, wherever else one turns up in a message.
_ADDRESS = re.compile(r"\('[^']*', \d+(?:, \d+, \d+)?\)|\b(?:\d{1,3}\.){3}\d{1,3}\b")
WITHHELD = "(client address withheld)"


def without_addresses(text: str) -> str:
    """``text`` with every client address in it replaced by a placeholder."""
    return _ADDRESS.sub(WITHHELD, text)


class _Server(wsgi.Server):
    """cheroot's server, its error log in ours and without client addresses."""

    def error_log(self, msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
        text = str(msg)
        if traceback:
            text += "\n" + traceback_.format_exc()
        log.log(level, "%s", without_addresses(text))


class PageServer:
    """The config page on a cheroot server in a thread of its own: ``start()``, ``url``, ``stop()``."""

    def __init__(self, app, web: WebConfig, *, port: int | None = None) -> None:
        self.app = app
        self.web = web
        self.tls = web.cert_file is not None and web.key_file is not None
        self.server = _Server((web.host, web.port if port is None else port), app, numthreads=THREADS, server_name="hall-appliance")
        if self.tls:
            self.server.ssl_adapter = BuiltinSSLAdapter(str(web.cert_file), str(web.key_file))
        self._thread: threading.Thread | None = None

    def start(self) -> "PageServer":
        """Bind (OSError if the port is taken) and serve in the background."""
        self.server.prepare()
        self._thread = threading.Thread(target=self.server.serve, name="web", daemon=True)
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        """The port really bound (the configured one, or the one the system chose for 0)."""
        return self.server.bind_addr[1]

    @property
    def url(self) -> str:
        host = self.web.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/"

    def stop(self) -> None:
        """Stop accepting, finish the requests in progress."""
        self.server.stop()
        if self._thread is not None:
            self._thread.join(5)

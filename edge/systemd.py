"""sd_notify for ``Type=notify`` units: readiness, watchdog pings, stopping, status.

Why our own 20 lines instead of a dependency: the protocol is one datagram on the Unix socket
named by ``$NOTIFY_SOCKET`` (a leading ``@`` is an abstract socket), and a gateway install
should not need libsystemd bindings. Outside systemd (no ``NOTIFY_SOCKET``) every call is a
no-op, so the daemon runs the same under any supervisor.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


def notify(*states: str) -> bool:
    """Send ``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``, ``STATUS=...``; False if not under
    systemd or the socket is gone (never raises: a supervisor hiccup must not stop scoring)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not states:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(states).encode())
        return True
    except OSError as exc:
        log.debug("sd_notify failed", extra={"error": repr(exc)})
        return False


class Watchdog:
    """Pings systemd's watchdog at half its interval (``WatchdogSec=``, passed to the service
    as ``WATCHDOG_USEC``); ``ping`` is cheap to call from every loop iteration."""

    def __init__(self) -> None:
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        enabled = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        self.interval = int(usec) / 2e6 if enabled else None
        self._last = 0.0

    def ping(self) -> None:
        if self.interval is None:
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            notify("WATCHDOG=1")

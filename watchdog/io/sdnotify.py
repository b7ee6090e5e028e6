"""sd_notify over the NOTIFY_SOCKET datagram socket: readiness, watchdog pings, status."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

# The datagram carries newline-separated assignments; one status line must not smuggle in another.
_LINE_BREAKS = str.maketrans({"\n": " ", "\r": " "})


@dataclass(frozen=True, slots=True)
class Notifier:
    """Talks to the service manager named by NOTIFY_SOCKET; every call is a no-op without one.

    Nothing here raises into the caller: a service manager that is gone or busy must not take the
    daemon down with it, so each send answers True when the datagram left and False otherwise.
    """

    address: str | None = None
    watchdog_usec: int | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], pid: int | None = None) -> Notifier:
        """Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID; ``pid`` defaults to ours."""
        address = environ.get("NOTIFY_SOCKET") or None
        return cls(
            address=address,
            watchdog_usec=_watchdog_usec(environ, os.getpid() if pid is None else pid),
        )

    @property
    def enabled(self) -> bool:
        """Whether a service manager asked to be notified at all."""
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` assignments as one datagram; False if it could not be sent."""
        target = _socket_address(self.address)
        if target is None or not assignments:
            return False
        payload = "\n".join(assignments).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # A full receive queue must cost us one lost message, never a stalled event loop.
                sock.setblocking(False)
                sent = sock.sendto(payload, target)
        except OSError:
            return False
        return sent == len(payload)

    def ready(self, status: str | None = None) -> bool:
        """Tell the manager start-up is finished (READY=1), with an optional status line."""
        if status is None:
            return self.notify("READY=1")
        return self.notify("READY=1", _status(status))

    def stopping(self) -> bool:
        """Tell the manager we are shutting down (STOPPING=1)."""
        return self.notify("STOPPING=1")

    def watchdog_ping(self) -> bool:
        """Reset the manager's watchdog timer (WATCHDOG=1)."""
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """Set the one-line status shown by ``systemctl status`` (STATUS=...)."""
        return self.notify(_status(text))

    def watchdog_interval(self) -> float | None:
        """Seconds within which the manager expects a ping, or None when no watchdog applies to us.

        Ping at half of it, as sd_watchdog_enabled(3) advises, so one late tick is not fatal.
        """
        if self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 1_000_000


def _status(text: str) -> str:
    return "STATUS=" + text.translate(_LINE_BREAKS)


def _socket_address(address: str | None) -> str | None:
    # Same forms libsystemd accepts: a filesystem path or an abstract name written with '@'.
    # Anything else (relative paths, vsock: on newer managers) is refused rather than guessed at.
    if not address:
        return None
    if address.startswith("/"):
        return address
    if address.startswith("@") and len(address) > 1:
        return "\0" + address[1:]
    return None


def _watchdog_usec(environ: Mapping[str, str], pid: int) -> int | None:
    # Mirrors sd_watchdog_enabled(3): a WATCHDOG_PID naming another process means the watchdog
    # belongs to it (the variables leaked to a child), and malformed or zero values mean none.
    raw_pid = environ.get("WATCHDOG_PID")
    if raw_pid is not None and _unsigned(raw_pid) != pid:
        return None
    usec = _unsigned(environ.get("WATCHDOG_USEC"))
    return usec if usec else None


def _unsigned(raw: str | None) -> int | None:
    # int() alone would take " 30", "+30" and "3_0"; systemd writes plain decimal digits only.
    if raw is None or not (raw.isascii() and raw.isdigit()):
        return None
    return int(raw)
